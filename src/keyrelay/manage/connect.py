"""Connect sessions (docs/connect.md): an operator asks for one, an end customer uses its link to connect an
account, and keyrelay stores the credentials. The session token is single-workspace, connect-only (it is not a
bearer token any API route accepts), expiring, spent once a source is connected, and stored only as a digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from keyrelay.connectors.check import check_of
from keyrelay.connectors.spec import ConnectorSpec, check_json
from keyrelay.egress import destination, ssrf
from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound, SsrfBlocked, UpstreamUnreachable
from keyrelay.manage.sources import SourceService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.model import Caller, CallerKind, SealedField, Workspace
from keyrelay.pipeline.tokens import TokenHasher, new_token
from keyrelay.ports import Clock

TOKEN_PREFIX = "krc_"  # noqa: S105 - a prefix, not a secret
DEFAULT_EXPIRES_IN = 1800
MIN_EXPIRES_IN, MAX_EXPIRES_IN = 60, 3600
MAX_ORIGINS = 20
MAX_CHECKS = 10  # live checks per session: the page is no oracle for trying many stolen keys
# Config fields only the operator may set: where requests (and refresh tokens) go.
OPERATOR_ONLY_CONFIG = frozenset({"base_url", "upstream_url", "endpoint_url", "login_url"})


@dataclass(frozen=True, slots=True)
class ConnectSession:
    id: str
    workspace_id: str
    connectors: tuple[str, ...]
    source_id: str | None  # reconnect: the source whose credentials are replaced in place
    redirect_url: str | None
    allowed_origins: tuple[str, ...]
    config: Mapping[str, Mapping[str, Any]]  # per connector: config the operator preset (never secret)
    status: str  # pending | connected | expired
    created_at: float
    expires_at: float
    used_at: float | None = None
    connected_source_id: str | None = None

    def usable(self, now: float) -> bool:
        return self.status == "pending" and now < self.expires_at

    @property
    def caller(self) -> Caller:
        """Who acts when the session stores a source: confined to its workspace, with no scope of its own."""
        return Caller(kind=CallerKind.WORKSPACE, id=f"connect:{self.id}", workspace_id=self.workspace_id,
                      scopes=frozenset())

    def result_url(self, *, status: str, source_id: str | None) -> str | None:
        """`redirect_url` with the outcome: `connect_session`, `status` and `source_id` (when there is one)."""
        if self.redirect_url is None:
            return None
        params = {"connect_session": self.id, "status": status, **({"source_id": source_id} if source_id else {})}
        return self.redirect_url + ("&" if "?" in self.redirect_url else "?") + urlencode(params)


@dataclass(frozen=True, slots=True)
class OAuthState:
    """An authorization in flight: found by the digest of its `state`, used once, bound to a session (and, by a
    cookie holding the session's token, to the browser that started it)."""

    digest: str
    session_id: str
    connector: str
    config: Mapping[str, Any]  # the customer's config fields given before authorizing (shop, subdomain)
    verifier: SealedField = field(repr=False)
    created_at: float
    expires_at: float


class ConnectStore(Protocol):
    async def create_session(self, session: ConnectSession, *, token_digest: str) -> None: ...
    async def session_by_digest(self, digest: str) -> ConnectSession | None: ...
    async def get_session(self, session_id: str) -> ConnectSession | None: ...
    async def list_sessions(self, *, workspace_id: str | None, status: str | None,
                            limit: int) -> list[ConnectSession]: ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def claim_session(self, session_id: str, *, now: float) -> bool: ...
    async def count_check(self, session_id: str, *, limit: int) -> bool: ...
    async def release_session(self, session_id: str) -> None: ...
    async def finish_session(self, session_id: str, *, source_id: str) -> None: ...
    async def expire_sessions(self, *, now: float, limit: int) -> list[ConnectSession]: ...
    async def add_state(self, state: OAuthState) -> None: ...
    async def take_state(self, digest: str, *, now: float) -> OAuthState | None: ...


@dataclass(frozen=True)
class NewSession:
    session: ConnectSession
    token: str = field(repr=False)


class Unusable(Exception):
    """A session token that cannot be used (the page says why): `unknown`, `expired`, `used`, or `exhausted`
    (too many live checks)."""

    def __init__(self, reason: str, session: ConnectSession | None = None) -> None:
        super().__init__(reason)
        self.reason, self.session = reason, session


def parse_origins(value: Any) -> tuple[str, ...]:
    """Browser origins (`https://app.example.com`, `http://127.0.0.1:3000`): scheme, host and port only."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ORIGINS:
        raise InvalidRequest(f"allowed_origins must be a list of at most {MAX_ORIGINS} origins",
                             field="allowed_origins")
    out: list[str] = []
    for item in value:
        try:
            base = destination.parse_base_url(item) if isinstance(item, str) else None
        except InvalidRequest:
            base = None
        if base is None or base.path:
            raise InvalidRequest("allowed_origins entries must be origins such as https://app.example.com "
                                 "(scheme, host and port; no path)", field="allowed_origins")
        out.append(base.origin)
    return tuple(dict.fromkeys(out))


def parse_allowlist(text: str) -> tuple[destination.BaseUrl, ...]:
    """KEYRELAY_CONNECT_REDIRECT_ALLOWLIST: comma-separated origins or URL prefixes."""
    return tuple(destination.parse_base_url(p.strip()) for p in text.split(",") if p.strip())


def check_redirect_url(url: Any, allowlist: Sequence[destination.BaseUrl]) -> str:
    """A redirect URL under one of the allowlist's prefixes (same scheme, host and port; path on a segment
    boundary); a query is allowed, a fragment or anything ambiguous is not. Never an open redirect."""
    bad = InvalidRequest("redirect_url is not under an origin allowed by KEYRELAY_CONNECT_REDIRECT_ALLOWLIST",
                         field="redirect_url")
    if not isinstance(url, str) or not url or len(url) > 2048 or "#" in url:
        raise bad
    head, sep, query = url.partition("?")
    try:
        base = destination.parse_base_url(head)
    except InvalidRequest:
        raise bad from None
    if sep and (not query or any(not 0x21 <= ord(c) <= 0x7E for c in query)):
        raise bad
    for allowed in allowlist:
        if base.origin == allowed.origin and (
                not allowed.path or base.path == allowed.path or base.path.startswith(allowed.path + "/")):
            return base.origin + base.path + (f"?{query}" if sep else "")
    raise bad


class ConnectService:
    def __init__(self, *, store: ConnectStore, workspaces: WorkspaceService, sources: SourceService,
                 catalog: Mapping[str, ConnectorSpec], hasher: TokenHasher, clock: Clock,
                 redirect_allowlist: Sequence[destination.BaseUrl], allow: tuple[ssrf.Network, ...],
                 on_expired: Callable[[ConnectSession], None] = lambda _s: None) -> None:
        self._store, self._workspaces, self._sources = store, workspaces, sources
        self._catalog, self._hasher, self._clock = catalog, hasher, clock
        self._allowlist, self._allow = tuple(redirect_allowlist), allow
        self.on_expired = on_expired

    @property
    def store(self) -> ConnectStore:
        return self._store

    def now(self) -> float:
        return self._clock()

    def connectable(self) -> list[str]:
        """Connectors a session may offer: API connectors with a live check."""
        return [n for n, s in self._catalog.items() if s.is_catalog_api and check_of(s) is not None]

    async def create(self, caller: Caller, body: Mapping[str, Any]) -> NewSession:
        ws = await self._workspace(caller, body.get("workspace"))
        source_id = body.get("source_id")
        connectors = self._connectors(body.get("connectors"))
        if source_id is not None:
            src = await self._sources.get_source(caller, str(source_id))
            if src.workspace_id != ws.id:
                raise NotFound("Source not found")
            if body.get("connectors") is not None and connectors != (src.connector,):
                raise InvalidRequest("A reconnect session offers only the source's own connector", field="connectors")
            connectors = (src.connector,)
        redirect = body.get("redirect_url")
        now = self._clock()
        session = ConnectSession(
            id=str(uuid.uuid4()), workspace_id=ws.id, connectors=connectors,
            source_id=None if source_id is None else str(source_id),
            redirect_url=None if redirect is None else check_redirect_url(redirect, self._allowlist),
            allowed_origins=parse_origins(body.get("allowed_origins")),
            config=await self._presets(body.get("config"), connectors), status="pending", created_at=now,
            expires_at=now + _expires_in(body.get("expires_in")))
        token = new_token(TOKEN_PREFIX)
        await self._store.create_session(session, token_digest=self._hasher.digest(token))
        return NewSession(session, token)

    async def _workspace(self, caller: Caller, ref: Any) -> Workspace:
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidRequest("workspace must be a workspace id or name", field="workspace")
        try:
            return await self._workspaces.get(caller, ref)
        except NotFound:
            pass
        if not caller.is_admin:
            raise NotFound("Workspace not found")
        return await self._workspaces.named(ref, create=True)

    def _connectors(self, value: Any) -> tuple[str, ...]:
        offered = self.connectable()
        if value is None:
            return tuple(offered)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InvalidRequest("connectors must be a non-empty list of connector names", field="connectors")
        unknown = [v for v in value if v not in offered]
        if unknown:
            raise InvalidRequest("connectors may name only connectors that can be checked live: "
                                 + ", ".join(offered), field="connectors")
        return tuple(dict.fromkeys(value))

    async def _presets(self, value: Any, connectors: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Operator-preset config per connector: known fields, each valid on its own, URLs SSRF-checked."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidRequest("config must be an object of connector name -> config", field="config")
        out: dict[str, dict[str, Any]] = {}
        for name, preset in value.items():
            where = f"config.{name}"
            if name not in connectors:
                raise InvalidRequest(f"{where}: the session does not offer this connector", field=where)
            props = self._catalog[name].config_schema.get("properties") or {}
            schema = {"type": "object", "additionalProperties": False, "properties": props}
            out[name] = check_json(schema, preset, where)
            for key in OPERATOR_ONLY_CONFIG & set(out[name]):
                await _check_url(out[name][key], f"{where}.{key}", self._allow)
        return out

    async def lookup(self, token: str) -> ConnectSession:
        """The session a page token names; Unusable says why it cannot be used."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise Unusable("unknown")
        found = await self._store.session_by_digest(self._hasher.digest(token))
        if found is None:
            raise Unusable("unknown")
        if found.status == "connected":
            raise Unusable("used", found)
        if not found.usable(self._clock()):
            raise Unusable("expired", found)
        return found

    async def get(self, caller: Caller, session_id: str) -> ConnectSession:
        found = await self._store.get_session(session_id)
        if found is None or not caller.can_reach(found.workspace_id):
            raise NotFound("Connect session not found")
        return found

    async def list_sessions(self, caller: Caller, *, workspace_id: str | None, status: str | None,
                   limit: int = 100) -> list[ConnectSession]:
        if workspace_id is not None:
            await self._workspaces.get(caller, workspace_id)
        elif not caller.is_admin:
            workspace_id = caller.workspace_id
        if status is not None and status not in ("pending", "connected", "expired"):
            raise InvalidRequest("status must be pending, connected or expired", field="status")
        return await self._store.list_sessions(workspace_id=workspace_id, status=status, limit=limit)

    async def delete(self, caller: Caller, session_id: str) -> None:
        found = await self.get(caller, session_id)
        await self._store.delete_session(found.id)

    async def expire_due(self, *, limit: int = 200) -> list[ConnectSession]:
        """Mark pending sessions past their expiry as expired (once each) and tell `on_expired`."""
        expired = await self._store.expire_sessions(now=self._clock(), limit=limit)
        for s in expired:
            self.on_expired(s)
        return expired


def _expires_in(value: Any) -> float:
    if value is None:
        return float(DEFAULT_EXPIRES_IN)
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_EXPIRES_IN <= value <= MAX_EXPIRES_IN:
        raise InvalidRequest(f"expires_in must be an integer from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}",
                             field="expires_in")
    return float(value)


async def _check_url(url: Any, where: str, allow: tuple[ssrf.Network, ...]) -> None:
    if not isinstance(url, str):
        raise InvalidRequest(f"Invalid {where}: must be a URL", field=where)
    try:
        base = destination.parse_base_url(url)
        await ssrf.resolve_checked(base.host, base.port, allow=allow)
    except SsrfBlocked as err:
        raise SsrfBlocked(err.message, field=where) from None
    except UpstreamUnreachable:
        pass  # not resolvable yet: the dialer checks every connection
    except KeyrelayError as err:
        raise InvalidRequest(f"Invalid {where}: {err.message}", field=where) from None
