"""Traffic figures from the request log: percentile estimates from bucket counts (table-driven), tallies, and
TrafficService's hour in whole minutes over a real SQLite request log with an injected clock."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from keyrelay.manage.traffic import LATENCY_BOUNDS_MS, WINDOW_MINUTES, Tally, TrafficService, quantile
from keyrelay.model import LogEntry, TrafficCell
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.traffic import SqlTrafficStore
from support.db import migrated_engine

BOUNDS = (10.0, 20.0, 40.0)


@pytest.mark.parametrize(("counts", "q", "want"), [
    ([0, 0, 0, 0], 0.5, None),  # nothing counted
    ([10, 0, 0, 0], 0.5, 5.0),  # half way into the first bucket (0, 10]
    ([10, 0, 0, 0], 1.0, 10.0),
    ([0, 10, 0, 0], 0.5, 15.0),  # (10, 20]
    ([5, 5, 0, 0], 0.5, 10.0),  # exactly at a boundary
    ([5, 5, 0, 0], 0.95, 19.0),
    ([0, 0, 0, 4], 0.5, 40.0),  # above every bound: the last bound is all that is known
    ([98, 0, 0, 2], 0.95, 9.6938),
    ([1, 1, 1, 1], 0.75, 40.0),
])
def test_quantiles_interpolate_within_buckets(counts: list[int], q: float, want: float | None) -> None:
    got = quantile(counts, q, BOUNDS)
    assert got == pytest.approx(want, abs=1e-3) if want is not None else got is None


def test_tallies_add_cells_and_merge() -> None:
    t = Tally()
    t.add(TrafficCell(0, 2, 0, 7, 0, 0))
    t.add(TrafficCell(0, 4, 3, 2, 1, 0))
    t.add(TrafficCell(0, 5, len(LATENCY_BOUNDS_MS) + 5, 1, 0, 1))  # an out-of-range bucket counts as the slowest
    assert (t.requests, t.ok, t.refused, t.failed, t.rate_limited, t.upstream_failed) == (10, 7, 2, 1, 1, 1)
    assert t.error_rate == pytest.approx(0.1)
    assert t.latency is not None and t.latency[-1] == 1 and sum(t.latency) == 10
    total = Tally()
    total.merge(t)
    total.merge(Tally())
    total.merge(t)
    assert (total.requests, total.failed, sum(total.latency or [])) == (20, 2, 20)
    assert Tally().error_rate is None and Tally().p(0.5) is None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _e(ts: float, src: str = "s1", status: int = 200, latency: float = 4.0, door: str = "gateway",
       **kw: Any) -> LogEntry:
    return LogEntry(id=str(uuid.uuid4()), ts=ts, workspace_id="w", source_id=src, door=door, method="GET",
                    path="/p", status=status, latency_ms=latency, **kw)


async def test_the_overview_is_the_last_sixty_minutes_to_the_end_of_this_one(tmp_path: Path) -> None:
    minute = 1_699_999_980.0  # a whole minute (28333333 x 60)
    now = minute + 30
    async with migrated_engine(None, tmp_path) as engine:
        await SqlRequestLogStore(engine).insert_entries([
            _e(minute - 59 * 60 - 1),  # just before the window
            _e(minute - 59 * 60, latency=1.0),  # the window's first minute
            *[_e(minute + 5, latency=4.0) for _ in range(18)],  # this (partial) minute
            _e(minute + 6, status=502, error_code="upstream_timeout", latency=30000.0),
            _e(minute + 7, src="s2", status=429, error_code="rate_limited", latency=0.3),
            _e(minute + 8, src="s2", status=404),
        ])
        traffic = TrafficService(SqlTrafficStore(engine), Clock(now))
        assert traffic.window() == (minute + 60 - WINDOW_MINUTES * 60, minute + 60)
        ov = await traffic.overview(top=1)
    assert len(ov.minutes) == WINDOW_MINUTES
    assert ov.minutes[0].start == ov.since and ov.minutes[-1].start == minute
    assert ov.minutes[0].tally.requests == 1 and ov.minutes[-1].tally.requests == 21
    assert sum(m.tally.requests for m in ov.minutes[1:-1]) == 0
    t = ov.total
    assert (t.requests, t.refused, t.failed, t.rate_limited, t.upstream_failed) == (22, 2, 1, 1, 1)
    assert ov.per_minute == pytest.approx(22 / 60)
    assert t.error_rate == pytest.approx(1 / 22)
    assert 3.0 < (t.p(0.5) or 0) <= 5.0  # 4 ms, in the (3, 5] bucket
    assert (t.p(0.99) or 0) > 15000
    assert [s.source_id for s in ov.top_sources] == ["s1"]
    assert ov.top_sources[0].tally.requests == 20


async def test_per_source_tallies_and_recent_rows(tmp_path: Path) -> None:
    async with migrated_engine(None, tmp_path) as engine:
        now = 1_700_000_000.0
        await SqlRequestLogStore(engine).insert_entries([_e(now - 10), _e(now - 9, src="s2", door="mcp"),
                                                         _e(now - 4000)])
        traffic = TrafficService(SqlTrafficStore(engine), Clock(now))
        by_source = await traffic.sources()
        assert {k: v.tally.requests for k, v in by_source.items()} == {"s1": 1, "s2": 1}
        assert set(await traffic.sources(source_ids=["s2"])) == {"s2"}
        minutes = await traffic.minutes(*traffic.window(), source_id="s2")
        assert sum(m.tally.requests for m in minutes) == 1
        assert [e.source_id for e in await traffic.recent(door="mcp")] == ["s2"]
