"""Forms generated from connector schemas (manage/connect_forms.py): secrets are password inputs and never
prefilled, operator-only and preset config is not offered, and submitted values come back typed, with errors
that name the field and never the value."""

from __future__ import annotations

import pytest

from keyrelay.connectors.spec import load_catalog
from keyrelay.errors import InvalidRequest
from keyrelay.manage.connect_forms import FormField, config_fields, credential_fields, label, read

CATALOG = load_catalog()


def _names(fields: list[FormField] | None) -> list[tuple[str, str, bool]]:
    assert fields is not None
    return [(f.name, f.input, f.required) for f in fields]


def test_a_secret_is_a_password_input_and_an_account_name_is_not() -> None:
    assert _names(credential_fields(CATALOG["stripe"])) == [("credentials.api_key", "password", True)]
    assert _names(credential_fields(CATALOG["zendesk-support"])) == [
        ("credentials.email", "email", True), ("credentials.api_token", "password", True)]
    assert _names(credential_fields(CATALOG["jira"])) == [
        ("credentials.username", "text", True), ("credentials.password", "password", True)]


def test_config_the_operator_controls_or_preset_is_not_offered() -> None:
    assert _names(config_fields(CATALOG["stripe"], preset={}, current={})) == []  # base_url is operator-only
    assert _names(config_fields(CATALOG["zendesk-support"], preset={}, current={})) == [
        ("config.subdomain", "text", True)]
    assert _names(config_fields(CATALOG["zendesk-support"], preset={"subdomain": "acme"}, current={})) == []
    assert _names(config_fields(CATALOG["github"], preset={"owner": "octo"}, current={})) == [
        ("config.repo", "text", False)]
    salesforce = _names(config_fields(CATALOG["salesforce"], preset={}, current={}))
    assert ("config.instance_url", "text", True) in salesforce and all("login_url" not in n for n, *_ in salesforce)


def test_current_config_is_prefilled_but_a_credential_never_is() -> None:
    [shop] = config_fields(CATALOG["shopify"], preset={}, current={"shop": "acme"}) or []
    assert shop.value == "acme"
    assert all(f.value == "" for f in credential_fields(CATALOG["shopify"]) or [])


def test_only_the_named_fields_are_asked_before_a_sign_in() -> None:
    assert _names(config_fields(CATALOG["shopify"], preset={}, current={}, only=["shop"])) == [
        ("config.shop", "text", True)]
    assert _names(config_fields(CATALOG["github"], preset={}, current={}, only=[])) == []


@pytest.mark.parametrize("key,text", [("api_key", "API key"), ("instance_url", "Instance URL"),
                                      ("private_app_token", "Private app token"), ("client_id", "Client ID")])
def test_labels_read_well(key: str, text: str) -> None:
    assert label(key, {}) == text
    assert label(key, {"title": "Custom"}) == "Custom"


FIELDS = [
    FormField("config", "subdomain", "Subdomain", "text", True),
    FormField("config", "limit", "Limit", "number", False),
    FormField("config", "region", "Region", "select", False, options=("eu", "us")),
    FormField("config", "sandbox", "Sandbox", "checkbox", False),
    FormField("credentials", "api_token", "API token", "password", True),
]


def test_a_form_is_read_back_into_typed_config_and_credentials() -> None:
    config, creds = read(FIELDS, {"config.subdomain": " acme ", "config.limit": "25", "config.region": "eu",
                                  "config.sandbox": "on", "credentials.api_token": " tok-123\n", "csrf": "x",
                                  "credentials.injected": "ignored"})
    assert config == {"subdomain": "acme", "limit": 25, "region": "eu", "sandbox": True}
    assert creds == {"api_token": "tok-123"}
    config, _ = read(FIELDS, {"config.subdomain": "acme", "credentials.api_token": "t"})
    assert config == {"subdomain": "acme", "sandbox": False}


@pytest.mark.parametrize("form,field", [
    ({"config.subdomain": "acme"}, "credentials.api_token"),
    ({"credentials.api_token": "sk-secret-value"}, "config.subdomain"),
    ({"config.subdomain": "a", "credentials.api_token": "t", "config.limit": "ten"}, "config.limit"),
    ({"config.subdomain": "a", "credentials.api_token": "t", "config.region": "mars"}, "config.region"),
    ({"config.subdomain": "a", "credentials.api_token": "t" * 20000}, "credentials.api_token"),
])
def test_a_bad_form_names_the_field_never_the_value(form: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        read(FIELDS, form)
    assert err.value.field == field
    assert all(v not in err.value.message for v in form.values() if len(v) > 2)
