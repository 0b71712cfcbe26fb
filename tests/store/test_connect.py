"""Connect sessions and OAuth state on both backends (store/connect.py): a session is claimed once even when
two claims race, an authorization's state is taken once, and expiry happens once per session."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.connect import ConnectSession, OAuthState
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.connect import SqlConnectStore
from keyrelay.store.tables import workspaces

NOW = 1_800_000_000.0


async def _session(engine: AsyncEngine, store: SqlConnectStore, **kw: object) -> ConnectSession:
    ws = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(sa.insert(workspaces).values(id=ws, name=ws, created_at=NOW))
    values: dict[str, object] = {
        "id": str(uuid.uuid4()), "workspace_id": ws, "connectors": ("stripe", "github"), "source_id": None,
        "redirect_url": "https://app.example.com/back", "allowed_origins": ("https://app.example.com",),
        "config": {"stripe": {"base_url": "https://proxy.example.com"}}, "status": "pending", "created_at": NOW,
        "expires_at": NOW + 600}
    values.update(kw)
    s = ConnectSession(**values)  # type: ignore[arg-type]
    await store.create_session(s, token_digest=uuid.uuid4().hex + uuid.uuid4().hex)
    return s


async def test_a_session_round_trips_and_is_listed_by_workspace_and_status(engine: AsyncEngine) -> None:
    store = SqlConnectStore(engine)
    s = await _session(engine, store)
    assert await store.get_session(s.id) == s
    assert await store.list_sessions(workspace_id=s.workspace_id, status="pending", limit=10) == [s]
    assert await store.list_sessions(workspace_id=s.workspace_id, status="connected", limit=10) == []
    assert await store.delete_session(s.id) and await store.get_session(s.id) is None


async def test_two_racing_claims_spend_a_session_once(engine: AsyncEngine) -> None:
    store = SqlConnectStore(engine)
    s = await _session(engine, store)
    won = await asyncio.gather(*(store.claim_session(s.id, now=NOW + 1) for _ in range(8)))
    assert sorted(won) == [False] * 7 + [True]
    await store.release_session(s.id)  # the source could not be stored: usable again
    assert await store.claim_session(s.id, now=NOW + 2)
    await store.finish_session(s.id, source_id="src-1")
    await store.release_session(s.id)  # too late: a source is connected
    got = await store.get_session(s.id)
    assert got is not None and (got.status, got.connected_source_id, got.used_at) == ("connected", "src-1", NOW + 2)
    expired = await _session(engine, store)
    assert not await store.claim_session(expired.id, now=NOW + 600)


async def test_checks_are_counted_up_to_the_limit_even_when_racing(engine: AsyncEngine) -> None:
    store = SqlConnectStore(engine)
    s = await _session(engine, store)
    counted = await asyncio.gather(*(store.count_check(s.id, limit=3) for _ in range(6)))
    assert sorted(counted) == [False] * 3 + [True] * 3
    assert not await store.count_check(s.id, limit=3)


async def test_a_state_is_taken_once_and_not_after_it_expires(engine: AsyncEngine) -> None:
    store = SqlConnectStore(engine)
    s = await _session(engine, store)
    state = OAuthState(digest="d" * 64, session_id=s.id, connector="github", config={"shop": "acme"},
                       verifier=SealedField("verifier", "key-1", b"\x00sealed",
                                            internal_destination("connect_oauth_states")),
                       created_at=NOW, expires_at=NOW + 60)
    await store.add_state(state)
    taken = await asyncio.gather(*(store.take_state("d" * 64, now=NOW + 1) for _ in range(5)))
    assert [t for t in taken if t is not None] == [state]
    await store.add_state(dataclasses.replace(state, digest="e" * 64))
    assert await store.take_state("e" * 64, now=NOW + 60) is None
    assert await store.take_state("f" * 64, now=NOW) is None


async def test_expiry_happens_once_and_drops_the_states(engine: AsyncEngine) -> None:
    store = SqlConnectStore(engine)
    s = await _session(engine, store, expires_at=NOW + 10)
    await _session(engine, store, expires_at=NOW + 100)
    await store.add_state(OAuthState(digest="a" * 64, session_id=s.id, connector="github", config={},
                                     verifier=SealedField("verifier", "k", b"x"), created_at=NOW, expires_at=NOW + 10))
    both = await asyncio.gather(store.expire_sessions(now=NOW + 10, limit=10),
                                store.expire_sessions(now=NOW + 10, limit=10))
    assert sorted(len(x) for x in both) == [0, 1] and [x.id for x in both[0] + both[1]] == [s.id]
    assert await store.take_state("a" * 64, now=NOW) is None
