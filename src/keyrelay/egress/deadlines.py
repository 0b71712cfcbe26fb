"""Coarse deadlines for many short waits: one timer per event loop instead of one per wait.

Arming and cancelling a uvloop timer costs ~2.7 µs, and a proxied request would pay it for the header-read
timeout, the upstream response-head deadline and each wait for upstream body bytes. Here arming is a dict
insert and cancelling a dict pop; a sweep every `TICK` seconds (only while something is armed) fires what has
expired, at most `TICK` late.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Hashable

TICK = 0.05
IDLE_TICK = 1.0  # for long waits that many connections hold at once (keep-alive): a sweep a second

_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()
_idle_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()


def deadlines_for(loop: asyncio.AbstractEventLoop) -> Deadlines:
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = Deadlines(loop)
    return found


def idle_deadlines_for(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The loop's deadlines for idle connections: at most `IDLE_TICK` late, so that thousands of idle keep-alive
    connections cost one short sweep a second, not twenty."""
    found = _idle_per_loop.get(loop)
    if found is None:
        found = _idle_per_loop[loop] = Deadlines(loop, tick=IDLE_TICK)
    return found


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick: float = TICK) -> None:
        self._loop = loop
        self._tick = tick
        self._items: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, when: float, fire: Callable[[], None]) -> None:
        """Call `fire()` once `time.monotonic()` passes `when`, unless `key` is discarded first (one per key)."""
        self._items[key] = (when, fire)
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._sweep)

    def discard(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def _sweep(self) -> None:
        self._handle = None
        now = time.monotonic()
        due = [key for key, (when, _) in self._items.items() if when <= now]
        for key in due:
            entry = self._items.pop(key, None)
            if entry is not None:
                entry[1]()
        if self._items:
            self._handle = self._loop.call_later(self._tick, self._sweep)
