"""The MCP tools: JSON schemas, descriptions written for an LLM, and thin adapters onto keyrelay's services.

Every adapter receives the caller's `Authorization` header and hands it to the same service an HTTP door uses
(request API, stream query, execute, file routes), so authentication, the capability scope (`proxy`, `query`,
`execute`, `files`), rate limits and the request log (one row per call, door `mcp`) are shared, not copied.
`list_sources` and `describe_source` read metadata only, like their HTTP twins, and are not logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyrelay import request_api
from keyrelay.connectors.execute import ConnectorService, ExecuteRequest
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.doors.mcp import files as mcp_files
from keyrelay.errors import InvalidRequest, NotFound
from keyrelay.files.service import FileService
from keyrelay.manage.approvals import ApprovalService, answer
from keyrelay.manage.sources import SourceService
from keyrelay.model import Door, Source
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.build import base_url_of
from keyrelay.pipeline.relay import Relay


@dataclass(frozen=True)
class Deps:
    """The services the tools call (built once by the composition root)."""

    relay: Relay
    authenticator: Authenticator
    sources: SourceService
    connectors: ConnectorService
    catalog: Mapping[str, ConnectorSpec]
    files: FileService | None = None
    approvals: ApprovalService | None = None


Handler = Callable[[Deps, "str | None", dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolDef:
    name: str
    title: str
    description: str
    schema: dict[str, Any]
    handler: Handler
    read_only: bool = True
    needs_files: bool = False


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


SOURCE_ID = {"type": "string", "minLength": 1, "maxLength": 64,
             "description": "The id of a source, as returned by list_sources."}
FIELDS = {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 200}

# --- metadata -----------------------------------------------------------------------------------------------


def _summary(d: Deps, src: Source) -> dict[str, Any]:
    spec = d.catalog.get(src.connector)
    kind = spec.kind if spec is not None else "unknown"
    out: dict[str, Any] = {"id": src.id, "name": src.name, "slug": src.slug, "connector": src.connector,
                           "kind": kind, "workspace_id": src.workspace_id, "status": src.status}
    if kind == "api":
        try:
            out["base_url"] = base_url_of(src, spec.default_base_url if spec else None)
        except InvalidRequest:  # a template the config cannot fill
            out["base_url"] = None
        methods = src.policy.allowed_methods
        out["allowed_methods"] = None if methods is None else sorted(methods)
        out["tools"] = ["apis_make_request"] + (["query_stream", "execute"] if spec and spec.is_catalog_api else [])
    elif kind == "files":
        out["tools"] = ["files_list", "files_get"]
    return out


async def list_sources(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    caller = await d.authenticator.authenticate(authorization)
    found = await d.sources.list_sources(caller, args.get("workspace_id"))
    return {"sources": [_summary(d, s) for s in found]}


def _entities(spec: ConnectorSpec) -> list[dict[str, Any]]:
    return [{
        "name": ent.name, "description": ent.description,
        "actions": [{
            "name": act.name, "description": act.description, "writes": act.is_write,
            "params": [{k: v for k, v in {"name": p.name, "type": p.type, "description": p.description,
                                          "required": p.required, "enum": list(p.enum) if p.enum else None,
                                          "minimum": p.minimum, "maximum": p.maximum}.items() if v is not None}
                       for p in act.params.values()],
        } for act in ent.actions.values()],
    } for ent in spec.entities.values()]


async def describe_source(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    caller = await d.authenticator.authenticate(authorization)
    src = await d.sources.get_source(caller, args["source_id"])
    spec = d.catalog[src.connector]
    out: dict[str, Any] = {"source": _summary(d, src),
                           "connector": {"name": spec.name, "title": spec.title, "kind": spec.kind,
                                         "description": spec.description}}
    if spec.is_catalog_api:
        out["allow_writes"] = src.policy.allow_writes
        out["streams"] = d.connectors.streams(spec)
        out["entities"] = _entities(spec)
    return out


# --- data (each call: one request-log row, door "mcp") ------------------------------------------------------


async def apis_make_request(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    call = request_api.parse_fields({k: v for k, v in args.items() if k != "source_id"})
    inbound = request_api.inbound(call, door=Door.MCP, path="/mcp/apis_make_request", authorization=authorization,
                                  source_id=args["source_id"])
    return await request_api.call(d.relay, inbound)


async def query_stream(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    return await d.connectors.query(authorization=authorization, source_id=args["source_id"],
                                    stream=args["stream"], filters=args.get("filters"),
                                    page_token=args.get("page_token"), path="/mcp/query_stream", door=Door.MCP)


async def execute(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    return await d.connectors.execute(ExecuteRequest(
        authorization=authorization, source_id=args["source_id"], entity=args["entity"], action=args["action"],
        params=args.get("params") or {}, select_fields=args.get("select_fields"),
        exclude_fields=args.get("exclude_fields"), door=Door.MCP, path="/mcp/execute"))


async def get_approval(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    """The parked request's state for the caller that parked it; its response, once, after it ran."""
    caller = await d.authenticator.authenticate(authorization)
    if d.approvals is None:
        raise NotFound("Approval not found")
    return answer(await d.approvals.gate.answer(args["approval_id"], caller, wait=args.get("wait_seconds")))


