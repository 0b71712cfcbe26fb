"""Key ring rows and the re-encryption queries used by `keyrelay vault rotate` and the one-time re-seal of
ciphertexts written before credentials were bound to their destination."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import internal_destination
from keyrelay.store.tables import (
    approvals,
    connect_oauth_states,
    oauth_clients,
    source_secrets,
    sources,
    vault_keys,
    webhooks,
)

# Sealed values outside `source_secrets` (table, id column, ciphertext column). Their vault context is
# (table name, row id, ciphertext column name): see store/tables.py.
SEALED_ELSEWHERE: tuple[tuple[sa.Table, str, str], ...] = (
    (oauth_clients, "connector", "client_secret"),
    (webhooks, "id", "secret"),
    (connect_oauth_states, "digest", "verifier"),
)


@dataclass(frozen=True)
class KeyRow:
    id: str
    wrapped: bytes
    status: str


@dataclass(frozen=True)
class SecretRow:
    source_id: str
    workspace_id: str
    field: str
    key_id: str
    ciphertext: bytes = dataclasses.field(repr=False)
    destination: str | None = None  # None: sealed before destinations were bound
    connector: str = ""
    config: str = "{}"  # the source's config JSON (what its destination is computed from)
    table: str = "source_secrets"  # or a table of SEALED_ELSEWHERE (`source_id` is then the row id)


class SqlKeyRingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def keys(self) -> list[KeyRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(vault_keys).order_by(vault_keys.c.created_at))
            return [KeyRow(r.id, bytes(r.wrapped), r.status) for r in rows]

    async def add_first_key(self, *, key_id: str, wrapped: bytes, now: float) -> bool:
        """Insert the first key only if the ring is empty; False if another process got there first."""
        try:
            async with self._engine.begin() as conn:
                # racing first starts must not each see an empty ring: take the write lock before counting
                if conn.dialect.name == "postgresql":  # READ COMMITTED sees rows committed meanwhile
                    await conn.execute(sa.text("LOCK TABLE vault_keys IN SHARE ROW EXCLUSIVE MODE"))
                elif conn.dialect.name == "sqlite":  # pysqlite would begin only at the INSERT
                    await conn.execute(sa.text("BEGIN IMMEDIATE"))
                count = (await conn.execute(sa.select(sa.func.count()).select_from(vault_keys))).scalar_one()
                if count:
                    return False
                await conn.execute(sa.insert(vault_keys).values(id=key_id, wrapped=wrapped, status="active",
                                                                created_at=now))
        except IntegrityError:
            return False
        return True

    async def activate_new_key(self, *, key_id: str, wrapped: bytes, now: float) -> None:
        """Add a key and make it the only active one; older keys become retired (still readable)."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(vault_keys).values(status="retired"))
            await conn.execute(sa.insert(vault_keys).values(id=key_id, wrapped=wrapped, status="active",
                                                            created_at=now))

    async def count_secrets(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(source_secrets))).scalar_one())

    async def secrets_not_under(self, key_id: str, *, after: tuple[str, str] | None = None,
                                limit: int = 200) -> list[SecretRow]:
        """Rows under another key, in (source_id, field) order after `after` (one pass over the table)."""
        return await self._rows(source_secrets.c.key_id != key_id, after, limit)

    async def elsewhere_not_under(self, key_id: str, *, after: tuple[str, str] | None = None,
                                  limit: int = 200) -> list[SecretRow]:
        """Values of SEALED_ELSEWHERE under another key, in (table, row id) order after `after`; each is bound to
        its table's internal destination (model.internal_destination)."""
        order = [table.name for table, _, _ in SEALED_ELSEWHERE]
        rows: list[SecretRow] = []
        async with self._engine.connect() as conn:
            for table, id_col, blob in SEALED_ELSEWHERE:
                if after is not None and order.index(table.name) < order.index(after[0]):
                    continue
                q = (sa.select(table.c[id_col], table.c.key_id, table.c[blob]).where(table.c.key_id != key_id)
                     .order_by(table.c[id_col]).limit(limit - len(rows)))
                if after is not None and table.name == after[0]:
                    q = q.where(table.c[id_col] > after[1])
                rows += [SecretRow(r[0], table.name, blob, r[1], bytes(r[2]), internal_destination(table.name),
                                   table=table.name) for r in await conn.execute(q)]
                if len(rows) >= limit:
                    break
        return rows

    async def legacy_secrets(self, *, after: tuple[str, str] | None = None, limit: int = 200) -> list[SecretRow]:
        """Rows sealed before destinations were bound, with their source's connector and config."""
        return await self._rows(source_secrets.c.destination.is_(None), after, limit)

    async def _rows(self, where: sa.ColumnElement[bool], after: tuple[str, str] | None,
                    limit: int) -> list[SecretRow]:
        q = (sa.select(source_secrets, sources.c.workspace_id, sources.c.connector, sources.c.config)
             .join(sources, sources.c.id == source_secrets.c.source_id).where(where)
             .order_by(source_secrets.c.source_id, source_secrets.c.field).limit(limit))
        if after is not None:
            q = q.where(sa.or_(source_secrets.c.source_id > after[0], sa.and_(
                source_secrets.c.source_id == after[0], source_secrets.c.field > after[1])))
        async with self._engine.connect() as conn:
            return [SecretRow(r.source_id, r.workspace_id, r.field, r.key_id, bytes(r.ciphertext), r.destination,
                              r.connector, r.config) for r in await conn.execute(q)]

    async def replace_secret(self, row: SecretRow, *, key_id: str, ciphertext: bytes, destination: str) -> bool:
        """Compare-and-set: only replaces the row if it still holds the ciphertext that was re-encrypted."""
        same_destination = source_secrets.c.destination.is_(None) if row.destination is None else \
            source_secrets.c.destination == row.destination
        async with self._engine.begin() as conn:
            if row.table == "source_secrets":
                res = await conn.execute(sa.update(source_secrets).where(
                    source_secrets.c.source_id == row.source_id, source_secrets.c.field == row.field,
                    source_secrets.c.key_id == row.key_id, source_secrets.c.ciphertext == row.ciphertext,
                    same_destination,
                ).values(key_id=key_id, ciphertext=ciphertext, destination=destination))
            else:
                table, id_col, blob = next(t for t in SEALED_ELSEWHERE if t[0].name == row.table)
                res = await conn.execute(sa.update(table).where(
                    table.c[id_col] == row.source_id, table.c.key_id == row.key_id, table.c[blob] == row.ciphertext,
                ).values({"key_id": key_id, blob: ciphertext}))
        return bool(res.rowcount)

    async def drop_unused_retired_keys(self) -> int:
        """Delete retired keys no ciphertext uses: credentials, values sealed elsewhere, parked requests and kept
        responses."""
        used = sa.union(sa.select(source_secrets.c.key_id),
                        *(sa.select(table.c.key_id) for table, _, _ in SEALED_ELSEWHERE),
                        sa.select(approvals.c.request_key_id),
                        sa.select(approvals.c.result_key_id).where(approvals.c.result_key_id.is_not(None)))
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(vault_keys).where(
                vault_keys.c.status == "retired", vault_keys.c.id.not_in(used)))
        return int(res.rowcount or 0)
