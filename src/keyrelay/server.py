"""Serving: uvicorn (uvloop + httptools) with the limits uvicorn lacks (docs/security.md, "Bounded everything").

`GuardedHttpTools`:

* closes a connection whose request headers do not arrive complete within the header-read timeout (slowloris;
  the timer runs from the first request's connection, or from a read that leaves a head incomplete);
* refuses a header section over the byte or count limit with 431 before the application sees it;
* counts bytes received, not parsed lines: httptools keeps an unfinished request line, header name or value
  whole until it ends, so a line that never ends would grow without bound (and each read would copy it
  again). More than `max_head_bytes` received before the head is complete, or between two body bytes (chunk
  extensions, chunk-size zeros, trailers), is refused (431 during the head, else 400) after at most that many
  bytes plus one read;
* never merges trailer fields into the request's headers (they still count against the limits);
* refuses protocol upgrades (`Upgrade: websocket`, `h2c`) with 400 and closes the connection: keyrelay proxies
  no WebSocket yet, and the bytes after such a request belong to another protocol.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from keyrelay.egress.deadlines import deadlines_for, idle_deadlines_for
from keyrelay.http.asgi import HEADERS_CHECKED, WHOLE_RESPONSE, Receive, Send
from keyrelay.settings import Settings


def framing_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP response in the contract's error shape, for refusals made before the app runs."""
    request_id = uuid.uuid4().hex
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
            f"x-request-id: {request_id}\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class _TooLarge(Exception):
    """Raised inside the parser callback; httptools turns it into a parser error, answered with 431."""


class _BadHost(Exception):
    """No Host header on an HTTP/1.1 request, or more than one (RFC 9112 3.2): a parser error, answered with 400."""


class _Upgrade(Exception):
    """A request to switch protocols (WebSocket, h2c): a parser error, answered with 400."""


