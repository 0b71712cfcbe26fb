"""The MCP door's server: the official `mcp` SDK's low-level server in stateless JSON mode, keyrelay's tools
behind it, and the SDK's own Host/Origin checks (`transport_security`). Loaded by the door (`__init__.py`) when
the first request passes its checks; the door's module docstring says what the door does.
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
from keyrelay.errors import InternalError, InvalidRequest, KeyrelayError
from keyrelay.http.asgi import AsgiScope, Receive, Send
from keyrelay.pipeline import approval
from keyrelay.settings import Settings

log = logging.getLogger("keyrelay.mcp")
INSTRUCTIONS = (
    "keyrelay lets you use the APIs and files of the sources connected for this workspace without ever "
    "seeing their credentials. Start with list_sources, then describe_source; use apis_make_request for raw "
    "API calls, query_stream/execute for catalog connectors and files_list/files_get for file sources.")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


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


class McpServer:
    """The SDK's low-level server and its stateless session manager, with keyrelay's tools."""

    def __init__(self, deps: Deps, settings: Settings, *, max_body: int) -> None:
        self._deps = deps
        self._tools: dict[str, ToolDef] = {t.name: t for t in TOOLS if deps.files is not None or not t.needs_files}
        self._server: Server[Any] = Server("keyrelay", version="0.1.0", instructions=INSTRUCTIONS,
                                           on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self._manager = StreamableHTTPSessionManager(
            app=self._server, stateless=True, json_response=True, security_settings=transport_security(settings),
            max_request_body_size=max_body)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's task group; requests are handled while it runs."""
        async with self._manager.run():
            yield

    async def handle(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
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

