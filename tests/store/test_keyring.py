"""Key ring rows (store/keyring.py) on both backends: one first key even under a race, one active key after a
rotation, and compare-and-set re-encryption that never overwrites a concurrent change."""

from __future__ import annotations

import asyncio
import dataclasses

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import NewSource, SealedField
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore


async def _source_with_secret(engine: AsyncEngine, key_id: str) -> None:
    await SqlWorkspaceStore(engine).create_workspace(id="ws", name="ws", now=1.0)
    new = NewSource(id="src", workspace_id="ws", connector="http", name="n", slug="n", config={}, policy={})
    await SqlSourceStore(engine).create_source(new, [SealedField("bearer_token", key_id, b"ct-1")], now=1.0)


async def test_only_one_first_key_is_ever_added(engine: AsyncEngine) -> None:
    ring = SqlKeyRingStore(engine)
    results = await asyncio.gather(*(ring.add_first_key(key_id=f"k{i}", wrapped=b"w", now=float(i))
                                     for i in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    [row] = await ring.keys()
    assert row.status == "active" and row.wrapped == b"w"
    assert not await ring.add_first_key(key_id="late", wrapped=b"w", now=9.0)


async def test_activating_a_new_key_retires_the_others(engine: AsyncEngine) -> None:
    ring = SqlKeyRingStore(engine)
    await ring.add_first_key(key_id="k1", wrapped=b"w1", now=1.0)
    await ring.activate_new_key(key_id="k2", wrapped=b"w2", now=2.0)
    await ring.activate_new_key(key_id="k3", wrapped=b"w3", now=3.0)
    assert [(r.id, r.status) for r in await ring.keys()] == [("k1", "retired"), ("k2", "retired"),
                                                              ("k3", "active")]


DEST = "http:https://api.example.com:443"


async def test_replace_secret_is_compare_and_set(engine: AsyncEngine) -> None:
    ring = SqlKeyRingStore(engine)
    await ring.add_first_key(key_id="k1", wrapped=b"w1", now=1.0)
    await _source_with_secret(engine, "k1")
    await ring.activate_new_key(key_id="k2", wrapped=b"w2", now=2.0)
    [row] = await ring.secrets_not_under("k2")
    assert (row.source_id, row.workspace_id, row.field, row.key_id, row.ciphertext) == (
        "src", "ws", "bearer_token", "k1", b"ct-1")
    stale = dataclasses.replace(row, ciphertext=b"something else")
    # changed meanwhile: untouched
    assert not await ring.replace_secret(stale, key_id="k2", ciphertext=b"ct-2", destination=DEST)
    assert await ring.replace_secret(row, key_id="k2", ciphertext=b"ct-2", destination=DEST)
    assert not await ring.replace_secret(row, key_id="k2", ciphertext=b"ct-3", destination=DEST)  # only once
    assert await ring.secrets_not_under("k2") == [] and await ring.count_secrets() == 1


async def test_only_unused_retired_keys_are_dropped(engine: AsyncEngine) -> None:
    ring = SqlKeyRingStore(engine)
    await ring.add_first_key(key_id="k1", wrapped=b"w1", now=1.0)
    await _source_with_secret(engine, "k1")
    await ring.activate_new_key(key_id="k2", wrapped=b"w2", now=2.0)
    await ring.activate_new_key(key_id="k3", wrapped=b"w3", now=3.0)
    assert await ring.drop_unused_retired_keys() == 1  # k2: retired and unused; k1 still holds a secret
    assert [r.id for r in await ring.keys()] == ["k1", "k3"]