async def files_list(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    assert d.files is not None
    return await mcp_files.list_files(d.files, authorization, args)


async def files_get(d: Deps, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    assert d.files is not None
    return await mcp_files.get_file(d.files, authorization, args)


TOOLS: tuple[ToolDef, ...] = (
    ToolDef("list_sources", "List data sources", (
        "List the data sources (connected APIs and file stores) this token may use. Call this first: every "
        "other tool needs a source_id from here. Each entry names its connector, kind ('api' or 'files'), the "
        "base_url that apis_make_request URLs must start with, and the tools that work with it."),
        _obj([], workspace_id={"type": "string", "maxLength": 64,
                               "description": "Only for application tokens: list one workspace's sources."}),
        list_sources),
    ToolDef("describe_source", "Describe a data source", (
        "Describe one source: its connector, base URL, the streams query_stream can read (with their filters "
        "and record schemas), and the entities/actions/params execute accepts. Read this before calling "
        "query_stream or execute on a source you have not used yet."),
        _obj(["source_id"], source_id=SOURCE_ID), describe_source),
    ToolDef("apis_make_request", "Call a source's API", (
        "Make an HTTP request to the API behind a source; keyrelay adds the stored credentials, so never send "
        "an Authorization header or API key yourself. `url` must be a full URL under the source's base_url "
        "(same scheme, host and port; path below the base path), with any query string included. Returns the "
        "upstream's status_code, headers, response_body (text) and body (parsed JSON, or null). An upstream "
        "error status is returned inside that result, not as a tool error. If the source needs a human to "
        "approve the request, the result is {approval: {id, status: 'pending', ...}} instead and nothing was sent "
        "yet: call get_approval with that id. Needs the 'proxy' scope."),
        _obj(["source_id", "url"], source_id=SOURCE_ID,
             method={"type": "string", "default": "GET", "description": "HTTP method, e.g. GET or POST.",
                     "pattern": "^[A-Za-z]{1,16}$"},
             url={"type": "string", "minLength": 1, "maxLength": 8192,
                  "description": "Full URL, e.g. https://api.stripe.com/v1/invoices?customer=cus_123."},
             headers={"type": "object", "additionalProperties": {"type": "string"},
                      "description": "Extra request headers (credentials are added by keyrelay)."},
             body={"description": "Request body: a string is sent as is, anything else as JSON."}),
        apis_make_request, read_only=False),
    ToolDef("query_stream", "Read records from a stream", (
        "Read one page of records from a stream of a catalog API source (e.g. Stripe 'customers'). Stream "
        "names and filter names come from describe_source; filters.limit sets the page size. Pass the "
        "returned next_page_token (with the same stream and filters) to get the next page; null means done. "
        "Needs the 'query' scope."),
        _obj(["source_id", "stream"], source_id=SOURCE_ID,
             stream={"type": "string", "minLength": 1, "maxLength": 128},
             filters={"type": "object", "description": "Filter name -> value, plus optional limit."},
             page_token={"type": ["string", "null"], "maxLength": 4096}),
        query_stream),
    ToolDef("execute", "Run an entity action", (
        "Run an action (list, get, search, create, ...) on an entity of a catalog API source, with typed "
        "params; see describe_source for what exists. Lists return connector_metadata.next_cursor for paging. "
        "select_fields / exclude_fields trim records (dotted paths). Writes work only where the source's "
        "policy allows them. If the source needs a human to approve the action, the result is "
        "{approval: {id, status: 'pending', ...}}: call get_approval with that id. Needs the 'execute' scope."),
        _obj(["source_id", "entity", "action"], source_id=SOURCE_ID,
             entity={"type": "string", "minLength": 1, "maxLength": 128},
             action={"type": "string", "minLength": 1, "maxLength": 64},
             params={"type": "object", "description": "Action parameters by name."},
             select_fields=FIELDS, exclude_fields=FIELDS),
        execute, read_only=False),
    ToolDef("get_approval", "Check a request waiting for approval", (
        "Check a request that a source parked for a human to approve (apis_make_request or execute answered "
        "{approval: {id, status: 'pending'}}). status is pending until an approver decides; once approved and "
        "sent, the first call after that returns the upstream's answer as `response` (it is handed over once). "
        "A denied or expired request is a tool error (approval_denied, approval_expired) and was never sent. "
        "wait_seconds (up to 60) waits for a decision before answering."),
        _obj(["approval_id"], approval_id={"type": "string", "minLength": 1, "maxLength": 64,
                                           "description": "The id of the approval, from approval.id."},
             wait_seconds={"type": "integer", "minimum": 0, "maximum": 300,
                           "description": "Seconds to wait for a decision (bounded by the server)."}),
        get_approval),
    ToolDef("files_list", "List files", (
        "List files of a file source (S3, GCS, Azure Blob or a local directory) under a path prefix, one "
        "page at a time; pass next_page_token back to continue. Paths are relative to the source's root. "
        "Needs the 'files' scope."),
        mcp_files.LIST_SCHEMA, files_list, needs_files=True),
    ToolDef("files_get", "Read a file", (
        "Read a file of a file source. Returns text when the bytes are UTF-8 (or encoding='text'), else "
        "base64. At most max_bytes are returned; when `truncated` is true, ask for the rest with "
        "range='bytes=<next>-'. Needs the 'files' scope."),
        mcp_files.GET_SCHEMA, files_get, needs_files=True),
)
