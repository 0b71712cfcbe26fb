"""Applications, tokens and API keys. Only HMAC digests of secrets and tokens are ever stored."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import ALL_SCOPES, ApiKey, Application, CallerKind, Constraints, Scope, TokenRecord
from keyrelay.pipeline import constraints as cons
from keyrelay.store.tables import api_keys, applications, derived_tokens, tokens


def scopes_of(text: str) -> frozenset[Scope]:
    """Scopes as the `scopes` column stores them (space-separated)."""
    return _scopes(text)


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split() if s in Scope.__members__.values())


def _scopes_text(scopes: frozenset[Scope]) -> str:
    return " ".join(sorted(s.value for s in scopes))


def workspaces_of(text: str) -> frozenset[str] | None:
    """An application's workspaces as the `workspaces` column stores them ('*': every workspace)."""
    return _workspaces(text)


def _workspaces(text: str) -> frozenset[str] | None:
    return None if text.strip() == "*" else frozenset(text.split())


def _workspaces_text(workspaces: frozenset[str] | None) -> str:
    return "*" if workspaces is None else " ".join(sorted(workspaces))


def _constraints(text: str | None) -> Constraints | None:
    return None if text is None else cons.load(json.loads(text))


def _api_key(r: Any) -> ApiKey:
    return ApiKey(id=r.id, workspace_id=r.workspace_id, name=r.name, scopes=_scopes(r.scopes), hint=r.hint,
                  created_at=r.created_at, expires_at=r.expires_at, revoked_at=r.revoked_at,
                  constraints=_constraints(r.constraints))


def _application(r: Any) -> Application:
    return Application(id=r.id, client_id=r.client_id, name=r.name, created_at=r.created_at, revoked_at=r.revoked_at,
                       workspaces=_workspaces(r.workspaces), scopes=_scopes(r.scopes))


class SqlAccessStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # applications -------------------------------------------------------------------------------------
    async def create_application(self, *, id: str, client_id: str, secret_digest: str, name: str,
                                 now: float, workspaces: frozenset[str] | None = None,
                                 scopes: frozenset[Scope] | None = None) -> Application:
        app = Application(id=id, client_id=client_id, name=name, created_at=now, workspaces=workspaces,
                          scopes=ALL_SCOPES if scopes is None else scopes)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(applications).values(
                    id=id, client_id=client_id, secret_digest=secret_digest, name=name, created_at=now,
                    workspaces=_workspaces_text(app.workspaces), scopes=_scopes_text(app.scopes)))
        except IntegrityError:
            raise Conflict("An application with this client id already exists", field="client_id") from None
        return app

    async def application_by_client_id(self, client_id: str) -> tuple[Application, str] | None:
        q = sa.select(applications).where(applications.c.client_id == client_id)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else (_application(r), r.secret_digest)

    async def get_application(self, application_id: str) -> Application | None:
        q = sa.select(applications).where(applications.c.id == application_id)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else _application(r)

    async def update_application(self, application_id: str, *, workspaces: frozenset[str] | None,
                                 scopes: frozenset[Scope]) -> bool:
        """Change what an application (and so every token it minted) may reach; refused once it is revoked."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(applications).where(
                applications.c.id == application_id, applications.c.revoked_at.is_(None),
            ).values(workspaces=_workspaces_text(workspaces), scopes=_scopes_text(scopes)))
        return bool(res.rowcount)

    async def count_applications(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(applications))).scalar_one())

    async def revoke_application(self, client_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(applications).where(
                applications.c.client_id == client_id, applications.c.revoked_at.is_(None)).values(revoked_at=now))
            if res.rowcount:
                app_ids = sa.select(applications.c.id).where(applications.c.client_id == client_id)
                await conn.execute(sa.update(tokens).where(
                    tokens.c.application_id.in_(app_ids), tokens.c.revoked_at.is_(None)).values(revoked_at=now))
        return bool(res.rowcount)

    async def list_applications(self) -> list[Application]:
        q = sa.select(applications).order_by(applications.c.created_at, applications.c.id)
        async with self._engine.connect() as conn:
            return [_application(r) for r in await conn.execute(q)]

    async def replace_application_secret(self, client_id: str, *, secret_digest: str, now: float,
                                         revoke_tokens: bool) -> bool:
        """A new client secret for an application that is not revoked; optionally revoke the tokens it minted."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(applications).where(
                applications.c.client_id == client_id, applications.c.revoked_at.is_(None),
            ).values(secret_digest=secret_digest))
            if res.rowcount and revoke_tokens:
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
        """A token or API key by digest, with the state needed to accept or refuse it. A token minted by an
        application carries what the application holds now: its workspaces and scopes are read with the token."""
        async with self._engine.connect() as conn:
            return await _lookup(conn, digest)

    async def lookup_derived(self, digest: str) -> TokenRecord | None:
        """An attenuated token: its root's record (as `lookup` reads it now) with the child's chain of constraint
        sets and expiry, refused when it, its root or any derived token above it is revoked."""
        async with self._engine.connect() as conn:
            d = (await conn.execute(sa.select(derived_tokens).where(derived_tokens.c.digest == digest))).first()
            if d is None:
                return None
            root = await _lookup(conn, d.root_digest)
            ancestors = d.ancestors.split()
            above_revoked = bool(ancestors) and (await conn.execute(
                sa.select(sa.func.count()).select_from(derived_tokens).where(
                    derived_tokens.c.id.in_(ancestors), derived_tokens.c.revoked_at.is_not(None)))).scalar_one() > 0
        if root is None:
            return None
        chain = tuple(cons.load(c) for c in json.loads(d.constraints))
        return dataclasses.replace(
            root, constraints=chain, expires_at=cons.earliest(root.expires_at, d.expires_at, cons.chain_expiry(chain)),
            revoked=root.revoked or d.revoked_at is not None or above_revoked, derived_id=d.id,
            depth=len(ancestors) + 1)

    async def add_derived(self, *, id: str, digest: str, root_digest: str, ancestors: Sequence[str],
                          chain: Sequence[Constraints], expires_at: float | None, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(derived_tokens).values(
                id=id, digest=digest, root_digest=root_digest, ancestors=" ".join(ancestors),
                constraints=json.dumps([cons.dump(c) for c in chain]), expires_at=expires_at, created_at=now))

    async def revoke_derived(self, derived_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(derived_tokens).where(
                derived_tokens.c.id == derived_id, derived_tokens.c.revoked_at.is_(None)).values(revoked_at=now))
        return bool(res.rowcount)

    async def derived_ancestry(self, derived_id: str) -> tuple[str, list[str]] | None:
        """(root digest, ids of the derived tokens from the top down to this one)."""
        q = sa.select(derived_tokens.c.root_digest, derived_tokens.c.ancestors).where(derived_tokens.c.id == derived_id)
        async with self._engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else (r.root_digest, [*r.ancestors.split(), derived_id])

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
                expires_at=key.expires_at,
                constraints=None if key.constraints is None else json.dumps(cons.dump(key.constraints))))
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


async def _lookup(conn: AsyncConnection, digest: str) -> TokenRecord | None:
    t = (await conn.execute(sa.select(tokens, applications.c.revoked_at.label("app_revoked"),
                                      applications.c.workspaces.label("app_workspaces"),
                                      applications.c.scopes.label("app_scopes"))
                            .join(applications, applications.c.id == tokens.c.application_id)
                            .where(tokens.c.digest == digest))).first()
    if t is not None:
        reach, scopes = _workspaces(t.app_workspaces), _scopes(t.app_scopes)
        revoked = t.revoked_at is not None or t.app_revoked is not None
        kind = CallerKind(t.kind)
        if kind is CallerKind.WORKSPACE:  # the application's data scopes (and its seed-002 write), in one workspace
            revoked = revoked or (reach is not None and t.workspace_id not in reach)
            return TokenRecord(kind=kind, subject_id=t.application_id, workspace_id=t.workspace_id,
                               scopes=scopes - {Scope.APPROVE}, expires_at=t.expires_at, revoked=revoked)
        return TokenRecord(kind=kind, subject_id=t.application_id, workspace_id=None, scopes=scopes,
                           expires_at=t.expires_at, revoked=revoked, workspaces=reach)
    k = (await conn.execute(sa.select(api_keys).where(api_keys.c.digest == digest))).first()
    if k is None:
        return None
    own = _constraints(k.constraints)
    return TokenRecord(kind=CallerKind.API_KEY, subject_id=k.id, workspace_id=k.workspace_id, scopes=_scopes(k.scopes),
                       expires_at=cons.earliest(k.expires_at, None if own is None else own.expires_at),
                       revoked=k.revoked_at is not None, constraints=() if own is None else (own,))
