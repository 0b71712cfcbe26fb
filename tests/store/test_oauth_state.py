"""SqlOAuthStateStore on both backends: sealed state round trip, needs_reauth, and the per-source refresh lock."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import NotFound
from keyrelay.model import OAUTH_STATE_FIELD, NewSource, OAuthRecord, SealedField
from keyrelay.store.oauth_state import SqlOAuthStateStore, lock_key
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore


async def _source(engine: AsyncEngine, status: str = "active") -> str:
    ws = await SqlWorkspaceStore(engine).create_workspace(id=str(uuid.uuid4()), name=uuid.uuid4().hex, now=1.0)
    new = NewSource(id=str(uuid.uuid4()), workspace_id=ws.id, connector="http", name="s", slug="s",
                    config={"upstream_url": "https://api.example.com"}, policy={}, status=status)
    await SqlSourceStore(engine).create_source(new, [SealedField("oauth2", "k1", b"cfg")], now=1.0)
    return new.id


def _state(blob: bytes) -> SealedField:
    return SealedField(OAUTH_STATE_FIELD, "k1", blob)


async def test_state_round_trip_and_upsert(engine: AsyncEngine) -> None:
    store, sid = SqlOAuthStateStore(engine), await _source(engine)
    assert (await store.read(sid)).status == "active" and (await store.read(sid)).state is None
    for blob in (b"one", b"two"):
        async with store.locked(sid) as txn:
            await txn.write_state(_state(blob))
    record = await store.read(sid)
    assert record.state == _state(b"two") and record.status == "active"
    assert (await store.read(str(uuid.uuid4()))).status is None


async def test_state_is_hidden_from_source_reads_and_dropped_with_new_credentials(engine: AsyncEngine) -> None:
    store, sources, sid = SqlOAuthStateStore(engine), SqlSourceStore(engine), await _source(engine)
    async with store.locked(sid) as txn:
        await txn.write_state(_state(b"state"))
    src = await sources.get_source(sid)
    assert src is not None and src.credential_fields == ("oauth2",)
    assert [f.field for f in await sources.load_sealed(sid)] == ["oauth2"]
    await sources.update_source(sid, changes={}, sealed=[SealedField("oauth2", "k1", b"new")], now=2.0)
    assert (await store.read(sid)).state is None


async def test_mark_needs_reauth_only_moves_active_sources(engine: AsyncEngine) -> None:
    store = SqlOAuthStateStore(engine)
    active, inactive = await _source(engine), await _source(engine, status="inactive")
    for sid in (active, inactive):
        async with store.locked(sid) as txn:
            await txn.mark_needs_reauth(now=5.0)
    assert (await store.read(active)).status == "needs_reauth"
    assert (await store.read(inactive)).status == "inactive"


async def test_an_error_inside_the_lock_rolls_everything_back(engine: AsyncEngine) -> None:
    store, sid = SqlOAuthStateStore(engine), await _source(engine)
    with pytest.raises(RuntimeError):
        async with store.locked(sid) as txn:
            await txn.write_state(_state(b"lost"))
            await txn.mark_needs_reauth(now=5.0)
            raise RuntimeError("token endpoint failed")
    assert await store.read(sid) == OAuthRecord(status="active", state=None)


async def test_writing_state_of_a_deleted_source_is_not_found(engine: AsyncEngine) -> None:
    store, sid = SqlOAuthStateStore(engine), await _source(engine)
    await SqlSourceStore(engine).delete_source(sid)
    with pytest.raises(NotFound):
        async with store.locked(sid) as txn:
            await txn.write_state(_state(b"orphan"))


async def test_the_lock_serialises_refreshes_of_one_source(engine: AsyncEngine) -> None:
    """The second holder waits for the first to commit and then reads what it wrote (re-read under the lock)."""
    store, sid = SqlOAuthStateStore(engine), await _source(engine)
    inside = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with store.locked(sid) as txn:
            inside.set()
            await asyncio.sleep(0.3)  # a slow token endpoint
            await txn.write_state(_state(b"fresh"))
            order.append("first committed")

    async def second() -> bytes | None:
        await inside.wait()
        async with store.locked(sid) as txn:
            order.append("second locked")
            record = await txn.read()
        return None if record.state is None else record.state.ciphertext

    _, seen = await asyncio.gather(first(), second())
    assert order == ["first committed", "second locked"]
    assert seen == b"fresh"


async def test_lock_keys_are_stable_signed_64_bit_and_distinct() -> None:
    a, b = lock_key("source-a"), lock_key("source-b")
    assert a == lock_key("source-a") and a != b
    assert all(-(2**63) <= k < 2**63 for k in (a, b))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_lock_is_per_source_and_dies_with_its_holder(engine: AsyncEngine) -> None:
    store = SqlOAuthStateStore(engine)
    sid, other = await _source(engine), await _source(engine)
    held = asyncio.Event()
    release = asyncio.Event()
    pids: list[int] = []

    async def holder() -> None:
        with contextlib.suppress(Exception):  # its connection is terminated under it
            async with store.locked(sid) as txn:
                pids.append(int((await txn._conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()))
                held.set()
                await release.wait()
                await txn.read()

    task = asyncio.create_task(holder())
    await held.wait()
    started = time.monotonic()
    async with store.locked(other):  # another source: no waiting
        pass
    assert time.monotonic() - started < 1.0
    waiter = asyncio.create_task(_lock_and_read(store, sid))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # blocked by the holder
    async with engine.connect() as conn:  # the holder "dies": its session ends, PostgreSQL frees the lock
        await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
    await asyncio.wait_for(waiter, 10)
    release.set()
    await task


async def _lock_and_read(store: SqlOAuthStateStore, sid: str) -> None:
    async with store.locked(sid) as txn:
        await txn.read()
