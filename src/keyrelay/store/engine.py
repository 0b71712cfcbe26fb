"""Engine creation (SQLite WAL or PostgreSQL) and Alembic upgrades applied at start.

A database already at `HEAD` is left alone without importing Alembic (about 10 MB of a worker's memory, with
Mako and Pygments); it is loaded only when there is a migration to apply (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0008"  # the newest migration's revision (tests/store/test_engine.py checks it against the scripts)


def make_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes (kill -9) in WAL mode
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _alembic_config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply every pending migration (up to `revision`). Safe to run on every start and from several processes on
    PostgreSQL."""
    if revision == "head" and await current_revision(engine) == HEAD:
        return  # nothing to apply (a newer revision than ours is Alembic's to refuse, below)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
        elif conn.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction: take the write lock first, so concurrent starts
            # wait for each other and a crash mid-migration leaves no half-built schema behind.
            await conn.execute(sa.text("BEGIN IMMEDIATE"))
        from alembic import command

        await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        has = await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version"))
        if not has:
            return None
        row = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])
