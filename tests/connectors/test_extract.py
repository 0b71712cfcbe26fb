"""Dot paths into JSON documents (connectors/extract.py): get, pick and drop, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.connectors.extract import drop, get, pick, split

DOC = {"data": [{"id": 1, "name": "a"}, {"id": 2}], "meta": {"next": {"cursor": "c2"}}, "a.b": "literal"}


@pytest.mark.parametrize("path,expected", [
    ("", DOC), ("$", DOC), ("data.0.id", 1), ("$.data.1.id", 2), ("meta.next.cursor", "c2"),
    ("data.2", None), ("data.x", None), ("meta.next.cursor.deeper", None), ("nope", None),
    (" meta.next ", {"cursor": "c2"}),
])
def test_get_follows_keys_and_list_indexes(path: str, expected: Any) -> None:
    assert get(DOC, path) == expected


def test_get_returns_the_default_for_a_missing_path() -> None:
    marker = object()
    assert get(DOC, "meta.prev", marker) is marker
    assert split("$.a..b.") == ["a", "b"]


def test_pick_keeps_only_the_named_paths_and_prefers_literal_keys() -> None:
    record = {"id": 1, "profile": {"email": "e", "phone": "p"}, "a.b": "lit", "secret": "s"}
    assert pick(record, ["id", "profile.email", "a.b", "missing.path"]) == {"id": 1, "profile": {"email": "e"},
                                                                          "a.b": "lit"}
    assert pick(["not", "a", "dict"], ["id"]) == ["not", "a", "dict"]


def test_drop_removes_the_named_paths_without_touching_the_original() -> None:
    record = {"id": 1, "profile": {"email": "e", "phone": "p"}, "a.b": "lit", "tags": ["x"]}
    out = drop(record, ["profile.email", "a.b", "tags.0", "nothing.here"])
    assert out == {"id": 1, "profile": {"phone": "p"}, "tags": ["x"]}
    assert record["profile"] == {"email": "e", "phone": "p"} and "a.b" in record
    out["tags"].append("y")
    assert record["tags"] == ["x"]  # a deep copy
