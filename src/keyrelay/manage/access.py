"""Applications, tokens and API keys: issuing, listing, revoking, and rotating an application's secret.

Every revocation takes effect at once on the instance that made it (its token cache is cleared) and on other
instances within `KEYRELAY_TOKEN_CACHE_SECONDS` (docs/security.md: tokens, API keys and scopes).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyrelay.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated
from keyrelay.model import (
    ALL_SCOPES,
    DATA_SCOPES,
    ApiKey,
    Application,
    Caller,
    CallerKind,
    Constraints,
    Scope,
    Workspace,
)
from keyrelay.pipeline import constraints as cons
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import (
    API_KEY_PREFIX,
    APP_TOKEN_PREFIX,
    DERIVED_PREFIX,
    WORKSPACE_TOKEN_PREFIX,
    TokenHasher,
    new_token,
)
from keyrelay.ports import AccessStore, Clock, WorkspaceStore

APP_TOKEN_SECONDS = 900
WORKSPACE_TOKEN_SECONDS = 1200
_DUMMY_DIGEST = "0" * 64
OPERATOR = Caller(kind=CallerKind.APPLICATION, id="cli", workspace_id=None, scopes=ALL_SCOPES)  # the offline CLI


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    workspace_id: str | None = None


@dataclass(frozen=True)
class NewApplication:
    client_id: str
    client_secret: str | None  # None when the operator supplied it
    application: Application | None = None


@dataclass(frozen=True)
class DerivedToken:
    token: str
    expires_at: float | None
    constraints: Constraints


def need_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("This route needs an application token holding the 'admin' scope, without constraints")


class AccessService:
    def __init__(self, *, auth: AccessStore, workspaces: WorkspaceStore, hasher: TokenHasher,
                 authenticator: Authenticator, clock: Clock) -> None:
        self._auth = auth
        self._workspaces = workspaces
        self._hasher = hasher
        self._authn = authenticator
        self._clock = clock

    async def ensure_bootstrap(self, client_id: str | None, client_secret: str | None) -> NewApplication | None:
        """Create the admin application (every workspace, every scope) on first start; returns it if created now."""
        if client_id and client_secret:
            if await self._auth.application_by_client_id(client_id) is not None:
                return None
            await self.create_application(name="bootstrap admin", client_id=client_id, client_secret=client_secret)
            return NewApplication(client_id, None)
        if await self._auth.count_applications():
            return None
        return await self.create_application(name="bootstrap admin")

    async def create_application(self, *, name: str, client_id: str | None = None, client_secret: str | None = None,
                                 workspaces: frozenset[str] | None = None,
                                 scopes: frozenset[Scope] = ALL_SCOPES) -> NewApplication:
        if not scopes:
            raise InvalidRequest("An application needs at least one scope", field="scopes")
        cid = client_id or "kr_app_" + uuid.uuid4().hex[:16]
        secret = client_secret or new_token("krs_")
        app = await self._auth.create_application(id=str(uuid.uuid4()), client_id=cid,
                                                  secret_digest=self._hasher.digest(secret), name=name,
                                                  now=self._clock(), workspaces=workspaces, scopes=scopes)
        return NewApplication(cid, None if client_secret else secret, app)

    async def grant_application(self, caller: Caller, *, name: str, workspaces: Sequence[str] | str,
                                scopes: frozenset[Scope]) -> NewApplication:
        """A new application with at most the caller's own power: workspaces it reaches, scopes it holds."""
        need_admin(caller)
        reach = await self._reach(caller, workspaces)
        self._within(caller, scopes)
        return await self.create_application(name=name, workspaces=reach, scopes=scopes)

    async def _reach(self, caller: Caller, refs: Sequence[str] | str) -> frozenset[str] | None:
        """Workspace ids for `"*"` or a list of ids or names, each one the caller reaches (else 404)."""
        if refs == "*":
            if not caller.every_workspace:
                raise Forbidden("Only an application reaching every workspace may grant every workspace",
                                field="workspaces")
            return None
        if isinstance(refs, str) or not refs:
            raise InvalidRequest('workspaces must be "*" or a non-empty list of workspace ids or names',
                                 field="workspaces")
        ids = set()
        for ref in refs:
            ws = await self._workspaces.get_workspace(ref) or await self._workspaces.find_workspace(ref)
            if ws is None or not caller.can_reach(ws.id):
                raise NotFound("Workspace not found", field="workspaces")
            ids.add(ws.id)
        return frozenset(ids)

    @staticmethod
    def _within(caller: Caller, scopes: frozenset[Scope]) -> None:
        if not scopes:
            raise InvalidRequest("At least one scope is required", field="scopes")
        wider = sorted(scopes - caller.scopes)
        if wider:
            raise Forbidden(f"Cannot grant the '{wider[0]}' scope: the caller does not hold it", field="scopes")

    async def application_token(self, client_id: str, client_secret: str) -> IssuedToken:
        found = await self._auth.application_by_client_id(client_id)
        digest = found[1] if found else _DUMMY_DIGEST
        ok = self._hasher.matches(client_secret, digest)  # compare even when unknown: no timing oracle
        if found is None or not ok or found[0].revoked_at is not None:
            raise Unauthenticated("Invalid client credentials")
        token = new_token(APP_TOKEN_PREFIX)
        now = self._clock()
        await self._auth.add_token(digest=self._hasher.digest(token), kind=CallerKind.APPLICATION,
                                   application_id=found[0].id, workspace_id=None,
                                   expires_at=now + APP_TOKEN_SECONDS, now=now)
        return IssuedToken(token, APP_TOKEN_SECONDS)

    async def scoped_token(self, caller: Caller, workspace: Workspace) -> IssuedToken:
        """A workspace-scoped token of the caller's application, for one workspace it reaches. The token carries
        what the application holds when the token is used (store/access.py), never more."""
        if not caller.is_application or caller.constraints:
            raise Forbidden("Only an application token without constraints mints workspace-scoped tokens")
        if not caller.can_reach(workspace.id):
            raise NotFound("Workspace not found")
        token = new_token(WORKSPACE_TOKEN_PREFIX)
        now = self._clock()
        app_id = caller.id.split(":")[1]
        await self._auth.add_token(digest=self._hasher.digest(token), kind=CallerKind.WORKSPACE,
                                   application_id=app_id, workspace_id=workspace.id,
                                   expires_at=now + WORKSPACE_TOKEN_SECONDS, now=now)
        return IssuedToken(token, WORKSPACE_TOKEN_SECONDS, workspace.id)

    # API keys -------------------------------------------------------------------------------------------

    async def create_api_key(self, *, workspace_id: str, scopes: frozenset[Scope], name: str,
                             expires_at: float | None, constraints: Any = None,
                             caller: Caller = OPERATOR) -> tuple[ApiKey, str]:
        need_admin(caller)
        ws = await self._workspaces.get_workspace(workspace_id)
        if ws is None or not caller.can_reach(ws.id):
            raise NotFound("Workspace not found")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at must be in the future", field="expires_at")
        if scopes - DATA_SCOPES:
            raise InvalidRequest(f"An API key holds data scopes only ({', '.join(sorted(DATA_SCOPES))})",
                                 field="scopes")
        self._within(caller, scopes)
        key_id = str(uuid.uuid4())
        own = None if constraints is None else cons.parse(constraints, budget_key=f"key:{key_id}", now=now)
        secret = new_token(API_KEY_PREFIX)
        key = ApiKey(id=key_id, workspace_id=workspace_id, name=name, scopes=scopes,
                     hint=secret[:7], created_at=now, expires_at=expires_at, constraints=own)
        await self._auth.create_api_key(key, digest=self._hasher.digest(secret))
        return key, secret

    async def list_api_keys(self, workspace_id: str | None, *, caller: Caller = OPERATOR) -> list[ApiKey]:
        need_admin(caller)
        return [k for k in await self._auth.list_api_keys(workspace_id=workspace_id)
                if caller.can_reach(k.workspace_id)]

    async def revoke_api_key(self, key_id: str, *, caller: Caller = OPERATOR) -> None:
        need_admin(caller)
        key = await self._auth.get_api_key(key_id)
        if key is None or not caller.can_reach(key.workspace_id):
            raise NotFound("API key not found")
        await self._auth.revoke_api_key(key_id, now=self._clock())
        self._authn.forget_all()

    # attenuation ----------------------------------------------------------------------------------------

    async def attenuate(self, authorization: str | None, data: Any, *,
                        expires_in: float | None = None) -> DerivedToken:
        """A child of the bearer token: the parent's chain of constraint sets plus `data`, expiring no later than
        the parent. It reaches what its parent reaches (read from the parent's root each time it is used), is
        refused when any token above it is revoked, and counts its requests against every budget of its chain."""
        digest, record, _ = await self._authn.resolve(authorization)
        now = self._clock()
        if expires_in is not None and expires_in <= 0:
            raise InvalidRequest("expires_in must be positive", field="expires_in")
        child_id = str(uuid.uuid4())
        own = cons.parse(data, budget_key=f"drv:{child_id}", now=now)
        chain = cons.attenuate(record.constraints, own)
        expires_at = cons.child_expiry(record.expires_at, own, now=now, expires_in=expires_in)
        root_digest, ancestors = digest, list[str]()
        if record.derived_id is not None:
            found = await self._auth.derived_ancestry(record.derived_id)
            if found is None:
                raise Unauthenticated("Unknown token")
            root_digest, ancestors = found
        token = new_token(DERIVED_PREFIX)
        await self._auth.add_derived(id=child_id, digest=self._hasher.digest(token), root_digest=root_digest,
                                     ancestors=ancestors, chain=chain, expires_at=expires_at, now=now)
        return DerivedToken(token, expires_at, own)

    async def revoke_derived(self, authorization: str | None) -> None:
        """Revoke the bearer, an attenuated token, and every token derived from it."""
        _, record, _ = await self._authn.resolve(authorization)
        if record.derived_id is None:
            raise InvalidRequest("Only an attenuated token revokes itself here; revoke API keys and applications "
                                 "with their own routes", field="authorization")
        await self._auth.revoke_derived(record.derived_id, now=self._clock())
        self._authn.forget_all()

    # applications ---------------------------------------------------------------------------------------

    async def list_applications(self, *, caller: Caller = OPERATOR) -> list[Application]:
        """The applications the caller could have granted: all for an application reaching every workspace,
        else those limited to workspaces it reaches."""
        need_admin(caller)
        return [a for a in await self._auth.list_applications() if _visible(caller, a)]

    async def _application(self, caller: Caller, ref: str) -> Application:
        """An application by id or client id, if the caller may see it (else 404, as for an unknown one)."""
        need_admin(caller)
        app = await self._auth.get_application(ref)
        if app is None:
            found = await self._auth.application_by_client_id(ref)
            app = None if found is None else found[0]
        if app is None or not _visible(caller, app):
            raise NotFound("Application not found")
        return app

    async def update_application(self, caller: Caller, ref: str, *, workspaces: Sequence[str] | str | None = None,
                                 scopes: frozenset[Scope] | None = None) -> Application:
        """Change (typically narrow) what an application holds; tokens it minted follow within the token cache's
        lifetime (at once on this instance)."""
        app = await self._application(caller, ref)
        reach = app.workspaces if workspaces is None else await self._reach(caller, workspaces)
        if scopes is not None:
            self._within(caller, scopes)
        new_scopes = app.scopes if scopes is None else scopes
        if not await self._auth.update_application(app.id, workspaces=reach, scopes=new_scopes):
            raise InvalidRequest("The application is revoked; a revoked application stays revoked", field="id")
        self._authn.forget_all()
        return dataclasses.replace(app, workspaces=reach, scopes=new_scopes)

    async def revoke_application(self, ref: str, *, caller: Caller = OPERATOR) -> None:
        """Revoke an application for good: its client secret stops working and every token minted from it
        (application tokens, the workspace-scoped tokens it issued, tokens derived from either) is refused.
        Revoking twice is harmless."""
        app = await self._application(caller, ref)
        await self._auth.revoke_application(app.client_id, now=self._clock())
        self._authn.forget_all()

    async def rotate_secret(self, ref: str, *, revoke_tokens: bool = True, caller: Caller = OPERATOR) -> str:
        """Give an application a new client secret (returned once; only its digest is stored). The old secret stops
        working at once. With `revoke_tokens` (the default, for a secret that may have leaked) the tokens minted
        with it are refused too; without it they live out their lifetime."""
        app = await self._application(caller, ref)
        if app.revoked_at is not None:
            raise InvalidRequest("The application is revoked; a revoked application stays revoked",
                                 field="client_id")
        secret = new_token("krs_")
        if not await self._auth.replace_application_secret(app.client_id, secret_digest=self._hasher.digest(secret),
                                                           now=self._clock(), revoke_tokens=revoke_tokens):
            raise InvalidRequest("The application is revoked; a revoked application stays revoked",
                                 field="client_id")  # revoked meanwhile
        self._authn.forget_all()
        return secret


def _visible(caller: Caller, app: Application) -> bool:
    if caller.every_workspace:
        return True
    return app.workspaces is not None and all(caller.can_reach(w) for w in app.workspaces)
