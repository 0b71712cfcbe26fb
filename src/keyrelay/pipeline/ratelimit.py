"""Step 3: per-source and per-caller limits per minute (moving window), in memory or on Redis.

Keys are the authenticated principal and the source id, never a client-supplied IP header. A refused request
never reaches the upstream.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from keyrelay.errors import RateLimited, Unavailable


def make_storage(redis_url: str | None) -> Storage:
    if redis_url:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        return RedisStorage(uri, implementation="redispy", key_prefix="keyrelay-rl")
    return MemoryStorage()


class RateLimiter:
    def __init__(self, storage: Storage, *, caller_limit: int | None) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
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
        try:
            allowed = await self._limiter.hit(item, *key)
            if allowed:
                return
            stats = await self._limiter.get_window_stats(item, *key)
        except Exception:
            raise Unavailable("Rate limit store unreachable") from None  # fail closed
        retry = min(60, max(1, math.ceil(stats.reset_time - time.time())))
        raise RateLimited(f"Rate limit of {item.amount} requests per minute for {what} exceeded",
                          retry_after=retry)
