"""Source updates never let a stored credential follow its source to another destination (manage/sources.py):
through the admin API of a real keyrelay, with real loopback upstreams that show where the credential went."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from keyrelay.errors import InvalidRequest, NotFound, SsrfBlocked
from keyrelay.manage.destinations import Destinations
from keyrelay.manage.sources import slugify
from keyrelay.model import ALL_SCOPES, Caller, CallerKind
from keyrelay.store.sources import SqlSourceStore
from support.keyrelay import Admin, KeyrelayServer
from support.pipeline import ADMIN, Pipeline, assembled
from support.secrets import revealed
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


TOKEN = "bearer-canary-88e1"

@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe

def _body(p: Pipeline, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"workspace_id": p.workspace_id, "connector": "http", "name": "My API",
                            "config": {"upstream_url": "http://127.0.0.1:9/v1"}, "credentials": {"bearer_token": TOKEN}}
    body.update(kw)
    return body

def _tenant(workspace_id: str) -> Caller:
    return Caller(kind=CallerKind.WORKSPACE, id=f"wst:app:{workspace_id}", workspace_id=workspace_id,
                  scopes=ALL_SCOPES)

@pytest.mark.parametrize("name,slug", [("My API", "my-api"), ("  Ünïcode -- Name!! ", "n-code-name"),
                                       ("!!!", "source")])
def test_slugify_keeps_only_slug_characters(name: str, slug: str) -> None:
    assert slugify(name) == slug

async def test_a_source_is_created_with_its_credentials_sealed(p: Pipeline) -> None:
    src = await p.sources.create_source(ADMIN, _body(p))
    assert (src.slug, src.connector, src.credential_fields) == ("my-api", "http", ("bearer_token",))
    assert TOKEN not in repr(src)
    rows = []
    async with p.engine.connect() as conn:
        for table in ("sources", "source_secrets"):
            rows += [repr(tuple(r)) for r in await conn.execute(sa.text(f"SELECT * FROM {table}"))]
    assert rows and TOKEN not in "\n".join(rows)
    sealed = await SqlSourceStore(p.engine).load_sealed(src.id)
    opened = await p.vault.open(workspace_id=src.workspace_id, source_id=src.id, sealed=sealed,
                                destination=Destinations(p.catalog)(src.connector, src.config))
    assert revealed(opened.fields) == {"bearer_token": TOKEN}

@pytest.mark.parametrize("change,field", [
    ({"connector": "nope"}, "connector"),
    ({"slug": "Bad Slug"}, "slug"),
    ({"name": ""}, "name"),
    ({"config": {}}, "config"),
    ({"credentials": {"bearer_token": "a\r\nX-Evil: 1"}}, "credentials.bearer_token"),
    ({"credentials": {"oauth2_state": "x"}}, "credentials"),
    ({"policy": {"timeout_seconds": 0}}, "policy.timeout_seconds"),
    ({"config": {"upstream_url": "ftp://127.0.0.1/x"}}, "config.upstream_url"),
])
async def test_invalid_input_names_the_field(p: Pipeline, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        await p.sources.create_source(ADMIN, _body(p, **change))
    assert err.value.field is not None and err.value.field.startswith(field)
    assert "X-Evil" not in err.value.message

@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://10.0.0.1/", "http://[::1]:9/"])
async def test_a_forbidden_destination_is_refused_at_configuration_time(p: Pipeline, url: str) -> None:
    with pytest.raises(SsrfBlocked) as err:
        await p.sources.create_source(ADMIN, _body(p, config={"upstream_url": url}))
    assert err.value.field == "config.upstream_url"
    assert await p.sources.list_sources(ADMIN, p.workspace_id) == []

async def test_an_oauth2_token_endpoint_is_checked_too(p: Pipeline) -> None:
    creds = {"oauth2": {"token_url": "http://169.254.169.254/token", "client_id": "c", "client_secret": "s",
                        "grant_type": "client_credentials"}}
    with pytest.raises(SsrfBlocked) as err:
        await p.sources.create_source(ADMIN, _body(p, credentials=creds))
    assert err.value.field == "credentials.oauth2.token_url"

async def test_a_local_source_must_serve_a_directory_inside_the_allowed_roots(p: Pipeline, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    p.sources.local_roots = (allowed.resolve(),)
    body = _body(p, connector="local", credentials={})
    for root in (allowed / "sub", allowed):
        src = await p.sources.create_source(ADMIN, {**body, "name": root.name, "config": {"root": str(root)}})
        assert src.connector == "local"
    for root in (tmp_path, allowed / ".." / "elsewhere", Path("/etc")):
        with pytest.raises(InvalidRequest) as err:
            await p.sources.create_source(ADMIN, {**body, "name": "x", "config": {"root": str(root)}})
        assert err.value.field == "config.root"

async def test_a_tenant_sees_only_its_own_sources(p: Pipeline) -> None:
    mine = await p.sources.create_source(ADMIN, _body(p))
    other_ws = await p.workspaces.create("other")
    theirs = await p.sources.create_source(ADMIN, _body(p, workspace_id=other_ws.id))
    me = _tenant(p.workspace_id)
    assert [s.id for s in await p.sources.list_sources(me, None)] == [mine.id]
    assert {s.id for s in await p.sources.list_sources(ADMIN, None)} == {mine.id, theirs.id}
    for action in (p.sources.get_source(me, theirs.id), p.sources.delete_source(me, theirs.id),
                   p.sources.update_source(me, theirs.id, {"name": "stolen"}), p.sources.list_sources(me, other_ws.id),
                   p.sources.create_source(me, _body(p, workspace_id=other_ws.id))):
        with pytest.raises(NotFound):
            await action
    assert (await p.sources.get_source(ADMIN, theirs.id)).name == "My API"

async def test_an_update_merges_the_policy_and_announces_the_change(p: Pipeline) -> None:
    changed: list[str] = []
    p.sources.on_change = changed.append
    src = await p.sources.create_source(ADMIN, _body(p, policy={"rate_limit_per_minute": 5}))
    updated = await p.sources.update_source(ADMIN, src.id, {"policy": {"timeout_seconds": 3}, "slug": "renamed"})
    assert (updated.policy.rate_limit_per_minute, updated.policy.timeout_seconds, updated.slug) == (5, 3.0, "renamed")
    assert changed == [src.id]
    with pytest.raises(InvalidRequest) as err:
        await p.sources.update_source(ADMIN, src.id, {"owner": "me"})
    assert err.value.field == "owner"
    await p.sources.delete_source(ADMIN, src.id)
    assert changed == [src.id, src.id]
    with pytest.raises(NotFound):
        await p.sources.get_source(ADMIN, src.id)

async def test_new_credentials_reactivate_a_source_that_needs_reauth(p: Pipeline) -> None:
    src = await p.sources.create_source(ADMIN, _body(p))
    await SqlSourceStore(p.engine).update_source(src.id, changes={"status": "needs_reauth"}, sealed=None,
                                                 now=p.clock.now)
    updated = await p.sources.update_source(ADMIN, src.id, {"credentials": {"bearer_token": "new-token"}})
    assert updated.status == "active"
    opened = await p.vault.open(workspace_id=src.workspace_id, source_id=src.id,
                                destination=Destinations(p.catalog)(src.connector, src.config),
                                sealed=await SqlSourceStore(p.engine).load_sealed(src.id))
    assert revealed(opened.fields) == {"bearer_token": "new-token"}

async def test_a_catalog_api_source_is_read_only_unless_its_policy_says_otherwise(p: Pipeline) -> None:
    src = await p.sources.create_source(ADMIN, _body(p, connector="stripe", config={"base_url": "http://127.0.0.1:9"},
                                                     credentials={"api_key": "sk_test_x"}))
    assert src.policy.allowed_methods == frozenset({"GET", "HEAD"})
    assert p.sources.connector_by_any("stripe").name == "stripe"
