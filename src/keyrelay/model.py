"""Frozen values that flow through keyrelay: who calls, what they may reach, what is sent and received."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any


class Secret:
    """A credential value. `repr`/`str` never show it; `reveal()` marks every place that needs the plaintext."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("a secret may not contain control characters")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:  # identity only: compare secrets with hmac.compare_digest
        return self is other

    def __hash__(self) -> int:
        return id(self)


class Scope(enum.StrEnum):
    PROXY = "proxy"
    FILES = "files"
    QUERY = "query"
    EXECUTE = "execute"
    MCP = "mcp"
    LOGS = "logs"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


class CallerKind(enum.StrEnum):
    APPLICATION = "application"
    WORKSPACE = "workspace"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal. `workspace_id` is None only for application tokens (admin power)."""

    kind: CallerKind
    id: str  # stable, non-secret identifier used in logs and rate-limit keys
    workspace_id: str | None
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        return self.kind is CallerKind.APPLICATION

    def can_reach(self, workspace_id: str) -> bool:
        return self.workspace_id is None or self.workspace_id == workspace_id


@dataclass(frozen=True, slots=True)
class Policy:
    """What a source lets callers do. Defaults follow contracts/api.md."""

    allowed_methods: frozenset[str] | None = None  # None: every method
    forward_headers: frozenset[str] | None = None  # None: the safe default set
    rate_limit_per_minute: int | None = None
    timeout_seconds: float = 30.0
    max_body_bytes: int | None = None
    allow_writes: bool = False
    cache_ttl_seconds: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build from already validated JSON (see manage/policy.py for validation)."""
        methods = data.get("allowed_methods")
        forward = data.get("forward_headers")
        return cls(
            allowed_methods=None if methods is None else frozenset(m.upper() for m in methods),
            forward_headers=None if forward is None else frozenset(h.lower() for h in forward),
            rate_limit_per_minute=data.get("rate_limit_per_minute"),
            timeout_seconds=float(data.get("timeout_seconds", 30.0)),
            max_body_bytes=data.get("max_body_bytes"),
            allow_writes=bool(data.get("allow_writes", False)),
            cache_ttl_seconds=data.get("cache_ttl_seconds"),
        )


@dataclass(frozen=True, slots=True)
class Source:
    """A connector instance in a workspace; never carries credential values."""

    id: str
    workspace_id: str
    connector: str
    name: str
    slug: str
    config: Mapping[str, Any]
    policy: Policy
    status: str
    credential_fields: tuple[str, ...]
    created_at: float
    updated_at: float

    @property
    def active(self) -> bool:
        return self.status != "inactive"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Decrypted credential fields of one source (field name -> JSON value). Never logged or rendered."""

    fields: Mapping[str, Any] = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(fields={sorted(self.fields)})"


class Door(enum.StrEnum):
    GATEWAY = "gateway"
    SONAR = "sonar"
    FILES = "files"
    QUERY = "query"
    EXECUTE = "execute"
    MCP = "mcp"
    ADMIN = "admin"


@dataclass(slots=True)  # not frozen: built once per request, and a frozen 16-field __init__ costs twice as much
class LogEntry:
    """One request-log row (contract: Observability). Never holds query values, bodies or secrets."""

    id: str
    ts: float
    workspace_id: str | None
    source_id: str | None
    door: str
    method: str
    path: str
    status: int
    latency_ms: float
    upstream_latency_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    error_code: str | None = None
    error_message: str | None = None
    caller: str | None = None
    connector: str | None = None
    upstream_status: int | None = None  # the upstream's own status, when it differs in meaning from `status`


BodyStream = AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class Outbound:
    """A request ready to send upstream: URL built from validated parts, headers after policy and injection."""

    method: str
    url: str  # already percent-encoded, never re-parsed
    headers: tuple[tuple[str, str], ...]
    body: BodyStream | bytes | None = None
    timeout_seconds: float = 30.0
    idempotent: bool = False
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    client_id: str
    name: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    workspace_id: str
    name: str
    scopes: frozenset[Scope]
    hint: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a token digest maps to. Application tokens have no workspace."""

    kind: CallerKind
    subject_id: str  # application id, or api key id
    workspace_id: str | None
    scopes: frozenset[Scope]
    expires_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class SealedField:
    """One encrypted credential field as stored."""

    field: str
    key_id: str
    ciphertext: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class NewSource:
    id: str
    workspace_id: str
    connector: str
    name: str
    slug: str
    config: Mapping[str, Any]
    policy: Mapping[str, Any]
    status: str = "active"


@dataclass(frozen=True, slots=True)
class LogQuery:
    workspace_id: str | None = None
    source_id: str | None = None
    status: int | None = None
    since: float | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class BySlug:
    """The gateway names a source by its workspace and slug."""

    workspace_id: str
    slug: str


@dataclass(frozen=True, slots=True)
class ById:
    """Every other door names a source by its id."""

    source_id: str


SourceRef = BySlug | ById


@dataclass(frozen=True, slots=True)
class Tail:
    """A gateway target: the raw (still percent-encoded) path below the source's base URL, and the raw query."""

    path: str
    query: str = ""


@dataclass(frozen=True, slots=True)
class Url:
    """A request-API target: a full URL that must lie under the source's base URL."""

    url: str


Target = Tail | Url


@dataclass(frozen=True, slots=True)
class Inbound:
    """One agent request, as every door hands it to the pipeline.

    `headers` are the agent's headers with lowercase names: the gateway's request headers, or the request API's
    `headers` object. A `Tail` target forwards the header allowlist, a `Url` target the headers the agent named
    (docs/security.md: header policy). Doors whose requests are built from a connector definition leave
    `target` unset; their upstream calls carry their own.
    """

    door: Door
    method: str
    path: str  # for the request log: no query values
    authorization: str | None
    source: SourceRef
    scope: Scope = Scope.PROXY
    target: Target | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: BodyStream | bytes | None = None
    content_length: int | None = None


OAUTH_STATE_FIELD = "oauth2_state"  # sealed field holding OAuth2 token state; never set through the API


@dataclass(frozen=True, slots=True)
class OAuthRecord:
    """What the OAuth2 refresh logic reads about a source: its status and its sealed token state (if any)."""

    status: str | None  # None: the source no longer exists
    state: SealedField | None


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in operator console session (docs/console.md). The browser holds a random value; the database
    holds only its digest. `id` is public: CSRF tokens are bound to it."""

    id: str
    application: Application
    method: str  # "secret" (client id and secret) or "link" (a one-time link from `keyrelay console-link`)
    created_at: float
    last_seen_at: float
    expires_at: float
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class VaultKey:
    """One data-encryption key of the vault's key ring, as the console shows it (never key material)."""

    id: str
    status: str  # active | retired
    created_at: float
    fields: int  # credential fields sealed under it


@dataclass(frozen=True, slots=True)
class TrafficCell:
    """Request-log rows counted by a group (a minute index or a source id), status class and latency bucket."""

    group: int | str | None
    status_class: int  # 2 for 2xx, 4 for 4xx, ...
    bucket: int  # index into the latency bucket bounds; len(bounds) for slower requests
    count: int
    rate_limited: int
    upstream_failed: int
