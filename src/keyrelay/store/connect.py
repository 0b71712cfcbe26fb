"""Connect sessions (found by the digest of their token) and OAuth authorizations in flight (found by the digest
of their `state`). Every transition that must happen once is a conditional UPDATE, safe across processes."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.connect import ConnectSession, OAuthState
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.tables import connect_oauth_states, connect_sessions


def _session(r: Any) -> ConnectSession:
    return ConnectSession(
        id=r.id, workspace_id=r.workspace_id, connectors=tuple(json.loads(r.connectors)), source_id=r.source_id,
        redirect_url=r.redirect_url, allowed_origins=tuple(json.loads(r.allowed_origins)),
        config=json.loads(r.config), status=r.status, created_at=r.created_at, expires_at=r.expires_at,
        used_at=r.used_at, connected_source_id=r.connected_source_id)


class SqlConnectStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_session(self, session: ConnectSession, *, token_digest: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(connect_sessions).values(
                id=session.id, token_digest=token_digest, workspace_id=session.workspace_id,
                connectors=json.dumps(list(session.connectors)), source_id=session.source_id,
                redirect_url=session.redirect_url, allowed_origins=json.dumps(list(session.allowed_origins)),
                config=json.dumps(dict(session.config)), status=session.status, created_at=session.created_at,
                expires_at=session.expires_at))

    async def _one(self, where: sa.ColumnElement[bool]) -> ConnectSession | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(connect_sessions).where(where))).first()
        return None if r is None else _session(r)

    async def session_by_digest(self, digest: str) -> ConnectSession | None:
        return await self._one(connect_sessions.c.token_digest == digest)

    async def get_session(self, session_id: str) -> ConnectSession | None:
        return await self._one(connect_sessions.c.id == session_id)

    async def list_sessions(self, *, workspace_id: str | None, status: str | None,
                            limit: int) -> list[ConnectSession]:
        q = sa.select(connect_sessions).order_by(connect_sessions.c.created_at.desc(), connect_sessions.c.id)
        if workspace_id is not None:
            q = q.where(connect_sessions.c.workspace_id == workspace_id)
        if status is not None:
            q = q.where(connect_sessions.c.status == status)
        async with self._engine.connect() as conn:
            return [_session(r) for r in await conn.execute(q.limit(limit))]

    async def delete_session(self, session_id: str) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(connect_oauth_states).where(connect_oauth_states.c.session_id == session_id))
            res = await conn.execute(sa.delete(connect_sessions).where(connect_sessions.c.id == session_id))
        return bool(res.rowcount)

    async def claim_session(self, session_id: str, *, now: float) -> bool:
        """pending and unexpired -> connected; False if another request spent it first (or it expired)."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(connect_sessions).where(
                connect_sessions.c.id == session_id, connect_sessions.c.status == "pending",
                connect_sessions.c.expires_at > now).values(status="connected", used_at=now))
        return bool(res.rowcount)

    async def count_check(self, session_id: str, *, limit: int) -> bool:
        """Count one live check; False once the session has used `limit` of them."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(connect_sessions).where(
                connect_sessions.c.id == session_id, connect_sessions.c.checks < limit).values(
                checks=connect_sessions.c.checks + 1))
        return bool(res.rowcount)

    async def release_session(self, session_id: str) -> None:
        """Undo a claim whose source could not be stored."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(connect_sessions).where(
                connect_sessions.c.id == session_id, connect_sessions.c.status == "connected",
                connect_sessions.c.connected_source_id.is_(None)).values(status="pending", used_at=None))

    async def finish_session(self, session_id: str, *, source_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(connect_sessions).where(connect_sessions.c.id == session_id).values(
                connected_source_id=source_id))
            await conn.execute(sa.delete(connect_oauth_states).where(connect_oauth_states.c.session_id == session_id))

    async def expire_sessions(self, *, now: float, limit: int) -> list[ConnectSession]:
        """pending sessions past their expiry -> expired; returns those this call expired."""
        q = sa.select(connect_sessions.c.id).where(
            connect_sessions.c.status == "pending", connect_sessions.c.expires_at <= now).limit(limit)
        done = []
        async with self._engine.begin() as conn:
            for (sid,) in list(await conn.execute(q)):
                res = await conn.execute(sa.update(connect_sessions).where(
                    connect_sessions.c.id == sid, connect_sessions.c.status == "pending").values(status="expired"))
                if res.rowcount:
                    done.append(sid)
            await conn.execute(sa.delete(connect_oauth_states).where(connect_oauth_states.c.expires_at <= now))
        return [s for sid in done if (s := await self.get_session(sid)) is not None]

    async def add_state(self, state: OAuthState) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(connect_oauth_states).values(
                digest=state.digest, session_id=state.session_id, connector=state.connector,
                config=json.dumps(dict(state.config)),
                key_id=state.verifier.key_id, verifier=state.verifier.ciphertext, created_at=state.created_at,
                expires_at=state.expires_at))

    async def take_state(self, digest: str, *, now: float) -> OAuthState | None:
        """The authorization for this `state`, marked used in the same step; None if unknown, used or expired."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(connect_oauth_states).where(
                connect_oauth_states.c.digest == digest, connect_oauth_states.c.used_at.is_(None),
                connect_oauth_states.c.expires_at > now).values(used_at=now))
            if not res.rowcount:
                return None
            r = (await conn.execute(sa.select(connect_oauth_states).where(
                connect_oauth_states.c.digest == digest))).one()
        return OAuthState(digest=r.digest, session_id=r.session_id, connector=r.connector,
                          config=json.loads(r.config),
                          verifier=SealedField("verifier", r.key_id, bytes(r.verifier),
                                               internal_destination("connect_oauth_states")),
                          created_at=r.created_at, expires_at=r.expires_at)
