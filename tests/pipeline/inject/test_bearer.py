"""`bearer_token` injection (pipeline/inject/bearer.py)."""

from __future__ import annotations

from keyrelay.pipeline.inject import bearer


def test_the_token_is_sent_as_a_bearer_and_redacted() -> None:
    assert bearer.inject("tok-1") == {"headers": [("Authorization", "Bearer tok-1")], "secrets": ["tok-1"]}
