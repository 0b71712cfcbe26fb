"""The destination a source's credentials are bound to (manage/destinations.py): which config changes move it and
which do not, for every kind of connector in the catalog."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.connectors.spec import load_catalog
from keyrelay.manage.destinations import Destinations, origin

DEST = Destinations(load_catalog())


@pytest.mark.parametrize(("url", "want"), [
    ("https://api.example.com", "https://api.example.com:443"),
    ("https://API.Example.com:443/v1/", "https://api.example.com:443"),
    ("http://api.example.com/v1", "http://api.example.com:80"),
    ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
    ("https://[2001:db8::1]:8443/", "https://[2001:db8::1]:8443"),
])
def test_origin_names_scheme_host_and_port(url: str, want: str) -> None:
    assert origin(url) == want


def test_an_unparsable_url_gets_a_stable_digest_that_is_no_origin() -> None:
    assert origin("not a url") == origin("not a url") != origin("not a url2")
    assert origin("not a url").startswith("invalid:") and "|" not in origin("not a url")


# connector, config, a config that moves the destination, a config that does not
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("http", {"upstream_url": "https://api.example.com/v1"}, {"upstream_url": "https://evil.example/v1"},
     {"upstream_url": "https://api.example.com/v2"}),
    ("http", {"upstream_url": "https://api.example.com/v1"}, {"upstream_url": "http://api.example.com/v1"},
     {"upstream_url": "https://API.example.com:443/v1"}),
    ("http", {"upstream_url": "https://api.example.com/v1"}, {"upstream_url": "https://api.example.com:8443/v1"},
     {"upstream_url": "https://api.example.com/"}),
    ("stripe", {}, {"base_url": "https://evil.example"}, {"base_url": "https://api.stripe.com/v1"}),
    ("shopify", {"shop": "acme"}, {"shop": "evil"}, {"shop": "acme"}),
    ("zendesk-support", {"subdomain": "acme"}, {"subdomain": "evil"}, {"subdomain": "acme"}),
    ("jira", {"subdomain": "acme"}, {"subdomain": "acme", "base_url": "https://evil.example"},
     {"subdomain": "acme"}),
    ("salesforce", {"instance_url": "https://acme.my.salesforce.com", "login_url": "https://login.salesforce.com"},
     {"instance_url": "https://acme.my.salesforce.com", "login_url": "https://evil.example"},
     {"instance_url": "https://acme.my.salesforce.com", "login_url": "https://login.salesforce.com"}),
    ("salesforce", {"instance_url": "https://acme.my.salesforce.com", "login_url": "https://login.salesforce.com"},
     {"instance_url": "https://evil.my.salesforce.com", "login_url": "https://login.salesforce.com"},
     {"instance_url": "https://acme.my.salesforce.com", "login_url": "https://login.salesforce.com"}),
    ("s3", {"bucket": "files"}, {"bucket": "files", "region": "eu-west-1"}, {"bucket": "other", "prefix": "a/b"}),
    ("s3", {"bucket": "files", "endpoint_url": "https://minio.example.com"},
     {"bucket": "files", "endpoint_url": "https://evil.example"}, {"bucket": "files", "prefix": "x",
                                                                  "endpoint_url": "https://minio.example.com/"}),
    ("azure_blob", {"account": "acme", "container": "c"}, {"account": "evil", "container": "c"},
     {"account": "acme", "container": "d"}),
    ("gcs", {"bucket": "files"}, {"bucket": "files", "endpoint_url": "https://evil.example"},
     {"bucket": "other"}),
]


@pytest.mark.parametrize(("connector", "config", "moved", "kept"), CASES)
def test_destination_moves_with_the_origin_only(connector: str, config: dict[str, Any], moved: dict[str, Any],
                                                kept: dict[str, Any]) -> None:
    assert DEST(connector, moved) != DEST(connector, config)
    assert DEST(connector, kept) == DEST(connector, config)


def test_the_connector_is_part_of_the_destination() -> None:
    config = {"base_url": "https://api.example.com"}
    assert DEST("stripe", config) != DEST("hubspot", config)


def test_a_template_the_config_cannot_fill_still_gives_a_destination() -> None:
    assert DEST("shopify", {}) == DEST("shopify", {}) != DEST("shopify", {"shop": "acme"})


def test_destinations_never_contain_the_associated_data_separator() -> None:
    for connector, config, moved, kept in CASES:
        for c in (config, moved, kept):
            assert "|" not in DEST(connector, c)
    assert "|" not in DEST("http", {"upstream_url": "https://a|b.example"})
