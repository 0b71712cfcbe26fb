"""SqlRequestLogStore on both backends: batched insert, filtered queries, retention purge."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import LogEntry, LogQuery
from keyrelay.store.requestlog import SqlRequestLogStore
from support.db import migrated_engine


def _event(ts: float, *, ws: str | None = "ws-a", src: str | None = "src-1", status: int = 200,
           **kw: object) -> LogEntry:
    return LogEntry(id=str(uuid.uuid4()), ts=ts, workspace_id=ws, source_id=src, door="gateway", method="GET",
                 path="/api/x/proxy/echo/a", status=status, latency_ms=1.5, **kw)  # type: ignore[arg-type]


async def test_insert_and_read_back_every_field(engine: AsyncEngine) -> None:
    store = SqlRequestLogStore(engine)
    e = _event(100.0, upstream_latency_ms=0.75, bytes_in=12, bytes_out=3_000_000_000, error_code="rate_limited",
               error_message="Rate limit", caller="key:abc", connector="http")
    await store.insert_entries([e])
    await store.insert_entries([])  # no-op
    assert await store.query(LogQuery()) == [e]


async def test_query_filters_order_and_limit(engine: AsyncEngine) -> None:
    store = SqlRequestLogStore(engine)
    events = [
        _event(1.0), _event(2.0, status=404), _event(3.0, ws="ws-b", src="src-2"),
        _event(4.0, src="src-3", status=404), _event(5.0, ws=None, src=None, status=401),
    ]
    await store.insert_entries(events)

    async def ts(**kw: object) -> list[float]:
        return [e.ts for e in await store.query(LogQuery(**kw))]  # type: ignore[arg-type]

    assert await ts() == [5.0, 4.0, 3.0, 2.0, 1.0]  # newest first
    assert await ts(workspace_id="ws-a") == [4.0, 2.0, 1.0]
    assert await ts(source_id="src-1") == [2.0, 1.0]
    assert await ts(status=404) == [4.0, 2.0]
    assert await ts(since=3.0) == [5.0, 4.0, 3.0]
    assert await ts(workspace_id="ws-a", status=404, since=3.0) == [4.0]
    assert await ts(limit=2) == [5.0, 4.0]
    assert await ts(limit=0) == [5.0]  # clamped to at least one
    assert await ts(workspace_id="nope") == []


async def test_limit_is_capped_at_1000(engine: AsyncEngine) -> None:
    store = SqlRequestLogStore(engine)
    await store.insert_entries([_event(float(i)) for i in range(1005)])
    assert len(await store.query(LogQuery(limit=5000))) == 1000


async def test_purge_before(engine: AsyncEngine) -> None:
    store = SqlRequestLogStore(engine)
    await store.insert_entries([_event(float(i)) for i in range(10)])
    assert await store.purge(before=4.0) == 4
    assert [e.ts for e in await store.query(LogQuery())] == [float(i) for i in range(9, 3, -1)]
    assert await store.purge(before=4.0) == 0
    await store.ping()


async def test_tail_reads_rows_written_after_a_row_number(tmp_path: Path) -> None:
    """The workers' live-log feed on SQLite (requestlog.TableFeed): start where the table ends, then every row
    written since, oldest first, whatever their timestamps."""
    async with migrated_engine(None, tmp_path) as engine:
        store = SqlRequestLogStore(engine)
        await store.insert_entries([_event(50.0)])
        start, none = await store.tail(None)
        assert none == [] and start >= 1
        later, older = _event(300.0), _event(10.0)  # written in this order, timestamps the other way round
        await store.insert_entries([later])
        await store.insert_entries([older])
        end, rows = await store.tail(start)
        assert rows == [later, older] and end == start + 2
        assert await store.tail(end) == (end, [])
        _, capped = await store.tail(start, limit=1)
        assert capped == [later]
