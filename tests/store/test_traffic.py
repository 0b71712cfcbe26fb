"""SqlTrafficStore on both backends: request-log rows counted by minute (floor of the offset from the window's
start) or by source, by status class and latency bucket, with rate-limit and upstream-failure counts; and the
newest rows under every filter the live-log page offers."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import LogEntry, TrafficCell
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.traffic import SqlTrafficStore

BOUNDS = (10.0, 100.0)
T0 = 1_700_000_000.0  # the window's start


def _e(ts: float, *, status: int = 200, latency: float = 5.0, src: str | None = "s1", door: str = "gateway",
       **kw: Any) -> LogEntry:
    return LogEntry(id=str(uuid.uuid4()), ts=ts, workspace_id="w1", source_id=src, door=door, method="GET",
                    path="/p", status=status, latency_ms=latency, **kw)


def _cells(cells: list[TrafficCell]) -> set[tuple[Any, ...]]:
    return {(c.group, c.status_class, c.bucket, c.count, c.rate_limited, c.upstream_failed) for c in cells}


async def test_rows_are_counted_by_minute_status_class_and_latency_bucket(engine: AsyncEngine) -> None:
    await SqlRequestLogStore(engine).insert_entries([
        _e(T0 - 0.001),  # before the window
        _e(T0, latency=10.0), _e(T0 + 59.999, latency=9.0),  # minute 0, bucket 0 (<= 10 ms)
        _e(T0 + 60.0, latency=10.5),  # minute 1, bucket 1
        _e(T0 + 61.0, status=429, error_code="rate_limited", latency=0.5),
        _e(T0 + 62.0, status=502, error_code="upstream_unreachable", latency=500.0),  # bucket 2: above every bound
        _e(T0 + 63.0, status=500, latency=50.0),  # an upstream's own 500, passed through
        _e(T0 + 64.0, status=503, error_code="sealed", latency=1.0),  # keyrelay's own failure, not the upstream's
        _e(T0 + 65.0, status=200, upstream_status=503, door="execute", latency=50.0),  # reported beside a 200
        _e(T0 + 120.0),  # at the window's end: outside
    ])
    cells = await SqlTrafficStore(engine).by_minute(since=T0, until=T0 + 120.0, bounds=BOUNDS)
    assert _cells(cells) == {
        (0, 2, 0, 2, 0, 0),
        (1, 2, 1, 2, 0, 1),
        (1, 4, 0, 1, 1, 0),
        (1, 5, 2, 1, 0, 1),
        (1, 5, 1, 1, 0, 1),
        (1, 5, 0, 1, 0, 0),
    }


async def test_one_source_only(engine: AsyncEngine) -> None:
    await SqlRequestLogStore(engine).insert_entries([_e(T0 + 1), _e(T0 + 2, src="s2"), _e(T0 + 3, src="s2")])
    cells = await SqlTrafficStore(engine).by_minute(since=T0, until=T0 + 60, bounds=BOUNDS, source_id="s2")
    assert _cells(cells) == {(0, 2, 0, 2, 0, 0)}


async def test_rows_are_counted_by_source_with_or_without_latency(engine: AsyncEngine) -> None:
    await SqlRequestLogStore(engine).insert_entries([
        _e(T0 + 1), _e(T0 + 2, latency=50.0), _e(T0 + 3, src="s2", status=404), _e(T0 + 4, src=None, status=401),
        _e(T0 - 10, src="s3")])
    store = SqlTrafficStore(engine)
    assert _cells(await store.by_source(since=T0, until=T0 + 60, bounds=BOUNDS)) == {
        ("s1", 2, 0, 1, 0, 0), ("s1", 2, 1, 1, 0, 0), ("s2", 4, 0, 1, 0, 0)}
    assert _cells(await store.by_source(since=T0, until=T0 + 60, bounds=None)) == {
        ("s1", 2, 0, 2, 0, 0), ("s2", 4, 0, 1, 0, 0)}
    assert _cells(await store.by_source(since=T0, until=T0 + 60, bounds=None, source_ids=["s2", "nope"])) == {
        ("s2", 4, 0, 1, 0, 0)}


async def test_recent_rows_match_every_filter_newest_first(engine: AsyncEngine) -> None:
    rows = [_e(T0 + 1), _e(T0 + 2, status=404), _e(T0 + 3, door="mcp"), _e(T0 + 4, src="s2", status=503),
            _e(T0 + 5, status=201)]
    await SqlRequestLogStore(engine).insert_entries(rows)
    store = SqlTrafficStore(engine)

    async def ts(**kw: Any) -> list[float]:
        return [e.ts - T0 for e in await store.recent(**kw)]

    assert await ts() == [5, 4, 3, 2, 1]
    assert await ts(limit=2) == [5, 4]
    assert await ts(source_id="s1", status_class=2) == [5, 3, 1]
    assert await ts(door="mcp") == [3]
    assert await ts(status_class=4) == [2]
    assert await ts(status_class=5, workspace_id="w1") == [4]
    assert await ts(workspace_id="other") == []
    assert (await store.recent(limit=1))[0] == rows[-1]  # every field comes back


async def test_a_set_of_workspaces_only(engine: AsyncEngine) -> None:
    """A limited application's figures: requests of its workspaces, never those of another or of none."""
    rows = [_e(T0 + 1), replace(_e(T0 + 2, src="s2"), workspace_id="w2"), replace(_e(T0 + 3, src=None),
                                                                                   workspace_id=None)]
    await SqlRequestLogStore(engine).insert_entries(rows)
    store = SqlTrafficStore(engine)
    assert _cells(await store.by_minute(since=T0, until=T0 + 60, bounds=BOUNDS, workspace_ids={"w1"})) == {
        (0, 2, 0, 1, 0, 0)}
    assert _cells(await store.by_minute(since=T0, until=T0 + 60, bounds=BOUNDS)) == {(0, 2, 0, 3, 0, 0)}
    assert {c.group for c in await store.by_source(since=T0, until=T0 + 60, bounds=None,
                                                   workspace_ids={"w2"})} == {"s2"}
    assert [e.workspace_id for e in await store.recent(workspace_ids={"w1", "w2"})] == ["w2", "w1"]
    assert await store.recent(workspace_ids=set()) == []