UPGRADE_REFUSED = "Protocol upgrades (WebSocket, h2c) are not supported"


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    max_field_bytes: int = 16 * 1024  # header names + values alone: within it, the app need not count again
    # bytes received before the head is complete, or between two body bytes: request line, separators and
    # whitespace included, however they are split into lines
    max_head_bytes: int = 32 * 1024
    direct: bool = True  # serve the application's direct route without an ASGI scope (False: everything via ASGI)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer = False  # armed in the loop's coarse deadlines (egress/deadlines.py)
        self._deadlines = deadlines_for(self.loop)
        self._idle = idle_deadlines_for(self.loop)
        self._idle_armed = False  # the keep-alive timeout, in the loop's coarse idle deadlines
        self._header_bytes = 0
        self._header_count = 0
        self._host_count = 0
        self._field_bytes = 0
        self._too_large = False
        self._upgrade = False
        self._in_head = False
        self._unparsed = 0  # bytes received since the last head completed, body byte or message end

    def _arm(self) -> None:
        if not self._header_timer:
            self._header_timer = True
            self._deadlines.add(self, time.monotonic() + self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer:
            self._header_timer = False
            self._deadlines.discard(self)

    def _headers_too_slow(self) -> None:
        self._header_timer = False
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never completes its first request line and headers is closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unset_keepalive_if_required()  # uvicorn's does it only on a clean close
        super().connection_lost(exc)

    # uvicorn arms a loop timer for the keep-alive timeout after every response and cancels it at the next read
    # (~2.7 µs a request); here it is a dict entry in the coarse idle deadlines (egress/deadlines.py, at most a
    # second late), the same timeout and handler
    def _unset_keepalive_if_required(self) -> None:
        if self._idle_armed:
            self._idle_armed = False
            self._idle.discard(self)

    def on_response_complete(self) -> None:
        # uvicorn's own, but for the keep-alive timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_armed = True
            self._idle.add(self, time.monotonic() + self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        self._unparsed += len(data)
        super().data_received(data)
        if self._unparsed > self.max_head_bytes and not self.transport.is_closing():
            self._too_large = self._in_head  # an endless line: in the head 431, in a chunked body 400
            self.send_400_response("")
        elif self._in_head:
            self._arm()  # a head left incomplete by this read must complete in time (one that did costs nothing)

    def on_message_begin(self) -> None:
        # uvicorn's own, without the ASGI scope: a request the direct route claims never needs one (built in
        # on_headers_complete for every other request)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._header_bytes = self._header_count = self._host_count = self._field_bytes = 0
        self._upgrade = False
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _TooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_bytes += len(name) + len(value)
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        if self._header_bytes > self.max_header_bytes or self._header_count > self.max_header_count:
            self._too_large = True
            raise _TooLarge
        if not self._in_head:
            return  # a trailer field: counted, never merged into the request's headers
        # uvicorn's own, plus the Host and Upgrade checks: lowercase names, no trailing whitespace in values
        # (RFC 9110 5.5)
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"host":
            self._host_count += 1
        elif name == b"upgrade":
            self._upgrade = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._unparsed = 0
        if self._host_count > 1 or (self._host_count == 0 and self.parser.get_http_version() != "1.0"):
            raise _BadHost
        if self._upgrade:
            raise _Upgrade
        route = self._route
        if route is not None and self._field_bytes <= self.max_field_bytes and route.claims(self.url):
            self._start_direct(route)
            return
        self.scope = {  # uvicorn's scope, as its on_message_begin builds it
            "type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.3"}, "http_version": "1.1",
            "server": self.server, "client": self.client, "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path, "headers": self.headers, "state": self.app_state.copy(),
        }
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the app has not run yet: offer the extension
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            # through a weak reference: scope -> extension -> cycle -> scope would be a reference cycle per
            # request, garbage that only the cyclic GC can free
            extensions[WHOLE_RESPONSE] = functools.partial(_send_whole_weak, weakref.ref(cycle))
            if self._field_bytes <= self.max_field_bytes:
                extensions[HEADERS_CHECKED] = True

    def on_body(self, body: bytes) -> None:
        # uvicorn's own on_body, without its per-piece upgrade checks (upgrades never reach the app here, and
        # no WebSocket protocol is loaded): this runs once per chunk, a million times in a flood of tiny chunks
        self._unparsed = 0
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        # uvicorn's own, without its upgrade checks (as on_body)
        self._unparsed = 0
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    @property
    def _route(self) -> DirectRoute | None:
        """The application's direct route, once it has started (None for an application that has none)."""
        return getattr(self.app, "direct_route", None) if self.direct else None

    def _start_direct(self, route: DirectRoute) -> None:
        """uvicorn's on_headers_complete for a request the direct route claims: the same cycle (body, flow
        control, 100-continue, disconnects, keep-alive, pipelining, graceful shutdown), no ASGI scope."""
        parser = self.parser
        http_version = parser.get_http_version()
        existing = self.cycle
        self.cycle = cycle = DirectCycle(
            scope={"method": parser.get_method().decode("ascii")},  # type: ignore[typeddict-item]
            transport=self.transport, flow=self.flow, logger=self.logger, access_logger=self.access_logger,
            access_log=False,  # keyrelay's request log records every gateway request (uvicorn's is off)
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(), expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(), on_response=self.on_response_complete,
        )
        cycle.url = self.url
        cycle.headers = self.headers
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, route)  # type: ignore[arg-type]  # DirectCycle.run_asgi takes the route
        else:  # a pipelined request waits for the one before it (uvicorn's queue)
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, route))  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # refused mid-request (e.g. in a chunked body)
            cycle.disconnected = True  # what connection_lost would do: the app's sends are dropped from now on
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()  # a response is under way: an error now would corrupt it
                return
        if self._too_large:
            response = framing_error(431, "Request Header Fields Too Large", "headers_too_large",
                                     "Request headers are too large")
        elif self._upgrade:
            response = framing_error(400, "Bad Request", "invalid_request", UPGRADE_REFUSED)
        else:
            response = framing_error(400, "Bad Request", "invalid_request", "Malformed HTTP request")
        self.transport.write(response)
        self.transport.close()


class DirectRoute(Protocol):
    """Routes the application serves straight from the parsed request, without an ASGI scope (app.py offers the
    gateway route as `direct_route`). Every other request takes the ASGI path."""

    def claims(self, url: bytes) -> bool:
        """Whether this request target (origin-form, still encoded) is served here."""

    def serve(self, method: str, url: bytes, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send,
              whole: WholeSend) -> Awaitable[None]:
        """Serve one request: the body through `receive`, the answer through `send` (ASGI messages) or `whole`."""


WholeSend = Callable[[int, list[tuple[bytes, bytes]], bytes], bool]


def _nothing() -> None:
    return None


