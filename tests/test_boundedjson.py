"""boundedjson.py: JSON nested deeper than the bound is refused as a ValueError (never a RecursionError), at the
bound exactly it is accepted, and `within` checks values parsed elsewhere without recursing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from keyrelay.boundedjson import MAX_DEPTH, TooDeep, loads, within


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _objects(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("make", [_nested, _objects])
def test_the_bound_is_exact(make: Callable[[int], str]) -> None:
    assert loads(make(MAX_DEPTH)) is not None
    with pytest.raises(TooDeep):
        loads(make(MAX_DEPTH + 1))


def test_input_deep_enough_to_exhaust_the_parser_is_too_deep_not_a_recursion_error() -> None:
    with pytest.raises(TooDeep) as err:
        loads("[" * 200_000 + "]" * 200_000)
    assert isinstance(err.value, ValueError)


def test_malformed_json_is_a_value_error_and_a_smaller_bound_applies() -> None:
    with pytest.raises(ValueError):
        loads(b"{not json")
    assert loads(b'{"a": [1, {"b": 2}]}', max_depth=3) == {"a": [1, {"b": 2}]}
    with pytest.raises(TooDeep):
        loads(b'{"a": [1, {"b": []}]}', max_depth=3)


def test_within_walks_parsed_values_including_tuples() -> None:
    value: object = 1
    for _ in range(MAX_DEPTH):
        value = (value,)
    assert within(value) and not within(([value],))
    assert within(json.loads(_nested(10)), max_depth=10) and not within(json.loads(_nested(11)), max_depth=10)
    assert within("scalar") and within({})
