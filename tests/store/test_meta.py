"""SqlMetaStore on both backends: first writer wins."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.meta import SqlMetaStore


async def test_get_missing_is_none(engine: AsyncEngine) -> None:
    assert await SqlMetaStore(engine).get("nope") is None


async def test_put_if_absent_first_writer_wins(engine: AsyncEngine) -> None:
    store = SqlMetaStore(engine)
    assert await store.put_if_absent("token_hmac_key", "first") == "first"
    assert await store.put_if_absent("token_hmac_key", "second") == "first"
    assert await store.get("token_hmac_key") == "first"
    assert await store.put_if_absent("other", "x") == "x"


async def test_concurrent_writers_all_see_one_value(engine: AsyncEngine) -> None:
    store = SqlMetaStore(engine)
    results = await asyncio.gather(*(store.put_if_absent("k", f"v{i}") for i in range(8)))
    assert len(set(results)) == 1
    assert await store.get("k") == results[0]
