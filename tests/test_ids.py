"""Request and log-row ids (ids.py): unique, fixed-width hex, ordered within a process."""

from __future__ import annotations

import re
import subprocess
import sys

from keyrelay.ids import new_id


def test_ids_are_32_hex_characters_unique_and_increasing() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids) and ids == sorted(ids)


def test_two_processes_never_share_a_prefix() -> None:
    code = "from keyrelay.ids import new_id; print(new_id())"
    a, b = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2))
    assert a[:16] != b[:16] and a[16:] == b[16:] == f"{1:016x}"  # a random prefix, then the process's counter


def test_an_id_tells_whether_this_process_made_it() -> None:
    from keyrelay.ids import from_this_process

    code = "from keyrelay.ids import new_id; print(new_id())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert from_this_process(new_id()) and not from_this_process(other)
