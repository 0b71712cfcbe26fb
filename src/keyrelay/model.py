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
    """What a token may do. The data scopes reach sources (docs/security.md: tokens, API keys and scopes); `admin`
    manages workspaces, sources, keys and applications and `approve` decides approvals: only applications hold
    those two."""

    PROXY = "proxy"
    FILES = "files"
    QUERY = "query"
    EXECUTE = "execute"
    MCP = "mcp"
    LOGS = "logs"
    ADMIN = "admin"
    APPROVE = "approve"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
DATA_SCOPES: frozenset[Scope] = ALL_SCOPES - {Scope.ADMIN, Scope.APPROVE}


class CallerKind(enum.StrEnum):
    APPLICATION = "application"
    WORKSPACE = "workspace"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `requests` requests per clock hour or day (UTC), or in total (`per` None), counted under `key`."""

    key: str
    requests: int
    per: str | None = None  # "hour" | "day" | None


@dataclass(frozen=True, slots=True)
class Constraints:
    """One constraint set of a token (docs/security.md: narrow tokens). None: no constraint of that kind. A request
    must satisfy every set of its token's chain (its own and each ancestor's); a set in observe mode lets a request
    it would refuse through and the request log records `would_deny`."""

    sources: frozenset[str] | None = None  # source ids or slugs
    methods: frozenset[str] | None = None  # upper case
    paths: tuple[str, ...] | None = None  # globs over the normalized path below the source's base URL
    actions: frozenset[str] | None = None  # "entity.action" (or "entity.*")
    expires_at: float | None = None
    budget: Budget | None = None
    max_body_bytes: int | None = None
    observe: bool = False


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal. `workspace_id` is the one workspace of a workspace-scoped token or API key, None
    for an application token, which reaches `workspaces` (None: every workspace). `constraints` is the token's
    chain of constraint sets (empty: unconstrained)."""

    kind: CallerKind
    id: str  # stable, non-secret identifier used in logs and rate-limit keys
    workspace_id: str | None
    scopes: frozenset[Scope]
    workspaces: frozenset[str] | None = None
    constraints: tuple[Constraints, ...] = ()

    @property
    def is_application(self) -> bool:
        return self.kind is CallerKind.APPLICATION

    @property
    def is_admin(self) -> bool:
        """Holds `admin` on an application token without constraints (a constrained token manages nothing)."""
        return self.kind is CallerKind.APPLICATION and Scope.ADMIN in self.scopes and not self.constraints

    @property
    def every_workspace(self) -> bool:
        return self.workspace_id is None and self.workspaces is None

    def can_reach(self, workspace_id: str) -> bool:
        if self.workspace_id is not None:
            return self.workspace_id == workspace_id
        return self.workspaces is None or workspace_id in self.workspaces


