"""Engine creation and migrations: upgrade is idempotent, brings an older database to the head, and leaves one
at the head alone without loading Alembic; SQLite runs in WAL mode with foreign keys on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.engine import HEAD, MIGRATIONS, current_revision, make_engine, upgrade
from keyrelay.store.tables import metadata
from support.db import url_for


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str | None, tmp_path: Path) -> None:
    engine = make_engine(url_for(database_url, tmp_path))
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        head = await current_revision(engine)
        assert head is not None
        assert set(metadata.tables) <= await _tables(engine)
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('probe', 'kept')"))
        await upgrade(engine)
        await upgrade(engine)
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT value FROM meta WHERE key = 'probe'"))).scalar_one() == "kept"
    finally:
        await engine.dispose()


def test_head_names_the_newest_migration() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD


async def test_an_older_database_is_brought_to_the_head(database_url: str | None, tmp_path: Path) -> None:
    engine = make_engine(url_for(database_url, tmp_path))
    try:
        await upgrade(engine, "0007")
        assert await current_revision(engine) == "0007"
        await upgrade(engine)
        assert await current_revision(engine) == HEAD
        assert "console_sessions" in await _tables(engine)  # what 0008 adds
    finally:
        await engine.dispose()


_START = """
import asyncio, sys
from keyrelay.store.engine import make_engine, upgrade
async def main():
    engine = make_engine(sys.argv[1])
    await upgrade(engine)
    await engine.dispose()
asyncio.run(main())
print("alembic" in sys.modules)
"""


async def test_a_database_at_the_head_is_left_alone_without_loading_alembic(database_url: str | None,
                                                                             tmp_path: Path) -> None:
    url = url_for(database_url, tmp_path)
    engine = make_engine(url)
    try:
        await upgrade(engine, "0007")
    finally:
        await engine.dispose()
    run = [sys.executable, "-c", _START, url]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True)
    assert first.stdout.split() == ["True"]  # a migration to apply: Alembic runs
    again = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True)
    assert again.stdout.split() == ["False"]  # at the head: not even imported


async def test_upgrade_is_safe_from_two_engines_at_once(database_url: str | None, tmp_path: Path) -> None:
    import asyncio

    url = url_for(database_url, tmp_path)
    a, b = make_engine(url), make_engine(url)
    try:
        await asyncio.gather(upgrade(a), upgrade(b))
        assert await current_revision(a) == await current_revision(b) is not None
    finally:
        await a.dispose()
        await b.dispose()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(url_for(None, tmp_path))
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one().lower() == "wal"
            assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar_one() == 1
            assert (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar_one() >= 1000
    finally:
        await engine.dispose()
    assert (tmp_path / "keyrelay.db-wal").exists() or (tmp_path / "keyrelay.db").exists()
    header = (tmp_path / "keyrelay.db").read_bytes()[:20]
    assert header[18:20] == b"\x02\x02"  # file format bytes 2/2 = WAL, persisted in the database file
