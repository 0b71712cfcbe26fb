"""SqlConsoleStore on both backends: console sessions and one-time links by digest, single use under a race,
purging, and the key ring as the vault page shows it."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.access import SqlAccessStore
from keyrelay.store.console import SqlConsoleStore
from keyrelay.store.tables import source_secrets, sources, vault_keys, workspaces


def _digest() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


async def _app(engine: AsyncEngine, client_id: str = "cid") -> str:
    app = await SqlAccessStore(engine).create_application(id=str(uuid.uuid4()), client_id=client_id,
                                                          secret_digest="d" * 64, name="ops", now=1.0)
    return app.id


async def test_a_session_is_found_by_its_digest_with_its_application(engine: AsyncEngine) -> None:
    store, app_id, digest = SqlConsoleStore(engine), await _app(engine), _digest()
    await store.create_session(id="s-1", digest=digest, application_id=app_id, method="secret", now=10.0,
                               expires_at=100.0)
    found = await store.session(digest)
    assert found is not None
    assert (found.id, found.method, found.created_at, found.last_seen_at, found.expires_at, found.ended_at) == (
        "s-1", "secret", 10.0, 10.0, 100.0, None)
    assert (found.application.id, found.application.client_id, found.application.name) == (app_id, "cid", "ops")
    assert found.application.revoked_at is None
    assert await store.session(_digest()) is None

    await store.touch("s-1", now=20.0)
    touched = await store.session(digest)
    assert touched is not None and touched.last_seen_at == 20.0
    await store.end_session("s-1", now=30.0)
    await store.end_session("s-1", now=40.0)  # the first end stays
    ended = await store.session(digest)
    assert ended is not None and ended.ended_at == 30.0


async def test_a_revoked_application_shows_on_its_sessions(engine: AsyncEngine) -> None:
    store, app_id, digest = SqlConsoleStore(engine), await _app(engine), _digest()
    await store.create_session(id="s-1", digest=digest, application_id=app_id, method="link", now=1.0,
                               expires_at=100.0)
    await SqlAccessStore(engine).revoke_application("cid", now=5.0)
    found = await store.session(digest)
    assert found is not None and found.application.revoked_at == 5.0


async def test_a_link_works_once_and_only_before_it_expires(engine: AsyncEngine) -> None:
    store, app_id = SqlConsoleStore(engine), await _app(engine)
    fresh, stale = _digest(), _digest()
    await store.add_link(digest=fresh, application_id=app_id, now=0.0, expires_at=300.0)
    await store.add_link(digest=stale, application_id=app_id, now=0.0, expires_at=300.0)
    assert await store.use_link(fresh, now=299.0) == app_id
    assert await store.use_link(fresh, now=299.5) is None  # spent
    assert await store.use_link(stale, now=300.0) is None  # expired
    assert await store.use_link(_digest(), now=1.0) is None  # unknown


async def test_two_requests_racing_with_one_link_cannot_both_win(engine: AsyncEngine) -> None:
    store, app_id = SqlConsoleStore(engine), await _app(engine)
    digest = _digest()
    await store.add_link(digest=digest, application_id=app_id, now=0.0, expires_at=300.0)
    results = await asyncio.gather(*(store.use_link(digest, now=1.0) for _ in range(8)))
    assert results.count(app_id) == 1 and results.count(None) == 7


async def test_purge_forgets_what_ended_expired_or_went_idle_before_the_cutoff(engine: AsyncEngine) -> None:
    store, app_id = SqlConsoleStore(engine), await _app(engine)
    digests = {name: _digest() for name in ("live", "expired", "ended", "idle")}
    await store.create_session(id="live", digest=digests["live"], application_id=app_id, method="secret", now=150.0,
                               expires_at=1000.0)
    await store.create_session(id="expired", digest=digests["expired"], application_id=app_id, method="secret",
                               now=90.0, expires_at=95.0)
    await store.create_session(id="ended", digest=digests["ended"], application_id=app_id, method="secret", now=90.0,
                               expires_at=1000.0)
    await store.end_session("ended", now=91.0)
    await store.create_session(id="idle", digest=digests["idle"], application_id=app_id, method="secret", now=50.0,
                               expires_at=1000.0)
    old_link, new_link = _digest(), _digest()
    await store.add_link(digest=old_link, application_id=app_id, now=0.0, expires_at=10.0)
    await store.add_link(digest=new_link, application_id=app_id, now=0.0, expires_at=500.0)
    await store.purge(before=100.0)
    assert await store.session(digests["live"]) is not None
    for name in ("expired", "ended", "idle"):
        assert await store.session(digests[name]) is None, name
    assert await store.use_link(old_link, now=1.0) is None
    assert await store.use_link(new_link, now=1.0) == app_id


async def test_the_key_ring_lists_ids_states_and_how_many_fields_each_seals(engine: AsyncEngine) -> None:
    store = SqlConsoleStore(engine)
    assert await store.vault_keys() == []
    async with engine.begin() as conn:
        await conn.execute(sa.insert(vault_keys), [
            {"id": "k-old", "wrapped": b"x" * 40, "status": "retired", "created_at": 1.0},
            {"id": "k-new", "wrapped": b"y" * 40, "status": "active", "created_at": 2.0},
            {"id": "k-unused", "wrapped": b"z" * 40, "status": "retired", "created_at": 0.5}])
        await conn.execute(sa.insert(workspaces).values(id="w", name="w", created_at=1.0))
        await conn.execute(sa.insert(sources).values(id="s", workspace_id="w", connector="http", name="s", slug="s",
                                                     config="{}", policy="{}", status="active", created_at=1.0,
                                                     updated_at=1.0))
        await conn.execute(sa.insert(source_secrets), [
            {"source_id": "s", "field": "a", "key_id": "k-new", "ciphertext": b"c"},
            {"source_id": "s", "field": "b", "key_id": "k-new", "ciphertext": b"c"},
            {"source_id": "s", "field": "c", "key_id": "k-old", "ciphertext": b"c"}])
    keys = await store.vault_keys()
    assert [(k.id, k.status, k.fields) for k in keys] == [("k-unused", "retired", 0), ("k-old", "retired", 1),
                                                          ("k-new", "active", 2)]
    assert not any(hasattr(k, "wrapped") for k in keys)  # never key material
