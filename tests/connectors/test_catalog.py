"""Every shipped connector definition loads, follows the format, and is internally consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from keyrelay.connectors.spec import CATALOG_DIR, SpecError, load_catalog, load_spec

FILES = sorted(CATALOG_DIR.glob("*.yaml"))
CATALOG = load_catalog()


def test_catalog_has_the_generic_http_connector() -> None:
    assert "http" in CATALOG and CATALOG["http"].kind == "api"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_definition_is_consistent(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    for ent in spec.entities.values():
        for act in ent.actions.values():
            where = f"{spec.name}.{ent.name}.{act.name}"
            placeholders = set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", act.path))
            path_params = {p.upstream for p in act.params.values() if p.location == "path"}
            assert placeholders == path_params, where
            assert all(p.required for p in act.params.values() if p.location == "path"), where
            assert (act.records is None) != (act.record is None), f"{where}: exactly one of records/record"
            if act.pagination.type == "cursor":
                assert act.pagination.param and act.pagination.next, where
            for p in act.params.values():
                assert len(p.description) >= 10, f"{where}.{p.name}: describe it for an agent"


def test_definition_ids_are_unique() -> None:
    ids = [s.definition_id for s in CATALOG.values() if s.definition_id]
    assert len(ids) == len(set(ids))


def test_catalog_api_connectors_declare_auth_and_base_url() -> None:
    for spec in CATALOG.values():
        if spec.is_catalog_api:
            assert spec.auth, spec.name
            assert spec.default_base_url, spec.name
            assert spec.definition_id, spec.name
            url = spec.default_base_url
            lead = re.match(r"\{([a-z_]+)\}", url)
            if lead:  # a whole URL from config (Salesforce instance_url): its schema must insist on https
                field = spec.config_schema["properties"][lead.group(1)]
                assert field["pattern"].startswith("^https://"), spec.name
                assert lead.group(1) in spec.config_schema.get("required", []), spec.name
            else:
                assert url.startswith("https://"), spec.name
            for name in re.findall(r"\{([a-z_]+)\}", url)[1 if lead else 0:]:
                # a tenant placeholder inside the host: only safe hostname labels
                field = spec.config_schema["properties"][name]
                assert field["pattern"].startswith("^[a-z0-9]") and "." not in field["pattern"], spec.name
                assert name in spec.config_schema.get("required", []), spec.name


@pytest.mark.parametrize("name,config,ok", [
    ("zendesk-support", {"subdomain": "acme"}, True),
    ("zendesk-support", {"subdomain": "evil.com#"}, False),
    ("jira", {"subdomain": "acme-corp"}, True),
    ("jira", {"subdomain": "x.evil.com"}, False),
    ("shopify", {"shop": "my-shop"}, True),
    ("shopify", {"shop": "-shop"}, False),
    ("salesforce", {"instance_url": "https://acme.my.salesforce.com"}, True),
    ("salesforce", {"instance_url": "http://acme.my.salesforce.com"}, False),
    ("salesforce", {"instance_url": "https://acme.my.salesforce.com/x"}, False),
    ("github", {"owner": "octo-org", "repo": "hello.js"}, True),
    ("github", {"owner": "octo/org"}, False),
])
def test_tenant_config_allows_only_safe_values(name: str, config: dict[str, str], ok: bool) -> None:
    from keyrelay.errors import InvalidRequest

    if ok:
        CATALOG[name].check_config(dict(config))
    else:
        with pytest.raises(InvalidRequest):
            CATALOG[name].check_config(dict(config))


def test_shipped_api_connectors_send_a_user_agent_and_github_its_api_version() -> None:
    for spec in CATALOG.values():
        if spec.is_catalog_api:
            assert spec.headers.get("User-Agent") == "keyrelay", spec.name
            for ent in spec.entities.values():
                assert all(a.headers.get("user-agent") == "keyrelay" for a in ent.actions.values()), spec.name
    assert CATALOG["github"].headers["X-GitHub-Api-Version"] == "2022-11-28"


@pytest.mark.parametrize(("name", "value", "match"), [
    ("Authorization", "Bearer x", "cannot be a default header"),
    ("Host", "example.com", "cannot be a default header"),
    ("Content-Type", "text/plain", "cannot be a default header"),
    ("X-Unknown-Header", "1", "cannot be a default header"),  # the pipeline's allowlist would drop it
    ("User_Agent", "keyrelay", "headers"),  # not a header token
    ("User-Agent", "line\r\nbreak", "headers"),
])
def test_default_headers_are_checked_at_load(tmp_path: Path, name: str, value: str, match: str) -> None:
    raw = yaml.safe_load((CATALOG_DIR / "github.yaml").read_text())
    raw["headers"] = {name: value}
    bad = tmp_path / "github.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=match):
        load_spec(bad)
