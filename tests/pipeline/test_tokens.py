"""The token format (pipeline/tokens.py): prefixed 256-bit tokens, keyed digests, and the bearer header."""

from __future__ import annotations

import pytest

from keyrelay.errors import Unauthenticated
from keyrelay.pipeline.tokens import (
    API_KEY_PREFIX,
    APP_TOKEN_PREFIX,
    WORKSPACE_TOKEN_PREFIX,
    TokenHasher,
    bearer,
    new_token,
)


@pytest.mark.parametrize("prefix", [APP_TOKEN_PREFIX, WORKSPACE_TOKEN_PREFIX, API_KEY_PREFIX])
def test_new_tokens_are_prefixed_unique_and_pass_the_bearer_check(prefix: str) -> None:
    tokens = {new_token(prefix) for _ in range(100)}
    assert len(tokens) == 100
    for t in tokens:
        assert t.startswith(prefix) and len(t) == len(prefix) + 43
        assert bearer(f"Bearer {t}") == t


def test_digests_are_keyed_and_compared_exactly() -> None:
    a, b = TokenHasher(b"a" * 32), TokenHasher(b"b" * 32)
    token = new_token(API_KEY_PREFIX)
    assert a.digest(token) == a.digest(token) != b.digest(token)  # the key matters
    assert len(a.digest(token)) == 64 and token not in a.digest(token)
    assert a.matches(token, a.digest(token)) and not a.matches(token + "x", a.digest(token))
    assert not a.matches(token, b.digest(token))


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic " + "a" * 46, "Bearer kr_short", "Bearer krx_" + "a" * 43,
    "Bearer kr_" + "a" * 42 + "!", "Bearer kr_" + "a" * 44,
])
def test_a_missing_or_malformed_bearer_is_unauthenticated(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer(header)


def test_the_scheme_is_case_insensitive_and_whitespace_is_trimmed() -> None:
    token = "kra_" + "A" * 43
    assert bearer(f"  bEaReR   {token}  ") == token
