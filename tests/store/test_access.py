"""SqlAccessStore on both backends: applications, tokens and API keys, looked up by digest only."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import ALL_SCOPES, ApiKey, CallerKind, Scope
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.tables import tokens
from keyrelay.store.workspaces import SqlWorkspaceStore


def _id() -> str:
    return str(uuid.uuid4())


def _digest() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


async def test_applications_round_trip_and_conflict(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    assert await store.count_applications() == 0
    app = await store.create_application(id=_id(), client_id="cid", secret_digest="d" * 64, name="n", now=5.0)
    found = await store.application_by_client_id("cid")
    assert found == (app, "d" * 64)
    assert await store.application_by_client_id("other") is None
    with pytest.raises(Conflict) as info:
        await store.create_application(id=_id(), client_id="cid", secret_digest="e" * 64, name="n2", now=6.0)
    assert info.value.field == "client_id"
    assert await store.count_applications() == 1


async def test_token_lookup_states(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    app = await store.create_application(id=_id(), client_id="cid", secret_digest="d" * 64, name="n", now=1.0)
    app_tok, ws_tok = _digest(), _digest()
    await store.add_token(digest=app_tok, kind=CallerKind.APPLICATION, application_id=app.id, workspace_id=None,
                          expires_at=900.0, now=0.0)
    await store.add_token(digest=ws_tok, kind=CallerKind.WORKSPACE, application_id=app.id, workspace_id="ws-1",
                          expires_at=1200.0, now=0.0)
    rec = await store.lookup(app_tok)
    assert rec is not None
    assert (rec.kind, rec.subject_id, rec.workspace_id, rec.expires_at, rec.revoked) == (
        CallerKind.APPLICATION, app.id, None, 900.0, False)
    assert rec.scopes == ALL_SCOPES
    ws_rec = await store.lookup(ws_tok)
    assert ws_rec is not None and ws_rec.kind is CallerKind.WORKSPACE and ws_rec.workspace_id == "ws-1"
    assert await store.lookup(_digest()) is None
    # revoking the application revokes its tokens
    assert await store.revoke_application("cid", now=10.0) is True
    assert await store.revoke_application("cid", now=11.0) is False
    for d in (app_tok, ws_tok):
        r = await store.lookup(d)
        assert r is not None and r.revoked
    found = await store.application_by_client_id("cid")
    assert found is not None and found[0].revoked_at == 10.0


async def test_purge_expired_tokens(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    app = await store.create_application(id=_id(), client_id="cid", secret_digest="d" * 64, name="n", now=1.0)
    old, fresh = _digest(), _digest()
    await store.add_token(digest=old, kind=CallerKind.APPLICATION, application_id=app.id, workspace_id=None,
                          expires_at=100.0, now=0.0)
    await store.add_token(digest=fresh, kind=CallerKind.APPLICATION, application_id=app.id, workspace_id=None,
                          expires_at=300.0, now=0.0)
    assert await store.purge_expired_tokens(before=200.0) == 1
    assert await store.lookup(old) is None and await store.lookup(fresh) is not None


async def test_tokens_store_only_digests(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    app = await store.create_application(id=_id(), client_id="cid", secret_digest="d" * 64, name="n", now=1.0)
    d = _digest()
    await store.add_token(digest=d, kind=CallerKind.APPLICATION, application_id=app.id, workspace_id=None,
                          expires_at=1.0, now=0.0)
    async with engine.connect() as conn:
        cols = set((await conn.execute(sa.select(tokens))).keys())
    assert cols == {"digest", "kind", "application_id", "workspace_id", "expires_at", "created_at", "revoked_at"}


async def test_api_keys_crud_lookup_and_revoke(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    wss = SqlWorkspaceStore(engine)
    a = await wss.create_workspace(id=_id(), name="a", now=1.0)
    b = await wss.create_workspace(id=_id(), name="b", now=1.0)
    key_a = ApiKey(id=_id(), workspace_id=a.id, name="agent", scopes=frozenset({Scope.PROXY, Scope.LOGS}),
                   hint="kr_abcd", created_at=10.0, expires_at=5000.0)
    key_b = ApiKey(id=_id(), workspace_id=b.id, name="", scopes=frozenset({Scope.FILES}), hint="kr_efgh",
                   created_at=11.0)
    da, db = _digest(), _digest()
    assert await store.create_api_key(key_a, digest=da) == key_a
    await store.create_api_key(key_b, digest=db)
    assert await store.get_api_key(key_a.id) == key_a
    assert await store.get_api_key(_id()) is None
    assert await store.list_api_keys() == [key_a, key_b]
    assert await store.list_api_keys(workspace_id=b.id) == [key_b]
    rec = await store.lookup(da)
    assert rec is not None
    assert (rec.kind, rec.subject_id, rec.workspace_id, rec.expires_at, rec.revoked) == (
        CallerKind.API_KEY, key_a.id, a.id, 5000.0, False)
    assert rec.scopes == {Scope.PROXY, Scope.LOGS}
    rec_b = await store.lookup(db)
    assert rec_b is not None and rec_b.expires_at is None
    assert await store.revoke_api_key(key_a.id, now=20.0) is True
    assert await store.revoke_api_key(key_a.id, now=21.0) is False  # first revocation time is kept
    revoked = await store.get_api_key(key_a.id)
    assert revoked is not None and revoked.revoked_at == 20.0
    rec = await store.lookup(da)
    assert rec is not None and rec.revoked
    rec_b = await store.lookup(db)
    assert rec_b is not None and not rec_b.revoked


async def test_applications_are_listed_oldest_first_revoked_ones_too(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    assert await store.list_applications() == []
    b = await store.create_application(id=_id(), client_id="b", secret_digest="d" * 64, name="second", now=2.0)
    a = await store.create_application(id=_id(), client_id="a", secret_digest="e" * 64, name="first", now=1.0)
    await store.revoke_application("b", now=3.0)
    listed = await store.list_applications()
    assert [x.client_id for x in listed] == [a.client_id, b.client_id]
    assert listed[1].revoked_at == 3.0 and listed[0].revoked_at is None
