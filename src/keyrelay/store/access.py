"""Applications, tokens and API keys. Only HMAC digests of secrets and tokens are ever stored."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import ALL_SCOPES, ApiKey, Application, CallerKind, Scope, TokenRecord
from keyrelay.store.tables import api_keys, applications, tokens


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split() if s in Scope.__members__.values())


def _api_key(r: Any) -> ApiKey:
    return ApiKey(id=r.id, workspace_id=r.workspace_id, name=r.name, scopes=_scopes(r.scopes), hint=r.hint,
                  created_at=r.created_at, expires_at=r.expires_at, revoked_at=r.revoked_at)


class SqlAccessStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # applications -------------------------------------------------------------------------------------
    async def create_application(self, *, id: str, client_id: str, secret_digest: str, name: str,
                                 now: float) -> Application:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(applications).values(
                    id=id, client_id=client_id, secret_digest=secret_digest, name=name, created_at=now))
        except IntegrityError:
            raise Conflict("An application with this client id already exists", field="client_id") from None
        return Application(id=id, client_id=client_id, name=name, created_at=now)

    async def application_by_client_id(self, client_id: str) -> tuple[Application, str] | None:
        q = sa.select(applications).where(applications.c.client_id == client_id)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        if r is None:
            return None
        app = Application(id=r.id, client_id=r.client_id, name=r.name, created_at=r.created_at,
                          revoked_at=r.revoked_at)
        return app, r.secret_digest

    async def count_applications(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(applications))).scalar_one())

    async def list_applications(self) -> list[Application]:
        q = sa.select(applications).order_by(applications.c.created_at, applications.c.id)
        async with self._engine.connect() as conn:
            return [Application(id=r.id, client_id=r.client_id, name=r.name, created_at=r.created_at,
                                revoked_at=r.revoked_at) for r in await conn.execute(q)]

    async def revoke_application(self, client_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(applications).where(
                applications.c.client_id == client_id, applications.c.revoked_at.is_(None)).values(revoked_at=now))
            if res.rowcount:
                app_ids = sa.select(applications.c.id).where(applications.c.client_id == client_id)
                await conn.execute(sa.update(tokens).where(
                    tokens.c.application_id.in_(app_ids), tokens.c.revoked_at.is_(None)).values(revoked_at=now))
        return bool(res.rowcount)

    # tokens -------------------------------------------------------------------------------------------
    async def add_token(self, *, digest: str, kind: CallerKind, application_id: str, workspace_id: str | None,
                        expires_at: float, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(tokens).values(
                digest=digest, kind=kind.value, application_id=application_id, workspace_id=workspace_id,
                expires_at=expires_at, created_at=now))

    async def lookup(self, digest: str) -> TokenRecord | None:
        """A token or API key by digest, with the state needed to accept or refuse it."""
        async with self._engine.connect() as conn:
            t = (await conn.execute(sa.select(tokens, applications.c.revoked_at.label("app_revoked"))
                                    .join(applications, applications.c.id == tokens.c.application_id)
                                    .where(tokens.c.digest == digest))).first()
            if t is not None:
                return TokenRecord(kind=CallerKind(t.kind), subject_id=t.application_id,
                                   workspace_id=t.workspace_id, scopes=ALL_SCOPES, expires_at=t.expires_at,
                                   revoked=t.revoked_at is not None or t.app_revoked is not None)
            k = (await conn.execute(sa.select(api_keys).where(api_keys.c.digest == digest))).first()
        if k is None:
            return None
        return TokenRecord(kind=CallerKind.API_KEY, subject_id=k.id, workspace_id=k.workspace_id,
                           scopes=_scopes(k.scopes), expires_at=k.expires_at, revoked=k.revoked_at is not None)

    async def purge_expired_tokens(self, *, before: float) -> int:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(tokens).where(tokens.c.expires_at < before))
        return int(res.rowcount or 0)

    # API keys -----------------------------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey, *, digest: str) -> ApiKey:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(api_keys).values(
                id=key.id, digest=digest, workspace_id=key.workspace_id, name=key.name,
                scopes=" ".join(sorted(key.scopes)), hint=key.hint, created_at=key.created_at,
                expires_at=key.expires_at))
        return key

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return None if r is None else _api_key(r)

    async def list_api_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]:
        q = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if workspace_id is not None:
            q = q.where(api_keys.c.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            return [_api_key(r) for r in await conn.execute(q)]

    async def revoke_api_key(self, key_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
        return bool(res.rowcount)
