"""A short-lived in-process cache whose concurrent misses share one load (no stampede at expiry).

Used for token lookups and source resolution: under load, an entry expiring would otherwise send every
request in flight to the database at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlightCache(Generic[K, V]):
    def __init__(self, clock: Callable[[], float], *, ttl: float, max_entries: int) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._items: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    def clear(self) -> None:
        self._items.clear()

    def peek(self, key: K) -> V | None:
        """The fresh cached value, without awaiting anything (the hot path's common case), else None."""
        hit = self._items.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return None

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._items.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this waiter itself was cancelled
                return await self.get(key, load)  # the loading request went away: load again
        return await self._load(key, load)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._loading[key]
        if self._ttl > 0:
            if len(self._items) >= self._max:
                self._items.clear()
            self._items[key] = (self._clock(), value)
        future.set_result(value)
        return value
