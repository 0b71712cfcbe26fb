"""Workspace repository."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import Workspace
from keyrelay.store.tables import tokens, workspaces


def _row(r: sa.Row[tuple[str, str, float]]) -> Workspace:
    return Workspace(id=r.id, name=r.name, created_at=r.created_at)


class SqlWorkspaceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_workspace(self, *, id: str, name: str, now: float) -> Workspace:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(workspaces).values(id=id, name=name, created_at=now))
        except IntegrityError:
            raise Conflict(f"A workspace named {name!r} already exists", field="name") from None
        return Workspace(id=id, name=name, created_at=now)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        q = sa.select(workspaces).where(workspaces.c.id == workspace_id)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else _row(r)

    async def find_workspace(self, name: str) -> Workspace | None:
        q = sa.select(workspaces).where(workspaces.c.name == name)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else _row(r)

    async def list_workspaces(self, *, name_contains: str | None = None, limit: int = 1000) -> list[Workspace]:
        q = sa.select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id).limit(limit)
        if name_contains:
            q = q.where(workspaces.c.name.contains(name_contains, autoescape=True))
        async with self._engine.connect() as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def delete_workspace(self, workspace_id: str) -> bool:
        """Delete the workspace; its sources, secrets and API keys go with it (foreign keys), and so do the
        workspace-scoped tokens minted for it."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(workspaces).where(workspaces.c.id == workspace_id))
            await conn.execute(sa.delete(tokens).where(tokens.c.workspace_id == workspace_id))
        return bool(res.rowcount)
