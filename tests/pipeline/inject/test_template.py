"""Catalog auth templates (pipeline/inject/template.py): `{name}` placeholders take credential fields first,
then config fields, as whole strings; a missing field is named."""

from __future__ import annotations

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.inject.template import credential_fields, render


def test_placeholders_are_filled_in_every_string_of_the_template() -> None:
    tpl = {"basic": {"username": "{access_key}", "password": "{secret}"}, "list": ["{n}", 3], "keep": None}
    assert render(tpl, {"access_key": "ak", "secret": "s{x}", "n": 7}) == {
        "basic": {"username": "ak", "password": "s{x}"}, "list": ["7", 3], "keep": None}  # substituted once


@pytest.mark.parametrize("values", [{}, {"access_key": None}, {"access_key": {"nested": 1}}])
def test_a_missing_or_non_text_field_is_named(values: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match="'access_key'"):
        render("{access_key}", values)


def test_credentials_win_over_config_and_http_sources_pass_through() -> None:
    auth = {"api_key": {"value": "{token}"}}
    assert credential_fields(auth, {"token": "from-creds"}, {"token": "from-config"}) == {
        "api_key": {"value": "from-creds"}}
    assert credential_fields({}, {"bearer_token": "b"}, {"x": 1}) == {"bearer_token": "b"}
