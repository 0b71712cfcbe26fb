"""Coarse deadlines (egress/deadlines.py): one sweeping timer per loop fires what is due, at most a tick late,
and never what was discarded."""

from __future__ import annotations

import asyncio
import time

from keyrelay.egress.deadlines import TICK, deadlines_for


async def test_a_due_deadline_fires_once_and_a_discarded_one_never() -> None:
    loop = asyncio.get_running_loop()
    d = deadlines_for(loop)
    assert deadlines_for(loop) is d  # one per loop
    fired: list[str] = []
    done = asyncio.Event()
    now = time.monotonic()
    d.add("due", now, lambda: (fired.append("due"), done.set()))
    d.add("gone", now, lambda: fired.append("gone"))
    d.add("later", now + 3600, lambda: fired.append("later"))
    d.discard("gone")
    await asyncio.wait_for(done.wait(), timeout=10)
    assert fired == ["due"]
    d.discard("later")
    d.discard("never-added")  # harmless


async def test_adding_a_key_again_replaces_its_deadline() -> None:
    d = deadlines_for(asyncio.get_running_loop())
    fired: list[int] = []
    done = asyncio.Event()
    d.add("k", time.monotonic() + 3600, lambda: fired.append(1))
    d.add("k", time.monotonic(), lambda: (fired.append(2), done.set()))
    await asyncio.wait_for(done.wait(), timeout=10)
    assert fired == [2]


async def test_the_sweep_stops_when_nothing_is_armed() -> None:
    d = deadlines_for(asyncio.get_running_loop())
    done = asyncio.Event()
    d.add("k", time.monotonic(), done.set)
    await asyncio.wait_for(done.wait(), timeout=10)
    assert d._handle is None  # no timer keeps waking an idle loop
    assert TICK <= 0.1
