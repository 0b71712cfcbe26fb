"""HTTP/1.1 to upstreams: pooled keep-alive connections, requests written from validated parts, responses
parsed by httptools (llhttp, the strict parser uvicorn and Node.js use).

Why not a general client: aiohttp's `ClientSession` cost ~100 µs of CPU per proxied request in the gateway
profile, more than the rest of the pipeline, and no faster well-kept client lets us put the SSRF guard in its
dialer. What a passthrough needs is small and is all here:

* Connections are dialed only to addresses `resolve_checked` validated (every answer, IP literals included),
  and each exact address is checked again right before it is dialed. Validated answers are cached 10 s.
* Connections never cross a pool key (the pipeline uses the source id, so one credential per connection; a
  request without a key gets a connection of its own, closed after it). Idle connections are bounded per key
  (`max_idle_per_key`) and overall (`max_idle`, least recently used closed first); requests in flight are
  bounded by `max_connections` over all keys.
* One request at a time per connection. A connection goes back to the pool only when the request was written
  whole before the response began, the response was read to its end, both sides allow keep-alive and the
  request was not HEAD; anything else closes it, so a half-written body can never become the start of the
  next request.
* Any byte the upstream sends when no response is expected, or past the end of the current response (even in
  the same read), poisons the connection: it is closed, never reused.
* Nothing is added: no User-Agent, Accept or Accept-Encoding, no cookies, no proxy from the environment,
  redirects are responses like any other, bodies are never decompressed (chunked framing is decoded and the
  door frames the body again).
* Header names must be tokens and values must hold no control characters (HTAB allowed); Host,
  Connection and Transfer-Encoding are always ours. Upstream responses with more than `MAX_HEADERS` header
  fields or `MAX_HEADER_BYTES` of them, `101 Switching Protocols` or anything llhttp refuses are invalid.
* Limits count bytes received: more than `MAX_HEAD_BYTES` before the final response head is complete
  (interim 1xx heads included), or between two body bytes (chunk framing, trailers), makes the response
  invalid, however the bytes are split into lines. llhttp keeps an unfinished header line whole until it ends,
  so counting parsed lines alone would let one endless line grow without bound.
* A body delimited by Content-Length whose rest arrives in later reads is counted by the connection itself,
  not parsed: each read is handed on as it came (no copy), the byte that ends the body ends the response, and
  any byte behind it in the same read poisons the connection as above. The next response on the connection
  gets a new parser (the old one still expects body bytes).
* Small body pieces (a flood of tiny chunks) are merged into buffers of up to `COALESCE_BYTES`, so the body is
  held and handed on in few objects; backpressure both ways: reading pauses while more than `HIGH_WATER`
  bytes wait for the agent, and the request body waits for the socket to drain.
* Deadlines: the response head by the request's deadline; `Response.read()` by a total deadline (the
  request's, unless given); `Response.chunks()` by an idle timeout between pieces and an optional total
  deadline. A timeout is `UpstreamTimeout` and closes the connection.

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
MAX_HEADER_BYTES = 64 * 1024  # header names + values of one response head (or of its trailers)
# bytes received before the final response head is complete, or between two body bytes: status lines,
# separators, interim 1xx heads, chunk framing and trailers all count, however they are split into lines
MAX_HEAD_BYTES = MAX_HEADER_BYTES + 16 * 1024
HIGH_WATER = 1024 * 1024  # response bytes buffered before reading from the upstream pauses
LOW_WATER = 256 * 1024
SMALL_PIECE = 4 * 1024  # body pieces shorter than this are merged into a buffer of up to COALESCE_BYTES
COALESCE_BYTES = 64 * 1024
# body pieces parsed before reading stops until the event loop's next turn: libuv reads a busy socket up to 32
# times per turn, and a read of one-byte chunks is ~40,000 pieces
PIECES_PER_TURN = 16 * 1024
MAX_IDLE_PER_KEY = 64  # idle keep-alive connections kept per pool key
DNS_TTL = 10.0
OnDial = Callable[[str], None]  # called with each address right before it is dialed (tests count dials)
PoolKey = tuple[str, "Origin"]  # (the caller's pool key, e.g. a source id; the origin)

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

    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_read_timeout", "_released", "_tail",
                 "_waiter", "chunked", "codings", "content_length", "deadline", "raw_headers", "status")

    def __init__(self, conn: Connection, status: int, raw_headers: list[tuple[bytes, bytes]],
                 read_timeout: float, deadline: float) -> None:
        self._conn = conn
        self.status = status
        self.raw_headers = raw_headers
        self.deadline = deadline  # the request's deadline (monotonic): `read()` ends by it unless told otherwise
        self.content_length: int | None = None
        self.chunked = False
        # the Content-Encoding and Transfer-Encoding fields, (lowercase name, value), in order: usually none
        self.codings: list[tuple[bytes, bytes]] = []
        for name, value in raw_headers:
            low = name.lower()
            if low == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif low == b"transfer-encoding":
                self.codings.append((low, value))
                if b"chunked" in value.lower():
                    self.chunked = True
            elif low == b"content-encoding":
                self.codings.append((low, value))
        self._chunks: collections.deque[bytes | bytearray] = collections.deque()
        self._tail: bytearray | None = None  # the last of `_chunks` while small pieces are merged into it
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

    async def read(self, max_bytes: int | None = None, *, deadline: float | None = None) -> bytes:
        """The whole body (UpstreamUnreachable past `max_bytes`), by `deadline` (monotonic; the request's
        deadline when None) and with at most the read timeout between pieces (UpstreamTimeout)."""
        if self._done and self._error is None and len(self._chunks) == 1:  # the usual small response
            data = self._pop()
        else:
            until = self.deadline if deadline is None else deadline
            parts: list[bytes] = []
            size = 0
            while True:
                while self._chunks:  # take as it comes, so reading from the upstream never stays paused
                    chunk = self._pop()
                    parts.append(chunk)
                    size += len(chunk)
                if self._done or (max_bytes is not None and size > max_bytes):
                    break
                await self._wait(self._read_timeout, until)
            if self._error is not None:
                raise self._error
            data = b"".join(parts)
        if max_bytes is not None and len(data) > max_bytes:
            raise UpstreamUnreachable("The response was too large")
        return data

    async def chunks(self, *, idle_timeout: float | None = None, deadline: float | None = None
                     ) -> AsyncIterator[bytes]:
        """The body as it arrives: at most `idle_timeout` (the read timeout when None) between pieces and, when
        given, the whole body by `deadline` (monotonic), else UpstreamTimeout."""
        idle = self._read_timeout if idle_timeout is None else idle_timeout
        while True:
            while self._chunks:
                yield self._pop()
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait(idle, deadline)

    def release(self) -> None:
        """Give the connection back (if the exchange ended cleanly) or close it. Safe to call twice."""
        if self._released:
            return
        self._released = True
        self._conn.finished(self, clean=self._done and self._error is None)

    # --- fed by the connection ---
    def _feed(self, data: bytes) -> None:
        # a flood of tiny chunks must not become as many objects (memory) and hand-overs (event-loop time)
        if len(data) < SMALL_PIECE:
            tail = self._tail
            if tail is not None and len(tail) < COALESCE_BYTES:
                tail += data
            else:
                chunks = self._chunks
                last = chunks[-1] if chunks else None
                if type(last) is bytes and len(last) < SMALL_PIECE:
                    tail = self._tail = bytearray(last)
                    tail += data
                    chunks[-1] = tail
                else:
                    self._tail = None
                    chunks.append(data)
        else:
            self._tail = None
            self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _pop(self) -> bytes:
        piece = self._chunks.popleft()
        if type(piece) is bytes:
            chunk = piece
        else:
            if piece is self._tail:
                self._tail = None
            chunk = bytes(piece)
        was = self._buffered
        self._buffered -= len(chunk)
        if was > LOW_WATER >= self._buffered:
            self._conn.resume()
        return chunk

    def _end(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, idle: float, deadline: float | None) -> None:
        conn = self._conn
        waiter = self._waiter = conn.loop.create_future()
        now = time.monotonic()
        when = now + idle
        if deadline is not None and deadline < when:
            when = deadline
        if when <= now:
            waiter.set_exception(TimeoutError())
        else:
            conn.deadlines.add(self, when, lambda: _expire(waiter))
        try:
            await waiter
        except TimeoutError:
            self._end(UpstreamTimeout("Upstream did not send the response in time"))
            self._conn.abort()
        finally:
            conn.deadlines.discard(self)
            self._waiter = None


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """One keep-alive connection to an origin for one pool key; parses what the upstream sends with httptools."""

    def __init__(self, pool: Pool, key: PoolKey | None, origin: Origin) -> None:
        self._pool = pool
        self.key = key  # None: a connection of its own for one request, never pooled
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
        self._deadline = 0.0
        self._expecting = False  # a response, or the rest of one, is due: any other byte poisons the connection
        self._unparsed = 0  # bytes received since the exchange began, the final head completed or a body byte
        self._keep = False
        self._written = False
        self._writer: asyncio.Task[None] | None = None
        self._write_error: BaseException | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._full = False  # the response buffer is over HIGH_WATER: reading waits for the reader
        self._pieces = 0  # body pieces parsed since reading last let the event loop turn
        self._turning = False  # reading waits for the event loop's next turn
        self._rest = 0  # bytes of a Content-Length body still due (counted, not parsed, when they come later)
        self._head_keeps = False  # that response's head allows keep-alive

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
        if not self._expecting:  # nothing asked for, or bytes past the end of the response: never reuse it
            self.abort()
            return
        if self._rest:  # inside a Content-Length body whose head was parsed: nothing but body bytes to come
            self._counted(data)
            return
        self._unparsed += len(data)
        try:
            if len(data) > 1:
                # the last byte on its own: a response that completes before it has bytes behind it
                view = memoryview(data)
                self._parser.feed_data(view[:-1])
                if not self._expecting:
                    self.abort()
                    return
                self._parser.feed_data(view[-1:])
            else:
                self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._invalid()
            return
        if self._unparsed > MAX_HEAD_BYTES:  # a head, trailer or chunk-size line that does not end
            self._invalid()
        elif self._pieces > PIECES_PER_TURN:  # a flood of tiny chunks: let other requests run first
            self._pieces = 0
            self._yield_turn()

    def _counted(self, data: bytes) -> None:
        resp = self._resp
        if resp is None:  # released before its end: the connection closes (`finished`); drop what comes
            return
        rest = self._rest
        if len(data) < rest:
            self._rest = rest - len(data)
            resp._feed(data)
            return
        self._rest = 0
        resp._feed(data if len(data) == rest else data[:rest])
        self._parser = httptools.HttpResponseParser(self)  # the old one still waits for the body's bytes
        self._expecting = False
        self._keep = self._head_keeps
        resp._end()
        if len(data) > rest:  # bytes past the end of the response, in the same read
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
        if not self._expecting:
            raise httptools.HttpParserError("unexpected response")
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
            self._interim = True  # 100 Continue, 103 Early Hints: skipped (their bytes still count)
            return
        head = self._head
        if head is None or head.done():
            raise httptools.HttpParserError("unexpected response")
        self._unparsed = 0
        transport = self.transport
        if not self._written or (transport is not None and transport.get_write_buffer_size()):
            self._written = False  # answered before the request was on the wire: close after this response
        resp = self._resp = Response(self, status, self._headers, self._read_timeout, self._deadline)
        self._headers = []  # chunked trailers (still counted against the limits) never join the head
        self._head = None
        head.set_result(resp)
        if self._head_only:
            self._keep = False
            self._expecting = False  # a body-length header on a HEAD response announces nothing to read
            resp._end()
        elif resp.content_length:
            # one valid length: llhttp refused any other framing of this head (several lengths, a length with
            # any transfer coding). A status without a body (204, 304) completes in this same parse, which
            # clears `_rest` again.
            self._rest = resp.content_length
            self._head_keeps = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self._pieces += 1
        if self._rest:
            self._rest -= len(body)
        if self._resp is not None and not self._head_only:
            self._resp._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._expecting = False
        self._unparsed = 0
        self._rest = 0
        self._keep = self._parser.should_keep_alive() and not self._head_only
        if self._resp is not None:
            self._resp._end()

    # --- used by the pool and the response ---
    def usable(self, now: float, keepalive: float) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing() and \
            now - self.idle_since < keepalive

    def pause(self) -> None:
        """The response buffer is full: read nothing more until `resume()`."""
        self._full = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        self._full = False
        if not self._turning:
            self._resume_reading()

    def _yield_turn(self) -> None:
        if self.transport is not None and not self.closed and not self._turning:
            self._turning = True
            self.transport.pause_reading()
            self.loop.call_soon(self._turned)

    def _turned(self) -> None:
        self._turning = False
        if not self._full:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def _invalid(self) -> None:
        """The upstream broke HTTP/1.1 or a limit: the response (or what is left of it) fails, the connection
        closes."""
        self._fail(UpstreamUnreachable(_INVALID), body_error=UpstreamUnreachable(_INVALID))
        self.abort()

    def _fail(self, error: BaseException, *, eof: bool = False, body_error: BaseException | None = None) -> None:
        head = self._head
        if head is not None and not head.done():
            self._head = None
            head.set_exception(self._write_error or error)
        resp = self._resp
        if resp is not None and not resp._done:
            # a body delimited by the end of the connection ends cleanly there
            close_delimited = eof and resp.content_length is None and not resp.chunked
            resp._end(None if close_delimited else body_error or UpstreamUnreachable(_BROKE))

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
        self._deadline = deadline
        self._expecting = True
        self._unparsed = 0
        self._rest = 0
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
            if self._head is not None:  # else the response began first: `_written` stays False, closing it
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
            if self._full:  # released unread with reading paused: idle, it must read (and see stray bytes)
                self.resume()
            self._pool.put(self)
        else:
            self.abort()
        self._pool.done()


class Pool:
    """Keep-alive connections per (pool key, origin); at most `max_connections` requests in flight over all keys
    (more wait); at most `max_idle_per_key` idle connections per key and `max_idle` in all."""

    def __init__(self, *, allow: Sequence[Network], max_connections: int, keepalive_seconds: float = 30.0,
                 max_idle: int | None = None, max_idle_per_key: int = MAX_IDLE_PER_KEY,
                 ssl_context: ssl.SSLContext | None = None, getaddrinfo: GetAddrInfo | None = None,
                 on_dial: OnDial | None = None) -> None:
        self._allow = tuple(allow)
        self._max = max_connections
        self._keepalive = keepalive_seconds
        self._max_idle = max_connections if max_idle is None else max_idle
        self._max_idle_per_key = max_idle_per_key
        self._ssl = ssl_context
        self._getaddrinfo = getaddrinfo
        self._on_dial = on_dial
        self._idle: dict[PoolKey, list[Connection]] = {}  # per key, most recently used last; no empty lists
        self._lru: collections.OrderedDict[Connection, None] = collections.OrderedDict()  # every idle one
        self._open: set[Connection] = set()
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                      body: bytes | AsyncIterable[bytes] | None, *, deadline: float,
                      read_timeout: float, connect_timeout: float = 10.0, pool_key: str | None = "") -> Response:
        """Send one request; returns at the response head. The caller must `release()` the response.

        Connections are shared only by requests with the same `pool_key` (and origin); None means a
        connection of its own, closed after this request."""
        origin, target = split_url(url)
        if body is None or isinstance(body, bytes):
            length: int | None = len(body) if body else 0
        else:
            length = _declared_length(headers)
        head = request_head(method, target, origin, headers, length)  # refuses bad input before any dial
        key = None if pool_key is None else (pool_key, origin)
        if self._busy < self._max:
            self._busy += 1
        else:
            await self._slot(deadline)
        try:
            conn = (self._idle_connection(key) if key is not None else None) \
                or await self._connect(key, origin, deadline, connect_timeout)
            return await conn.exchange(method, head, length, body, deadline=deadline, read_timeout=read_timeout)
        except BaseException:
            self.done()
            raise

    async def close(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        self._lru.clear()
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
        """Keep an idle connection for its key, closing the oldest idle ones over the limits."""
        key = conn.key
        if key is None or self._max_idle <= 0:
            conn.abort()
            return
        lru = self._lru
        while lru:  # oldest first: expired ones close now, not when their key is next used (if ever)
            oldest = next(iter(lru))
            if len(lru) < self._max_idle and conn.idle_since - oldest.idle_since < self._keepalive:
                break
            self._forget(oldest)
            oldest.abort()
        idle = self._idle.get(key)
        if idle is not None and len(idle) >= self._max_idle_per_key:
            first = idle[0]
            self._forget(first)
            first.abort()
        self._idle.setdefault(key, []).append(conn)
        lru[conn] = None

    def lost(self, conn: Connection) -> None:
        self._open.discard(conn)
        if conn in self._lru:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        """Take an idle connection out of the pool (the caller closes or uses it)."""
        self._lru.pop(conn, None)
        key = conn.key
        if key is None:
            return
        idle = self._idle.get(key)
        if idle is not None:
            if conn in idle:
                idle.remove(conn)
            if not idle:
                del self._idle[key]

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

    def _idle_connection(self, key: PoolKey) -> Connection | None:
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                self._lru.pop(conn, None)
                if conn.usable(now, self._keepalive):
                    if not idle:
                        del self._idle[key]
                    return conn
                conn.abort()
            del self._idle[key]
        return None

    async def _connect(self, key: PoolKey | None, origin: Origin, deadline: float,
                       connect_timeout: float) -> Connection:
        try:
            async with asyncio.timeout(min(connect_timeout, deadline - time.monotonic())):
                conn = await self._dial(key, origin)
        except TimeoutError:
            raise UpstreamTimeout("Upstream did not answer in time") from None
        self._open.add(conn)
        return conn

    async def _dial(self, key: PoolKey | None, origin: Origin) -> Connection:
        ips = await self._resolve(origin)
        loop = asyncio.get_running_loop()
        for ip in ips:
            if is_forbidden(ip, allow=self._allow):  # the exact address about to be dialed
                raise SsrfBlocked("Upstream address is not allowed")
            if self._on_dial is not None:
                self._on_dial(ip)
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self, key, origin), ip, origin.port,
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
