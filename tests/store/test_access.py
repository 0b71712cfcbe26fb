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
    assert ws_rec.scopes == ALL_SCOPES - {Scope.APPROVE}  # an agent's token never decides approvals
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


async def test_tokens_carry_what_their_application_holds_now(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    ws = await SqlWorkspaceStore(engine).create_workspace(id=_id(), name="acme", now=1.0)
    app = await store.create_application(id=_id(), client_id="lim", secret_digest="d" * 64, name="n", now=1.0,
                                         workspaces=frozenset({ws.id}), scopes=frozenset({Scope.EXECUTE}))
    app_tok, ws_tok = _digest(), _digest()
    await store.add_token(digest=app_tok, kind=CallerKind.APPLICATION, application_id=app.id, workspace_id=None,
                          expires_at=100.0, now=1.0)
    await store.add_token(digest=ws_tok, kind=CallerKind.WORKSPACE, application_id=app.id, workspace_id=ws.id,
                          expires_at=100.0, now=1.0)
    a, w = await store.lookup(app_tok), await store.lookup(ws_tok)
    assert a is not None and a.workspaces == frozenset({ws.id}) and a.scopes == frozenset({Scope.EXECUTE})
    assert w is not None and w.scopes == frozenset({Scope.EXECUTE}) and not w.revoked
    assert await store.update_application(app.id, workspaces=frozenset({"elsewhere"}),
                                          scopes=frozenset({Scope.PROXY}))
    a, w = await store.lookup(app_tok), await store.lookup(ws_tok)
    assert a is not None and a.workspaces == frozenset({"elsewhere"}) and a.scopes == frozenset({Scope.PROXY})
    assert w is not None and w.revoked  # its workspace is no longer the application's
    bootstrap = await store.create_application(id=_id(), client_id="all", secret_digest="d" * 64, name="b", now=1.0)
    tok = _digest()
    await store.add_token(digest=tok, kind=CallerKind.WORKSPACE, application_id=bootstrap.id, workspace_id=ws.id,
                          expires_at=100.0, now=1.0)
    found = await store.lookup(tok)
    assert found is not None and Scope.APPROVE not in found.scopes and Scope.PROXY in found.scopes


async def test_derived_tokens_inherit_their_root_and_ancestors(engine: AsyncEngine) -> None:
    from keyrelay.model import Constraints

    store = SqlAccessStore(engine)
    ws = await SqlWorkspaceStore(engine).create_workspace(id=_id(), name="acme", now=1.0)
    own = Constraints(methods=frozenset({"GET"}), expires_at=90.0)
    key = ApiKey(id=_id(), workspace_id=ws.id, name="k", scopes=frozenset({Scope.PROXY}), hint="kr_x",
                 created_at=1.0, expires_at=200.0, constraints=own)
    root = _digest()
    await store.create_api_key(key, digest=root)
    found = await store.lookup(root)
    assert found is not None and found.expires_at == 90.0 and found.constraints == (own,)
    child_set, grand_set = Constraints(paths=("/a",)), Constraints(sources=frozenset({"s"}))
    child, grand = _digest(), _digest()
    await store.add_derived(id="c1", digest=child, root_digest=root, ancestors=[], chain=[own, child_set],
                            expires_at=80.0, now=2.0)
    await store.add_derived(id="g1", digest=grand, root_digest=root, ancestors=["c1"],
                            chain=[own, child_set, grand_set], expires_at=None, now=3.0)
    c, g = await store.lookup_derived(child), await store.lookup_derived(grand)
    assert c is not None and c.kind is CallerKind.API_KEY and c.subject_id == key.id and c.expires_at == 80.0
    assert c.constraints == (own, child_set) and c.derived_id == "c1" and c.depth == 1
    assert g is not None and g.constraints == (own, child_set, grand_set) and g.expires_at == 90.0
    assert await store.derived_ancestry("g1") == (root, ["c1", "g1"])
    assert await store.lookup(child) is None and await store.lookup_derived(root) is None
    assert await store.revoke_derived("c1", now=4.0)
    c, g = await store.lookup_derived(child), await store.lookup_derived(grand)
    assert c is not None and c.revoked and g is not None and g.revoked
    await store.revoke_api_key(key.id, now=5.0)
    other = _digest()
    await store.add_derived(id="c2", digest=other, root_digest=root, ancestors=[], chain=[own], expires_at=None,
                            now=6.0)
    found = await store.lookup_derived(other)
    assert found is not None and found.revoked


async def test_applications_are_listed_oldest_first_revoked_ones_too(engine: AsyncEngine) -> None:
    store = SqlAccessStore(engine)
    assert await store.list_applications() == []
    b = await store.create_application(id=_id(), client_id="b", secret_digest="d" * 64, name="second", now=2.0)
    a = await store.create_application(id=_id(), client_id="a", secret_digest="e" * 64, name="first", now=1.0)
    await store.revoke_application("b", now=3.0)
    listed = await store.list_applications()
    assert [x.client_id for x in listed] == [a.client_id, b.client_id]
    assert listed[1].revoked_at == 3.0 and listed[0].revoked_at is None
