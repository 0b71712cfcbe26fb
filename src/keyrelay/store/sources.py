"""Source repository: config and policy as JSON, credentials only as sealed fields."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import OAUTH_STATE_FIELD, NewSource, Policy, SealedField, Source
from keyrelay.store.tables import source_secrets, sources


def _source(r: Any, fields: Sequence[str]) -> Source:
    return Source(
        id=r.id, workspace_id=r.workspace_id, connector=r.connector, name=r.name, slug=r.slug,
        config=json.loads(r.config), policy=Policy.from_mapping(json.loads(r.policy)), status=r.status,
        credential_fields=tuple(sorted(f for f in fields if f != OAUTH_STATE_FIELD)), created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _conflict(slug: str) -> Conflict:
    return Conflict(f"A source with slug {slug!r} already exists in this workspace", field="slug")


class SqlSourceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_source(self, new: NewSource, sealed: Sequence[SealedField], *, now: float) -> Source:
        """Insert the source and its sealed credential fields in one transaction."""
        row = {
            "id": new.id, "workspace_id": new.workspace_id, "connector": new.connector, "name": new.name,
            "slug": new.slug, "config": json.dumps(dict(new.config)), "policy": json.dumps(dict(new.policy)),
            "status": new.status, "created_at": now, "updated_at": now,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(sources).values(**row))
                await _write_secrets(conn, new.id, sealed)
        except IntegrityError:
            raise _conflict(new.slug) from None
        found = await self.get_source(new.id)
        assert found is not None
        return found

    async def get_source(self, source_id: str) -> Source | None:
        return await self._one(sources.c.id == source_id)

    async def get_source_by_slug(self, workspace_id: str, slug: str) -> Source | None:
        return await self._one(sa.and_(sources.c.workspace_id == workspace_id, sources.c.slug == slug))

    async def _one(self, where: sa.ColumnElement[bool]) -> Source | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(sources).where(where))).first()
            if r is None:
                return None
            names = await conn.execute(sa.select(source_secrets.c.field).where(source_secrets.c.source_id == r.id))
            return _source(r, [n[0] for n in names])

    async def list_sources(self, *, workspace_id: str | None = None, limit: int = 1000) -> list[Source]:
        q = sa.select(sources).order_by(sources.c.created_at, sources.c.id).limit(limit)
        if workspace_id is not None:
            q = q.where(sources.c.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(q))
            ids = [r.id for r in rows]
            fields: dict[str, list[str]] = {i: [] for i in ids}
            if ids:
                sq = sa.select(source_secrets.c.source_id, source_secrets.c.field).where(
                    source_secrets.c.source_id.in_(ids))
                for sid, name in await conn.execute(sq):
                    fields[sid].append(name)
        return [_source(r, fields[r.id]) for r in rows]

    async def update_source(
        self, source_id: str, *, changes: Mapping[str, Any], sealed: Sequence[SealedField] | None, now: float,
    ) -> Source | None:
        """Apply `changes` (name, slug, config, policy, status) and, if given, replace every sealed field."""
        values: dict[str, Any] = {"updated_at": now}
        for key in ("name", "slug", "status"):
            if key in changes:
                values[key] = changes[key]
        for key in ("config", "policy"):
            if key in changes:
                values[key] = json.dumps(dict(changes[key]))
        try:
            async with self._engine.begin() as conn:
                res = await conn.execute(sa.update(sources).where(sources.c.id == source_id).values(**values))
                if not res.rowcount:
                    return None
                if sealed is not None:
                    await conn.execute(sa.delete(source_secrets).where(source_secrets.c.source_id == source_id))
                    await _write_secrets(conn, source_id, sealed)
        except IntegrityError:
            raise _conflict(str(changes.get("slug"))) from None
        return await self.get_source(source_id)

    async def delete_source(self, source_id: str) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(source_secrets).where(source_secrets.c.source_id == source_id))
            res = await conn.execute(sa.delete(sources).where(sources.c.id == source_id))
        return bool(res.rowcount)

    async def load_sealed(self, source_id: str) -> list[SealedField]:
        q = sa.select(source_secrets).where(source_secrets.c.source_id == source_id,
                                            source_secrets.c.field != OAUTH_STATE_FIELD)  # store/oauth.py reads it
        async with self._engine.connect() as conn:
            return [SealedField(r.field, r.key_id, bytes(r.ciphertext), r.destination)
                    for r in await conn.execute(q)]


async def _write_secrets(conn: AsyncConnection, source_id: str, sealed: Sequence[SealedField]) -> None:
    if sealed:
        await conn.execute(sa.insert(source_secrets), [
            {"source_id": source_id, "field": f.field, "key_id": f.key_id, "ciphertext": f.ciphertext,
             "destination": f.destination}
            for f in sealed
        ])
