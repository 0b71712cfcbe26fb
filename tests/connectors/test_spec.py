"""Connector definitions (connectors/spec.py): a broken definition fails at load, never at request time; config
and credentials are validated against the definition's schemas with errors that name the field and the rule,
never the value. (The catalog's own content is checked in test_catalog.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keyrelay.connectors.spec import CATALOG_DIR, SpecError, check_json, load_catalog, load_spec
from keyrelay.errors import InvalidRequest
from support.pipeline import shared_catalog

CATALOG = shared_catalog()


def test_a_broken_definition_fails_at_load(tmp_path: Path) -> None:
    raw = yaml.safe_load((CATALOG_DIR / "stripe.yaml").read_text())
    raw["entities"]["customers"]["actions"]["list"]["pagination"]["type"] = "telepathy"
    bad = tmp_path / "stripe.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="pagination"):
        load_spec(bad)
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(bad)


def test_an_invalid_json_schema_in_a_definition_fails_at_load(tmp_path: Path) -> None:
    raw = yaml.safe_load((CATALOG_DIR / "http.yaml").read_text())
    raw["config_schema"] = {"type": "not-a-type"}
    (tmp_path / "http.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="config_schema is not a valid JSON schema"):
        load_spec(tmp_path / "http.yaml")


def test_two_definitions_with_one_name_fail_the_catalog(tmp_path: Path) -> None:
    text = (CATALOG_DIR / "http.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(SpecError, match="duplicate connector name"):
        load_catalog(tmp_path)


def test_config_defaults_are_filled_in() -> None:
    config = CATALOG["salesforce"].check_config({"instance_url": "https://acme.my.salesforce.com"})
    assert config["login_url"] == "https://login.salesforce.com"


@pytest.mark.parametrize("data,field,rule", [
    ({}, "credentials", "missing required field(s) api_key"),
    ({"api_key": 12345}, "credentials.api_key", "must be of type string"),
    ({"api_key": "sk_x", "surprise": "sk_canary_55"}, "credentials", "unknown field(s)"),
])
def test_credential_errors_name_the_field_and_rule_never_the_value(data: dict[str, object], field: str,
                                                                   rule: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        CATALOG["stripe"].check_credentials(data)
    assert err.value.field == field and rule in err.value.message
    assert "sk_canary_55" not in err.value.message and "12345" not in err.value.message


def test_check_json_wants_an_object() -> None:
    assert check_json({"type": "object"}, None, "config") == {}
    with pytest.raises(InvalidRequest, match="config"):
        check_json({}, [1, 2], "config")


def test_the_public_entry_shows_schemas_but_no_auth_mapping() -> None:
    entry = CATALOG["gong"].public()
    assert entry["name"] == "gong" and "credentials_schema" in entry and "auth" not in entry
    assert CATALOG["gong"].is_catalog_api and not CATALOG["http"].is_catalog_api
