"""The OAuth providers connectors declare (connectors/provider.py): the shipped declarations are complete and
safe, per-customer values cannot move a provider URL to another host, and the CSP source of a sign-in form
covers exactly the provider's origin."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keyrelay.connectors.provider import endpoint, fill, origin_source, placeholders, provider_of
from keyrelay.connectors.spec import CATALOG_DIR, SpecError, load_catalog, load_spec
from keyrelay.errors import InvalidRequest

CATALOG = load_catalog()
WITH_OAUTH = sorted(n for n, s in CATALOG.items() if provider_of(s.raw) is not None)


def test_the_oauth_connectors_of_the_issue_declare_a_provider() -> None:
    assert WITH_OAUTH == ["github", "hubspot", "jira", "salesforce", "shopify", "zendesk-support"]
    assert provider_of(CATALOG["stripe"].raw) is None


@pytest.mark.parametrize("name", WITH_OAUTH)
def test_provider_urls_are_https_and_name_only_fields_the_customer_gives(name: str) -> None:
    spec = CATALOG[name]
    p = provider_of(spec.raw)
    assert p is not None
    for template in (p.authorize_url, p.token_url):
        assert template.startswith("https://"), template
        assert placeholders(template) <= set(p.customer_config), template
    for field in p.customer_config:  # a host label: the schema allows no dot, slash or colon
        pattern = spec.config_schema["properties"][field]["pattern"]
        assert pattern.startswith("^[a-z0-9]") and "." not in pattern and field in spec.config_schema["required"]
    sample = {k: "acme" for k in p.customer_config}
    endpoint(p.authorize_url, sample, what="authorize URL")
    endpoint(p.token_url, sample, what="token URL")
    assert p.access_token_field is None or p.access_token_field in spec.credentials_schema["properties"]
    for key in (*p.config_from_token, *(p.discover.config if p.discover else {})):
        assert key in spec.config_schema["properties"], key


def test_a_provider_block_is_checked_when_the_definition_loads(tmp_path: Path) -> None:
    raw = yaml.safe_load((CATALOG_DIR / "github.yaml").read_text())
    raw["oauth"]["scope_separator"] = ";"
    bad = tmp_path / "github.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="oauth"):
        load_spec(bad)


@pytest.mark.parametrize("value", ["a b", "x\r\nHost: evil", "", "é", None, ["x"]])
def test_a_value_that_is_not_one_printable_word_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        fill("https://x.example/{id}", {"id": value}, what="site")


@pytest.mark.parametrize("shop", ["evil.com/x", "evil.com#", "evil.com?", "user@evil.com", "127.0.0.1:80",
                                  "evil.com", "-x", "a" * 64])
def test_a_customer_value_cannot_move_a_provider_url_to_another_host(shop: str) -> None:
    with pytest.raises(InvalidRequest):
        endpoint("https://{shop}.myshopify.com/admin/oauth/access_token", {"shop": shop}, what="token URL")
    assert endpoint("https://{shop}.myshopify.com/admin/oauth/access_token", {"shop": "acme-shop"},
                    what="token URL") == "https://acme-shop.myshopify.com/admin/oauth/access_token"


def test_subdomain_filter_takes_the_first_host_label() -> None:
    assert fill("{url:subdomain}", {"url": "https://acme.atlassian.net"}, what="site") == "acme"
    assert fill("https://api.atlassian.com/ex/jira/{id}", {"id": "1324-abcd"}, what="site") \
        == "https://api.atlassian.com/ex/jira/1324-abcd"


@pytest.mark.parametrize("template,source", [
    ("https://github.com/login/oauth/authorize", "https://github.com"),
    ("https://{shop}.myshopify.com/admin/oauth/authorize", "https://*.myshopify.com"),
    ("http://127.0.0.1:4321/authorize", "http://127.0.0.1:4321"),
    ("https://auth.{region}.example.com/authorize", "https:"),
])
def test_the_form_action_source_is_the_providers_origin(template: str, source: str) -> None:
    assert origin_source(template) == source


def test_an_oauth2_credential_is_accepted_only_by_connectors_with_a_provider() -> None:
    cred = {"oauth2": {"token_url": "https://x.example/token", "client_id": "c", "client_secret": "s",
                       "grant_type": "refresh_token", "refresh_token": "r"}}
    assert CATALOG["github"].check_credentials(cred) == cred
    with pytest.raises(InvalidRequest):
        CATALOG["stripe"].check_credentials(cred)
    with pytest.raises(InvalidRequest):  # the generic kind, but not a client-credentials grant
        CATALOG["github"].check_credentials({"oauth2": {**cred["oauth2"], "grant_type": "client_credentials"}})
