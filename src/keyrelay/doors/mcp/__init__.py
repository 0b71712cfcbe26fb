"""The MCP door: `/mcp`, streamable HTTP, built on the official `mcp` SDK (low-level server).

Stateless and JSON-only: every POST carries one JSON-RPC message and gets one answer, so any instance can
serve any request and nothing is held open. Before the SDK sees a request, a pure-ASGI check runs (never a
`BaseHTTPMiddleware`, which would buffer): an `Origin` that is not allowlisted -> 403; a missing or bad
bearer token -> 401; a token without the `mcp` scope -> 403 (all with the contract's error body). The SDK's
transport security additionally checks `Host` (DNS rebinding) and `Origin`.

Tools are defined in `tools.py` (file tools in `files.py`). A keyrelay error becomes a tool result with
`isError: true` whose text and structured content are the contract's error body `{"error": {"code", "message", ...}}`.

A call that a source parks for approval (docs/approvals.md) answers `{"approval": {...}}`. When the operator
names a page where approvers decide (`KEYRELAY_APPROVAL_PAGE_URL`) and the client declared URL-mode elicitation
(protocol 2026-07-28, where a stateless server asks for input by answering `input_required`), the answer is an
elicitation pointing the user at that page instead, with the approval's id as `requestState`; the client's
retry then answers what `get_approval` would.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from keyrelay import boundedjson
from keyrelay.connectors.spec import check_json
from keyrelay.doors.mcp.tools import TOOLS, Deps, ToolDef, get_approval
from keyrelay.errors import (
    Forbidden,
    InternalError,
    InvalidRequest,
    KeyrelayError,
    MethodNotAllowed,
    PayloadTooLarge,
)
from keyrelay.http.asgi import AsgiScope, Receive, Send, header
from keyrelay.http.render import send_error
from keyrelay.model import Scope
from keyrelay.pipeline import approval
from keyrelay.settings import Settings

log = logging.getLogger("keyrelay.mcp")
PATH = "/mcp"
INSTRUCTIONS = (
    "keyrelay lets you use the APIs and files of the sources connected for this workspace without ever "
    "seeing their credentials. Start with list_sources, then describe_source; use apis_make_request for raw "
    "API calls, query_stream/execute for catalog connectors and files_list/files_get for file sources.")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def is_mcp(path: str) -> bool:
    return path in (PATH, PATH + "/")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Exact match, or an entry ending in `:*` followed by a numeric port."""
    return origin in allowed or any(
        a.endswith(":*") and origin.startswith(a[:-1]) and origin[len(a) - 1:].isdigit() for a in allowed)


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host/Origin checks for the SDK: loopback names always; the bind host and any configured host."""
    hosts = settings.mcp_hosts
    if "*" in hosts or (not hosts and not _is_loopback(settings.host)):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    bind = f"[{settings.host}]" if ":" in settings.host else settings.host
    names = [*_LOOPBACK, *([] if _is_loopback(settings.host) else [bind]), *hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=[p for n in names for p in _host_patterns(n)],
                                     allowed_origins=list(settings.mcp_origins))


def _host_patterns(name: str) -> list[str]:
    """`name` alone if it names a port (`h:8443`, `h:*`), else the name with and without any port."""
    return [name] if ":" in name.rpartition("]")[2] else [name, f"{name}:*"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class McpDoor:
    def __init__(self, deps: Deps, settings: Settings) -> None:
        self._deps = deps
        self._origins = settings.mcp_origins
        self._tools: dict[str, ToolDef] = {t.name: t for t in TOOLS if deps.files is not None or not t.needs_files}
        self._server: Server[Any] = Server("keyrelay", version="0.1.0", instructions=INSTRUCTIONS,
                                           on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self._max_body = settings.max_body_bytes * 2 + 65536  # room for a JSON-encoded apis_make_request body
        self._manager = StreamableHTTPSessionManager(
            app=self._server, stateless=True, json_response=True, security_settings=transport_security(settings),
            max_request_body_size=self._max_body)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's task group; must be entered in keyrelay's lifespan before any request arrives."""
        async with self._manager.run():
            yield

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            origin = header(scope, b"origin")
            if origin is not None and not origin_allowed(origin, self._origins):
                raise Forbidden("Origin is not allowed on /mcp")
            caller = await self._deps.authenticator.authenticate(header(scope, b"authorization"))
            if Scope.MCP not in caller.scopes:
                raise Forbidden("Token lacks the 'mcp' scope")
            if scope["method"] != "POST":  # stateless: no stream to GET, no session to DELETE (MCP spec: 405)
                raise MethodNotAllowed(f"Method {scope['method'][:16]} is not allowed on /mcp; use POST")
            length = header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self._max_body:
                raise PayloadTooLarge(f"Request body is larger than {self._max_body} bytes")
        except KeyrelayError as err:
            extra = {401: [(b"www-authenticate", b"Bearer")], 405: [(b"allow", b"POST")]}.get(err.status, [])
            await send_error(send, err, scope.get("state", {}).get("request_id"), extra)
            return
        await self._manager.handle_request(scope, receive, send)

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None,
                          ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=t.name, title=t.title, description=t.description, input_schema=t.schema,
            annotations=types.ToolAnnotations(title=t.title, read_only_hint=t.read_only, open_world_hint=True),
        ) for t in self._tools.values()])

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams,
                         ) -> types.CallToolResult | types.InputRequiredResult:
        request = ctx.request
        state = getattr(request, "scope", {}).get("state", {})
        authorization = request.headers.get("authorization") if request is not None else None
        try:
            if params.request_state is not None:  # the retry after a URL elicitation: the parked call's state
                out = await get_approval(self._deps, authorization, {"approval_id": params.request_state[:64]})
                return _result(out, error=False)
            tool = self._tools.get(params.name)
            if tool is None:
                raise InvalidRequest(f"Unknown tool; tools: {', '.join(self._tools)}", field="name")
            if not boundedjson.within(params.arguments or {}):
                raise InvalidRequest(f"arguments are nested more than {boundedjson.MAX_DEPTH} levels deep",
                                     field="arguments")
            args = check_json(tool.schema, params.arguments or {}, "arguments")
            out = await tool.handler(self._deps, authorization, args)
            asked = _elicitation(ctx, out)
            if asked is not None:
                return asked
        except KeyrelayError as err:
            return _result(err.body(state.get("request_id")), error=True)
        except Exception as exc:  # never a library's message to the agent (docs/errors.md)
            log.error("MCP tool %s failed: %s", params.name, type(exc).__name__)
            return _result(InternalError("Internal error").body(state.get("request_id")), error=True)
        return _result(out, error=False)


def _elicitation(ctx: ServerRequestContext[Any], out: dict[str, Any]) -> types.InputRequiredResult | None:
    """A parked call's URL-mode elicitation, where the client supports it and approvers have a page."""
    if not approval.is_parked(out):
        return None
    view = out["approval"]
    url = view.get("approval_url")
    caps = ctx.session.client_capabilities
    if url is None or ctx.session.protocol_version not in MODERN_PROTOCOL_VERSIONS or caps is None or \
            caps.elicitation is None or caps.elicitation.url is None:
        return None
    ask = types.ElicitRequest(params=types.ElicitRequestURLParams(
        message="This request waits for a human to approve it before keyrelay sends it. The page shows it to "
                "the people who may approve it; continue once it is decided.", url=url))
    return types.InputRequiredResult(input_requests={"approval": ask}, request_state=view["id"])


def _result(data: dict[str, Any], *, error: bool) -> types.CallToolResult:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=data,
                                is_error=error)

