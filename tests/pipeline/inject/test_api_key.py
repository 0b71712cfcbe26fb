"""`api_key` injection (pipeline/inject/api_key.py): a header (default Authorization, optional prefix) or a
query parameter; the key is always a secret to redact."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.pipeline.inject import api_key


@pytest.mark.parametrize("value,expected", [
    ({"value": "k1"}, {"headers": [("Authorization", "k1")], "secrets": ["k1"]}),
    ({"value": "k1", "header": "X-Api-Key"}, {"headers": [("X-Api-Key", "k1")], "secrets": ["k1"]}),
    ({"value": "k1", "prefix": "Token "}, {"headers": [("Authorization", "Token k1")], "secrets": ["k1"]}),
    ({"value": "k1", "query_param": "key", "header": "X-Ignored"}, {"query": [("key", "k1")], "secrets": ["k1"]}),
])
def test_the_key_goes_where_it_is_configured(value: dict[str, str], expected: dict[str, Any]) -> None:
    assert api_key.inject(value) == expected
