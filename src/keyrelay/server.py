"""Serving: uvicorn (uvloop + httptools) with the limits uvicorn lacks (security.md rule 10, bars 10 and 13).

`GuardedHttpTools` closes a connection whose request headers do not arrive complete within the header-read
timeout (slowloris), and refuses a header section over the byte or count limit with 431 before the
application sees it, so an oversized header section is never buffered whole.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._host_count = 0
        self._too_large = False

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never completes its first request line and headers is closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = self._host_count = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _TooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        if self._header_bytes > self.max_header_bytes or self._header_count > self.max_header_count:
            self._too_large = True
            raise _TooLarge
        if name.lower() == b"host":
            self._host_count += 1
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._host_count > 1 or (self._host_count == 0 and self.parser.get_http_version() != "1.0"):
            raise _BadHost
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if self._too_large:
            response = framing_error(431, "Request Header Fields Too Large", "headers_too_large",
                                     "Request headers are too large")
        else:
            response = framing_error(400, "Bad Request", "invalid_request", "Malformed HTTP request")
        self.transport.write(response)
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedHttpTools]:
    return type("KeyrelayHttpProtocol", (GuardedHttpTools,), {
        "header_timeout": settings.header_timeout_seconds,
        "max_header_bytes": settings.max_header_bytes + settings.max_url_bytes,
        "max_header_count": settings.max_header_count,
    })


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": host, "port": port, "lifespan": "on", "access_log": False, "http": protocol_for(settings),
        "loop": "uvloop", "timeout_keep_alive": 30, "timeout_graceful_shutdown": 10, "server_header": False,
        "log_level": "warning",
        # keyrelay never trusts client-supplied forwarding headers (rate limits key on the authenticated caller)
        "proxy_headers": False, "forwarded_allow_ips": "",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
