"""Forms generated from JSON schemas: every property of every connector's config and credentials schema gets
an input, credentials never get a value, and a submitted form turns back into the JSON the services validate
(errors name the field, never the value)."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.connectors.spec import load_catalog
from keyrelay.doors.console import forms
from keyrelay.errors import InvalidRequest
from keyrelay.manage.policy import ApprovalIn, PolicyIn, check_policy

CATALOG = load_catalog()
POLICY = PolicyIn.model_json_schema()
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _flat(groups: list[forms.Group]) -> dict[str, forms.Field]:
    return {f.name: f for g in groups for f in g.fields}


def _properties(schema: dict[str, Any], prefix: str) -> set[str]:
    out = set()
    for key, prop in (schema.get("properties") or {}).items():
        if prop.get("type") == "object" and "properties" in prop:
            out |= {f"{prefix}.{key}.{k}" for k in prop["properties"]}
        else:
            out.add(f"{prefix}.{key}")
    return out


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_schema_property_of_every_connector_gets_an_input(name: str) -> None:
    spec = CATALOG[name]
    config = _flat(forms.fields(spec.config_schema, "config"))
    creds = _flat(forms.fields(spec.credentials_schema, "credentials", secret=True,
                               values={"api_key": "sk_live_leak"}))
    assert set(config) == _properties(dict(spec.config_schema), "config")
    assert set(creds) == _properties(dict(spec.credentials_schema), "credentials")
    assert all(f.secret and f.value == "" and not f.checked for f in creds.values())
    required = set(spec.config_schema.get("required") or ())
    assert {f.key for f in config.values() if f.required} == required


def test_credential_inputs_hide_secrets_but_not_names_of_things() -> None:
    creds = _flat(forms.fields(CATALOG["http"].credentials_schema, "credentials", secret=True))
    kinds = {name: f.kind for name, f in creds.items()}
    assert kinds["credentials.bearer_token"] == "secret"
    assert kinds["credentials.basic.password"] == "secret"
    assert kinds["credentials.basic.username"] == "text"
    assert kinds["credentials.api_key.header"] == "text"
    assert kinds["credentials.inject_headers"] == "map"
    assert kinds["credentials.oauth2.grant_type"] == "select"
    assert creds["credentials.oauth2.grant_type"].options == ("refresh_token", "client_credentials")
    assert _flat(forms.fields(CATALOG["gcs"].credentials_schema, "credentials", secret=True))[
        "credentials.service_account_json"].kind == "textarea"
    groups = forms.fields(CATALOG["http"].credentials_schema, "credentials", secret=True)
    assert [(g.key, g.optional) for g in groups] == [("", False), ("basic", True), ("api_key", True), ("oauth2", True)]


def test_config_inputs_show_current_values_and_defaults() -> None:
    fields = _flat(forms.fields(CATALOG["salesforce"].config_schema, "config"))
    assert fields["config.login_url"].value == "https://login.salesforce.com"  # the schema's default
    fields = _flat(forms.fields(CATALOG["http"].config_schema, "config", values={"upstream_url": "https://a.example"}))
    assert fields["config.upstream_url"].value == "https://a.example"
    assert fields["config.upstream_url"].label == "Upstream URL"


def test_the_policy_form_comes_from_the_policy_schema() -> None:
    values = {"allowed_methods": ["GET", "POST"], "rate_limit_per_minute": 60, "timeout_seconds": 12.5,
              "allow_writes": True, "forward_headers": ["accept", "x-trace"]}
    fields = _flat(forms.fields(POLICY, "policy", values=values, choices={"allowed_methods": METHODS}))
    nested = {f"policy.approval.{k}" for k in ApprovalIn.model_fields}  # an object: one input per property
    assert set(fields) == {f"policy.{k}" for k in PolicyIn.model_fields if k != "approval"} | nested
    assert fields["policy.allowed_methods"].kind == "checkboxes"
    assert fields["policy.allowed_methods"].checked == {"GET", "POST"}
    assert (fields["policy.rate_limit_per_minute"].kind, fields["policy.rate_limit_per_minute"].value) == ("integer",
                                                                                                         "60")
    assert (fields["policy.timeout_seconds"].kind, fields["policy.timeout_seconds"].value) == ("number", "12.5")
    assert fields["policy.allow_writes"].checked == {"on"}
    assert fields["policy.forward_headers"].value == "accept, x-trace"
    mode = fields["policy.mode"]  # an enum with a default that null would not pass: no "(not set)"
    assert (mode.kind, mode.options, mode.value, mode.blank) == ("select", ("enforce", "observe"), "enforce", False)


def test_an_approval_rule_is_a_nested_group_cleared_by_emptying_it() -> None:
    choices = {"allowed_methods": METHODS, "approval.methods": METHODS}
    rule = {"methods": ["POST"], "paths": ["/v1/refunds/**"], "entities_actions": None, "timeout_seconds": 600.0}
    (group,) = [g for g in forms.fields(POLICY, "policy", values={"approval": rule}, choices=choices)
                if g.key == "approval"]
    fields = {f.key: f for f in group.fields}
    assert group.optional and group.nullable
    assert (fields["methods"].kind, fields["methods"].checked) == ("checkboxes", {"POST"})
    assert (fields["paths"].value, fields["timeout_seconds"].value) == ("/v1/refunds/**", "600.0")
    form = {"policy.approval.methods": ["DELETE"], "policy.approval.entities_actions": ["refunds.*"]}
    policy = forms.parse(POLICY, "policy", form, nulls=True, choices=choices)
    assert policy["approval"] == {"methods": ["DELETE"], "entities_actions": ["refunds.*"]}
    assert check_policy(policy, catalog_api=False)["approval"]["timeout_seconds"] == 3600.0
    left_at_its_default = {"policy.approval.timeout_seconds": ["3600"]}
    assert forms.parse(POLICY, "policy", left_at_its_default, nulls=True, choices=choices)["approval"] is None


def test_a_submitted_policy_is_what_check_policy_accepts() -> None:
    form = {"policy.allowed_methods": ["POST", "GET", "BREW"], "policy.rate_limit_per_minute": [" 60 "],
            "policy.timeout_seconds": ["12.5"], "policy.max_body_bytes": [""],
            "policy.forward_headers": ["accept,\nx-trace"], "policy.cache_ttl_seconds": [""]}
    policy = forms.parse(POLICY, "policy", form, nulls=True, choices={"allowed_methods": METHODS})
    assert policy == {"allowed_methods": ["POST", "GET"], "rate_limit_per_minute": 60, "timeout_seconds": 12.5,
                      "max_body_bytes": None, "forward_headers": ["accept", "x-trace"], "allow_writes": False,
                      "cache_ttl_seconds": None, "allow_body_on_safe_methods": False, "mode": "enforce",
                      "approval": None}
    assert check_policy(policy, catalog_api=False)["allowed_methods"] == ["GET", "POST"]
    nothing_ticked = forms.parse(POLICY, "policy", {}, nulls=True, choices={"allowed_methods": METHODS})
    # an emptied limit is null (no limit); an emptied field that null would not pass is its default
    assert nothing_ticked["allowed_methods"] is None and nothing_ticked["timeout_seconds"] == 30
    assert check_policy(nothing_ticked, catalog_api=False)["timeout_seconds"] == 30.0


def test_submitted_credentials_keep_only_what_was_filled_in() -> None:
    schema = CATALOG["http"].credentials_schema
    form = {"credentials.bearer_token": ["  sk_live_1  "], "credentials.basic.username": [""],
            "credentials.basic.password": [""], "credentials.api_key.value": ["k"],
            "credentials.api_key.header": ["X-Key"],
            "credentials.inject_headers": ["X-One: 1\n\nX-Two:  two words  \n"]}
    assert forms.parse(schema, "credentials", form) == {
        "bearer_token": "sk_live_1", "api_key": {"value": "k", "header": "X-Key"},
        "inject_headers": {"X-One": "1", "X-Two": "two words"}}
    assert forms.parse(schema, "credentials", {}) == {}
    CATALOG["http"].check_credentials(forms.parse(schema, "credentials", form))


@pytest.mark.parametrize(("form", "field"), [
    ({"policy.rate_limit_per_minute": ["sk_live_secret"]}, "policy.rate_limit_per_minute"),
    ({"policy.timeout_seconds": ["1e9<script>"]}, "policy.timeout_seconds"),
])
def test_a_bad_number_names_the_field_not_the_value(form: dict[str, list[str]], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        forms.parse(POLICY, "policy", form, nulls=True)
    assert info.value.field == field
    assert form[field][0] not in info.value.message


def test_a_bad_header_line_names_the_line_not_the_value() -> None:
    with pytest.raises(InvalidRequest) as info:
        forms.parse(CATALOG["http"].credentials_schema, "credentials",
                    {"credentials.inject_headers": ["X-Ok: 1\nsk_live_no_colon_here"]})
    assert info.value.field == "credentials.inject_headers"
    assert "line 2" in info.value.message and "sk_live" not in info.value.message


@pytest.mark.parametrize(("key", "want"), [("upstream_url", "Upstream URL"), ("client_id", "Client ID"),
                                           ("service_account_json", "Service account JSON"),
                                           ("cache_ttl_seconds", "Cache TTL seconds"), ("oauth2", "OAuth2")])
def test_labels(key: str, want: str) -> None:
    assert forms.label(key) == want
