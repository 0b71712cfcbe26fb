"""The injection registry (pipeline/inject/__init__.py): kinds apply in a fixed order, a later kind replaces an
earlier kind's header of the same name (case-insensitively), and every secret is collected for redaction."""

from __future__ import annotations

from keyrelay.pipeline.inject import KINDS, injection_for

OAUTH = {"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": "cs-1",
         "grant_type": "client_credentials"}


def test_kinds_apply_in_order_and_later_ones_replace_the_same_header() -> None:
    assert list(KINDS) == ["inject_headers", "basic", "bearer_token", "api_key", "oauth2"]
    inj = injection_for({"api_key": {"value": "k"}, "inject_headers": {"authorization": "static", "X-T": "t"},
                         "bearer_token": "b"})
    assert inj.headers == [("X-T", "t"), ("Authorization", "k")]  # api_key last; bearer and static replaced
    assert sorted(s.reveal() for s in inj.secrets) == ["b", "k", "static", "t"]  # replaced values are still redacted


def test_oauth2_claims_its_header_name_and_carries_its_config() -> None:
    inj = injection_for({"inject_headers": {"Authorization": "static"}, "oauth2": OAUTH})
    assert inj.headers == [] and inj.oauth2 is not None and inj.oauth2.client_id == "c"
    assert inj.header_names == frozenset({"authorization"}) and "cs-1" in [s.reveal() for s in inj.secrets]


def test_unknown_fields_inject_nothing() -> None:
    inj = injection_for({"something_else": "x"})
    assert (inj.headers, inj.query, inj.secrets, inj.oauth2) == ([], [], [], None)
    shown = repr(injection_for({"basic": {"username": "u", "password": "pw"}}))
    assert "secrets=" not in shown and "basic=" not in shown and "'pw'" not in shown
