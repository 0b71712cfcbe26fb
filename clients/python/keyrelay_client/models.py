"""What keyrelay returns, as frozen dataclasses read from its JSON (field names as in the HTTP contract).

Each keeps the whole object it was read from in `raw`, so fields a newer server adds are not lost. Secrets that
are shown once (an API key, a client secret, a token) are fields with `repr=False` and are left out of `raw`,
so printing or logging an object never shows them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from keyrelay_client.errors import UnexpectedResponse

T = TypeVar("T")
Raw = Mapping[str, Any]


class Reader:
    """Typed access to one JSON object; a missing or mistyped field is an `UnexpectedResponse` naming it."""

    def __init__(self, data: Raw, what: str) -> None:
        self.data, self.what = data, what

    def _bad(self, key: str, kind: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"{self.what}: field '{key}' is missing or not {kind}")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(key, "an integer")
        return value

    def opt_number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._bad(key, "a number")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "a boolean")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return value

    def time(self, key: str) -> dt.datetime | None:
        value = self.opt_text(key)
        if value is None:
            return None
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self._bad(key, "an ISO-8601 time") from None

    def without(self, *secret: str) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in secret}


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    created_at: dt.datetime | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> Workspace:
        r = Reader(data, "workspace")
        return cls(id=r.text("id"), name=r.text("name"), created_at=r.time("created_at"), raw=r.without())


@dataclass(frozen=True)
class ScopedToken:
    """A workspace-scoped token (`krw_...`): every scope, one workspace, no admin power."""

    token: str = field(repr=False)
    expires_in: int
    workspace_id: str

    @classmethod
    def from_json(cls, data: Raw) -> ScopedToken:
        r = Reader(data, "scoped token")
        return cls(token=r.text("token"), expires_in=r.integer("expires_in"), workspace_id=r.text("workspace_id"))


@dataclass(frozen=True)
class Source:
    """A connector instance in a workspace. `credentials` lists the names of the credential fields that are
    set; keyrelay never returns a credential value."""

    id: str
    workspace_id: str
    connector: str
    name: str
    slug: str
    status: str
    config: dict[str, Any]
    credentials: list[str]
    policy: dict[str, Any]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> Source:
        r = Reader(data, "source")
        return cls(id=r.text("id"), workspace_id=r.text("workspace_id"), connector=r.text("connector"),
                   name=r.text("name"), slug=r.text("slug"), status=r.text("status"), config=r.mapping("config"),
                   credentials=r.texts("credentials"), policy=r.mapping("policy"), created_at=r.time("created_at"),
                   updated_at=r.time("updated_at"), raw=r.without())


@dataclass(frozen=True)
class ApiKey:
    id: str
    workspace_id: str
    name: str
    scopes: list[str]
    hint: str
    revoked: bool
    created_at: dt.datetime | None
    expires_at: dt.datetime | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> ApiKey:
        r = Reader(data, "API key")
        return cls(id=r.text("id"), workspace_id=r.text("workspace_id"), name=r.opt_text("name") or "",
                   scopes=r.texts("scopes"), hint=r.opt_text("hint") or "", revoked=r.flag("revoked"),
                   created_at=r.time("created_at"), expires_at=r.time("expires_at"), raw=r.without("key"))


@dataclass(frozen=True)
class NewApiKey(ApiKey):
    """A just-created API key: `key` (`kr_...`) is shown this once."""

    key: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, data: Raw) -> NewApiKey:
        base = ApiKey.from_json(data)
        key = Reader(data, "API key").text("key")
        return cls(**{f: getattr(base, f) for f in base.__dataclass_fields__}, key=key)


@dataclass(frozen=True)
class Application:
    """A machine client of the operator, limited to `workspaces` (a list of ids, or `"*"`) and `scopes`. A revoked
    application stays listed, with `revoked` set."""

    id: str
    client_id: str
    name: str
    workspaces: list[str] | str
    scopes: list[str]
    created_at: dt.datetime | None
    revoked: bool = False
    revoked_at: dt.datetime | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> Application:
        r = Reader(data, "application")
        spaces = data.get("workspaces")
        workspaces: list[str] | str = spaces if isinstance(spaces, str) else r.texts("workspaces")
        return cls(id=r.text("id"), client_id=r.text("client_id"), name=r.opt_text("name") or "",
                   workspaces=workspaces, scopes=r.texts("scopes"), created_at=r.time("created_at"),
                   revoked=r.flag("revoked"), revoked_at=r.time("revoked_at"), raw=r.without("client_secret"))


@dataclass(frozen=True)
class ApplicationSecret:
    """A new application, or one whose secret was rotated: `client_secret` is shown this once.

    `client_id` is None after a rotation when keyrelay's answer does not repeat it (the client id never changes).
    """

    id: str | None
    client_id: str | None
    client_secret: str = field(repr=False)
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> ApplicationSecret:
        """A created application's answer: it must name its `client_id`."""
        r = Reader(data, "application")
        return cls(id=r.opt_text("id"), client_id=r.text("client_id"), client_secret=r.text("client_secret"),
                   raw=r.without("client_secret"))

    @classmethod
    def rotated(cls, data: Raw) -> ApplicationSecret:
        """A rotation's answer: `{id, client_secret}`, `client_id` optional."""
        r = Reader(data, "rotated secret")
        return cls(id=r.text("id"), client_id=r.opt_text("client_id"), client_secret=r.text("client_secret"),
                   raw=r.without("client_secret"))


