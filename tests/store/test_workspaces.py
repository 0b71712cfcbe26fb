"""SqlWorkspaceStore on both backends."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import ApiKey, NewSource, Scope, SealedField
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.tables import api_keys, source_secrets, sources
from keyrelay.store.workspaces import SqlWorkspaceStore


def _id() -> str:
    return str(uuid.uuid4())


async def test_create_get_find_round_trip(engine: AsyncEngine) -> None:
    store = SqlWorkspaceStore(engine)
    ws = await store.create_workspace(id=_id(), name="acme", now=1000.5)
    assert (ws.name, ws.created_at) == ("acme", 1000.5)
    assert await store.get_workspace(ws.id) == ws
    assert await store.find_workspace("acme") == ws
    assert await store.get_workspace(_id()) is None
    assert await store.find_workspace("ACME") is None  # names are exact


async def test_duplicate_name_is_a_conflict(engine: AsyncEngine) -> None:
    store = SqlWorkspaceStore(engine)
    await store.create_workspace(id=_id(), name="acme", now=1.0)
    with pytest.raises(Conflict) as info:
        await store.create_workspace(id=_id(), name="acme", now=2.0)
    assert info.value.field == "name" and info.value.status == 409
    assert len(await store.list_workspaces()) == 1


async def test_list_orders_filters_and_limits(engine: AsyncEngine) -> None:
    store = SqlWorkspaceStore(engine)
    names = ["alpha", "beta", "al%pha", "gamma_1", "gammaX1"]
    for i, name in enumerate(names):
        await store.create_workspace(id=_id(), name=name, now=100.0 + i)
    assert [w.name for w in await store.list_workspaces()] == names
    assert [w.name for w in await store.list_workspaces(name_contains="al")] == ["alpha", "al%pha"]
    # LIKE wildcards in the filter are literal characters
    assert [w.name for w in await store.list_workspaces(name_contains="%")] == ["al%pha"]
    assert [w.name for w in await store.list_workspaces(name_contains="a_1")] == ["gamma_1"]
    assert [w.name for w in await store.list_workspaces(limit=2)] == names[:2]


async def test_delete(engine: AsyncEngine) -> None:
    store = SqlWorkspaceStore(engine)
    ws = await store.create_workspace(id=_id(), name="gone", now=1.0)
    assert await store.delete_workspace(ws.id) is True
    assert await store.get_workspace(ws.id) is None
    assert await store.delete_workspace(ws.id) is False
    await store.create_workspace(id=_id(), name="gone", now=2.0)  # the name is free again


async def test_delete_cascades_to_sources_secrets_and_api_keys(engine: AsyncEngine) -> None:
    wss, srcs, auth = SqlWorkspaceStore(engine), SqlSourceStore(engine), SqlAccessStore(engine)
    doomed = await wss.create_workspace(id=_id(), name="doomed", now=1.0)
    kept = await wss.create_workspace(id=_id(), name="kept", now=1.0)
    for ws in (doomed, kept):
        for slug in ("one", "two"):
            new = NewSource(id=_id(), workspace_id=ws.id, connector="http", name=slug, slug=slug,
                            config={"upstream_url": "https://x.example"}, policy={})
            await srcs.create_source(new, [SealedField("bearer_token", "k", b"c" * 40)], now=1.0)
        key = ApiKey(id=_id(), workspace_id=ws.id, name="", scopes=frozenset({Scope.PROXY}), hint="kr_abcd",
                     created_at=time.time())
        await auth.create_api_key(key, digest=uuid.uuid4().hex * 2)
    assert await wss.delete_workspace(doomed.id)
    async with engine.connect() as conn:
        src_ws = {r[0] for r in await conn.execute(sa.select(sources.c.workspace_id))}
        n_secrets = (await conn.execute(sa.select(sa.func.count()).select_from(source_secrets))).scalar_one()
        key_ws = {r[0] for r in await conn.execute(sa.select(api_keys.c.workspace_id))}
    assert src_ws == {kept.id} and n_secrets == 2 and key_ws == {kept.id}
    assert await srcs.list_sources(workspace_id=doomed.id) == []
    assert len(await srcs.list_sources(workspace_id=kept.id)) == 2
