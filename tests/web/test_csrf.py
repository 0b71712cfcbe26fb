"""CSRF tokens are bound to their session and their form, and compared in constant time."""

from __future__ import annotations

from keyrelay.web.csrf import Csrf


def test_a_token_is_valid_only_for_its_session_and_purpose() -> None:
    csrf = Csrf(b"k" * 32)
    token = csrf.token("session-a", "revoke-key")
    assert csrf.valid("session-a", "revoke-key", token)
    assert not csrf.valid("session-b", "revoke-key", token)
    assert not csrf.valid("session-a", "create-key", token)
    assert not Csrf(b"x" * 32).valid("session-a", "revoke-key", token)


def test_missing_or_malformed_tokens_are_refused() -> None:
    csrf = Csrf(b"k" * 32)
    for bad in (None, "", 12, ["x"], csrf.token("session-a", "p")[:-1]):
        assert not csrf.valid("session-a", "p", bad)
