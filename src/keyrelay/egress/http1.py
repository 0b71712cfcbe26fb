"""HTTP/1.1 to upstreams: pooled keep-alive connections, requests written from validated parts, responses
parsed by httptools (llhttp, the strict parser uvicorn and Node.js use).

Why not a general client: aiohttp's `ClientSession` cost ~100 µs of CPU per proxied request in the gateway
profile, more than the rest of the pipeline, and no faster well-kept client lets us put the SSRF guard in its
dialer. What a passthrough needs is small and is all here:

* Connections are dialed only to addresses `resolve_checked` validated (every answer, IP literals included),
  and each exact address is checked again right before it is dialed. Validated answers are cached 10 s.
* One request at a time per connection. A connection goes back to the pool only when the request was written
  whole, the response was read to its end, both sides allow keep-alive and the request was not HEAD; anything
  else closes it, so a half-written body can never become the start of the next request.
* Nothing is added: no User-Agent, Accept or Accept-Encoding, no cookies, no proxy from the environment,
  redirects are responses like any other, bodies are never decompressed (chunked framing is decoded and the
  door frames the body again).
* Header names must be tokens and values must hold no control characters (HTAB allowed); Host,
  Connection and Transfer-Encoding are always ours. Upstream responses with more than `MAX_HEADERS` header
  fields or `MAX_HEADER_BYTES` of them, `101 Switching Protocols` or anything llhttp refuses are invalid.
* Backpressure both ways: reading pauses while more than `HIGH_WATER` bytes wait for the agent, and the
  request body waits for the socket to drain.

Errors are keyrelay errors with fixed messages (never a header value or URL): `SsrfBlocked`,
`UpstreamUnreachable`, `UpstreamTimeout`, `InvalidRequest`; an exception raised by the request body iterator
(e.g. `PayloadTooLarge`) reaches the caller as itself.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import httptools

from keyrelay.egress.deadlines import deadlines_for
from keyrelay.egress.ssrf import GetAddrInfo, Network, is_forbidden, resolve_checked
from keyrelay.errors import InvalidRequest, SsrfBlocked, UpstreamTimeout, UpstreamUnreachable

MAX_HEADERS = 256
MAX_HEADER_BYTES = 64 * 1024
HIGH_WATER = 1024 * 1024  # response bytes buffered before reading from the upstream pauses
LOW_WATER = 256 * 1024
DNS_TTL = 10.0
OnDial = Callable[[str], None]  # called with each address right before it is dialed (tests count dials)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_OURS = frozenset({"host", "connection", "transfer-encoding", "content-length"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_BROKE = "Upstream connection broke while sending the response"
_INVALID = "Upstream sent an invalid response"


@dataclass(frozen=True, slots=True)
class Origin:
    tls: bool
    host: str  # as in the URL, brackets stripped from IPv6 literals
    port: int
    authority: bytes  # the Host header


@lru_cache(maxsize=4096)
def _origin(scheme: str, netloc: str) -> Origin:
    tls = scheme == "https"
    if not tls and scheme != "http":
        raise InvalidRequest("Upstream URL must be http or https")
    if "@" in netloc or not netloc or not netloc.isascii() or _BAD_TARGET.search(netloc):
        raise InvalidRequest("Upstream URL has no valid host")
    host, port_text = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[1:end], netloc[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise InvalidRequest("Upstream URL has no valid host")
        port_text = rest[1:]
    elif ":" in netloc:
        host, _, port_text = netloc.rpartition(":")
    if port_text and not (port_text.isascii() and port_text.isdigit()):
        raise InvalidRequest("Upstream URL has an invalid port")
    port = int(port_text) if port_text else (443 if tls else 80)
    if not host or not 0 < port < 65536:
        raise InvalidRequest("Upstream URL has no valid host")
    return Origin(tls, host, port, netloc.encode("ascii"))


def split_url(url: str) -> tuple[Origin, str]:
    """(origin, request target) of an absolute, already percent-encoded URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidRequest("Upstream URL must be absolute")
    cut = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if 0 <= i < cut:
            cut = i
    netloc, target = rest[:cut], rest[cut:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    if _BAD_TARGET.search(target) or not target.isascii():
        raise InvalidRequest("Upstream URL holds characters that must be percent-encoded")
    return _origin(scheme.lower(), netloc), target


def request_head(method: str, target: str, origin: Origin, headers: Sequence[tuple[str, str]],
                 length: int | None) -> bytes:
    """The request line and header block; `length` None means a chunked body."""
    if not _TOKEN.fullmatch(method):
        raise InvalidRequest("Invalid method")
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii"), b"Host: ", origin.authority, b"\r\n"]
    for name, value in headers:
        if name.lower() in _OURS:
            continue
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidRequest(f"Header {name[:64]!r} cannot be sent (invalid name or control character)",
                                 field="headers")
        lines.append(f"{name}: {value}\r\n".encode())
    lines.append(b"Transfer-Encoding: chunked\r\n\r\n" if length is None else b"Content-Length: %d\r\n\r\n" % length
                 if length or method in _BODY_METHODS else b"\r\n")
    return b"".join(lines)


def _declared_length(headers: Sequence[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return None


class Response:
    """One upstream response. Read it with `read()` or `chunks()`, then always `release()`."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_read_timeout", "_released", "_waiter",
                 "chunked", "content_length", "raw_headers", "status")

    def __init__(self, conn: Connection, status: int, raw_headers: list[tuple[bytes, bytes]],
                 read_timeout: float) -> None:
        self._conn = conn
        self.status = status
        self.raw_headers = raw_headers
        self.content_length: int | None = None
        self.chunked = False
        for name, value in raw_headers:
            low = name.lower()
            if low == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif low == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._released = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name in lowercase)."""
        for k, v in self.raw_headers:
            if k.lower() == name:
                return v
        return None

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body (UpstreamUnreachable past `max_bytes`)."""
        if self._done and self._error is None and len(self._chunks) == 1:  # the usual small response
            data = self._chunks.popleft()
            self._take(len(data))
        else:
            parts: list[bytes] = []
            size = 0
            while True:
                while self._chunks:  # take as it comes, so reading from the upstream never stays paused
                    chunk = self._chunks.popleft()
                    self._take(len(chunk))
                    parts.append(chunk)
                    size += len(chunk)
                if self._done or (max_bytes is not None and size > max_bytes):
                    break
                await self._wait()
            if self._error is not None:
                raise self._error
            data = b"".join(parts)
        if max_bytes is not None and len(data) > max_bytes:
            raise UpstreamUnreachable("The response was too large")
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._take(len(chunk))
                yield chunk
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    def release(self) -> None:
        """Give the connection back (if the exchange ended cleanly) or close it. Safe to call twice."""
        if self._released:
            return
        self._released = True
        self._conn.finished(self, clean=self._done and self._error is None)

    # --- fed by the connection ---
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            self._wake()

    def _take(self, n: int) -> None:
        was = self._buffered
        self._buffered -= n
        if was > LOW_WATER >= self._buffered:
            self._conn.resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        conn = self._conn
        waiter = self._waiter = conn.loop.create_future()
        deadlines = conn.deadlines
        deadlines.add(self, time.monotonic() + self._read_timeout, lambda: _expire(waiter))
        try:
            await waiter
        except TimeoutError:
            self._end(UpstreamTimeout("Upstream did not send the response in time"))
            self._conn.abort()
        finally:
            deadlines.discard(self)
            self._waiter = None


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; parses what the upstream sends with httptools."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()  # once per connection, not per request (it calls getpid())
        self.deadlines = deadlines_for(self.loop)
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._head: asyncio.Future[Response] | None = None
        self._resp: Response | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._interim = False
        self._head_only = False
        self._read_timeout = 30.0
        self._keep = False
        self._written = False
        self._writer: asyncio.Task[None] | None = None
        self._write_error: BaseException | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._pool.lost(self)
        self._fail(UpstreamUnreachable("Upstream closed the connection"), eof=exc is None)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamUnreachable("Upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._resp is None:  # nothing asked for: never reuse such a connection
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnreachable(_INVALID))
            self.abort()
        except httptools.HttpParserError:
            self._fail(UpstreamUnreachable(_INVALID))
            self.abort()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        self._headers = []
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if len(self._headers) >= MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("too many or too large headers")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101 or not 100 <= status <= 599:
            raise httptools.HttpParserError("upgrade refused")
        if 100 <= status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: skipped
            return
        head = self._head
        if head is None or head.done():
            raise httptools.HttpParserError("unexpected response")
        resp = self._resp = Response(self, status, self._headers, self._read_timeout)
        self._headers = []  # chunked trailers (still counted against the limits) never join the head
        self._head = None
        head.set_result(resp)
        if self._head_only:
            self._keep = False
            resp._end()

    def on_body(self, body: bytes) -> None:
        if self._resp is not None and not self._head_only:
            self._resp._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep = self._parser.should_keep_alive() and not self._head_only
        if self._resp is not None:
            self._resp._end()

    # --- used by the pool and the response ---
    def usable(self, now: float, keepalive: float) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing() and \
            now - self.idle_since < keepalive

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def _fail(self, error: BaseException, *, eof: bool = False) -> None:
        head = self._head
        if head is not None and not head.done():
            self._head = None
            head.set_exception(self._write_error or error)
        resp = self._resp
        if resp is not None and not resp._done:
            # a body delimited by the end of the connection ends cleanly there
            close_delimited = eof and resp.content_length is None and not resp.chunked
            resp._end(None if close_delimited else UpstreamUnreachable(_BROKE))

    async def exchange(self, method: str, head_bytes: bytes, length: int | None,
                       body: bytes | AsyncIterable[bytes] | None, *, deadline: float,
                       read_timeout: float) -> Response:
        """Write one request (`head_bytes` from `request_head`) and wait (until `deadline`, monotonic) for the
        response head."""
        assert self.transport is not None
        loop = self.loop
        head: asyncio.Future[Response] = loop.create_future()
        self._head = head
        self._resp = None
        self._head_only = method == "HEAD"
        self._read_timeout = read_timeout
        self._keep = False
        self._written = False
        self._write_error = None
        if body is None or isinstance(body, bytes):
            self.transport.write(head_bytes + body if body else head_bytes)
            self._written = True
        else:
            self._writer = loop.create_task(self._write_body(head_bytes, body, length))
        deadlines = self.deadlines
        deadlines.add(self, deadline, lambda: _expire(head))
        try:
            return await head
        except TimeoutError:
            self.abort()
            raise UpstreamTimeout("Upstream did not answer in time") from None
        except BaseException:
            self.abort()
            raise
        finally:
            deadlines.discard(self)

    async def _write_body(self, head: bytes, body: AsyncIterable[bytes], length: int | None) -> None:
        assert self.transport is not None
        transport = self.transport
        try:
            transport.write(head)
            sent = 0
            async for chunk in body:
                if not chunk:
                    continue
                sent += len(chunk)
                if length is not None and sent > length:
                    raise UpstreamUnreachable("Request body is longer than its Content-Length")
                transport.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self._paused:
                    await self._drained()
            if length is not None and sent != length:
                raise UpstreamUnreachable("Request body is shorter than its Content-Length")
            if length is None:
                transport.write(b"0\r\n\r\n")
            self._written = True
        except Exception as exc:  # the body's own error (PayloadTooLarge, a gone client) wins
            self._write_error = exc
            self._fail(exc)
            transport.abort()

    async def _drained(self) -> None:
        self._drain = self.loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def finished(self, resp: Response, *, clean: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            clean = False
        self._resp = None
        transport = self.transport
        if clean and self._keep and self._written and not self.closed and transport is not None \
                and not transport.is_closing():
            self.idle_since = time.monotonic()
            self._pool.put(self)
        else:
            self.abort()
        self._pool.done()


class Pool:
    """Keep-alive connections per origin; at most `max_connections` requests in flight (more wait)."""

    def __init__(self, *, allow: Sequence[Network], max_connections: int, keepalive_seconds: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None, getaddrinfo: GetAddrInfo | None = None,
                 on_dial: OnDial | None = None) -> None:
        self._allow = tuple(allow)
        self._max = max_connections
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._getaddrinfo = getaddrinfo
        self._on_dial = on_dial
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                      body: bytes | AsyncIterable[bytes] | None, *, deadline: float,
                      read_timeout: float, connect_timeout: float = 10.0) -> Response:
        """Send one request; returns at the response head. The caller must `release()` the response."""
        origin, target = split_url(url)
        if body is None or isinstance(body, bytes):
            length: int | None = len(body) if body else 0
        else:
            length = _declared_length(headers)
        head = request_head(method, target, origin, headers, length)  # refuses bad input before any dial
        if self._busy < self._max:
            self._busy += 1
        else:
            await self._slot(deadline)
        try:
            conn = self._idle_connection(origin) or await self._connect(origin, deadline, connect_timeout)
            return await conn.exchange(method, head, length, body, deadline=deadline, read_timeout=read_timeout)
        except BaseException:
            self.done()
            raise

    async def close(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    # --- called by connections ---
    def done(self) -> None:
        """A request slot is free again."""
        self._busy -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def put(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) < self._max:
            idle.append(conn)
        else:
            conn.abort()

    def lost(self, conn: Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    # --- internals ---
    async def _slot(self, deadline: float) -> None:
        if self._busy >= self._max:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    while self._busy >= self._max:
                        waiter = asyncio.get_running_loop().create_future()
                        self._waiters.append(waiter)
                        try:
                            await waiter
                        except BaseException:
                            if waiter.done() and not waiter.cancelled():
                                self._wake_one()  # it was woken for a free slot it will not take
                            raise
            except TimeoutError:
                raise UpstreamTimeout("Upstream did not answer in time") from None
        self._busy += 1

    def _idle_connection(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.usable(now, self._keepalive):
                    return conn
                conn.abort()
        return None

    async def _connect(self, origin: Origin, deadline: float, connect_timeout: float) -> Connection:
        try:
            async with asyncio.timeout(min(connect_timeout, deadline - time.monotonic())):
                conn = await self._dial(origin)
        except TimeoutError:
            raise UpstreamTimeout("Upstream did not answer in time") from None
        self._open.add(conn)
        return conn

    async def _dial(self, origin: Origin) -> Connection:
        ips = await self._resolve(origin)
        loop = asyncio.get_running_loop()
        for ip in ips:
            if is_forbidden(ip, allow=self._allow):  # the exact address about to be dialed
                raise SsrfBlocked("Upstream address is not allowed")
            if self._on_dial is not None:
                self._on_dial(ip)
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self, origin), ip, origin.port,
                    ssl=self._tls() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None)
            except (OSError, ssl.SSLError):
                continue
            return conn
        raise UpstreamUnreachable("Upstream connection failed")

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _resolve(self, origin: Origin) -> list[str]:
        key = (origin.host, origin.port)
        hit = self._dns.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        ips = await resolve_checked(origin.host, origin.port, allow=self._allow, getaddrinfo=self._getaddrinfo)
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[key] = (now + DNS_TTL, ips)
        return ips