ENFORCE, OBSERVE = "enforce", "observe"


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Which requests to a source wait for a human (docs/approvals.md). A request matches when its method is in
    `methods` (unset: any) and its path matches one of `paths` (unset: any), at least one of the two being set;
    or when it is an execute action named in `entities_actions` (`entity.action`, `entity.*`, `*.action`)."""

    methods: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None
    entities_actions: tuple[str, ...] | None = None
    timeout_seconds: float = 3600.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ApprovalRule:
        methods, paths, actions = data.get("methods"), data.get("paths"), data.get("entities_actions")
        return cls(methods=None if methods is None else frozenset(m.upper() for m in methods),
                   paths=None if paths is None else tuple(paths),
                   entities_actions=None if actions is None else tuple(actions),
                   timeout_seconds=float(data.get("timeout_seconds", 3600.0)))

    def to_mapping(self) -> dict[str, Any]:
        return {"methods": None if self.methods is None else sorted(self.methods),
                "paths": None if self.paths is None else list(self.paths),
                "entities_actions": None if self.entities_actions is None else list(self.entities_actions),
                "timeout_seconds": self.timeout_seconds}


@dataclass(frozen=True, slots=True)
class Policy:
    """What a source lets callers do (docs/security.md: source policy). `mode` "observe": the source's refusing
    rules (method allowlist, write policy, rate limit, approval) let the request through and the request log
    records what would have refused it (`would_deny`)."""

    allowed_methods: frozenset[str] | None = None  # None: every method
    forward_headers: frozenset[str] | None = None  # None: the safe default set
    rate_limit_per_minute: int | None = None
    timeout_seconds: float = 30.0
    max_body_bytes: int | None = None
    allow_writes: bool = False
    cache_ttl_seconds: int | None = None
    allow_body_on_safe_methods: bool = False
    approval: ApprovalRule | None = None
    mode: str = ENFORCE

    @property
    def observing(self) -> bool:
        return self.mode == OBSERVE

    def to_mapping(self) -> dict[str, Any]:
        """The policy as the API shows and stores it (the inverse of `from_mapping`)."""
        return {
            "allowed_methods": None if self.allowed_methods is None else sorted(self.allowed_methods),
            "forward_headers": None if self.forward_headers is None else sorted(self.forward_headers),
            "rate_limit_per_minute": self.rate_limit_per_minute, "timeout_seconds": self.timeout_seconds,
            "max_body_bytes": self.max_body_bytes, "allow_writes": self.allow_writes,
            "cache_ttl_seconds": self.cache_ttl_seconds, "allow_body_on_safe_methods": self.allow_body_on_safe_methods,
            "approval": None if self.approval is None else self.approval.to_mapping(), "mode": self.mode,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build from already validated JSON (see manage/policy.py for validation)."""
        methods = data.get("allowed_methods")
        forward = data.get("forward_headers")
        approval = data.get("approval")
        return cls(
            allowed_methods=None if methods is None else frozenset(m.upper() for m in methods),
            forward_headers=None if forward is None else frozenset(h.lower() for h in forward),
            rate_limit_per_minute=data.get("rate_limit_per_minute"),
            timeout_seconds=float(data.get("timeout_seconds", 30.0)),
            max_body_bytes=data.get("max_body_bytes"),
            allow_writes=bool(data.get("allow_writes", False)),
            cache_ttl_seconds=data.get("cache_ttl_seconds"),
            allow_body_on_safe_methods=bool(data.get("allow_body_on_safe_methods", False)),
            approval=None if approval is None else ApprovalRule.from_mapping(approval),
            mode=str(data.get("mode") or ENFORCE),
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


def seal_strings(value: Any) -> Any:
    """A decrypted JSON value with every string in it (not the object keys) wrapped in `Secret`."""
    if isinstance(value, str):
        return Secret(value)
    if isinstance(value, dict):
        return {k: seal_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [seal_strings(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Credentials:
    """Decrypted credential fields of one source (field name -> JSON value whose strings are all `Secret`s, so
    only an explicit `reveal()` yields a plaintext). Never logged or rendered."""

    fields: Mapping[str, Any] = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(fields={sorted(self.fields)})"

    def __str__(self) -> str:
        return self.__repr__()


class Door(enum.StrEnum):
    GATEWAY = "gateway"
    SONAR = "sonar"
    FILES = "files"
    QUERY = "query"
    EXECUTE = "execute"
    MCP = "mcp"
    ADMIN = "admin"
    CONNECT = "connect"  # Connect's live check of new credentials (docs/connect.md)


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
    would_deny: str | None = None  # observe mode: the first rule that would have refused the request
    approval_id: str | None = None  # the approval this row parks, decides or executes


BodyStream = AsyncIterator[bytes]


@dataclass(frozen=True, slots=True, repr=False)
class Outbound:
    """A request ready to send upstream: URL built from validated parts, headers after policy and injection.

    It holds injected credentials in plain text (the HTTP client writes them), so its `repr` shows the method,
    the URL without its query and the header names only."""

    method: str
    url: str  # already percent-encoded, never re-parsed
    headers: tuple[tuple[str, str], ...]
    body: BodyStream | bytes | None = None
    timeout_seconds: float = 30.0
    idempotent: bool = False
    secrets: tuple[str, ...] = ()
    # upstream connections are shared only by requests with the same key (the source id: one credential per
    # connection); None: a connection of its own, closed after the request
    pool_key: str | None = None

    def __repr__(self) -> str:
        names = [name for name, _ in self.headers]
        return f"Outbound(method={self.method!r}, url={self.url.partition('?')[0]!r}, header_names={names!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Application:
    """A machine client of the operator. Its tokens reach `workspaces` (None: every workspace) with `scopes`."""

    id: str
    client_id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    workspaces: frozenset[str] | None = None
    scopes: frozenset[Scope] = ALL_SCOPES


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
    constraints: Constraints | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a token digest maps to. Application tokens have no workspace and reach `workspaces` (None: all).
    `constraints` is the chain of constraint sets, the root's first; `derived_id` names an attenuated token."""

    kind: CallerKind
    subject_id: str  # application id, or api key id
    workspace_id: str | None
    scopes: frozenset[Scope]
    expires_at: float | None
    revoked: bool
    workspaces: frozenset[str] | None = None
    constraints: tuple[Constraints, ...] = ()
    derived_id: str | None = None
    depth: int = 0


def internal_destination(table: str) -> str:
    """The destination a value keyrelay seals for itself (an OAuth client secret, a webhook signing secret, a PKCE
    verifier) is bound to: its table, never an upstream origin, so it can never open as a source's credential."""
    return "internal:" + table


@dataclass(frozen=True, slots=True)
class SealedField:
    """One encrypted credential field as stored, with the destination it is bound to (None: sealed before
    destinations were bound; never opened for a request)."""

    field: str
    key_id: str
    ciphertext: bytes = dataclasses.field(repr=False)
    destination: str | None = None


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
    workspace_ids: frozenset[str] | None = None  # None: no restriction to a set of workspaces
    source_id: str | None = None
    status: int | None = None
    since: float | None = None
    limit: int = 100
    approval_id: str | None = None


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
    wait_seconds: float | None = None  # `Prefer: wait=N`: how long a parked request may wait for a decision
    approved: Approved | None = None  # set only by the approval service: run a parked request once


@dataclass(frozen=True, slots=True)
class Approved:
    """An approved parked request being run (docs/approvals.md): it runs as its original caller, without a token,
    only to the destination bound when it was parked, and is never parked again."""

    approval_id: str
    caller: Caller
    destination: str  # the bound destination (pipeline/approval.py: `destination`)


class ApprovalStatus(enum.StrEnum):
    """An approval's life (docs/approvals.md): pending -> executing -> executed | failed; pending -> denied;
    pending -> expired. Every arrow is one compare-and-set in the database, so it happens once."""

    PENDING = "pending"
    EXECUTING = "executing"  # approved, and claimed by the instance that sends it (exactly once)
    EXECUTED = "executed"
    FAILED = "failed"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """An encrypted blob and the id of the data key that sealed it."""

    key_id: str
    blob: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class Approval:
    """A parked request as stored. `request` holds the request itself, encrypted: the agent's headers (after the
    header policy), body and target, never a credential (it is parked before injection) nor the agent's token."""

    id: str
    workspace_id: str
    source_id: str
    door: str
    caller: str  # the original caller's id: the only one who may fetch the response
    caller_kind: str
    caller_scopes: frozenset[Scope]
    method: str
    path: str  # as the request log shows it (no query values)
    action: str | None  # execute: `entity.action`
    request_hash: str
    request: SealedRecord
    body_bytes: int
    status: ApprovalStatus
    created_at: float
    expires_at: float
    link_digest: str | None = None
    decided_at: float | None = None
    decided_by: str | None = None
    executed_at: float | None = None
    upstream_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    result: SealedRecord | None = None  # the kept response, until fetched or past `result_expires_at`
    result_expires_at: float | None = None
    fetched_at: float | None = None


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
