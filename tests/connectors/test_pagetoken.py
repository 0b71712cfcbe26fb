"""Page tokens are opaque, signed, and bound to source, stream and filters."""

from __future__ import annotations

import pytest

from keyrelay.connectors.pagetoken import PageTokens
from keyrelay.errors import InvalidRequest

T = PageTokens(b"k" * 32)


def test_round_trip() -> None:
    tok = T.issue(source_id="s1", stream="customers", filters={"a": 1}, state={"cursor": "x"})
    assert T.read(tok, source_id="s1", stream="customers", filters={"a": 1}) == {"cursor": "x"}


@pytest.mark.parametrize("change", [
    {"source_id": "s2"}, {"stream": "invoices"}, {"filters": {"a": 2}},
])
def test_a_token_for_something_else_is_refused(change: dict[str, object]) -> None:
    tok = T.issue(source_id="s1", stream="customers", filters={"a": 1}, state={"cursor": "x"})
    args: dict[str, object] = {"source_id": "s1", "stream": "customers", "filters": {"a": 1}, **change}
    with pytest.raises(InvalidRequest):
        T.read(tok, **args)  # type: ignore[arg-type]


def test_tampered_and_foreign_tokens_are_refused() -> None:
    tok = T.issue(source_id="s1", stream="c", filters={}, state={"cursor": "x"})
    data, _, sig = tok.partition(".")
    forged = PageTokens(b"z" * 32).issue(source_id="s1", stream="c", filters={}, state={"cursor": "y"})
    for bad in (data + "." + sig[::-1], data[:-1] + "A." + sig, forged, "", "x" * 5000, 42):
        with pytest.raises(InvalidRequest):
            T.read(bad, source_id="s1", stream="c", filters={})
