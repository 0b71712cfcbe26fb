"""Sources (manage/sources.py) on the real store and vault: input is checked field by field, destinations pass
the SSRF check at configuration time, credentials are write-only and sealed, tenants stay apart, and every
change is announced so caches forget the old source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keyrelay.errors import InvalidRequest, NotFound, SsrfBlocked
from keyrelay.manage.sources import slugify
from keyrelay.model import ALL_SCOPES, Caller, CallerKind
from keyrelay.store.sources import SqlSourceStore
from support.pipeline import ADMIN, Pipeline, assembled

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
    opened = await p.vault.open(workspace_id=src.workspace_id, source_id=src.id, sealed=sealed)
    assert opened.fields == {"bearer_token": TOKEN}


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
                                sealed=await SqlSourceStore(p.engine).load_sealed(src.id))
    assert opened.fields == {"bearer_token": "new-token"}


async def test_a_catalog_api_source_is_read_only_unless_its_policy_says_otherwise(p: Pipeline) -> None:
    src = await p.sources.create_source(ADMIN, _body(p, connector="stripe", config={"base_url": "http://127.0.0.1:9"},
                                                     credentials={"api_key": "sk_test_x"}))
    assert src.policy.allowed_methods == frozenset({"GET", "HEAD"})
    assert p.sources.connector_by_any("stripe").name == "stripe"
