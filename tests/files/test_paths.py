"""Path containment: every ambiguous agent path is refused; every accepted one stays below the root."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.errors import InvalidRequest
from keyrelay.files import paths

REFUSED = [
    "..", "../x", "a/../b", "a/..", ".", "./a", "a/./b", "%2e%2e/x", "%2E%2e/x", ".%2e/x", "a%2fb", "a%2Fb",
    "a%5cb", "a\\b", "/a", "a//b", "a/", "%00", "a%00b", "a%01", "a%1f", "a%7f", "a%c2%85", "%252e%252e/x",
    "a%25%32%65", "%c0%ae%c0%ae/x", "%ff", "%ef%bc%8e%ef%bc%8e/x", "%e2%80%a5/x", "%e2%80%a4%e2%80%a4",
    "a%e2%88%95b", "a%ef%bc%8fb", "a%e2%81%84b", "%e2%80%ae", "a%e2%80%8bb", "a%ef%bb%bfb", "%", "a%2", "%zz",
    "a?b", "a#b", "a b", "a\tb", "é", "",
]
ACCEPTED = {"a.txt": "a.txt", "docs/b%20b.txt": "docs/b b.txt", "%C3%BC/x": "ü/x", "100%25": "100%",
            "a..b/c": "a..b/c", "...": "...", "d%E2%82%AC": "d€", "a-b_c~d": "a-b_c~d", ".hidden": ".hidden"}


@pytest.mark.parametrize("raw", REFUSED)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        paths.file_key(raw)


@pytest.mark.parametrize("raw,key", ACCEPTED.items())
def test_clean_paths_decode_once(raw: str, key: str) -> None:
    assert paths.file_key(raw) == key


def test_list_prefix_allows_the_root_and_one_trailing_slash() -> None:
    assert paths.list_prefix("") == "" and paths.list_prefix("docs/") == "docs" and paths.list_prefix("a/b") == "a/b"
    for raw in ("/", "docs//", "../", "%2e%2e/"):
        with pytest.raises(InvalidRequest):
            paths.list_prefix(raw)


def test_long_keys_are_refused() -> None:
    paths.file_key("a" * 1024)
    with pytest.raises(InvalidRequest):
        paths.file_key("a" * 1025)


def test_root_prefix_join_and_relative() -> None:
    assert paths.root_prefix(None) == "" and paths.root_prefix("/tenants/acme/") == "tenants/acme"
    for bad in ("a/../b", "a//b", 5):
        with pytest.raises(InvalidRequest):
            paths.root_prefix(bad)
    assert paths.join("", "a") == "a" and paths.join("r", "a/b") == "r/a/b" and paths.join("r", "") == "r"
    assert paths.relative("r", "r/a/b") == "a/b" and paths.relative("r", "rx/a") is None
    assert paths.relative("r", "r") is None and paths.relative("", "a") == "a"


_ALPHABET = st.sampled_from(["a", "b", ".", "/", "\\", "%", "2e", "2f", "5c", "00", "25", "c0", "ae", "e2", "80",
                             "a5", "ef", "bc", "8e", "8f", "%2e", "%2f", "%2E", "%5C", "%00", "%25", "..", " ", "~"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ALPHABET, max_size=12).map("".join), st.sampled_from(["", "root", "t/acme"]))
def test_generated_paths_never_leave_the_root(raw: str, root: str) -> None:
    for parse in (paths.file_key, paths.list_prefix):
        try:
            key = parse(raw)
        except InvalidRequest:
            continue
        full = paths.join(root, key)
        segments = full.split("/") if full else []
        assert all(s not in ("", ".", "..") and "\\" not in s and "\x00" not in s for s in segments)
        assert not root or full == root or full.startswith(root + "/")
        if key:
            assert paths.relative(root, full) == key
