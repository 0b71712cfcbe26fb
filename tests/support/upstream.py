"""A real fake upstream HTTP API: an aiohttp app on its own event loop in a background thread.

    with FakeUpstream() as up:            # 127.0.0.1:<free port>; FakeUpstream(host="127.0.0.2") works too
        httpx.get(up.url + "/echo?a=1")
        up.requests[-1].raw_path          # "/echo?a=1", exactly as received

Sync and async tests can both use it: it never shares the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import html
import json
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web
from aiohttp.typedefs import Handler

ISSUED_TOKEN = "<any access token issued by /oauth/token>"  # a `require_auth` value
GZIP_BOMB_SIZE = 256 * 1024 * 1024
PAGED_ITEMS = 25


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    raw_path: str  # path + query exactly as sent on the request line
    headers: list[tuple[str, str]]  # in order, with the case they had on the wire
    body: bytes
    peer: tuple[str, int]
    at: float = 0.0  # time.monotonic() when it arrived

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@functools.cache
def gzip_bomb() -> bytes:
    """~255 KiB of gzip that inflates to 256 MiB of zeros (built once, in 1 MiB steps; run-length matching
    reaches deflate's best ratio on zeros in a third of the time of the default strategy)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    block = bytes(1024 * 1024)
    parts = [comp.compress(block) for _ in range(GZIP_BOMB_SIZE // len(block))]
    return b"".join([*parts, comp.flush()])


def _num(request: web.Request, name: str, default: float, cap: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"bad {name}") from None
    return max(0.0, min(value, cap))


class FakeUpstream:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        require_auth: str | None = None,
        token_ttl: int = 3600,
    ) -> None:
        self.host = host
        self.port = port
        self.require_auth = require_auth  # may be changed while running; ISSUED_TOKEN = OAuth tokens
        self.token_ttl = token_ttl  # expires_in of issued access tokens
        self.token_delay = 0.0  # seconds /oauth/token waits before answering (widens refresh races)
        self.token_calls = 0
        self.invalid_grants = 0  # refresh_token grants refused (unknown, revoked or already used token)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._access_tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._refresh_tokens: dict[str, bool] = {}  # token -> still valid
        self._issued: list[str] = []  # every access and refresh token ever issued, in order
        self._flaky_seen: dict[str, int] = {}  # /flaky key -> answers given so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- what tests read ------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted so far."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._connections = 0
            self.token_calls = 0
            self.invalid_grants = 0

    def issue_refresh_token(self) -> str:
        """A fresh valid refresh token, as if a user had just consented."""
        token = "rt-" + secrets.token_hex(8)
        with self._lock:
            self._refresh_tokens[token] = True
            self._issued.append(token)
        return token

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far is rejected from now on (as if revoked upstream)."""
        with self._lock:
            self._access_tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far is invalid from now on (the user withdrew consent)."""
        with self._lock:
            self._refresh_tokens = dict.fromkeys(self._refresh_tokens, False)

    @property
    def issued_tokens(self) -> list[str]:
        """Every access and refresh token issued so far (to scan storage and logs for them)."""
        with self._lock:
            return list(self._issued)

    def refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            return self._refresh_tokens.get(token, False)

    # --- life cycle -------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"fake-upstream-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("fake upstream did not start within 30s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self._make_app(), handle_signals=False, access_log=None, shutdown_timeout=0.25,
            handler_cancellation=True,
        )  # fmt: skip
        await runner.setup()
        try:
            assert runner.server is not None
            server = await asyncio.get_running_loop().create_server(
                functools.partial(self._new_connection, runner.server), self.host, self.port
            )
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            try:
                await self._stopping.wait()
            finally:
                server.close()
        finally:
            await runner.cleanup()

    def _new_connection(self, protocol_factory: web.Server) -> web.RequestHandler:
        with self._lock:
            self._connections += 1
        return protocol_factory()

    # --- the app ------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_auth], client_max_size=64 * 1024 * 1024)
        routes = {
            "/echo": self._echo, "/slow": self._slow, "/status/{n}": self._status, "/stream": self._stream,
            "/sse": self._sse, "/big": self._big, "/redirect": self._redirect, "/headers": self._headers,
            "/gzipbomb": self._gzipbomb, "/reset": self._reset, "/garbage": self._garbage,
            "/paged": self._paged, "/oauth/token": self._oauth_token, "/echo-as": self._echo_as,
            "/flaky": self._flaky,
        }  # fmt: skip
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)  # any method
        return app

    @web.middleware
    async def _record_and_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        record = RecordedRequest(request.method, request.raw_path, headers, body, tuple(peer or ("", 0)),
                                 time.monotonic())
        with self._lock:
            self._requests.append(record)
        if request.path != "/oauth/token" and not self._authorized(request.headers.get("Authorization")):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    def _authorized(self, value: str | None) -> bool:
        required = self.require_auth
        if required is None:
            return True
        if required != ISSUED_TOKEN:
            return value == required
        token = (value or "").removeprefix("Bearer ")
        with self._lock:
            return self._access_tokens.get(token, 0.0) > time.monotonic()

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            text: str | None = body.decode()
        except UnicodeDecodeError:
            text = None
        return web.json_response({
            "method": request.method, "path": request.path, "raw_path": request.raw_path,
            "query": [[k, v] for k, v in request.query.items()],
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": text, "body_base64": base64.b64encode(body).decode(),
        })  # fmt: skip

    async def _echo_as(self, request: web.Request) -> web.Response:
        """Echo the Authorization header and the query string, escaped (`escape`: none, go, all, html, hex) and
        compressed (`coding`: identity, gzip, x-gzip, deflate, deflate-raw, gzip-gzip, br, zstd) whatever the
        request's Accept-Encoding says, and with `name` the token in a header name: a careless upstream."""
        echo = {"auth": request.headers.get("Authorization", ""), "query": request.query_string}
        style = request.query.get("escape", "none")
        text = json.dumps(echo, ensure_ascii=False)
        if style == "go":
            text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
        elif style == "all":
            text = json.dumps({k: "".join(f"\\u{ord(c):04x}" for c in v) for k, v in echo.items()})
            text = text.replace("\\\\", "\\")  # the escapes themselves, not escaped backslashes
        elif style == "html":
            text = "<p>" + html.escape(echo["auth"]) + "</p><p>" + html.escape(echo["query"]) + "</p>"
        elif style == "hex":
            text = json.dumps({k: v.encode().hex() for k, v in echo.items()})
        body = text.encode()
        coding = request.query.get("coding", "identity")
        headers = {"Content-Type": "text/html" if style == "html" else "application/json"}
        if coding in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        elif coding == "gzip-gzip":
            body, coding = gzip.compress(gzip.compress(body)), "gzip, gzip"
        elif coding == "deflate":
            body = zlib.compress(body)
        elif coding == "deflate-raw":
            comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            body, coding = comp.compress(body) + comp.flush(), "deflate"
        elif coding in ("br", "zstd", "compress"):
            body = b"\x1b" + body  # opaque to this test, and to keyrelay: it has no decoder for these
        if coding != "identity":
            headers["Content-Encoding"] = coding
        if "name" in request.query:  # the token in a header name, in upper case
            headers["X-Echo-" + echo["auth"].removeprefix("Bearer ").upper()] = "1"
        return web.Response(body=body, headers=headers)

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(_num(request, "delay", 1.0, 120.0))
        return web.json_response({"slow": True})

    async def _status(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"]) if request.match_info["n"].isdigit() else 0
        if not 200 <= n <= 599:
            raise web.HTTPBadRequest(text="status must be 200..599")
        headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
        if n in (204, 304):
            return web.Response(status=n, headers=headers)
        return web.json_response({"status": n}, status=n, headers=headers)

    async def _flaky(self, request: web.Request) -> web.Response:
        """The first `fail` requests with the same `key` answer `status` (with `retry_after` as Retry-After, if
        given); later ones answer 200 with how many came before."""
        key, fail = request.query.get("key", ""), int(_num(request, "fail", 1, 100))
        status = int(_num(request, "status", 503, 599))
        with self._lock:
            seen = self._flaky_seen.get(key, 0)
            self._flaky_seen[key] = seen + 1
        if seen < fail:
            headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
            return web.json_response({"status": status, "attempt": seen}, status=status, headers=headers)
        return web.json_response({"status": 200, "attempt": seen})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        chunks = int(_num(request, "chunks", 5, 10_000))
        delay, size = _num(request, "delay", 0, 30), int(_num(request, "size", 16, 16 * 1024 * 1024))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(chunks):
            if i and delay:
                await asyncio.sleep(delay)
            await resp.write(bytes([48 + i % 10]) * size)
        await resp.write_eof()
        return resp

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        events, delay = int(_num(request, "events", 3, 10_000)), _num(request, "delay", 0, 30)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i in range(events):
            if i and delay:
                await asyncio.sleep(delay)
            await resp.write(f"data: {i}\n\n".encode())
        await resp.write_eof()
        return resp

    async def _big(self, request: web.Request) -> web.StreamResponse:
        remaining = int(_num(request, "size", 1024 * 1024, 8 * 1024**3))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = remaining
        await resp.prepare(request)
        block = b"b" * 65536
        while remaining > 0:
            piece = block[:remaining]
            await resp.write(piece)
            remaining -= len(piece)
        await resp.write_eof()
        return resp

    async def _redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        if status not in (301, 302, 303, 307, 308):
            raise web.HTTPBadRequest(text="status must be a redirect")
        return web.Response(status=status, headers={"Location": request.query.get("to", "/echo")})

    async def _headers(self, request: web.Request) -> web.Response:
        resp = web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})
        for item in request.query.getall("set", []):
            name, _, value = item.partition(":")
            resp.headers.add(name.strip(), value.strip())
        return resp

    async def _gzipbomb(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, gzip_bomb)
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"partial " * 128)
        assert request.transport is not None
        request.transport.abort()  # RST-like close in the middle of the declared body
        raise asyncio.CancelledError

    async def _garbage(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.write(b"\x00\xffNOT-HTTP garbage\r\n\r\n")
        request.transport.close()
        raise asyncio.CancelledError

    async def _paged(self, request: web.Request) -> web.Response:
        limit = max(1, int(_num(request, "limit", 10, 100)))
        cursor = request.query.get("cursor") or "0"
        if not cursor.isdigit() or int(cursor) > PAGED_ITEMS:
            return web.json_response({"error": "bad cursor"}, status=400)
        start = int(cursor)
        data = [{"id": i, "name": f"item-{i}"} for i in range(start, min(start + limit, PAGED_ITEMS))]
        more = start + limit < PAGED_ITEMS
        return web.json_response(
            {"data": data, "has_more": more, "next_cursor": str(start + limit) if more else None}
        )

    async def _oauth_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        with self._lock:
            self.token_calls += 1
            if grant == "client_credentials":
                return web.json_response(self._issue_locked(with_refresh=False))
            if grant == "authorization_code" and form.get("code"):
                return web.json_response(self._issue_locked(with_refresh=True))
            if grant == "refresh_token":
                old = str(form.get("refresh_token", ""))
                if not self._refresh_tokens.get(old):
                    self.invalid_grants += 1
                    return web.json_response({"error": "invalid_grant"}, status=400)
                self._refresh_tokens[old] = False  # rotated: using it again is an error
                return web.json_response(self._issue_locked(with_refresh=True))
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    def _issue_locked(self, *, with_refresh: bool) -> dict[str, Any]:
        access = f"at-{self.token_calls}-{secrets.token_hex(4)}"
        self._access_tokens[access] = time.monotonic() + self.token_ttl
        self._issued.append(access)
        out: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.token_ttl}
        if with_refresh:
            refresh = "rt-" + secrets.token_hex(8)
            self._refresh_tokens[refresh] = True
            self._issued.append(refresh)
            out["refresh_token"] = refresh
        return out
