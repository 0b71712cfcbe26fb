"""Budget counters are exact: concurrent consumers on one engine, several engines, and several processes sharing
the SQLite file never count past the limit; a chain is counted all or nothing. Leases spend blocks reserved in the
counter: a small budget is still counted request by request, a large one writes once per block, never overspends
across engines, and gives back what it did not spend when idle or stopping."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.budgets import MAX_BLOCK, BudgetLeases, SqlBudgetStore, block
from keyrelay.store.engine import make_engine
from support.db import migrated_engine, url_for
from support.pipeline import ManualClock


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


def test_a_block_is_a_share_of_what_is_left() -> None:
    assert block(10**12, 0) == MAX_BLOCK
    assert block(5000, 0) == 19
    assert block(5000, 4900) == 1
    assert block(511, 0) == 1  # under 512 left: request by request
    assert block(7, 7) == 1


async def test_a_small_budget_is_counted_request_by_request(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    for spent in range(1, 6):
        assert await leases.consume([("key:small", 0, 300)]) is None
        assert await store.used("key:small", 0) == spent  # written at once: another instance sees it


async def test_a_large_budget_writes_once_per_block_and_gives_back_the_rest(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    clock = ManualClock()
    leases = BudgetLeases(store, clock, idle_seconds=1.0)
    assert await leases.consume([("key:big", 0, 10**6)]) is None
    assert await store.used("key:big", 0) == MAX_BLOCK  # reserved, not spent
    for _ in range(9):
        assert await leases.consume([("key:big", 0, 10**6)]) is None
    assert await store.used("key:big", 0) == MAX_BLOCK  # no write while the lease lasts
    clock.advance(0.5)
    await leases.release_idle()
    assert await store.used("key:big", 0) == MAX_BLOCK  # not idle yet
    assert await leases.consume([("key:big", 0, 10**6)]) is None
    clock.advance(1.0)
    await leases.release_idle()
    assert await store.used("key:big", 0) == 11  # exactly what was spent
    assert await leases.consume([("key:big", 0, 10**6)]) is None  # a new lease after the old one went back
    await leases.release_all()
    assert await store.used("key:big", 0) == 12


async def test_leases_on_two_engines_never_overspend_and_end_exact(database_url: str | None, tmp_path: Path) -> None:
    limit = 3000
    async with migrated_engine(database_url, tmp_path) as one:
        other = make_engine(url_for(database_url, tmp_path))
        try:
            store = SqlBudgetStore(one)
            a, b = BudgetLeases(store, ManualClock()), BudgetLeases(SqlBudgetStore(other), ManualClock())

            async def drain(leases: BudgetLeases) -> int:
                ok = 0
                while await leases.consume([("key:pair", 0, limit)]) is None:
                    ok += 1
                return ok

            first = sum(await asyncio.gather(drain(a), drain(b), drain(a), drain(b)))
            assert first <= limit  # never more, whichever instance held what
            await a.release_all()
            await b.release_all()
            assert await store.used("key:pair", 0) == first  # what both held unspent went back
            rest = sum(await asyncio.gather(drain(a), drain(b)))
            assert first + rest == limit
            await a.release_all()
            await b.release_all()
            assert await store.used("key:pair", 0) == limit
        finally:
            await other.dispose()


async def test_a_refused_chain_keeps_the_units_it_held(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    parent, child = ("parent", 0, 10**6), ("child", 0, 1)
    assert await leases.consume([parent, child]) is None
    assert await leases.consume([parent, child]) == "child"  # the parent's unit came from its lease: given back
    assert await leases.consume([parent]) is None
    await leases.release_all()
    assert await store.used("parent", 0) == 2
    assert await store.used("child", 0) == 1


async def test_a_new_window_starts_a_new_lease(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    assert await leases.consume([("key:w", 5, 2)]) is None
    assert await leases.consume([("key:w", 5, 2)]) is None
    assert await leases.consume([("key:w", 5, 2)]) == "key:w"
    assert await leases.consume([("key:w", 6, 2)]) is None


async def test_leases_go_back_when_the_loop_stops(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock(), idle_seconds=3600.0)
    assert await leases.consume([("key:stop", 0, 10**6)]) is None
    stop = asyncio.Event()
    task = asyncio.create_task(leases.run(stop))
    stop.set()
    await asyncio.wait_for(task, 30)
    assert await store.used("key:stop", 0) == 1


async def test_a_block_never_takes_more_than_is_left(engine: AsyncEngine) -> None:
    """A lease sized from a stale counter asks for more than is left: it gets one unit, not the block."""
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    assert await leases.consume([("key:stale", 0, 3000)]) is None  # a block of 11, one spent
    assert await store.used("key:stale", 0) == 11
    for _ in range(10):
        assert await leases.consume([("key:stale", 0, 3000)]) is None
    assert await store.reserve([("key:stale", 0, 3000, 2985)]) == [(2985, 2996)]  # another instance takes most
    assert await leases.consume([("key:stale", 0, 3000)]) is None  # 4 were left: one of them
    assert await store.used("key:stale", 0) == 2997
    await leases.release_all()
    assert await store.used("key:stale", 0) == 2997


async def test_the_block_shrinks_with_what_is_left(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    assert await store.reserve([("key:shrink", 0, 3000, 2900)]) == [(2900, 2900)]
    assert await leases.consume([("key:shrink", 0, 3000)]) is None  # first sight: 3000 // 256 = 11
    assert await store.used("key:shrink", 0) == 2911
    for _ in range(10):
        assert await leases.consume([("key:shrink", 0, 3000)]) is None
    assert await leases.consume([("key:shrink", 0, 3000)]) is None  # 89 left: one at a time now
    assert await store.used("key:shrink", 0) == 2912


async def test_spending_here_takes_held_units_or_none(engine: AsyncEngine) -> None:
    store = SqlBudgetStore(engine)
    leases = BudgetLeases(store, ManualClock())
    big, small = ("key:here", 0, 10**6), ("key:tiny", 0, 5)
    assert not leases.spend_here([big])  # nothing held yet
    assert await leases.consume([big, small]) is None
    assert leases.spend_here([big])  # from the block, no write
    assert not leases.spend_here([big, small])  # the small budget holds no unit: nothing is taken from either
    await leases.release_all()
    assert await store.used("key:here", 0) == 2
    assert await store.used("key:tiny", 0) == 1
