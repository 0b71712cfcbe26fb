"""select/exclude dot paths and truncation."""

from __future__ import annotations

from keyrelay.connectors.shape import MARK, shape, truncate

REC = {"id": "1", "a": {"b": 1, "c": 2}, "long": "x" * 500}


def test_select_wins_over_exclude_and_keeps_nesting() -> None:
    assert shape(REC, select=["id", "a.b"], exclude=["id"]) == {"id": "1", "a": {"b": 1}}


def test_exclude_drops_nested_paths_without_touching_the_original() -> None:
    out = shape(REC, select=None, exclude=["a.c", "long", "missing.path"])
    assert out == {"id": "1", "a": {"b": 1}} and REC["a"] == {"b": 1, "c": 2}


def test_truncation_marks_long_strings_only() -> None:
    out = truncate([REC])
    assert out[0]["long"].endswith(MARK) and out[0]["id"] == "1"


def test_a_literal_top_level_key_is_tried_before_a_dot_path() -> None:
    rec = {"a.b": "literal", "a": {"b": "nested"}, "id": "1"}
    assert shape(rec, select=["a.b"], exclude=None) == {"a.b": "literal"}
    assert shape(rec, select=None, exclude=["a.b"]) == {"a": {"b": "nested"}, "id": "1"}
