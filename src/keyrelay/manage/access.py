"""Applications, tokens and API keys: issuing, listing and revoking."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from keyrelay.errors import InvalidRequest, NotFound, Unauthenticated
from keyrelay.model import ApiKey, Application, Caller, CallerKind, Scope, Workspace
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import API_KEY_PREFIX, APP_TOKEN_PREFIX, WORKSPACE_TOKEN_PREFIX, TokenHasher, new_token
from keyrelay.ports import AccessStore, Clock, WorkspaceStore

APP_TOKEN_SECONDS = 900
WORKSPACE_TOKEN_SECONDS = 1200
_DUMMY_DIGEST = "0" * 64


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    workspace_id: str | None = None


@dataclass(frozen=True)
class NewApplication:
    client_id: str
    client_secret: str | None  # None when the operator supplied it


class AccessService:
    def __init__(self, *, auth: AccessStore, workspaces: WorkspaceStore, hasher: TokenHasher,
                 authenticator: Authenticator, clock: Clock) -> None:
        self._auth = auth
        self._workspaces = workspaces
        self._hasher = hasher
        self._authn = authenticator
        self._clock = clock

    async def ensure_bootstrap(self, client_id: str | None, client_secret: str | None) -> NewApplication | None:
        """Create the admin application on first start; returns it if one was created now."""
        if client_id and client_secret:
            if await self._auth.application_by_client_id(client_id) is not None:
                return None
            await self.create_application(name="bootstrap admin", client_id=client_id, client_secret=client_secret)
            return NewApplication(client_id, None)
        if await self._auth.count_applications():
            return None
        return await self.create_application(name="bootstrap admin")

    async def create_application(self, *, name: str, client_id: str | None = None,
                                 client_secret: str | None = None) -> NewApplication:
        cid = client_id or "kr_app_" + uuid.uuid4().hex[:16]
        secret = client_secret or new_token("krs_")
        await self._auth.create_application(id=str(uuid.uuid4()), client_id=cid,
                                            secret_digest=self._hasher.digest(secret), name=name, now=self._clock())
        return NewApplication(cid, None if client_secret else secret)

    async def list_applications(self) -> list[Application]:
        """Every application, oldest first (revoked ones included; never a secret or its digest)."""
        return await self._auth.list_applications()

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
        token = new_token(WORKSPACE_TOKEN_PREFIX)
        now = self._clock()
        app_id = caller.id.split(":")[1]
        await self._auth.add_token(digest=self._hasher.digest(token), kind=CallerKind.WORKSPACE,
                                   application_id=app_id, workspace_id=workspace.id,
                                   expires_at=now + WORKSPACE_TOKEN_SECONDS, now=now)
        return IssuedToken(token, WORKSPACE_TOKEN_SECONDS, workspace.id)

    async def create_api_key(self, *, workspace_id: str, scopes: frozenset[Scope], name: str,
                             expires_at: float | None) -> tuple[ApiKey, str]:
        if await self._workspaces.get_workspace(workspace_id) is None:
            raise NotFound("Workspace not found")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at must be in the future", field="expires_at")
        if not scopes:
            raise InvalidRequest("At least one scope is required", field="scopes")
        secret = new_token(API_KEY_PREFIX)
        key = ApiKey(id=str(uuid.uuid4()), workspace_id=workspace_id, name=name, scopes=scopes,
                     hint=secret[:7], created_at=now, expires_at=expires_at)
        await self._auth.create_api_key(key, digest=self._hasher.digest(secret))
        return key, secret

    async def list_api_keys(self, workspace_id: str | None) -> list[ApiKey]:
        return await self._auth.list_api_keys(workspace_id=workspace_id)

    async def revoke_api_key(self, key_id: str) -> None:
        if await self._auth.get_api_key(key_id) is None:
            raise NotFound("API key not found")
        await self._auth.revoke_api_key(key_id, now=self._clock())
        self._authn.forget_all()
