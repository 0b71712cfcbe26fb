"""SingleFlightCache: concurrent misses share one load; errors are not cached; expiry reloads."""

from __future__ import annotations

import asyncio

import pytest

from keyrelay.pipeline.cache import SingleFlightCache


async def test_concurrent_misses_share_one_load() -> None:
    now = [0.0]
    cache: SingleFlightCache[str, int] = SingleFlightCache(lambda: now[0], ttl=1.0, max_entries=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(cache.get("k", load) for _ in range(100)))
    assert results == [42] * 100 and calls == 1
    assert await cache.get("k", load) == 42 and calls == 1
    now[0] = 2.0  # expired
    assert await cache.get("k", load) == 42 and calls == 2


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(lambda: 0.0, ttl=10.0, max_entries=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise KeyError("missing")

    outcomes = await asyncio.gather(*(cache.get("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, KeyError) for o in outcomes) and calls == 1
    with pytest.raises(KeyError):
        await cache.get("k", load)
    assert calls == 2


async def test_a_cancelled_loader_does_not_fail_its_waiters() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(lambda: 0.0, ttl=10.0, max_entries=10)
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    async def fast() -> int:
        return 7

    first = asyncio.ensure_future(cache.get("k", slow))
    await started.wait()
    waiter = asyncio.ensure_future(cache.get("k", fast))
    await asyncio.sleep(0)
    first.cancel()
    assert await waiter == 7


async def test_clear_forgets_everything() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(lambda: 0.0, ttl=10.0, max_entries=10)
    values = iter([1, 2])

    async def load() -> int:
        return next(values)

    assert await cache.get("k", load) == 1
    cache.clear()
    assert await cache.get("k", load) == 2
