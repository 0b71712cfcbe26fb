"""Small key/value facts about the installation (token HMAC key, bootstrap markers)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.tables import meta


class SqlMetaStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key: str) -> str | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(meta.c.value).where(meta.c.key == key))).first()
        return None if row is None else str(row[0])

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless the key exists; return what is stored (first writer wins across processes)."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(meta).values(key=key, value=value))
        except IntegrityError:
            pass
        stored = await self.get(key)
        assert stored is not None
        return stored
