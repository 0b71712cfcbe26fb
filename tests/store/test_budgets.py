"""Budget counters are exact: concurrent consumers on one engine, several engines, and several processes sharing
the SQLite file never count past the limit; a chain is counted all or nothing."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.budgets import SqlBudgetStore
from keyrelay.store.engine import make_engine
from support.db import migrated_engine, url_for


async def test_a_budget_admits_exactly_its_limit_under_concurrency(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    results = await asyncio.gather(*(store.consume([("key:a", 0, 7)]) for _ in range(30)))
    assert results.count(None) == 7
    assert all(r in (None, "key:a") for r in results)
    assert await store.used("key:a", 0) == 7


async def test_windows_and_keys_are_counted_apart(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    assert await store.consume([("key:a", 5, 1)]) is None
    assert await store.consume([("key:a", 5, 1)]) == "key:a"
    assert await store.consume([("key:a", 6, 1)]) is None  # the next hour
    assert await store.consume([("key:b", 5, 1)]) is None


async def test_a_chain_is_counted_all_or_nothing(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    assert await store.consume([("parent", 0, 3), ("child", 0, 1)]) is None
    assert await store.consume([("parent", 0, 3), ("child", 0, 1)]) == "child"
    assert await store.used("parent", 0) == 1  # the refused request did not spend the parent's budget
    assert await store.consume([("parent", 0, 3), ("sibling", 0, 5)]) is None
    assert await store.consume([("parent", 0, 3), ("sibling", 0, 5)]) is None
    assert await store.consume([("parent", 0, 3), ("sibling", 0, 5)]) == "parent"
    assert await store.used("sibling", 0) == 2


async def test_two_engines_on_one_database_share_the_count(database_url: str | None, tmp_path: Path) -> None:
    async with migrated_engine(database_url, tmp_path) as one:
        other = make_engine(url_for(database_url, tmp_path))
        try:
            a, b = SqlBudgetStore(one), SqlBudgetStore(other)
            results = await asyncio.gather(*(s.consume([("key:shared", 0, 10)]) for s in [a, b] * 15))
            assert results.count(None) == 10
        finally:
            await other.dispose()


def _spend(url: str, tries: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> int:
        engine = make_engine(url)
        try:
            store = SqlBudgetStore(engine)
            got = await asyncio.gather(*(store.consume([("key:proc", 0, 12)]) for _ in range(tries)))
            return got.count(None)
        finally:
            await engine.dispose()

    out.put(asyncio.run(main()))


async def test_processes_sharing_the_sqlite_file_never_overspend(tmp_path: Path) -> None:
    async with migrated_engine(None, tmp_path):
        url = url_for(None, tmp_path)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_spend, args=(url, 12, out)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert all(p.exitcode == 0 for p in procs)
        assert sum(out.get(timeout=10) for _ in procs) == 12
