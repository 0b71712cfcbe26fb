"""Step 3: per-source and per-caller limits per minute (sliding window counter), in memory or on Redis.

Keys are the authenticated principal and the source id, never a client-supplied IP header. A refused request
never reaches the upstream.

The `limits` library's sliding window counter weighs the previous minute's count by how much of it still
overlaps the last 60 s and adds the current minute's count: O(1) memory and time per key, against the moving
window's one entry per request (its memory storage cost grew with the limit and showed up in the gateway
profile). In memory the synchronous storage is used: a counter update needs no await and no thread hop.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from keyrelay.errors import RateLimited, Unavailable

Storage = MemoryStorage | RedisStorage


def make_storage(redis_url: str | None) -> Storage:
    if redis_url:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        return RedisStorage(uri, implementation="redispy", key_prefix="keyrelay-rl")
    return MemoryStorage()


class RateLimiter:
    def __init__(self, storage: Storage, *, caller_limit: int | None) -> None:
        self._local = SlidingWindowCounterRateLimiter(storage) if isinstance(storage, MemoryStorage) else None
        self._shared = AsyncSlidingWindow(storage) if isinstance(storage, RedisStorage) else None
        self._caller_limit = caller_limit
        self._items: dict[int, RateLimitItemPerMinute] = {}

    def _item(self, per_minute: int) -> RateLimitItemPerMinute:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    async def check(self, *, source_id: str, source_limit: int | None, caller_id: str) -> None:
        """Count this request against both limits, or raise RateLimited with a Retry-After in [1, 60]."""
        if source_limit is not None:
            await self._hit(self._item(source_limit), "source", source_id, what="this source")
        if self._caller_limit is not None:
            await self._hit(self._item(self._caller_limit), "caller", caller_id, what="this caller")

    async def _hit(self, item: RateLimitItemPerMinute, *key: str, what: str) -> None:
        stats: WindowStats
        if self._local is not None:
            if self._local.hit(item, *key):
                return
            stats = self._local.get_window_stats(item, *key)
        else:
            assert self._shared is not None
            try:
                if await self._shared.hit(item, *key):
                    return
                stats = await self._shared.get_window_stats(item, *key)
            except Exception:
                raise Unavailable("Rate limit store unreachable") from None  # fail closed
        retry = min(60, max(1, math.ceil(stats.reset_time - time.time())))
        raise RateLimited(f"Rate limit of {item.amount} requests per minute for {what} exceeded",
                          retry_after=retry)
