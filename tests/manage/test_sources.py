"""Source updates never let a stored credential follow its source to another destination (manage/sources.py):
through the admin API of a real keyrelay, with real loopback upstreams that show where the credential went."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

SECRET = "CANARY-stored-secret-4b1d"


@pytest.fixture
def evil() -> Iterator[FakeUpstream]:
    with FakeUpstream(host="127.0.0.2") as up:
        yield up


def _patch(admin: Admin, source_id: str, body: dict[str, Any]) -> httpx.Response:
    return admin.http.patch(f"/api/v1/sources/{source_id}", json=body, headers=admin.headers)


def test_repointing_an_http_source_without_its_credentials_is_refused(kr: KeyrelayServer, admin: Admin,
                                                                      upstream: FakeUpstream,
                                                                      evil: FakeUpstream) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET})
    r = _patch(admin, src["id"], {"config": {"upstream_url": evil.url}})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "credentials_required" and err["field"] == "credentials"
    assert SECRET not in r.text and evil.url not in r.text
    assert admin.get(f"/api/v1/sources/{src['id']}").json()["config"]["upstream_url"] == upstream.url
    key = admin.api_key(ws, ["proxy"])
    ok = httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"
    assert evil.requests == [] and evil.connections == 0


@pytest.mark.parametrize("change", [
    {"upstream_url": "{up}/v2"},  # a path below the same origin
    {"upstream_url": "{up}/"},
])
def test_a_change_that_keeps_the_origin_keeps_the_credentials(kr: KeyrelayServer, admin: Admin,
                                                              upstream: FakeUpstream, change: dict[str, str]) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url=upstream.url + "/v1", credentials={"bearer_token": SECRET})
    config = {k: v.replace("{up}", upstream.url) for k, v in change.items()}
    r = _patch(admin, src["id"], {"config": config})
    assert r.status_code == 200, r.text
    key = admin.api_key(ws, ["proxy"])
    ok = httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code in (200, 404) and upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"


def test_repointing_with_new_credentials_sends_only_the_new_ones(kr: KeyrelayServer, admin: Admin,
                                                                 upstream: FakeUpstream, evil: FakeUpstream) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET,
                                                                   "inject_headers": {"X-Old": "old-hdr-value"}})
    r = _patch(admin, src["id"], {"config": {"upstream_url": evil.url}, "credentials": {"bearer_token": "mine"}})
    assert r.status_code == 200 and r.json()["credentials"] == ["bearer_token"]
    key = admin.api_key(ws, ["proxy"])
    httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
    seen = evil.requests[-1]
    assert seen.header("authorization") == "Bearer mine" and seen.header("x-old") is None
    assert SECRET not in str(seen.headers) and upstream.requests == []


def test_a_source_without_credentials_moves_freely(admin: Admin, upstream: FakeUpstream, evil: FakeUpstream) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url=upstream.url)
    assert _patch(admin, src["id"], {"config": {"upstream_url": evil.url}}).status_code == 200


# connector, config, credentials, a config that moves the destination
CATALOG = [
    ("stripe", {"base_url": "http://127.0.0.1:9"}, {"api_key": "sk_test_12345678"}, {"base_url": "http://127.0.0.2:9"}),
    ("shopify", {"shop": "acme"}, {"access_token": "shpat_12345678"}, {"shop": "evil"}),
    ("zendesk-support", {"subdomain": "acme"}, {"email": "agent@example.com", "api_token": "api-token-1"},
     {"subdomain": "evil"}),
    ("jira", {"subdomain": "acme"}, {"username": "user@example.com", "password": "api-token-1"}, {"subdomain": "evil"}),
    ("salesforce", {"instance_url": "https://acme.my.salesforce.com"},
     {"client_id": "client-1", "client_secret": "secret-1", "refresh_token": "refresh-1"},
     {"instance_url": "https://acme.my.salesforce.com", "login_url": "http://127.0.0.2:9"}),
    ("s3", {"bucket": "files", "endpoint_url": "http://127.0.0.1:9"},
     {"access_key_id": "AKIA12345678", "secret_access_key": "secret-key-1"}, {"bucket": "files", "endpoint_url": "http://127.0.0.2:9"}),
    ("s3", {"bucket": "files"}, {"access_key_id": "AKIA12345678", "secret_access_key": "secret-key-1"},
     {"bucket": "files", "region": "eu-west-1"}),
    ("azure_blob", {"account": "acme", "container": "c"}, {"account_key": "a2V5LWtleS1rZXk="},
     {"account": "evil", "container": "c"}),
]


@pytest.mark.parametrize(("connector", "config", "credentials", "moved"), CATALOG)
def test_a_catalog_source_destination_needs_the_credentials_again(admin: Admin, connector: str,
                                                                  config: dict[str, Any], credentials: dict[str, Any],
                                                                  moved: dict[str, Any]) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url="", connector=connector, slug="s", config=config, credentials=credentials)
    r = _patch(admin, src["id"], {"config": moved})
    assert r.status_code == 409 and r.json()["error"]["code"] == "credentials_required", r.text
    again = _patch(admin, src["id"], {"config": moved, "credentials": credentials})
    assert again.status_code == 200, again.text
    assert _patch(admin, src["id"], {"config": config}).status_code == 409  # and back, the same