@dataclass(frozen=True)
class ConnectSession:
    """A hosted connect page for one workspace: send the end user to `url`; `token` authorises that page. Both
    carry the session's secret, so `repr` shows neither."""

    id: str
    url: str = field(repr=False)
    expires_at: dt.datetime | None = None
    token: str = field(default="", repr=False)
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> ConnectSession:
        r = Reader(data, "connect session")
        return cls(id=r.text("id"), url=r.text("url"), expires_at=r.time("expires_at"), token=r.text("token"),
                   raw=r.without("token", "url"))


@dataclass(frozen=True)
class ConnectorInfo:
    """A catalog entry of `GET /api/v1/connectors`."""

    name: str
    title: str
    kind: str
    description: str
    definition_id: str | None
    default_base_url: str | None
    config_schema: dict[str, Any]
    credentials_schema: dict[str, Any]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> ConnectorInfo:
        r = Reader(data, "connector")
        return cls(name=r.text("name"), title=r.opt_text("title") or "", kind=r.text("kind"),
                   description=r.opt_text("description") or "", definition_id=r.opt_text("definition_id"),
                   default_base_url=r.opt_text("default_base_url"), config_schema=r.mapping("config_schema"),
                   credentials_schema=r.mapping("credentials_schema"), raw=r.without())


@dataclass(frozen=True)
class RequestResult:
    """The request API's answer: the upstream's status, headers and body (`body` is the parsed JSON, or None)."""

    status_code: int
    headers: dict[str, str]
    text: str
    body: Any
    truncated: bool = False

    @classmethod
    def from_json(cls, data: Raw) -> RequestResult:
        r = Reader(data, "request API answer")
        return cls(status_code=r.integer("status_code"), headers=r.mapping("headers"),
                   text=r.opt_text("response_body") or "", body=data.get("body"), truncated=r.flag("truncated"))


@dataclass(frozen=True)
class ExecuteResult:
    """An execute answer: `result` is a list of records for collections, else one object."""

    result: Any
    connector_metadata: dict[str, Any]
    execution_metadata: dict[str, Any]

    @classmethod
    def from_json(cls, data: Raw) -> ExecuteResult:
        r = Reader(data, "execute answer")
        return cls(result=data.get("result"), connector_metadata=r.mapping("connector_metadata"),
                   execution_metadata=r.mapping("execution_metadata"))


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    last_modified: dt.datetime | None
    etag: str | None = None

    @classmethod
    def from_json(cls, data: Raw) -> FileInfo:
        r = Reader(data, "file")
        return cls(path=r.text("path"), size=r.integer("size"), last_modified=r.time("last_modified"),
                   etag=r.opt_text("etag"))


@dataclass(frozen=True)
class LogEntry:
    """One request-log row (query values and bodies are never logged)."""

    id: str
    ts: dt.datetime | None
    workspace_id: str | None
    source_id: str | None
    door: str
    method: str
    path: str
    status: int
    latency_ms: float | None
    upstream_latency_ms: float | None
    bytes_in: int | None
    bytes_out: int | None
    error_code: str | None
    error_message: str | None
    caller: str | None
    connector: str | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Raw) -> LogEntry:
        r = Reader(data, "log entry")
        bytes_in, bytes_out = r.opt_number("bytes_in"), r.opt_number("bytes_out")
        return cls(id=r.text("id"), ts=r.time("ts"), workspace_id=r.opt_text("workspace_id"),
                   source_id=r.opt_text("source_id"), door=r.opt_text("door") or "", method=r.opt_text("method") or "",
                   path=r.opt_text("path") or "", status=r.integer("status"), latency_ms=r.opt_number("latency_ms"),
                   upstream_latency_ms=r.opt_number("upstream_latency_ms"),
                   bytes_in=None if bytes_in is None else int(bytes_in),
                   bytes_out=None if bytes_out is None else int(bytes_out), error_code=r.opt_text("error_code"),
                   error_message=r.opt_text("error_message"), caller=r.opt_text("caller"),
                   connector=r.opt_text("connector"), raw=r.without())


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paged listing. `next` is where the following page starts (None: this was the last);
    `metadata` is the page's `connector_metadata` for connector collections, else empty."""

    items: list[T]
    next: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
