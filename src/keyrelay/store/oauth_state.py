"""OAuth2 token state (one sealed field per source) and the cross-process refresh lock (docs/security.md: OAuth2).

`locked(source_id)` opens a transaction that holds the source's refresh lock until it commits or rolls back:
PostgreSQL `pg_advisory_xact_lock` (released by the server if the holder's connection dies), SQLite
`BEGIN IMMEDIATE` (the database write lock). Waiting for the lock is bounded by `LOCK_WAIT_SECONDS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyrelay.errors import NotFound, UpstreamAuthFailed
from keyrelay.model import OAUTH_STATE_FIELD, OAuthRecord, SealedField
from keyrelay.store.tables import source_secrets, sources

LOCK_WAIT_SECONDS = 30
_LOCK_NAMESPACE = b"keyrelay-oauth2-refresh:"


def lock_key(source_id: str) -> int:
    """A signed 64-bit advisory-lock key derived from the source id."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + source_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _read(conn: AsyncConnection, source_id: str) -> OAuthRecord:
    status = (await conn.execute(sa.select(sources.c.status).where(sources.c.id == source_id))).scalar()
    row = (await conn.execute(sa.select(source_secrets.c.key_id, source_secrets.c.ciphertext,
                                        source_secrets.c.destination).where(
        source_secrets.c.source_id == source_id, source_secrets.c.field == OAUTH_STATE_FIELD))).first()
    state = None if row is None else SealedField(OAUTH_STATE_FIELD, row.key_id, bytes(row.ciphertext),
                                                 row.destination)
    return OAuthRecord(status=status, state=state)


class SqlOAuthStateTxn:
    def __init__(self, conn: AsyncConnection, source_id: str) -> None:
        self._conn = conn
        self._source_id = source_id

    async def read(self) -> OAuthRecord:
        return await _read(self._conn, self._source_id)

    async def write_state(self, sealed: SealedField) -> None:
        if sealed.field != OAUTH_STATE_FIELD:
            raise ValueError("only the OAuth state field is written here")
        where = sa.and_(source_secrets.c.source_id == self._source_id, source_secrets.c.field == OAUTH_STATE_FIELD)
        res = await self._conn.execute(sa.update(source_secrets).where(where).values(
            key_id=sealed.key_id, ciphertext=sealed.ciphertext, destination=sealed.destination))
        if not res.rowcount:
            await self._conn.execute(sa.insert(source_secrets).values(
                source_id=self._source_id, field=OAUTH_STATE_FIELD, key_id=sealed.key_id,
                ciphertext=sealed.ciphertext, destination=sealed.destination))

    async def mark_needs_reauth(self, *, now: float) -> None:
        await self._conn.execute(sa.update(sources).where(
            sources.c.id == self._source_id, sources.c.status == "active").values(status="needs_reauth",
                                                                                  updated_at=now))


class SqlOAuthStateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, source_id: str) -> OAuthRecord:
        """The current state without taking the lock (a fresh token needs no lock)."""
        async with self._engine.connect() as conn:
            return await _read(conn, source_id)

    @asynccontextmanager
    async def locked(self, source_id: str) -> AsyncIterator[SqlOAuthStateTxn]:
        try:
            async with self._engine.begin() as conn:
                await _lock(conn, source_id)
                yield SqlOAuthStateTxn(conn, source_id)
        except IntegrityError:
            raise NotFound("Source not found") from None  # deleted while its token was being refreshed


async def _lock(conn: AsyncConnection, source_id: str) -> None:
    try:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(source_id)})
        else:
            # pysqlite opens transactions lazily: take the write lock now (busy_timeout bounds the wait)
            await conn.execute(sa.text("BEGIN IMMEDIATE"))
    except DBAPIError:
        raise UpstreamAuthFailed("Timed out waiting for another OAuth token refresh of this source") from None
