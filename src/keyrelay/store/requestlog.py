"""Request log rows: batched inserts, filtered reads, retention."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import LogEntry, LogQuery
from keyrelay.store.tables import gateway_logs

_COLUMNS = tuple(f.name for f in fields(LogEntry))


class SqlRequestLogStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # The batch insert is compiled once for the dialect and sent as driver-level executemany with rows as
        # plain tuples: SQLAlchemy's per-row parameter processing cost more than the rest of the write.
        compiled = sa.insert(gateway_logs).values({c: sa.bindparam(c) for c in _COLUMNS}).compile(
            dialect=engine.dialect)
        order = compiled.positiontup or list(_COLUMNS)
        self._insert_sql = str(compiled)
        self._row = operator.attrgetter(*order)

    def row(self, event: LogEntry) -> tuple[Any, ...]:
        """An event as the plain tuple `insert_rows` takes (tuples of plain values are not tracked by the GC)."""
        return tuple(self._row(event))

    async def insert_entries(self, events: Sequence[LogEntry]) -> None:
        await self.insert_rows([self._row(e) for e in events])

    async def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        async with self._engine.begin() as conn:
            await conn.exec_driver_sql(self._insert_sql, rows)

    async def query(self, q: LogQuery) -> list[LogEntry]:
        stmt = sa.select(gateway_logs).order_by(gateway_logs.c.ts.desc()).limit(max(1, min(q.limit, 1000)))
        if q.workspace_id is not None:
            stmt = stmt.where(gateway_logs.c.workspace_id == q.workspace_id)
        if q.workspace_ids is not None:
            stmt = stmt.where(gateway_logs.c.workspace_id.in_(sorted(q.workspace_ids)))
        if q.source_id is not None:
            stmt = stmt.where(gateway_logs.c.source_id == q.source_id)
        if q.status is not None:
            stmt = stmt.where(gateway_logs.c.status == q.status)
        if q.since is not None:
            stmt = stmt.where(gateway_logs.c.ts >= q.since)
        if q.approval_id is not None:
            stmt = stmt.where(gateway_logs.c.approval_id == q.approval_id)
        async with self._engine.connect() as conn:
            return [LogEntry(**r._asdict()) for r in await conn.execute(stmt)]

    async def tail(self, after: int | None, *, limit: int = 1000) -> tuple[int, list[LogEntry]]:
        """Rows written after row number `after` (SQLite's rowid, which only grows), oldest first, and the last row
        number seen; with `after` None, only where the table ends now."""
        rowid: sa.ColumnClause[int] = sa.literal_column("rowid")
        async with self._engine.connect() as conn:
            if after is None:
                return int((await conn.execute(sa.select(sa.func.max(rowid)).select_from(gateway_logs))).scalar()
                           or 0), []
            rows = (await conn.execute(sa.select(rowid.label("n"), gateway_logs).where(rowid > after)
                                       .order_by(rowid).limit(limit))).all()
        if not rows:
            return after, []
        return int(rows[-1][0]), [LogEntry(**{k: v for k, v in r._asdict().items() if k != "n"}) for r in rows]

    async def purge(self, *, before: float) -> int:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(gateway_logs).where(gateway_logs.c.ts < before))
        return int(res.rowcount or 0)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
