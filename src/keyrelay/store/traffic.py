"""Aggregates over the request log (`gateway_logs`) for the console's overview: counts by minute or by source,
status class and latency bucket, computed by the database in one pass over the window (the `ts` index bounds
it). The same SQL runs on SQLite and PostgreSQL; percentiles are estimated from the bucket counts by
`manage/traffic.py`, so no database needs a percentile function.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import LogEntry, TrafficCell
from keyrelay.store.tables import gateway_logs

UPSTREAM_ERRORS = ("upstream_unreachable", "upstream_timeout", "upstream_auth_failed")
_RECENT_MAX = 500

g = gateway_logs


def _status_class() -> sa.ColumnElement[Any]:
    return g.c.status // 100


def _bucket(bounds: Sequence[float] | None) -> sa.ColumnElement[Any]:
    if not bounds:
        return sa.literal_column("0")
    return sa.case(*[(g.c.latency_ms <= b, i) for i, b in enumerate(bounds)], else_=len(bounds))


def _flags() -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    limited = sa.func.sum(sa.case((g.c.error_code == "rate_limited", 1), else_=0))
    upstream = sa.func.sum(sa.case((sa.or_(
        g.c.error_code.in_(UPSTREAM_ERRORS),
        g.c.upstream_status >= 500,  # the upstream answered with its own server error
        sa.and_(g.c.status >= 500, g.c.error_code.is_(None)),  # ... passed through as it was
    ), 1), else_=0))
    return limited, upstream


def _names(*labels: str) -> list[sa.ColumnElement[Any]]:
    """GROUP BY the select's output names: an expression repeated there would carry its own bound parameters,
    which PostgreSQL cannot match to the select's."""
    return [sa.literal_column(name) for name in labels]


def _within(q: sa.Select[Any], workspace_ids: Collection[str] | None) -> sa.Select[Any]:
    """Only requests logged for one of `workspace_ids` (None: every request, those of no workspace included)."""
    return q if workspace_ids is None else q.where(g.c.workspace_id.in_(sorted(workspace_ids)))


class SqlTrafficStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _minute(self, since: float) -> sa.ColumnElement[Any]:
        offset = (g.c.ts - since) / 60
        if self._engine.dialect.name == "postgresql":  # CAST rounds there; floor is what a minute index means
            return sa.cast(sa.func.floor(offset), sa.Integer)
        return sa.cast(offset, sa.Integer)  # SQLite's CAST truncates, which is floor for offsets >= 0

    async def by_minute(self, *, since: float, until: float, bounds: Sequence[float], source_id: str | None = None,
                        workspace_ids: Collection[str] | None = None) -> list[TrafficCell]:
        """Cells grouped by minute index (0 = the minute starting at `since`); with `workspace_ids`, only requests
        logged for one of those workspaces."""
        minute, cls, bucket = self._minute(since).label("grp"), _status_class().label("cls"), _bucket(bounds)
        limited, upstream = _flags()
        q = (sa.select(minute, cls, bucket.label("bucket"), sa.func.count().label("n"), limited.label("limited"),
                       upstream.label("upstream"))
             .where(g.c.ts >= since, g.c.ts < until).group_by(*_names("grp", "cls", "bucket")))
        if source_id is not None:
            q = q.where(g.c.source_id == source_id)
        return await self._cells(_within(q, workspace_ids))

    async def by_source(self, *, since: float, until: float, bounds: Sequence[float] | None,
                        source_ids: Sequence[str] | None = None,
                        workspace_ids: Collection[str] | None = None) -> list[TrafficCell]:
        """Cells grouped by source id (requests that named no source are left out)."""
        cls, bucket = _status_class().label("cls"), _bucket(bounds)
        limited, upstream = _flags()
        q = (sa.select(g.c.source_id.label("grp"), cls, bucket.label("bucket"), sa.func.count().label("n"),
                       limited.label("limited"), upstream.label("upstream"))
             .where(g.c.ts >= since, g.c.ts < until, g.c.source_id.is_not(None))
             .group_by(*_names("grp", "cls", *(("bucket",) if bounds else ()))))
        if source_ids is not None:
            q = q.where(g.c.source_id.in_(list(source_ids)))
        return await self._cells(_within(q, workspace_ids))

    async def _cells(self, q: sa.Select[Any]) -> list[TrafficCell]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(q)
            return [TrafficCell(group=r.grp, status_class=int(r.cls), bucket=int(r.bucket), count=int(r.n),
                                rate_limited=int(r.limited or 0), upstream_failed=int(r.upstream or 0))
                    for r in rows]

    async def recent(self, *, workspace_id: str | None = None, source_id: str | None = None,
                     door: str | None = None, status_class: int | None = None, limit: int = 50,
                     workspace_ids: Collection[str] | None = None) -> list[LogEntry]:
        """The newest entries matching every given filter, newest first."""
        q = sa.select(g).order_by(g.c.ts.desc()).limit(max(1, min(limit, _RECENT_MAX)))
        if workspace_id is not None:
            q = q.where(g.c.workspace_id == workspace_id)
        if source_id is not None:
            q = q.where(g.c.source_id == source_id)
        if door is not None:
            q = q.where(g.c.door == door)
        if status_class is not None:
            q = q.where(g.c.status >= status_class * 100, g.c.status < status_class * 100 + 100)
        q = _within(q, workspace_ids)
        async with self._engine.connect() as conn:
            return [LogEntry(**r._asdict()) for r in await conn.execute(q)]
