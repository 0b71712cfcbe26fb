"""Local directories: the listing order matches the object stores', and symlinks are never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keyrelay.errors import NotFound
from keyrelay.files import local

NAMES = ["a", "d-e", "d/x", "d/y/z", "d0", "d.txt", "e f", "ü", "z/\u00e9", "b\\c", "c%41"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    for name in NAMES:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    os.symlink(tmp_path / "outside", base / "dlink")
    os.symlink(tmp_path / "outside" / "secret", base / "d" / "flink")
    return base


def test_walk_is_sorted_by_full_key_and_skips_links_and_unrequestable_names(root: Path) -> None:
    keys = [e.key for e in local.walk(root, "", None)]
    expected = sorted(n for n in NAMES if n not in ("b\\c", "c%41"))
    assert keys == expected


@pytest.mark.parametrize("after", ["a", "d-e", "d/x", "d/y/z", "d0", "c", "zz", "d/", "d"])
def test_walk_resumes_after_any_key(root: Path, after: str) -> None:
    every = [e.key for e in local.walk(root, "", None)]
    assert [e.key for e in local.walk(root, "", after)] == [k for k in every if k > after]


def test_walk_below_a_prefix_and_missing_prefixes(root: Path) -> None:
    assert [e.key for e in local.walk(root, "d", None)] == ["d/x", "d/y/z"]
    assert list(local.walk(root, "dlink", None)) == [] and list(local.walk(root, "nope", None)) == []
    assert list(local.walk(root, "a", None)) == []


def test_check_file_refuses_links_directories_and_missing_files(root: Path) -> None:
    local.check_file(root, "d/y/z")
    for key in ("dlink/secret", "d/flink", "d", "nope", "d/x/deeper"):
        with pytest.raises(NotFound):
            local.check_file(root, key)


def test_etag_matches_obstore_local_store(root: Path) -> None:
    import obstore
    from obstore.store import LocalStore

    meta = obstore.head(LocalStore(root), "d/x")
    entry = next(e for e in local.walk(root, "d", None) if e.key == "d/x")
    assert entry.etag == meta["e_tag"] or f'"{meta["e_tag"]}"' == entry.etag
