"""Traffic figures for the console, computed from keyrelay's own request log (so they work on the embedded
SQLite default without Prometheus): requests per minute, error rate, p50/p95 latency, rate-limit hits,
upstream failures and the busiest sources over the last hour (docs/console.md). `workspace_ids` limits every figure
to requests logged for those workspaces (a limited application's reach; None: every request).

Latency percentiles are estimated from counts in latency buckets (linear interpolation inside the bucket, as
Prometheus' `histogram_quantile` does); the buckets are narrow enough that the estimate is within a few percent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from keyrelay.model import LogEntry, TrafficCell
from keyrelay.ports import Clock, TrafficStore

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500,
    10000, 15000, 30000, 60000, 120000, 300000,
)
WINDOW_MINUTES = 60


def quantile(counts: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS_MS) -> float | None:
    """The q-quantile (0 < q < 1) of values counted per bucket (`counts[i]`: values in (bounds[i-1], bounds[i]];
    the last count: values above every bound), or None when nothing was counted."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):  # above the last bound: that bound is all we know
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - seen) / n
        seen += n
    return float(bounds[-1])


@dataclass
class Tally:
    """Counts of one group of requests (a minute, a source, or the whole window)."""

    requests: int = 0
    refused: int = 0  # 4xx
    failed: int = 0  # 5xx
    rate_limited: int = 0
    upstream_failed: int = 0
    latency: list[int] | None = None  # per bucket

    def add(self, cell: TrafficCell) -> None:
        self.requests += cell.count
        if cell.status_class == 4:
            self.refused += cell.count
        elif cell.status_class >= 5:
            self.failed += cell.count
        self.rate_limited += cell.rate_limited
        self.upstream_failed += cell.upstream_failed
        if self.latency is None:
            self.latency = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.latency[min(cell.bucket, len(LATENCY_BOUNDS_MS))] += cell.count

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.refused += other.refused
        self.failed += other.failed
        self.rate_limited += other.rate_limited
        self.upstream_failed += other.upstream_failed
        if other.latency is not None:
            mine = self.latency = self.latency or [0] * len(other.latency)
            for i, n in enumerate(other.latency):
                mine[i] += n

    @property
    def ok(self) -> int:
        return self.requests - self.refused - self.failed

    def p(self, q: float) -> float | None:
        return None if self.latency is None else quantile(self.latency, q)

    @property
    def error_rate(self) -> float | None:
        """Share of requests answered with a 5xx status."""
        return None if not self.requests else self.failed / self.requests


@dataclass(frozen=True)
class Minute:
    start: float
    tally: Tally


@dataclass(frozen=True)
class SourceTraffic:
    source_id: str
    tally: Tally


@dataclass(frozen=True)
class Overview:
    since: float
    until: float
    total: Tally
    minutes: list[Minute]
    top_sources: list[SourceTraffic]

    @property
    def per_minute(self) -> float:
        return self.total.requests / WINDOW_MINUTES


def _tallies(cells: Iterable[TrafficCell]) -> dict[int | str | None, Tally]:
    out: dict[int | str | None, Tally] = defaultdict(Tally)
    for c in cells:
        out[c.group].add(c)
    return out


class TrafficService:
    def __init__(self, store: TrafficStore, clock: Clock) -> None:
        self._store = store
        self.clock = clock

    def window(self) -> tuple[float, float]:
        """The last hour in whole minutes: 60 minutes ending with the current (partial) one."""
        until = (math.floor(self.clock() / 60) + 1) * 60.0
        return until - WINDOW_MINUTES * 60, until

    async def overview(self, *, top: int = 5, workspace_ids: Collection[str] | None = None) -> Overview:
        since, until = self.window()
        minutes = await self.minutes(since, until, workspace_ids=workspace_ids)
        total = Tally()
        for m in minutes:
            total.merge(m.tally)
        ranked = await self.sources(since=since, until=until, workspace_ids=workspace_ids)
        best = sorted(ranked.values(), key=lambda s: (-s.tally.requests, s.source_id))[:top]
        return Overview(since, until, total, minutes, best)

    async def minutes(self, since: float, until: float, *, source_id: str | None = None,
                      workspace_ids: Collection[str] | None = None) -> list[Minute]:
        cells = await self._store.by_minute(since=since, until=until, bounds=LATENCY_BOUNDS_MS, source_id=source_id,
                                            workspace_ids=workspace_ids)
        by = _tallies(cells)
        count = round((until - since) / 60)
        return [Minute(since + i * 60, by.get(i) or Tally()) for i in range(count)]

    async def sources(self, *, since: float | None = None, until: float | None = None,
                      source_ids: Sequence[str] | None = None,
                      workspace_ids: Collection[str] | None = None) -> dict[str, SourceTraffic]:
        """Per-source tallies (with latency) over the window; sources without traffic are absent."""
        if since is None or until is None:
            since, until = self.window()
        cells = await self._store.by_source(since=since, until=until, bounds=LATENCY_BOUNDS_MS,
                                            source_ids=source_ids, workspace_ids=workspace_ids)
        return {str(k): SourceTraffic(str(k), t) for k, t in _tallies(cells).items()}

    async def recent(self, *, workspace_id: str | None = None, source_id: str | None = None, door: str | None = None,
                     status_class: int | None = None, limit: int = 50,
                     workspace_ids: Collection[str] | None = None) -> list[LogEntry]:
        """The newest request-log entries matching every given filter, newest first."""
        return await self._store.recent(workspace_id=workspace_id, source_id=source_id, door=door,
                                        status_class=status_class, limit=limit, workspace_ids=workspace_ids)

