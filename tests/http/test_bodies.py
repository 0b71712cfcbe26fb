"""Shared request bodies (http/bodies.py): the execute body keeps unknown keys out and bounds its fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from keyrelay.http.bodies import ExecuteBody


def test_defaults_and_ignored_extra_keys() -> None:
    body = ExecuteBody.model_validate({"entity": "customers", "action": "list", "intent": "from airbyte"})
    assert (body.params, body.skip_truncation, body.no_cache) == (None, True, False)
    assert "intent" not in body.model_dump()


@pytest.mark.parametrize("data", [
    {"action": "list"}, {"entity": "", "action": "list"}, {"entity": "x" * 129, "action": "list"},
    {"entity": "e", "action": "a" * 65}, {"entity": "e", "action": "list", "params": [1]},
    {"entity": "e", "action": "list", "select_fields": ["f"] * 201},
])
def test_invalid_bodies_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExecuteBody.model_validate(data)
