"""The request log: batching, fail-closed health, retention, and live logs shared through Redis."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import LogEntry
from keyrelay.requestlog import Metrics, RequestLog
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.tables import gateway_logs
from support.adversarial import wait_until
from support.keyrelay import Admin, first_live_log, scaled_out_pair
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream


def _event(ts: float, **kw: Any) -> LogEntry:
    values: dict[str, Any] = {"id": uuid.uuid4().hex, "ts": ts, "workspace_id": "w", "source_id": "s",
                              "door": "gateway", "method": "GET", "path": "/x", "status": 200, "latency_ms": 1.0}
    values.update(kw)
    return LogEntry(**values)


async def test_events_are_written_in_batches_and_old_ones_purged(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    await upgrade(engine)
    now = [1_000_000.0]
    log = RequestLog(SqlRequestLogStore(engine), Metrics(), clock=lambda: now[0], retention_days=1)
    for i in range(2500):  # more than one batch; the first 100 are three days old
        log.emit(_event(now[0] - 3 * 86400 if i < 100 else now[0] - 3600))
    await log.flush()
    assert await _timestamps(engine) == {now[0] - 3 * 86400: 100, now[0] - 3600: 2400}  # every event written
    await log.purge_if_due()
    assert await _timestamps(engine) == {now[0] - 3600: 2400}  # the old ones gone, every recent one kept
    await engine.dispose()


async def _timestamps(engine: AsyncEngine) -> dict[float, int]:
    """How many rows the request log holds per timestamp (counted in SQL: queries are capped at 1000 rows)."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(gateway_logs.c.ts, sa.func.count()).group_by(gateway_logs.c.ts))
        return {float(ts): int(n) for ts, n in rows}


async def test_an_unwritable_log_turns_unhealthy_after_the_outage_window(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")  # no migration: inserts fail
    now = [0.0]
    log = RequestLog(SqlRequestLogStore(engine), Metrics(), clock=lambda: now[0], outage_seconds=10)
    log.emit(_event(0))
    await log.flush()
    assert log.healthy
    now[0] = 11
    await log.flush()
    assert not log.healthy
    await engine.dispose()


def test_live_logs_reach_subscribers_of_another_instance(tmp_path: Path, postgres: PostgresServer,
                                                         redis_server: RedisServer, upstream: FakeUpstream) -> None:
    with scaled_out_pair(tmp_path, postgres, redis_server.url) as (one, two):
        admin = Admin(one.url)
        ws = admin.workspace("live")
        admin.source(ws, upstream_url=upstream.url)
        key = admin.api_key(ws, ["proxy", "logs"])
        with first_live_log(one.url, key) as got:
            # `one` subscribes to Redis in the background after it starts: until it has, an entry published by
            # `two` reaches nobody. Send requests until one arrives (bounded), rather than guess a delay.
            deadline = time.monotonic() + 15
            while not got:
                assert time.monotonic() < deadline, "no live entry reached the other instance within 15 s"
                r = httpx.get(f"{two.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 200
                wait_until(lambda: got, 0.5, step=0.02)
        admin.close()
    assert got and got[0]["workspace_id"] == ws and got[0]["status"] == 200
