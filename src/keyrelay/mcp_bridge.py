"""`keyrelay mcp-stdio`: an MCP server on stdin/stdout that forwards every call to a keyrelay server's `/mcp`.

For desktop MCP clients that only launch local commands. The bridge is a client of keyrelay like any agent:
it holds the one bearer token it was given (an API key with the `mcp` scope, typically) and never the master
key, the database or any stored credential. Tool listings and tool results pass through unchanged; the server
does all authentication, authorisation, rate limiting and logging.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger("keyrelay.mcp_bridge")
UNREACHABLE = {"error": {"code": "unavailable", "message": "The keyrelay server could not be reached"}}


class BridgeError(Exception):
    """The keyrelay server refused the bridge or could not be reached at start."""


@contextlib.asynccontextmanager
async def remote(url: str, token: str) -> AsyncIterator[Client]:
    """A connected client of the keyrelay server's `/mcp` (no response cache: results are always fresh)."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
            contextlib.AsyncExitStack() as stack:
        await _preflight(http, url)
        try:
            client = await stack.enter_async_context(
                Client(streamable_http_client(url, http_client=http), cache=None))
        except Exception as exc:  # an HTTP library's message may echo request details: name the kind only
            raise BridgeError(f"cannot open an MCP session with {url} ({type(exc).__name__})") from None
        yield client


async def _preflight(http: httpx2.AsyncClient, url: str) -> None:
    """One `ping`, so a wrong URL or token fails at start with keyrelay's own error code and message."""
    try:
        resp = await http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                               headers={"Accept": "application/json, text/event-stream"})
    except Exception as exc:
        raise BridgeError(f"cannot reach {url} ({type(exc).__name__})") from None
    if resp.status_code in (401, 403):
        try:
            err = resp.json()["error"]
            detail = f"{err['code']}: {err['message']}"
        except Exception:
            detail = f"HTTP {resp.status_code}"
        raise BridgeError(f"{url} refused the token ({detail}); it needs the 'mcp' scope")


def bridge_server(client: Client) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None,
                         ) -> types.ListToolsResult:
        return await client.session.list_tools(params=params)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            return await client.call_tool(params.name, params.arguments)
        except Exception as exc:
            log.error("forwarding %s failed: %s", params.name, type(exc).__name__)
            return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(UNREACHABLE))],
                                        structured_content=UNREACHABLE, is_error=True)

    info = client.server_info
    return Server("keyrelay", version=info.version if info else "", instructions=client.instructions,
                  on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(url: str, token: str) -> None:
    """Connect to `url`, then serve MCP on stdio until the desktop client closes stdin."""
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # no line per forwarded call on stderr
    async with remote(url, token) as client:
        server = bridge_server(client)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

