"""docs/sdk.md's quickstart runs as written: both Python blocks of its Quickstart section, in a fresh
interpreter, against a live keyrelay, with the environment the section tells the reader to set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.keyrelay import ADMIN_ID, ADMIN_SECRET, KeyrelayServer
from support.upstream import FakeUpstream

SDK_MD = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def quickstart_blocks() -> list[str]:
    text = SDK_MD.read_text(encoding="utf-8")
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def run(code: str, tmp_path: Path, env: dict[str, str]) -> str:
    script = tmp_path / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def env(server: KeyrelayServer, upstream: FakeUpstream) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    return {**clean, "KEYRELAY_URL": server.url, "KEYRELAY_CLIENT_ID": ADMIN_ID,
            "KEYRELAY_CLIENT_SECRET": ADMIN_SECRET, "UPSTREAM_URL": upstream.url}


def test_the_section_has_a_sync_and_an_async_block() -> None:
    blocks = quickstart_blocks()
    assert len(blocks) == 2 and "Keyrelay()" in blocks[0] and "AsyncKeyrelay()" in blocks[1]


def test_the_quickstart_runs_as_written_and_again(env: dict[str, str], tmp_path: Path,
                                                  upstream: FakeUpstream) -> None:
    sync_block, async_block = quickstart_blocks()
    first = run(sync_block, tmp_path, env)
    assert "source httpbin holds ['bearer_token']" in first
    assert "request API: 200 secret visible: False" in first
    assert "gateway: 200 secret visible: False" in first
    # the upstream did get the credential, from keyrelay
    assert upstream.requests[-1].header("Authorization") == "Bearer sk_test_51HxExampleSecret"

    again = run(sync_block, tmp_path, env)  # reuses the workspace and the source
    assert "request API: 200 secret visible: False" in again

    out = run(async_block, tmp_path, env)
    assert "async request API: 200" in out and "async gateway: 200" in out
