"""Repository tests run against a migrated engine on both backends (SQLite file, fresh PostgreSQL DB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from support.db import migrated_engine


@pytest.fixture
async def engine(database_url: str | None, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, tmp_path) as eng:
        yield eng
