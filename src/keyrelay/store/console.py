"""Operator console rows: sessions and one-time sign-in links (stored as digests only), and the key ring as the
console's vault page shows it (ids, states and how many credential fields each key seals; never key material).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import Application, ConsoleSession, VaultKey
from keyrelay.store.access import scopes_of, workspaces_of
from keyrelay.store.tables import applications, console_links, console_sessions, source_secrets, vault_keys


class SqlConsoleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # sessions -----------------------------------------------------------------------------------------
    async def create_session(self, *, id: str, digest: str, application_id: str, method: str, now: float,
                             expires_at: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(console_sessions).values(
                id=id, digest=digest, application_id=application_id, method=method, created_at=now,
                last_seen_at=now, expires_at=expires_at))

    async def session(self, digest: str) -> ConsoleSession | None:
        """The session with this digest and its application (revoked or not: the caller decides)."""
        s, a = console_sessions, applications
        q = (sa.select(s, a.c.client_id, a.c.name, a.c.created_at.label("app_created_at"), a.c.revoked_at,
                       a.c.workspaces, a.c.scopes)
             .join(a, a.c.id == s.c.application_id).where(s.c.digest == digest))
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        if r is None:
            return None
        app = Application(id=r.application_id, client_id=r.client_id, name=r.name, created_at=r.app_created_at,
                          revoked_at=r.revoked_at, workspaces=workspaces_of(r.workspaces), scopes=scopes_of(r.scopes))
        return ConsoleSession(id=r.id, application=app, method=r.method, created_at=r.created_at,
                              last_seen_at=r.last_seen_at, expires_at=r.expires_at, ended_at=r.ended_at)

    async def touch(self, session_id: str, *, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(console_sessions).where(console_sessions.c.id == session_id)
                               .values(last_seen_at=now))

    async def end_session(self, session_id: str, *, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(console_sessions).where(
                console_sessions.c.id == session_id, console_sessions.c.ended_at.is_(None)).values(ended_at=now))

    # one-time links -----------------------------------------------------------------------------------
    async def add_link(self, *, digest: str, application_id: str, now: float, expires_at: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(console_links).values(
                digest=digest, application_id=application_id, created_at=now, expires_at=expires_at))

    async def use_link(self, digest: str, *, now: float) -> str | None:
        """Spend a link: the application it signs in as, or None if it is unknown, used or expired. One
        conditional UPDATE, so two requests racing with the same link cannot both win."""
        link = console_links
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(link).where(
                link.c.digest == digest, link.c.used_at.is_(None), link.c.expires_at > now).values(used_at=now))
            if res.rowcount != 1:
                return None
            app_id = (await conn.execute(sa.select(link.c.application_id).where(link.c.digest == digest))).scalar()
        return None if app_id is None else str(app_id)

    async def purge(self, *, before: float) -> None:
        """Forget sessions and links that ended or expired before `before`."""
        s, link = console_sessions, console_links
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(s).where(sa.or_(s.c.expires_at < before, s.c.ended_at < before,
                                                         s.c.last_seen_at < before)))
            await conn.execute(sa.delete(link).where(link.c.expires_at < before))

    # the vault's key ring -----------------------------------------------------------------------------
    async def vault_keys(self) -> list[VaultKey]:
        used = (sa.select(source_secrets.c.key_id, sa.func.count().label("n"))
                .group_by(source_secrets.c.key_id).subquery())
        q = (sa.select(vault_keys.c.id, vault_keys.c.status, vault_keys.c.created_at, used.c.n)
             .outerjoin(used, used.c.key_id == vault_keys.c.id).order_by(vault_keys.c.created_at))
        async with self._engine.connect() as conn:
            return [VaultKey(id=r.id, status=r.status, created_at=r.created_at, fields=int(r.n or 0))
                    for r in await conn.execute(q)]
