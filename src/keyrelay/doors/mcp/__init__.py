"""The MCP door: `/mcp`, streamable HTTP, built on the official `mcp` SDK (low-level server, `server.py`).

Stateless and JSON-only: every POST carries one JSON-RPC message and gets one answer, so any instance can
serve any request and nothing is held open. Before the SDK sees a request, a pure-ASGI check runs (never a
`BaseHTTPMiddleware`, which would buffer): an `Origin` that is not allowlisted -> 403; a missing or bad
bearer token -> 401; a token without the `mcp` scope -> 403 (all with the contract's error body). The SDK's
transport security additionally checks `Host` (DNS rebinding) and `Origin`.

The SDK (about 29 MB of a worker's memory) is imported and its session manager started when the first request
passes those checks, so a worker that never serves MCP never loads it. Tools are defined in `tools.py` (file tools
in `files.py`). A keyrelay error becomes a tool result with
`isError: true` whose text and structured content are the contract's error body `{"error": {"code", "message", ...}}`.

A call that a source parks for approval (docs/approvals.md) answers `{"approval": {...}}`. When the operator
names a page where approvers decide (`KEYRELAY_APPROVAL_PAGE_URL`) and the client declared URL-mode elicitation
(protocol 2026-07-28, where a stateless server asks for input by answering `input_required`), the answer is an
elicitation pointing the user at that page instead, with the approval's id as `requestState`; the client's
retry then answers what `get_approval` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from keyrelay.doors.mcp.tools import Deps
from keyrelay.errors import Forbidden, KeyrelayError, MethodNotAllowed, PayloadTooLarge
from keyrelay.http.asgi import AsgiScope, Receive, Send, header
from keyrelay.http.render import send_error
from keyrelay.model import Scope
from keyrelay.settings import Settings

if TYPE_CHECKING:
    from keyrelay.doors.mcp.server import McpServer

log = logging.getLogger("keyrelay.mcp")
PATH = "/mcp"


def is_mcp(path: str) -> bool:
    return path in (PATH, PATH + "/")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Exact match, or an entry ending in `:*` followed by a numeric port."""
    return origin in allowed or any(
        a.endswith(":*") and origin.startswith(a[:-1]) and origin[len(a) - 1:].isdigit() for a in allowed)


class McpDoor:
    def __init__(self, deps: Deps, settings: Settings) -> None:
        self._deps = deps
        self._settings = settings
        self._origins = settings.mcp_origins
        self._max_body = settings.max_body_bytes * 2 + 65536  # room for a JSON-encoded apis_make_request body
        self._server: asyncio.Future[McpServer] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def loaded(self) -> bool:
        """Whether the SDK was loaded (a request reached it)."""
        return self._server is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The door's life: entered in keyrelay's lifespan; stops the SDK's task group if a request started it."""
        self._stop = asyncio.Event()
        try:
            yield
        finally:
            self._stop.set()
            if self._task is not None:
                await self._task

    async def _started(self) -> McpServer:
        if self._server is None:
            if self._stop is None or self._stop.is_set():
                raise RuntimeError("the MCP door is not running")
            self._server = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._serve(self._server, self._stop))
        return await asyncio.shield(self._server)

    async def _serve(self, ready: asyncio.Future[McpServer], stop: asyncio.Event) -> None:
        """Import the SDK, run its session manager until the door stops."""
        try:
            from keyrelay.doors.mcp.server import McpServer  # the SDK is loaded here, on first use

            server = McpServer(self._deps, self._settings, max_body=self._max_body)
            async with server.running():
                ready.set_result(server)
                await stop.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the requests waiting get it; the next request starts the server again
            log.error("the MCP server stopped: %s", type(exc).__name__)
            if not ready.done():
                ready.set_exception(exc)
            self._server = None

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
        server = await self._started()
        await server.handle(scope, receive, send)
