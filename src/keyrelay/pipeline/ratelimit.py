"""Step 3: per-source and per-caller limits per minute (sliding window counter): in memory, in a file the
workers of one server share (`keyrelay serve --workers N`), or on Redis.

Keys are the authenticated principal and the source id, never a client-supplied IP header. A refused request
never reaches the upstream.

The algorithm is the sliding window counter: the previous minute's count, weighted by how much of it still
overlaps the last 60 s, plus the current minute's count (O(1) per key, unlike a moving window's entry per
request). Shared across instances it runs in Redis through the `limits` library (atomic Lua scripts). In one
process it is `LocalWindows` below, the same arithmetic in a dict: `limits`' in-memory storage cost ~12 µs per
request in the gateway (five wrapped calls, a lock, and a timer thread that wakes every 10 ms while any key
exists), about a tenth of the whole pipeline's budget; this costs under 1 µs.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from keyrelay.errors import RateLimited, Unavailable
from keyrelay.pipeline.policy import RULE_RATE, Note

if TYPE_CHECKING:  # `limits` is imported only when Redis is configured
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)
WINDOW = 60.0
_KEYS_MAX = 100_000


def judge(previous: int, current: int, elapsed: float, limit: int) -> int:
    """0 if one more request fits the sliding window, else the seconds (1-60) until one would."""
    weighted = previous * (1 - elapsed / WINDOW) + current
    if math.floor(weighted) + 1 <= limit:
        return 0
    if current + 1 > limit or not previous:  # only the next window can make room
        wait = WINDOW - elapsed
    else:  # the previous window's weight decays by previous / WINDOW per second
        wait = (math.floor(weighted) + 1 - limit) * WINDOW / previous
    return min(60, max(1, math.ceil(wait)))


class LocalWindows:
    """In-process sliding window counters, one per key (single event loop: no lock needed)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, list[int]] = {}  # key -> [window number, previous count, current count]

    def hit(self, key: str, limit: int) -> int:
        """Count one request; 0 if allowed, else the seconds (1-60) until one would be."""
        now = self._clock()
        window = int(now // WINDOW)
        entry = self._counts.get(key)
        if entry is None or entry[0] != window:
            previous = entry[2] if entry is not None and entry[0] == window - 1 else 0
            if entry is None and len(self._counts) >= _KEYS_MAX:
                self._forget_old(window)
            entry = self._counts[key] = [window, previous, 0]
        wait = judge(entry[1], entry[2], now - window * WINDOW, limit)
        if not wait:
            entry[2] += 1
        return wait

    def _forget_old(self, window: int) -> None:
        for key in [k for k, e in self._counts.items() if e[0] < window - 1]:
            del self._counts[key]
        if len(self._counts) >= _KEYS_MAX:  # all current: a key flood; start over rather than grow
            self._counts.clear()


_SLOT = struct.Struct("<QqII")  # key hash (0: empty), window number, previous count, current count
_HEAD = struct.Struct("<Qq")
SHARED_SLOTS = 65_536  # 1.5 MiB file
_PROBE = 16


class SharedWindows(LocalWindows):
    """The same counters in a file that every worker of one `keyrelay serve --workers N` maps (MAP_SHARED); each
    hit reads and writes its key's slot under an exclusive `flock`, so workers count as one process would.

    Keys live in an open-addressing table (a 64-bit BLAKE2b of the key, 16 probes). A slot whose window is over is
    reused; if all 16 slots of a key's run belong to keys counted in the last two minutes, the oldest gives way and
    that key starts again from zero (a warning is logged): more than about 50,000 limited keys active at once
    need Redis (`KEYRELAY_REDIS_URL`)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        size = SHARED_SLOTS * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    @staticmethod
    def reset(path: Path) -> None:
        """An empty table (the supervisor, before it starts workers)."""
        with open(path, "wb") as f:
            f.truncate(SHARED_SLOTS * _SLOT.size)
        os.chmod(path, 0o600)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def hit(self, key: str, limit: int) -> int:
        now = self._clock()
        window = int(now // WINDOW)
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            off = self._slot(h, window)
            owner, at, previous, current = _SLOT.unpack_from(self._map, off)
            if owner != h or at != window:
                previous = current if owner == h and at == window - 1 else 0
                current = 0
            wait = judge(previous, current, now - window * WINDOW, limit)
            if not wait:
                current += 1
            _SLOT.pack_into(self._map, off, h, window, previous, current)
            return wait
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, h: int, window: int) -> int:
        """The offset of `h`'s slot: its own, else the first empty or finished one of its run, else the oldest."""
        start, free, oldest, oldest_at = h % SHARED_SLOTS, -1, -1, window
        for i in range(_PROBE):
            off = ((start + i) % SHARED_SLOTS) * _SLOT.size
            owner, at = _HEAD.unpack_from(self._map, off)
            if owner == h:
                return off
            if owner == 0:  # slots are never emptied: h is not further along
                return off if free < 0 else free
            if free < 0 and at < window - 1:
                free = off
            if at < oldest_at or oldest < 0:
                oldest, oldest_at = off, at
        if free >= 0:
            return free
        log.warning("shared rate-limit table: a key run is full, the oldest key starts again from zero")
        return oldest


def make_storage(redis_url: str | None, *, clock: Callable[[], float] = time.time,
                 shared: Path | None = None) -> LocalWindows | RedisStorage:
    """Redis when configured; else the workers' shared file (`shared`), else this process's memory."""
    if redis_url:
        from limits.aio.storage import RedisStorage

        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        return RedisStorage(uri, implementation="redispy", key_prefix="keyrelay-rl")
    if shared is not None:
        return SharedWindows(shared, clock)
    return LocalWindows(clock)


def shared_limiter(storage: LocalWindows | RedisStorage) -> SlidingWindowCounterRateLimiter | None:
    """The `limits` strategy over a Redis storage; None for counters kept by this host (`LocalWindows`)."""
    if isinstance(storage, LocalWindows):
        return None
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    return SlidingWindowCounterRateLimiter(storage)


class RateLimiter:
    def __init__(self, storage: LocalWindows | RedisStorage, *, caller_limit: int | None) -> None:
        self._local = storage if isinstance(storage, LocalWindows) else None
        self._shared = shared_limiter(storage)
        self._caller_limit = caller_limit
        self._items: dict[int, RateLimitItemPerMinute] = {}

    def check_local(self, *, source_id: str, source_limit: int | None, caller_id: str,
                    observe: Note | None = None) -> bool:
        """`check` without an await when the counters are in this process; False: call `check` instead."""
        local = self._local
        if local is None:
            return False
        if source_limit is not None:
            self._refuse(local.hit(f"source/{source_id}", source_limit), source_limit, "this source", observe)
        if self._caller_limit is not None:
            self._refuse(local.hit(f"caller/{caller_id}", self._caller_limit), self._caller_limit, "this caller")
        return True

    @staticmethod
    def _refuse(retry: int, limit: int, what: str, observe: Note | None = None) -> None:
        """Refuse an over-limit request; with `observe` (the source's policy observes, docs/security.md: observe
        mode) note it instead. The refused hit is not counted either way, so observing counts as enforcing would."""
        if not retry:
            return
        if observe is not None:
            observe(RULE_RATE)
            return
        raise RateLimited(f"Rate limit of {limit} requests per minute for {what} exceeded", retry_after=retry)

    async def check(self, *, source_id: str, source_limit: int | None, caller_id: str,
                    observe: Note | None = None) -> None:
        """Count this request against both limits, or raise RateLimited with a Retry-After in [1, 60]. `observe`:
        the source limit only notes a refusal (the per-caller limit is a deployment setting, always enforced)."""
        if self.check_local(source_id=source_id, source_limit=source_limit, caller_id=caller_id, observe=observe):
            return
        if source_limit is not None:
            self._refuse(await self._shared_hit(source_limit, "source", source_id), source_limit, "this source",
                         observe)
        if self._caller_limit is not None:
            self._refuse(await self._shared_hit(self._caller_limit, "caller", caller_id), self._caller_limit,
                         "this caller")

    async def _shared_hit(self, limit: int, kind: str, key: str) -> int:
        assert self._shared is not None
        item = self._items.get(limit)
        if item is None:
            from limits import RateLimitItemPerMinute

            item = self._items[limit] = RateLimitItemPerMinute(limit)
        try:
            if await self._shared.hit(item, kind, key):
                return 0
            stats = await self._shared.get_window_stats(item, kind, key)
        except Exception:
            raise Unavailable("Rate limit store unreachable") from None  # fail closed
        return min(60, max(1, math.ceil(stats.reset_time - time.time())))
