"""Key ring rows and the re-encryption queries used by `keyrelay vault rotate`."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.tables import connect_oauth_states, oauth_clients, source_secrets, sources, vault_keys, webhooks

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
    ciphertext: bytes
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

    async def secrets_not_under(self, key_id: str, *, limit: int = 200) -> list[SecretRow]:
        q = (sa.select(source_secrets, sources.c.workspace_id)
             .join(sources, sources.c.id == source_secrets.c.source_id)
             .where(source_secrets.c.key_id != key_id).limit(limit))
        async with self._engine.connect() as conn:
            rows = [SecretRow(r.source_id, r.workspace_id, r.field, r.key_id, bytes(r.ciphertext))
                    for r in await conn.execute(q)]
            for table, id_col, blob in SEALED_ELSEWHERE:
                if len(rows) >= limit:
                    break
                more = sa.select(table.c[id_col], table.c.key_id, table.c[blob]).where(
                    table.c.key_id != key_id).limit(limit - len(rows))
                rows += [SecretRow(r[0], table.name, blob, r[1], bytes(r[2]), table=table.name)
                         for r in await conn.execute(more)]
        return rows

    async def replace_secret(self, row: SecretRow, *, key_id: str, ciphertext: bytes) -> bool:
        """Compare-and-set: only replaces the row if it still holds the ciphertext that was re-encrypted."""
        async with self._engine.begin() as conn:
            if row.table == "source_secrets":
                res = await conn.execute(sa.update(source_secrets).where(
                    source_secrets.c.source_id == row.source_id, source_secrets.c.field == row.field,
                    source_secrets.c.key_id == row.key_id, source_secrets.c.ciphertext == row.ciphertext,
                ).values(key_id=key_id, ciphertext=ciphertext))
            else:
                table, id_col, blob = next(t for t in SEALED_ELSEWHERE if t[0].name == row.table)
                res = await conn.execute(sa.update(table).where(
                    table.c[id_col] == row.source_id, table.c.key_id == row.key_id, table.c[blob] == row.ciphertext,
                ).values({"key_id": key_id, blob: ciphertext}))
        return bool(res.rowcount)

    async def drop_unused_retired_keys(self) -> int:
        used = sa.union(sa.select(source_secrets.c.key_id),
                        *(sa.select(table.c.key_id) for table, _, _ in SEALED_ELSEWHERE))
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(vault_keys).where(
                vault_keys.c.status == "retired", vault_keys.c.id.not_in(used)))
        return int(res.rowcount or 0)