class DirectCycle(RequestResponseCycle):
    """uvicorn's request/response cycle for a request the direct route serves."""

    url: bytes
    headers: list[tuple[bytes, bytes]]

    async def run_asgi(self, app: Any) -> None:
        route: DirectRoute = app
        try:
            await route.serve(self.scope["method"], self.url, self.headers,
                              self.receive, self.send, self.whole)  # type: ignore[arg-type]  # uvicorn's typed ASGI
        except Exception as exc:  # a bug: 500, or the end of a started response
            # by type only: a library's exception text may hold a header value, an injected credential included
            # (docs/security.md)
            self.logger.error("unhandled error in the direct route: %s", type(exc).__name__)
            if not self.response_started:
                self._internal_error()
            else:
                self.transport.close()
        except asyncio.CancelledError:  # the server is stopping: end the connection, let the cancellation go on
            self.transport.close()
            raise
        else:
            if not self.response_started and not self.disconnected:
                self.logger.error("The direct route returned without starting a response")
                self._internal_error()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("The direct route returned without completing its response")
                self.transport.close()
        finally:
            self.on_response = _nothing

    def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        return send_whole(self, status, headers, body)

    async def send(self, message: Any) -> None:
        """uvicorn's `send`, except that a chunk of a streamed (chunked) response goes out with its framing as one
        vectored write instead of being joined to it first (a copy of every chunk)."""
        if self.chunked_encoding and message["type"] == "http.response.body" and message.get("more_body", False) \
                and self.response_started and not self.response_complete:
            body = message.get("body", b"")
            if body:
                if self.flow.write_paused and not self.disconnected:
                    await self.flow.drain()
                if not self.disconnected:
                    self.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
                return
        await super().send(message)

    def _internal_error(self) -> None:
        """500 in the contract's error shape (the details stay in the server log), then close."""
        if self.disconnected:
            return
        self.response_started = self.response_complete = True
        self.transport.write(framing_error(500, "Internal Server Error", "internal_error", "Internal error"))
        self.transport.close()


_NAME_OK = bytes(b for b in range(256) if not HEADER_RE.match(bytes((b,))))
_VALUE_OK = bytes(b for b in range(256) if not HEADER_VALUE_RE.match(bytes((b,))))


def _send_whole_weak(ref: weakref.ref[RequestResponseCycle], status: int, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> bool:
    cycle = ref()
    return cycle is not None and send_whole(cycle, status, headers, body)


def send_whole(cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """The ASGI scope extension `keyrelay.whole_response`: status line, headers and body in one write.

    Two ASGI sends cost two writes (two syscalls) and uvicorn's per-message bookkeeping; a proxied response that
    is already whole needs neither. The same checks as uvicorn's `send` apply (header syntax, Content-Length
    equal to the body, no body for HEAD); anything unusual answers False and the caller falls back to the two
    ordinary sends."""
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused or cycle.access_log \
            or status not in STATUS_LINE:
        return False
    content = [STATUS_LINE[status]]
    length = None
    names, values = [], []
    for name, value in (*cycle.default_headers, *headers):
        if name in (b"transfer-encoding", b"connection"):
            return False
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return False
            length = int(value)
        names.append(name)
        values.append(value)
        content.extend((name, b": ", value, b"\r\n"))
    # uvicorn's per-header checks, once over all names and once over all values (HTAB is allowed in values):
    # deleting every allowed byte leaves nothing (one C pass each, faster than a regex search)
    if b"".join(names).translate(None, _NAME_OK) or b"\t".join(values).translate(None, _VALUE_OK):
        return False
    head = cycle.scope["method"] == "HEAD"
    if head or status in (204, 304) or status < 200:
        if body:
            return False
    elif length != len(body):
        return False
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    content.append(body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


def protocol_for(settings: Settings, *, direct: bool = True) -> type[GuardedHttpTools]:
    """The server's protocol class with the settings' limits (`direct=False`: the gateway route through ASGI too,
    as under another server; the tests run the hostile-peer cases both ways)."""
    return type("KeyrelayHttpProtocol", (GuardedHttpTools,), {
        "direct": direct,
        "header_timeout": settings.header_timeout_seconds,
        "max_header_bytes": settings.max_header_bytes + settings.max_url_bytes,
        "max_header_count": settings.max_header_count,
        "max_field_bytes": settings.max_header_bytes,
        # the request line and ": ", CRLF around each field: what a well-formed head adds to its fields
        "max_head_bytes": settings.max_header_bytes + settings.max_url_bytes + 8 * settings.max_header_count + 1024,
    })


def __getattr__(name: str) -> Any:
    """`WorkerHttpProtocol`: the protocol class of a worker of `keyrelay serve --workers N`, which uvicorn imports
    by name in each worker process (a class made by `protocol_for` cannot be sent to another process)."""
    if name == "WorkerHttpProtocol":
        return protocol_for(Settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": host, "port": port, "lifespan": "on", "access_log": False, "http": protocol_for(settings),
        "loop": "uvloop", "timeout_keep_alive": 30, "timeout_graceful_shutdown": 10, "server_header": False,
        "log_level": "warning",
        "ws": "none",  # no WebSocket protocol: upgrade requests are refused before the app (GuardedHttpTools)
        # keyrelay never trusts client-supplied forwarding headers (rate limits key on the authenticated caller)
        "proxy_headers": False, "forwarded_allow_ips": "",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
