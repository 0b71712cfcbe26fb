"""The declarative part of a connector definition: auth mapping, entities, actions, params, pagination.

A definition file is checked against `DEFINITION_SCHEMA` when it is loaded (and in a test for every shipped
file), so a broken definition fails at start-up, never in the middle of a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.connectors.provider import OAUTH_SCHEMA

PARAM_TYPES = ("string", "integer", "number", "boolean", "array", "object")
PAGINATION_TYPES = ("none", "cursor", "link_header", "next_url", "offset", "page_number")
WRITE_ACTIONS = frozenset({"create", "update", "delete"})
_NAME = "^[a-z][a-z0-9_]{0,63}$"
_HEADER_NAME = "^[A-Za-z0-9!#$%&'*+.^`|~-]{1,64}$"  # an RFC 9110 token, without "_"

_PARAM = {
    "type": "object", "additionalProperties": False, "required": ["type", "description"],
    "properties": {
        "type": {"enum": list(PARAM_TYPES)}, "description": {"type": "string", "minLength": 3},
        "required": {"type": "boolean"}, "in": {"enum": ["path", "query", "body", "none"]},
        "name": {"type": "string", "minLength": 1}, "enum": {"type": "array"}, "default": {},
        "minimum": {"type": "number"}, "maximum": {"type": "number"}, "items": {"type": "object"},
        "filter": {"type": "boolean"}, "explode": {"type": "boolean"},
    },
}
_PAGINATION = {
    "type": "object", "additionalProperties": False, "required": ["type"],
    "properties": {
        "type": {"enum": list(PAGINATION_TYPES)}, "param": {"type": "string"}, "in": {"enum": ["query", "body"]},
        "next": {"type": "string"}, "has_more": {"type": "string"}, "size_param": {"type": "string"},
        "size_in": {"enum": ["query", "body"]}, "default_size": {"type": "integer", "minimum": 1},
        "max_size": {"type": "integer", "minimum": 1}, "start": {"type": "integer"}, "total": {"type": "string"},
    },
}
_ACTION = {
    "type": "object", "additionalProperties": False, "required": ["method", "path"],
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}, "path": {"type": "string", "pattern": "^/"},
        "description": {"type": "string"}, "body": {"enum": ["json", "form"]}, "records": {"type": "string"},
        "record": {"type": "string"}, "params": {"type": "object", "additionalProperties": _PARAM},
        "pagination": _PAGINATION, "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "static_body": {"type": "object"}, "static_query": {"type": "object"}, "read_only": {"type": "boolean"},
        "error_path": {"type": "string"},
        "record_filter": {"type": "object", "minProperties": 1},
    },
}
DEFINITION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name", "title", "kind", "description", "config_schema", "credentials_schema"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"}, "title": {"type": "string"},
        "kind": {"enum": ["api", "files"]}, "description": {"type": "string", "minLength": 10},
        "definition_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
        "default_base_url": {"type": "string"}, "docs_url": {"type": "string"},
        "config_schema": {"type": "object"}, "credentials_schema": {"type": "object"},
        "auth": {"type": "object"},
        "oauth": OAUTH_SCHEMA,  # Connect's authorization-code flow (connectors/provider.py)
        "check": {  # the action Connect runs to check new credentials (connectors/check.py)
            "type": "object", "additionalProperties": False, "required": ["entity", "action"],
            "properties": {"entity": {"type": "string"}, "action": {"type": "string"}, "params": {"type": "object"}},
        },
        "headers": {"type": "object", "propertyNames": {"pattern": _HEADER_NAME}, "additionalProperties": {
            "type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[\\x20-\\x7e]+$"}},
        "entities": {"type": "object", "propertyNames": {"pattern": _NAME}, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["description", "actions"],
            "properties": {
                "description": {"type": "string", "minLength": 3}, "schema": {"type": "object"},
                "stream": {"type": "boolean"},
                "actions": {"type": "object", "propertyNames": {"pattern": _NAME}, "additionalProperties": _ACTION},
            },
        }},
    },
}


@dataclass(frozen=True)
class Param:
    name: str  # the name agents use
    type: str
    description: str
    required: bool = False
    location: str = "query"  # path | query | body | none (validated, never sent)
    wire_name: str = ""  # the upstream's name, if different
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    filter: bool = True  # offered as a stream filter
    default: Any = None  # used when the agent sends nothing; strings may name config fields: "{owner}"
    explode: bool = False  # an array in the query as one `name=value` pair per item (default: comma-separated)

    @property
    def upstream(self) -> str:
        return self.wire_name or self.name


@dataclass(frozen=True)
class Pagination:
    type: str = "none"
    param: str = ""  # request parameter carrying the cursor / offset / page
    location: str = "query"
    next: str = ""  # where the next cursor comes from: a body path, or "last:<field>" of the last record
    has_more: str = ""  # body path of a boolean "more pages" flag
    size_param: str = ""
    size_location: str = "query"
    default_size: int = 25
    max_size: int = 100
    start: int = 0
    total: str = ""


@dataclass(frozen=True)
class Action:
    name: str
    method: str
    path: str
    description: str
    params: Mapping[str, Param]
    body: str = "json"
    records: str | None = None  # list-like actions: path of the record array
    record: str | None = None  # single-object actions: path of the object ("" = whole body)
    pagination: Pagination = field(default_factory=Pagination)
    metadata: Mapping[str, str] = field(default_factory=dict)
    static_query: Mapping[str, Any] = field(default_factory=dict)
    static_body: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool | None = None
    error_path: str = ""  # e.g. GraphQL's `errors`: a non-empty value there on a 2xx is a failure
    # dot path -> required value: other records are dropped (fail closed: a missing field drops the record),
    # e.g. Gong's privacy rule {isPrivate: false}
    record_filter: Mapping[str, Any] = field(default_factory=dict)
    # the connector's default upstream headers (lowercase names), e.g. GitHub's User-Agent: never agent-controlled,
    # and credential headers injected by the pipeline replace any of the same name
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_collection(self) -> bool:
        return self.records is not None

    @property
    def is_write(self) -> bool:
        if self.read_only is not None:
            return not self.read_only
        return self.name in WRITE_ACTIONS


@dataclass(frozen=True)
class Entity:
    name: str
    description: str
    actions: Mapping[str, Action]
    schema: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = True


def _param(name: str, raw: Mapping[str, Any], method: str) -> Param:
    default_in = "query" if method in ("GET", "DELETE") else "body"
    return Param(name=name, type=raw["type"], description=raw["description"], required=raw.get("required", False),
                 location=raw.get("in", default_in), wire_name=raw.get("name", ""),
                 enum=tuple(raw["enum"]) if "enum" in raw else None, minimum=raw.get("minimum"),
                 maximum=raw.get("maximum"), filter=raw.get("filter", True), default=raw.get("default"),
                 explode=raw.get("explode", False))


def _action(name: str, raw: Mapping[str, Any], headers: Mapping[str, str]) -> Action:
    method = raw["method"]
    params = {k: _param(k, v, method) for k, v in (raw.get("params") or {}).items()}
    pag = raw.get("pagination") or {}
    pagination = Pagination(
        type=pag.get("type", "none"), param=pag.get("param", ""), location=pag.get("in", "query"),
        next=pag.get("next", ""), has_more=pag.get("has_more", ""), size_param=pag.get("size_param", ""),
        size_location=pag.get("size_in", "query"), default_size=pag.get("default_size", 25),
        max_size=pag.get("max_size", 100), start=pag.get("start", 0), total=pag.get("total", ""),
    )
    return Action(name=name, method=method, path=raw["path"], description=raw.get("description", ""),
                  params=params, body=raw.get("body", "json"), records=raw.get("records"), record=raw.get("record"),
                  pagination=pagination, metadata=raw.get("metadata") or {},
                  static_query=raw.get("static_query") or {}, static_body=raw.get("static_body") or {},
                  read_only=raw.get("read_only"), error_path=raw.get("error_path", ""),
                  record_filter=raw.get("record_filter") or {}, headers=headers)


def parse_entities(raw: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Entity]:
    """The entities of a definition; every action carries the connector's default upstream `headers`."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    out = {}
    for name, ent in (raw or {}).items():
        actions = {a: _action(a, spec, lower) for a, spec in ent["actions"].items()}
        out[name] = Entity(name=name, description=ent["description"], actions=actions,
                           schema=ent.get("schema") or {}, stream=ent.get("stream", True))
    return out
