"""A migrated engine on either backend, for repository and vault tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.engine import make_engine, upgrade


def url_for(database_url: str | None, tmp_path: Path) -> str:
    """`database_url` from the fixture, or an SQLite file in tmp_path when it is None."""
    return database_url or f"sqlite+aiosqlite:///{tmp_path / 'keyrelay.db'}"


@contextlib.asynccontextmanager
async def migrated_engine(database_url: str | None, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(url_for(database_url, tmp_path))
    try:
        await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
