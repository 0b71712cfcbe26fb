"""egress/http1.py against real loopback upstreams that we script byte by byte.

Every upstream here is an `asyncio.start_server` on 127.0.0.1 whose handler reads raw requests and writes
exact response bytes, so framing, keep-alive, desync and error cases are under the test's control. Every
loop is bounded and every wait has a timeout (`WAIT`), so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import random
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyrelay.egress import http1
from keyrelay.egress.http1 import (
    COALESCE_BYTES,
    HIGH_WATER,
    LOW_WATER,
    MAX_HEAD_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Connection,
    Origin,
    Pool,
    Response,
    request_head,
    split_url,
)
from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.errors import InvalidRequest, PayloadTooLarge, SsrfBlocked, UpstreamTimeout, UpstreamUnreachable
from support.adversarial import rss_bytes

LOOPBACK = parse_cidrs("127.0.0.0/8")
WAIT = 5.0  # upper bound of any single wait in these tests
SERVER_IDLE = 30.0  # a scripted upstream waits this long for the next request (the test ends it sooner)
READ_SIZE = 256 * 1024  # asyncio's socket transports read at most this much per data_received
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


# --- scripted upstreams ---


T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float = WAIT) -> T:
    """`aw`, bounded. Handlers use this, not asyncio.wait_for: on Python 3.11 wait_for can swallow the
    cancellation that ends a handler when the test is over."""
    async with asyncio.timeout(seconds):
        return await aw


@dataclass
class Req:
    """One request as it arrived: header names lowercased; `raw` is every byte of it, framing included."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


async def read_request(reader: asyncio.StreamReader) -> Req:
    """One HTTP/1.1 request off the wire (raises asyncio.IncompleteReadError at EOF)."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *fields = head[:-4].decode("latin-1").split("\r\n")
    headers = [(n.strip().lower(), v.strip()) for n, _, v in (f.partition(":") for f in fields)]
    names = dict(headers)
    raw, parts = [head], []
    if names.get("transfer-encoding") == "chunked":
        for _ in range(1_000_000):
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2)  # no trailers in these tests
            raw += [size_line, data]
            if size == 0:
                break
            parts.append(data[:-2])
        else:
            raise AssertionError("endless chunked body")
    elif "content-length" in names:
        parts.append(await reader.readexactly(int(names["content-length"])))
        raw += parts
    return Req(line, headers, b"".join(parts), b"".join(raw))


@dataclass
class Upstream:
    tls: bool = False
    port: int = 0
    connections: int = 0  # accepted (for TLS: handshake completed)
    requests: list[Req] = field(default_factory=list)  # complete requests, in arrival order
    eofs: list[int] = field(default_factory=list)  # connections (1-based) the client ended
    errors: list[Exception] = field(default_factory=list)  # failures inside a handler (checked at exit)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"


@dataclass
class Conn:
    """One accepted connection, as a handler scripts it."""

    up: Upstream
    index: int  # 1-based, in accept order
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> Req | None:
        """The next complete request, or None once the client ended the connection (even mid-request)."""
        try:
            req = await within(read_request(self.reader), SERVER_IDLE)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.up.eofs.append(self.index)
            return None
        self.up.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await within(self.writer.drain())

    async def wait_eof(self) -> None:
        """Drop whatever the client still sends until it ends the connection (a TimeoutError is a failure)."""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(WAIT):
                while await self.reader.read(65536):
                    pass
        self.up.eofs.append(self.index)

    def reset(self) -> None:
        """End the connection with a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Conn], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    up = Upstream(tls=ssl_context is not None)
    tasks: set[asyncio.Task[Any]] = set()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        up.connections += 1
        try:
            await handler(Conn(up, up.connections, reader, writer))
        except asyncio.CancelledError:
            pass  # the test is over; returning normally keeps asyncio.streams from logging it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-script
        except Exception as exc:
            up.errors.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=ssl_context, limit=1 << 20)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=WAIT)
        await server.wait_closed()
    assert not up.errors, up.errors


def replying(response: bytes | Callable[[Req], bytes], *, close: bool = False) -> Handler:
    """Answer every request on each connection (at most 1000) with `response`; hang up after one if `close`."""

    async def handler(conn: Conn) -> None:
        for _ in range(1000):
            req = await conn.request()
            if req is None:
                return
            await conn.send(response(req) if callable(response) else response)
            if close:
                return

    return handler


async def until(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `cond` until it holds (AssertionError after `timeout`)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


# --- client side ---


def soon(seconds: float = WAIT) -> float:
    return time.monotonic() + seconds


async def fetch(pool: Pool, url: str, method: str = "GET", headers: Sequence[tuple[str, str]] = (),
                body: bytes | AsyncIterable[bytes] | None = None, *,
                pool_key: str | None = "") -> tuple[Response, bytes]:
    resp = await pool.request(method, url, headers, body, deadline=soon(), read_timeout=WAIT, pool_key=pool_key)
    try:
        return resp, await resp.read()
    finally:
        resp.release()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., Pool]]:
    """Make pools (loopback allowed, 10 connections unless told otherwise); all closed after the test."""
    made: list[Pool] = []

    def make(**kw: Any) -> Pool:
        kw.setdefault("allow", LOOPBACK)
        kw.setdefault("max_connections", 10)
        pool = Pool(**kw)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


def fake_dns(*answers: str, calls: list[str] | None = None) -> Any:
    """A getaddrinfo stand-in answering `answers` for every name (recording each call in `calls`)."""

    async def getaddrinfo(host: str, port: int, *, family: int = 0, type: int = 0, **_: Any) -> list[Any]:
        if calls is not None:
            calls.append(host)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)) if ":" in ip
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers]

    return getaddrinfo


async def body_of(*chunks: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if then is not None:
        raise then


# --- split_url ---


@pytest.mark.parametrize(("url", "origin", "target"), [
    ("http://example.com:8080/a/b?c=1&d=%20#frag", Origin(False, "example.com", 8080, b"example.com:8080"),
     "/a/b?c=1&d=%20"),
    ("http://example.com/", Origin(False, "example.com", 80, b"example.com"), "/"),
    ("http://example.com", Origin(False, "example.com", 80, b"example.com"), "/"),
    ("https://example.com", Origin(True, "example.com", 443, b"example.com"), "/"),
    ("https://example.com:8443?x=1", Origin(True, "example.com", 8443, b"example.com:8443"), "/?x=1"),
    ("https://example.com#top", Origin(True, "example.com", 443, b"example.com"), "/"),
    ("HTTPS://api.example.com/v1", Origin(True, "api.example.com", 443, b"api.example.com"), "/v1"),
    ("http://[::1]:8080/x", Origin(False, "::1", 8080, b"[::1]:8080"), "/x"),
    ("https://[2606:4700::1111]/", Origin(True, "2606:4700::1111", 443, b"[2606:4700::1111]"), "/"),
    ("http://127.0.0.1:65535/%2F..%2F", Origin(False, "127.0.0.1", 65535, b"127.0.0.1:65535"), "/%2F..%2F"),
])
def test_split_url(url: str, origin: Origin, target: str) -> None:
    assert split_url(url) == (origin, target)


@pytest.mark.parametrize("url", [
    # userinfo
    "http://user:pw@example.com/", "http://user@example.com/", "https://@example.com/",
    "http://example.com@127.0.0.1/",
    # not http(s), not absolute
    "ftp://example.com/", "file:///etc/passwd", "ws://example.com/", "gopher://example.com:70/",
    "example.com/path", "//example.com/", "/relative", "",
    # no host, bad ports, broken IPv6 literals
    "http:///path", "http://:80/", "http://example.com:abc/", "http://example.com:0/",
    "http://example.com:65536/", "http://example.com:-1/", "http://example.com:+80/", "http://[::1/",
    "http://[::1]x/", "http://[]:80/",
    # a target that would need percent-encoding
    "http://example.com/a b", "http://example.com/a\r\nX-Injected: 1", "http://example.com/\x00",
    "http://example.com/\t", "http://example.com/\x7f", "http://example.com/caf\u00e9", "http://example.com/?q=a b",
    "http://example.com/?q=\n",
])
def test_split_url_refuses(url: str) -> None:
    with pytest.raises(InvalidRequest):
        split_url(url)


@pytest.mark.parametrize("url", ["http://ex\u00e4mple.com/", "http://example.com:\u0663/", "http://example.com:\u00b2/"])
def test_split_url_refuses_non_ascii_authorities_as_invalid_request(url: str) -> None:
    with pytest.raises(InvalidRequest):
        split_url(url)


# --- request_head ---

API = split_url("https://api.example.com/")[0]


def test_request_head_host_and_framing_are_ours() -> None:
    head = request_head("GET", "/v1?x=1", API, [
        ("Host", "evil.test"), ("connection", "Upgrade"), ("TRANSFER-ENCODING", "chunked"),
        ("Content-Length", "99"), ("X-Api", "a\tb"), ("accept", "*/*"), ("X-Api", "twice"), ("HOST", "evil2")], 0)
    assert head == (b"GET /v1?x=1 HTTP/1.1\r\nHost: api.example.com\r\n"
                    b"X-Api: a\tb\r\naccept: */*\r\nX-Api: twice\r\n\r\n")


def test_request_head_adds_nothing() -> None:
    assert request_head("GET", "/", API, [], 0) == b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
    origin = split_url("http://[::1]:8080/")[0]
    assert request_head("DELETE", "/x", origin, [], 0) == b"DELETE /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"


@pytest.mark.parametrize(("method", "length", "framing"), [
    ("POST", 0, b"Content-Length: 0\r\n"), ("PUT", 0, b"Content-Length: 0\r\n"),
    ("PATCH", 0, b"Content-Length: 0\r\n"), ("GET", 0, b""), ("HEAD", 0, b""), ("DELETE", 0, b""),
    ("OPTIONS", 0, b""), ("POST", 5, b"Content-Length: 5\r\n"), ("DELETE", 3, b"Content-Length: 3\r\n"),
    ("POST", None, b"Transfer-Encoding: chunked\r\n"), ("GET", None, b"Transfer-Encoding: chunked\r\n"),
])
def test_request_head_body_framing(method: str, length: int | None, framing: bytes) -> None:
    expected = method.encode() + b" / HTTP/1.1\r\nHost: api.example.com\r\n" + framing + b"\r\n"
    assert request_head(method, "/", API, [("Content-Length", "7")], length) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("X-A", "a\r\nX-Injected: 1"), ("X-A", "a\nb"), ("X-A", "a\rb"), ("X-A", "a\x00"), ("X-A", "\x7f"),
    ("X-A", "\x1b[31m"), ("X A", "sekrit"), ("X:A", "sekrit"), ("", "sekrit"), ("X-A\r\nX-B", "sekrit"),
    ("\u00c4", "sekrit"), ("X-A ", "sekrit"), ("(x)", "sekrit"), ("X-A\x00", "sekrit"),
])
def test_request_head_refuses_bad_headers(name: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        request_head("GET", "/", API, [("X-Ok", "fine"), (name, value)], 0)
    assert info.value.field == "headers"
    assert "sekrit" not in info.value.message and "X-Injected" not in info.value.message  # never a value


@pytest.mark.parametrize("method", ["GE T", "", "GET\r\n", "G(T", "GET /x"])
def test_request_head_refuses_bad_methods(method: str) -> None:
    with pytest.raises(InvalidRequest):
        request_head(method, "/", API, [], 0)


# --- the request on the wire ---


async def test_request_on_the_wire_is_exactly_what_we_built(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url("/p?q=%20"), headers=[("X-Key", "v"), ("Host", "evil.test")])
        assert (resp.status, data, resp.content_length, resp.chunked) == (200, b"ok", 2, False)
        assert resp.header(b"content-length") == b"2" and resp.header(b"nope") is None
        await fetch(pool, up.url("/form"), "POST", [("Content-Length", "99")], b"abc")
        await fetch(pool, up.url("/empty"), "POST")
    assert [r.raw for r in up.requests] == [
        f"GET /p?q=%20 HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nX-Key: v\r\n\r\n".encode(),
        f"POST /form HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nContent-Length: 3\r\n\r\nabc".encode(),
        f"POST /empty HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nContent-Length: 0\r\n\r\n".encode(),
    ]


async def test_streamed_body_without_length_is_chunked_on_the_wire(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        _, data = await fetch(pools(), up.url("/up"), "POST", [("X-A", "1")], body_of(b"hello", b"", b" world!"))
    assert data == b"ok"
    assert up.requests[0].raw == (f"POST /up HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nX-A: 1\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n").encode()


async def test_streamed_body_with_length_passes_through_exactly(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        body = body_of(b"hello", b" world!")
        _, data = await fetch(pools(), up.url("/up"), "PUT", [("content-length", "12")], body)
    assert data == b"ok"
    assert up.requests[0].raw == (f"PUT /up HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n"
                                  "Content-Length: 12\r\n\r\nhello world!").encode()


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(("declared", "chunks", "why"), [
    ("5", (b"hello", b" world!"), "longer"), ("5", (b"hello", SMUGGLED), "longer"),
    ("20", (b"hello", b" world!"), "shorter"),
])
async def test_streamed_body_must_match_its_content_length(
    pools: Callable[..., Pool], declared: str, chunks: tuple[bytes, ...], why: str
) -> None:
    async with serve(replying(OK)) as up:
        pool = pools()
        # "longer": refused before the chunk that crosses the length is written, not after the whole body
        with pytest.raises(UpstreamUnreachable, match=f"{why} than its Content-Length"):
            await fetch(pool, up.url(), "POST", [("Content-Length", declared)], body_of(*chunks))
        assert (await fetch(pool, up.url()))[1] == b"ok"  # the slot was freed; a new connection is used
        assert up.connections == 2
    assert all(b"world" not in r.raw for r in up.requests)  # nothing past the declared length was sent
    assert all("smuggled" not in r.line for r in up.requests)


class BodyBroke(Exception):
    pass


@pytest.mark.parametrize("error", [PayloadTooLarge("Request body is larger than 5 bytes"), BodyBroke("gone")])
async def test_body_iterator_error_reaches_the_caller_as_itself(
    pools: Callable[..., Pool], error: Exception
) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=1)
        with pytest.raises(type(error)) as info:
            await fetch(pool, up.url("/up"), "POST", [], body_of(b"abc", then=error))
        assert info.value is error
        await until(lambda: up.eofs == [1])  # the half-sent request's connection was closed...
        assert up.requests == []  # ...and never completed into a request
        _, data = await fetch(pool, up.url("/next"))  # the slot was freed (max_connections=1)
        assert data == b"ok" and up.connections == 2 and [r.line for r in up.requests] == ["GET /next HTTP/1.1"]


async def test_request_body_waits_for_the_socket_to_drain(pools: Callable[..., Pool]) -> None:
    total, size = 32 * 1024 * 1024, 64 * 1024
    produced = [0]
    go = asyncio.Event()

    async def big() -> AsyncIterator[bytes]:
        chunk = b"x" * size
        for _ in range(total // size):
            produced[0] += size
            yield chunk

    async def handler(conn: Conn) -> None:
        await within(go.wait())  # read nothing until told
        req = await conn.request()
        assert req is not None and len(req.body) == total
        await conn.send(OK)

    async with serve(handler) as up:
        task = asyncio.create_task(fetch(pools(), up.url(), "POST", [], big()))
        await asyncio.sleep(0.3)
        stalled = produced[0]
        await asyncio.sleep(0.1)
        assert produced[0] == stalled < total // 2  # socket buffers filled, then the body iterator waited
        go.set()
        _, data = await asyncio.wait_for(task, WAIT)
        assert data == b"ok" and produced[0] == total


# --- keep-alive ---


async def test_keep_alive_reuses_one_connection(pools: Callable[..., Pool]) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    async with serve(replying(lambda req: chunked if req.line.startswith("POST") else OK)) as up:
        pool = pools()
        for method in ("GET", "POST", "GET", "POST"):
            resp, data = await fetch(pool, up.url(), method, [], b"body" if method == "POST" else None)
            assert (resp.status, data) == (200, b"ok")
        assert up.connections == 1 and len(up.requests) == 4


async def test_pool_close_closes_idle_connections(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools()
        await fetch(pool, up.url())
        await asyncio.sleep(0.05)
        assert up.eofs == []
        await pool.close()
        await until(lambda: up.eofs == [1])


async def test_idle_connections_expire_after_keepalive_seconds(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(keepalive_seconds=0.2)
        await fetch(pool, up.url())
        await fetch(pool, up.url())
        assert up.connections == 1
        await asyncio.sleep(0.3)
        await fetch(pool, up.url())
        assert up.connections == 2
        await until(lambda: up.eofs == [1])  # the expired one was closed, not leaked


async def test_origins_never_share_connections(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(getaddrinfo=fake_dns("127.0.0.1"))
        for host in ("a.test", "b.test", "a.test", "b.test"):
            await fetch(pool, up.url(host=host))
        assert up.connections == 2
    assert [r.header("host") for r in up.requests] == [f"{h}:{up.port}" for h in ("a.test", "b.test") * 2]


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
async def test_no_reuse_after_connection_close(pools: Callable[..., Pool], response: bytes) -> None:
    async with serve(replying(response)) as up:  # the upstream itself would happily keep going
        pool = pools()
        assert (await fetch(pool, up.url()))[1] == b"ok"
        assert (await fetch(pool, up.url()))[1] == b"ok"
        assert up.connections == 2
        await until(lambda: 1 in up.eofs)  # the client hung up, not the upstream


async def test_no_reuse_after_head(pools: Callable[..., Pool]) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    async with serve(replying(lambda req: head if req.line.startswith("HEAD") else OK)) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url(), "HEAD")
        assert (resp.status, resp.content_length, data) == (200, 10, b"")
        resp, data = await fetch(pool, up.url())
        assert data == b"ok" and up.connections == 2


@pytest.mark.parametrize("reading", ["none", "one chunk"])
async def test_no_reuse_when_the_body_was_not_read_to_its_end(pools: Callable[..., Pool], reading: str) -> None:
    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes still to come
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        if reading == "one chunk":
            first = await anext(resp.chunks())
            assert first and b"abc".startswith(first)
        resp.release()
        resp.release()  # twice is harmless
        await until(lambda: up.eofs == [1])
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


async def test_no_reuse_when_the_upstream_answered_before_the_body_was_sent(pools: Callable[..., Pool]) -> None:
    gen_ended = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        try:
            yield b"part one"
            await asyncio.sleep(WAIT * 2)  # the rest never comes in time
            yield b"part two"
        finally:
            gen_ended.set()

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await within(conn.reader.readuntil(b"\r\n\r\n"))
        await conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url(), "POST", [], slow_body())
        assert (resp.status, data) == (413, b"big!")
        await asyncio.wait_for(gen_ended.wait(), WAIT)  # the body writer was stopped
        await until(lambda: up.eofs == [1])  # a half-written request body never precedes the next request
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


@pytest.mark.parametrize("extra", [b"\r\n", b"\n", b"H"])
async def test_any_byte_while_idle_in_the_pool_closes_the_connection(pools: Callable[..., Pool],
                                                                     extra: bytes) -> None:
    sent = asyncio.Event()

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        await conn.send(OK)
        await within(sent.wait())
        await conn.send(extra)  # no request is outstanding: llhttp would skip a bare CR or LF unseen
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        assert (await fetch(pool, up.url()))[1] == b"ok"
        sent.set()
        await until(lambda: up.eofs == [1])  # closed while idle, before any request could take it
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


@pytest.mark.parametrize("late", [False, True])
async def test_an_extra_response_never_answers_the_next_request(pools: Callable[..., Pool], late: bool) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        if late:
            await conn.send(OK)
            await asyncio.sleep(0.1)
            await conn.send(smuggled)  # arrives while the connection idles in the pool
        else:
            await conn.send(OK + smuggled)  # arrives right behind the real response
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        assert (await fetch(pool, up.url()))[1] == b"ok"
        await asyncio.sleep(0.3)
        assert (await fetch(pool, up.url()))[1] == b"ok"
        assert up.connections == 2 and 1 in up.eofs


# --- poisoning: bytes nobody asked for ---


PAST_THE_END = {
    "CRLF": b"\r\n", "LF": b"\n", "one byte": b"H", "a partial head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    "a whole response": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
}
FRAMINGS = {
    "length": OK,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
    "no body": b"HTTP/1.1 204 No Content\r\n\r\n",
    "interim first": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
}


@pytest.mark.parametrize("extra", PAST_THE_END.values(), ids=PAST_THE_END.keys())
@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_bytes_past_the_end_of_a_response_in_the_same_read_poison_the_connection(
    pools: Callable[..., Pool], framing: bytes, extra: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        await conn.send(framing + extra)  # one write: the extra bytes arrive in the same read
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url())
        assert data == (b"" if resp.status == 204 else b"ok")
        assert (await fetch(pool, up.url()))[1] == b"ok"  # on a new connection: the first one was closed
        assert up.connections == 2
        await until(lambda: up.eofs == [1])


# --- a Content-Length body whose rest comes in later reads: counted by the connection, not parsed ---

PIECES = [bytes([65 + i]) * 5000 for i in range(3)]  # each above SMALL_PIECE: handed on as it came
COUNTED = b"".join(PIECES)


def _counted_head(extra: bytes = b"", length: int = len(COUNTED)) -> bytes:
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n" % (extra, length)


class Lockstep:
    """The test and a scripted upstream in turn: the upstream sends the next piece only after the client has
    handed on the previous one, so every piece arrives in a read of its own."""

    def __init__(self) -> None:
        self.turn = asyncio.Event()

    async def wait(self) -> None:
        await within(self.turn.wait())
        self.turn.clear()

    def go(self) -> None:
        self.turn.set()


async def _read_in_lockstep(resp: Response, step: Lockstep) -> bytes:
    got = []
    step.go()  # the head is parsed: the body may come
    async for chunk in resp.chunks():
        got.append(chunk)
        step.go()
    return b"".join(got)


def _scripted(step: Lockstep, *writes: bytes, end: str = "eof", then: bytes = OK) -> Handler:
    """The first connection reads one request and sends `writes`, each after the client's turn (the first at
    once), then ends: "eof" (it drops what comes until the client closes), "close" (it closes), or "next" (it
    answers `then` to the next request). Later connections answer OK."""

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        for i, data in enumerate(writes):
            if i:
                await step.wait()
            with contextlib.suppress(ConnectionError):  # the client may have closed it (a released response)
                await conn.send(data)
        if end == "close":
            conn.writer.close()
        elif end == "eof":
            await conn.wait_eof()
        else:
            await replying(then)(conn)
        return None

    return handler


async def _fetch_in_lockstep(pool: Pool, url: str, step: Lockstep) -> bytes:
    resp = await pool.request("GET", url, [], None, deadline=soon(), read_timeout=WAIT)
    try:
        return await _read_in_lockstep(resp, step)
    finally:
        resp.release()


@pytest.mark.parametrize("first", [b"", PIECES[0][:100]], ids=["head alone", "head with the body's start"])
async def test_a_counted_body_arrives_whole_and_a_new_parser_reads_the_next_response(
        pools: Callable[..., Pool], first: bytes) -> None:
    step = Lockstep()
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    rest = COUNTED[len(first):]
    pieces = (rest[:5000 - len(first)], rest[5000 - len(first):10000 - len(first)], rest[-5000:])
    # the next request on the same connection is answered with another framing
    async with serve(_scripted(step, _counted_head() + first, *pieces, end="next", then=chunked)) as up:
        pool = pools()
        assert await _fetch_in_lockstep(pool, up.url(), step) == COUNTED
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 1


@pytest.mark.parametrize("extra", PAST_THE_END.values(), ids=PAST_THE_END.keys())
async def test_bytes_behind_a_counted_body_in_the_same_read_poison_the_connection(
        pools: Callable[..., Pool], extra: bytes) -> None:
    step = Lockstep()
    # the body's end and the stray bytes in one write
    async with serve(_scripted(step, _counted_head(), COUNTED + extra)) as up:
        pool = pools()
        assert await _fetch_in_lockstep(pool, up.url(), step) == COUNTED  # not one byte more
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2
        await until(lambda: up.eofs == [1])


async def test_a_byte_after_a_counted_body_poisons_the_connection_before_it_is_released(
        pools: Callable[..., Pool]) -> None:
    step = Lockstep()
    # a later read: llhttp would skip a CRLF before a next response
    async with serve(_scripted(step, _counted_head(), COUNTED, b"\r\n")) as up:
        pool = pools()
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            assert await _read_in_lockstep(resp, step) == COUNTED
            await until(lambda: up.eofs == [1])  # closed at once, before anything could reuse it
        finally:
            resp.release()
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


@pytest.mark.parametrize("way", ["read", "chunks"])
async def test_a_counted_body_cut_short_is_unreachable(pools: Callable[..., Pool], way: str) -> None:
    step = Lockstep()
    async with serve(_scripted(step, _counted_head(), PIECES[0], end="close")) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            step.go()
            with pytest.raises(UpstreamUnreachable):
                if way == "read":
                    await resp.read()
                else:
                    async for _ in resp.chunks():
                        pass
        finally:
            resp.release()


@pytest.mark.parametrize("head", [_counted_head(b"Connection: close\r\n"),
                                  _counted_head().replace(b"HTTP/1.1", b"HTTP/1.0")], ids=["close", "HTTP/1.0"])
async def test_a_counted_body_keeps_its_heads_answer_on_keep_alive(pools: Callable[..., Pool], head: bytes) -> None:
    step = Lockstep()
    async with serve(_scripted(step, head, COUNTED)) as up:
        pool = pools()
        assert await _fetch_in_lockstep(pool, up.url(), step) == COUNTED
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


async def test_a_counted_body_released_unread_closes_the_connection(pools: Callable[..., Pool]) -> None:
    step = Lockstep()
    # the second piece comes after the release: dropped, never read as a response
    async with serve(_scripted(step, _counted_head() + PIECES[0], PIECES[1])) as up:
        pool = pools()
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        resp.release()
        step.go()
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2
        await until(lambda: up.eofs == [1])


@pytest.mark.parametrize(("method", "extra"), [("GET", b"\r\n"), ("GET", b"H"), ("HEAD", b"abc")])
async def test_bytes_after_the_end_poison_the_connection_before_it_is_released(
    pools: Callable[..., Pool], method: str, extra: bytes
) -> None:
    read = asyncio.Event()

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        await conn.send(OK if method == "GET" else b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
        await within(read.wait())
        await conn.send(extra)  # the response is complete, the caller still holds it
        await conn.wait_eof()
        return None

    async with serve(handler) as up:
        pool = pools()
        resp = await pool.request(method, up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            assert await resp.read() == (b"ok" if method == "GET" else b"")  # a HEAD response ends at its head
            read.set()
            await until(lambda: up.eofs == [1])  # closed at once, before anything could reuse it
        finally:
            resp.release()
        assert (await fetch(pool, up.url()))[1] == b"ok" and up.connections == 2


@pytest.mark.parametrize("kind", ["streamed", "in the socket buffer"])
async def test_a_response_that_begins_before_the_body_is_written_closes_the_connection(
    pools: Callable[..., Pool], kind: str
) -> None:
    size = 10 if kind == "streamed" else 32 * 1024 * 1024
    answered = asyncio.Event()
    bodies: list[int] = []

    async def streamed() -> AsyncIterator[bytes]:
        yield b"part1"
        await within(answered.wait())
        yield b"part2"

    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await within(conn.reader.readuntil(b"\r\n\r\n"))
        await conn.send(OK)  # answers at once, before reading the body...
        bodies.append(len(await within(conn.reader.readexactly(size))))
        return await replying(OK)(conn)  # ...and would carry on after it

    async with serve(handler) as up:
        pool = pools()
        body = streamed() if kind == "streamed" else b"x" * size
        resp = await pool.request("POST", up.url(), [("Content-Length", str(size))], body, deadline=soon(),
                                  read_timeout=WAIT)
        try:
            answered.set()
            await until(lambda: bodies == [size])  # the request did reach the wire whole, later
            assert await resp.read() == b"ok"
        finally:
            resp.release()
        assert (await fetch(pool, up.url()))[1] == b"ok"
        assert up.connections == 2
        await until(lambda: 1 in up.eofs)


# --- pool keys: one credential per connection ---


async def test_connections_are_never_shared_across_pool_keys(pools: Callable[..., Pool]) -> None:
    seen: list[tuple[int, str | None]] = []

    async def handler(conn: Conn) -> None:
        for _ in range(100):
            req = await conn.request()
            if req is None:
                return
            seen.append((conn.index, req.header("x-tenant")))
            await conn.send(OK)

    async with serve(handler) as up:
        pool = pools()
        for tenant in ("a", "b", "a", "b", "a"):
            assert (await fetch(pool, up.url(), headers=[("X-Tenant", tenant)], pool_key=tenant))[1] == b"ok"
        assert up.connections == 2
    tenants: dict[int, set[str | None]] = {}
    for index, name in seen:
        tenants.setdefault(index, set()).add(name)
    assert tenants == {1: {"a"}, 2: {"b"}} and len(seen) == 5


async def test_a_request_without_a_pool_key_gets_a_connection_of_its_own(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools()
        await fetch(pool, up.url())  # an idle keep-alive connection (key "") it must not take
        for _ in range(2):
            assert (await fetch(pool, up.url(), pool_key=None))[1] == b"ok"
        await until(lambda: sorted(up.eofs) == [2, 3])  # each closed after its one request
        assert up.connections == 3


async def test_idle_connections_are_bounded_per_key_and_in_all(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=10, max_idle=3, max_idle_per_key=2)
        held = [await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT, pool_key="a")
                for _ in range(3)]
        for resp in held:
            assert await resp.read() == b"ok"
            resp.release()
        await until(lambda: up.eofs == [1])  # a third idle "a" connection: its key's oldest is closed
        for key in ("b", "c"):
            await fetch(pool, up.url(), pool_key=key)
        await until(lambda: up.eofs == [1, 2])  # a fourth idle one in all: the least recently used is closed
        for key in ("a", "b", "c"):
            await fetch(pool, up.url(), pool_key=key)
        assert up.connections == 5  # every key still reused what it kept


async def test_many_keys_keep_a_bounded_number_of_connections(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=4, max_idle=8)
        for i in range(300):
            await fetch(pool, up.url(), pool_key=f"source-{i}")
        assert up.connections == 300
        await until(lambda: len(up.eofs) == 300 - 8)
        assert len(pool._lru) == len(pool._idle) == len(pool._open) == 8


async def test_expired_idle_connections_close_even_if_their_key_is_never_used_again(
    pools: Callable[..., Pool]
) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(keepalive_seconds=0.1)
        await fetch(pool, up.url(), pool_key="a")
        await asyncio.sleep(0.15)  # "a" is past its keep-alive
        await fetch(pool, up.url(), pool_key="b")
        await until(lambda: up.eofs == [1])
        assert list(pool._idle) == [("b", split_url(up.url())[0])]


# --- response framing ---


async def test_close_delimited_body_is_read_whole(pools: Callable[..., Pool]) -> None:
    payload = bytes(range(256)) * 4000

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + payload[:1000])
        await asyncio.sleep(0.05)
        await conn.send(payload[1000:])
        conn.writer.close()  # the end of the connection is the end of the body

    async with serve(handler) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url())
        assert (resp.content_length, resp.chunked, data) == (None, False, payload)
        assert up.connections == 1


async def test_close_delimited_body_ended_by_a_reset_is_an_error(pools: Callable[..., Pool]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\n\r\npartial")
        await asyncio.sleep(0.05)
        conn.reset()

    async with serve(handler) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            with pytest.raises(UpstreamUnreachable):
                await resp.read()
        finally:
            resp.release()


async def test_chunked_response_is_decoded(pools: Callable[..., Pool]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")

    async def handler(conn: Conn) -> None:
        for _ in range(2):
            await conn.request()
            for i in range(0, len(chunked), 7):  # framing split at awkward places
                await conn.send(chunked[i:i + 7])
                await asyncio.sleep(0.001)

    async with serve(handler) as up:
        pool = pools()
        for _ in range(2):
            resp, data = await fetch(pool, up.url())
            assert (resp.chunked, resp.content_length, data) == (True, None, b"hello world")
        assert up.connections == 1


async def test_chunked_trailers_are_not_merged_into_the_headers(pools: Callable[..., Pool]) -> None:
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nSet-Cookie: session=evil\r\nX-Trailer: t\r\n\r\n")
    async with serve(replying(response)) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            assert await resp.read() == b"hello"
            assert resp.raw_headers == [(b"Transfer-Encoding", b"chunked")]
        finally:
            resp.release()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_ignore_content_length(pools: Callable[..., Pool], status: int) -> None:
    response = b"HTTP/1.1 %d Nothing\r\nContent-Length: 10\r\n\r\n" % status
    async with serve(replying(lambda req: response if req.line.startswith("GET /a") else OK)) as up:
        pool = pools()
        resp, data = await fetch(pool, up.url("/a"))
        assert (resp.status, data) == (status, b"")
        assert (await fetch(pool, up.url("/b")))[1] == b"ok" and up.connections == 1


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
])
@pytest.mark.parametrize("way", ["read", "chunks"])
async def test_truncated_body_is_unreachable(pools: Callable[..., Pool], response: bytes, way: str) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(response)
        conn.writer.close()

    async with serve(handler) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        got: list[bytes] = []
        try:
            with pytest.raises(UpstreamUnreachable):
                if way == "read":
                    await resp.read()
                else:
                    async for chunk in resp.chunks():
                        got.append(chunk)
        finally:
            resp.release()
        assert b"".join(got) in (b"", b"abc", b"hello")


@pytest.mark.parametrize("response", [
    b"garbage\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"\x16\x03\x01\x02\x00",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok",  # a length is the only framing
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",  # outside 100-599: RFC 9110 says treat as 5xx
    b"HTTP/1.1 999 Nine\r\nContent-Length: 2\r\n\r\nok",
    b"",  # closed without a word
])
async def test_invalid_responses_are_unreachable(pools: Callable[..., Pool], response: bytes) -> None:
    async def handler(conn: Conn) -> None:
        if conn.index > 1:
            return await replying(OK)(conn)
        await conn.request()
        await conn.send(response)
        if response:
            await conn.wait_eof()  # the client hangs up on an invalid response
        return None

    async with serve(handler) as up:
        pool = pools(max_connections=1)
        with pytest.raises(UpstreamUnreachable):
            await fetch(pool, up.url())
        assert (await fetch(pool, up.url()))[1] == b"ok"  # slot freed, broken connection not reused
        assert up.connections == 2


@pytest.mark.parametrize("parts", [
    [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
])
async def test_interim_responses_are_skipped(pools: Callable[..., Pool], parts: list[bytes]) -> None:
    async def handler(conn: Conn) -> None:
        for _ in range(2):
            if await conn.request() is None:
                return
            for part in parts:
                await conn.send(part)
                await asyncio.sleep(0.02)

    async with serve(handler) as up:
        pool = pools()
        for _ in range(2):
            resp, data = await fetch(pool, up.url(), "POST", [], b"x")
            assert (resp.status, resp.raw_headers, data) == (200, [(b"Content-Length", b"2")], b"ok")
        assert up.connections == 1


@pytest.mark.parametrize(("count", "ok"), [(MAX_HEADERS, True), (MAX_HEADERS + 1, False), (5000, False)])
async def test_header_count_limit(pools: Callable[..., Pool], count: int, ok: bool) -> None:
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(count - 1))
    async with serve(replying(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok")) as up:
        pool = pools()
        if ok:
            resp, data = await fetch(pool, up.url())
            assert len(resp.raw_headers) == count and data == b"ok"
        else:
            with pytest.raises(UpstreamUnreachable, match="invalid response"):
                await fetch(pool, up.url())


@pytest.mark.parametrize(("extra", "ok"), [(0, True), (1, False)])
async def test_header_bytes_limit(pools: Callable[..., Pool], extra: int, ok: bool) -> None:
    cl = len(b"Content-Length") + len(b"2")
    value = b"v" * (MAX_HEADER_BYTES - cl - len(b"X-Big") + extra)
    async with serve(replying(b"HTTP/1.1 200 OK\r\nX-Big: " + value + b"\r\nContent-Length: 2\r\n\r\nok")) as up:
        pool = pools()
        if ok:
            assert (await fetch(pool, up.url()))[1] == b"ok"
        else:
            with pytest.raises(UpstreamUnreachable, match="invalid response"):
                await fetch(pool, up.url())


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
# (what the upstream sends first, what it then repeats until the client hangs up, whether the head completes)
ENDLESS = {
    "status line": (b"HTTP/1.1 200 ", b"a" * 65536, False),
    "header name": (b"HTTP/1.1 200 OK\r\nX-", b"a" * 65536, False),
    "header value": (b"HTTP/1.1 200 OK\r\nX-Big: ", b"a" * 65536, False),
    "interim heads": (b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" * 1000, False),
    "chunk extension": (CHUNKED_HEAD + b"1;ext=", b"a" * 65536, True),
    "chunk size": (CHUNKED_HEAD, b"0" * 65536, True),
    "trailer": (CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-Trailer: ", b"a" * 65536, True),
}
FLOOD_CAP = 64 * 1024 * 1024


async def flood(conn: Conn, prefix: bytes, filler: bytes, sent: list[int]) -> None:
    """Send `prefix`, then `filler` again and again until the client hangs up (at most FLOOD_CAP bytes)."""
    total = len(prefix)
    conn.writer.write(prefix)
    with contextlib.suppress(ConnectionError):
        while total < FLOOD_CAP and not conn.writer.is_closing():
            conn.writer.write(filler)
            total += len(filler)
            await within(conn.writer.drain())
    sent.append(total)


@pytest.mark.parametrize(("prefix", "filler", "head_completes"), ENDLESS.values(), ids=ENDLESS.keys())
async def test_a_line_that_never_ends_is_refused_after_a_bounded_number_of_bytes(
    pools: Callable[..., Pool], prefix: bytes, filler: bytes, head_completes: bool
) -> None:
    sent: list[int] = []

    async def handler(conn: Conn) -> None:
        await conn.request()
        await flood(conn, prefix, filler, sent)

    async with serve(handler) as up:
        pool = pools()
        with pytest.raises(UpstreamUnreachable, match="invalid response"):
            resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
            assert head_completes
            try:
                await resp.read()
            finally:
                resp.release()
        await until(lambda: len(sent) == 1)
        assert pool._busy == 0
    # what the client read is at most the limit plus one read; the rest sat in socket buffers
    assert sent[0] < FLOOD_CAP // 4, sent


async def test_an_endless_header_line_costs_bounded_memory(pools: Callable[..., Pool]) -> None:
    sent: list[int] = []
    peak = [0]

    async def handler(conn: Conn) -> None:
        await conn.request()
        await flood(conn, b"HTTP/1.1 200 OK\r\nX-Big: ", b"a" * 65536, sent)

    async def sample() -> None:
        for _ in range(100_000):
            peak[0] = max(peak[0], rss_bytes())
            await asyncio.sleep(0.002)

    async with serve(handler) as up:
        baseline = rss_bytes()
        sampler = asyncio.create_task(sample())
        try:
            with pytest.raises(UpstreamUnreachable):
                await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
            await until(lambda: len(sent) == 1)
        finally:
            sampler.cancel()
    assert peak[0] - baseline < 16 * 1024 * 1024, (peak[0] - baseline, sent)


@pytest.mark.parametrize(("length", "refused"), [(MAX_HEAD_BYTES - 100, False), (MAX_HEAD_BYTES, True)])
async def test_an_unfinished_head_is_refused_once_the_bytes_received_pass_the_limit(
    pools: Callable[..., Pool], length: int, refused: bool
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * length)  # and then nothing: the line never ends
        await conn.wait_eof()

    async with serve(handler) as up:
        error = UpstreamUnreachable if refused else UpstreamTimeout  # refused at once, not when the deadline passes
        with pytest.raises(error):
            await pools().request("GET", up.url(), [], None, deadline=soon(1.0 if refused else 0.3),
                                  read_timeout=WAIT)
        await until(lambda: up.eofs == [1])


async def test_read_past_max_bytes_is_refused(pools: Callable[..., Pool]) -> None:
    async with serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            with pytest.raises(UpstreamUnreachable, match="too large"):
                await resp.read(max_bytes=10)
        finally:
            resp.release()


# --- timeouts ---


async def test_head_deadline_is_a_timeout_and_closes_the_connection(pools: Callable[..., Pool]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.wait_eof()  # never answers

    async with serve(handler) as up:
        pool = pools(max_connections=1)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", up.url(), [], None, deadline=soon(0.3), read_timeout=WAIT)
        assert 0.25 < time.monotonic() - started < WAIT
        await until(lambda: up.eofs == [1])
        assert pool._busy == 0  # the slot was given back


async def test_head_deadline_covers_a_slow_status_line(pools: Callable[..., Pool]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(100):  # a byte every 50 ms: each arrives in time, the head never completes
            await conn.send(b"a")
            await asyncio.sleep(0.05)

    async with serve(handler) as up:
        with pytest.raises(UpstreamTimeout):
            await pools().request("GET", up.url(), [], None, deadline=soon(0.3), read_timeout=WAIT)


@pytest.mark.parametrize("way", ["read", "chunks"])
async def test_body_read_timeout(pools: Callable[..., Pool], way: str) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await conn.wait_eof()  # stalls

    async with serve(handler) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=0.3)
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeout):
                if way == "read":
                    await resp.read()
                else:
                    async for _ in resp.chunks():
                        pass
        finally:
            resp.release()
        assert 0.25 < time.monotonic() - started < WAIT
        await until(lambda: up.eofs == [1])


async def trickle(conn: Conn, head: bytes, *, every: float = 0.02, count: int = 1000) -> None:
    """Answer with `head`, then one body byte every `every` seconds until the client hangs up."""
    await conn.request()
    await conn.send(head)
    with contextlib.suppress(ConnectionError):
        for _ in range(count):
            await conn.send(b"a")
            await asyncio.sleep(every)
    await conn.wait_eof()


@pytest.mark.parametrize("given", [True, False])
async def test_read_ends_by_its_deadline_however_the_body_trickles(pools: Callable[..., Pool], given: bool) -> None:
    async with serve(lambda conn: trickle(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) as up:
        pool = pools(max_connections=1)
        # each byte comes well within the read timeout; only a deadline for the whole body stops it
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(WAIT if given else 0.3), read_timeout=WAIT)
        assert resp.deadline > time.monotonic()
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeout):
                await (resp.read(deadline=soon(0.3)) if given else resp.read())  # else the request's deadline
        finally:
            resp.release()
        assert time.monotonic() - started < WAIT
        await until(lambda: up.eofs == [1])  # the connection was closed
        assert pool._busy == 0  # and its slot given back


@pytest.mark.parametrize("limit", ["idle timeout", "deadline"])
async def test_chunks_end_by_their_idle_timeout_or_deadline(pools: Callable[..., Pool], limit: str) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def handler(conn: Conn) -> None:
        if limit == "deadline":  # a chunk every 20 ms: never idle for long
            await conn.request()
            await conn.send(head)
            with contextlib.suppress(ConnectionError):
                for _ in range(1000):
                    await conn.send(b"1\r\na\r\n")
                    await asyncio.sleep(0.02)
        else:  # one chunk, then silence
            await conn.request()
            await conn.send(head + b"1\r\na\r\n")
        await conn.wait_eof()

    async with serve(handler) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        got = []
        try:
            with pytest.raises(UpstreamTimeout):
                pieces = resp.chunks(idle_timeout=0.2) if limit == "idle timeout" else resp.chunks(deadline=soon(0.3))
                async for piece in pieces:
                    got.append(piece)
        finally:
            resp.release()
        assert b"".join(got).startswith(b"a")
        await until(lambda: up.eofs == [1])


async def test_a_passed_deadline_ends_a_read_without_waiting(pools: Callable[..., Pool]) -> None:
    async with serve(lambda conn: trickle(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            with pytest.raises(UpstreamTimeout):
                await resp.read(deadline=time.monotonic() - 1)
        finally:
            resp.release()


# --- backpressure ---


async def test_a_slow_reader_keeps_the_buffer_bounded(
    pools: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    peak, pauses = [0], [0]
    feed, pause = Response._feed, Connection.pause

    def counting_feed(self: Response, data: bytes) -> None:
        feed(self, data)
        peak[0] = max(peak[0], self._buffered)

    def counting_pause(self: Connection) -> None:
        pauses[0] += 1
        pause(self)

    monkeypatch.setattr(Response, "_feed", counting_feed)
    monkeypatch.setattr(Connection, "pause", counting_pause)
    async with serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)) as up:
        pool = pools()
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        got = []
        try:
            await asyncio.sleep(0.2)  # let the upstream push as much as it can
            async for chunk in resp.chunks():
                got.append(chunk)
                await asyncio.sleep(0.002)
                if len(got) > 100_000:
                    raise AssertionError("endless body")
        finally:
            resp.release()
        assert b"".join(got) == payload
        resp = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            assert b"".join([c async for c in resp.chunks()]) == payload
        finally:
            resp.release()
        assert up.connections == 1  # reading resumed and the body ended cleanly: the connection was reused
    assert LOW_WATER < peak[0] <= HIGH_WATER + READ_SIZE
    assert pauses[0] >= 1


async def test_a_full_buffer_released_unread_leaves_a_reusable_connection(pools: Callable[..., Pool]) -> None:
    """A response that completes in the read that fills the buffer (reading paused) and is released unread (an
    agent that went away) goes back to the pool reading again: the next request gets its answer, and stray
    bytes while idle would still be seen."""
    payload = b"x" * (HIGH_WATER + 1)  # only the last byte fills the buffer: it completes in that read
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
    async with serve(replying(lambda req: big if req.line.startswith("GET /big") else OK)) as up:
        pool = pools()
        resp = await pool.request("GET", up.url("/big"), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            await until(lambda: resp._done)
            assert resp._buffered > HIGH_WATER  # reading was paused for a full buffer
        finally:
            resp.release()
        assert (await fetch(pool, up.url("/next")))[1] == b"ok"
        assert up.connections == 1


async def test_read_returns_a_body_larger_than_high_water(pools: Callable[..., Pool]) -> None:
    payload = b"x" * (3 * 1024 * 1024)
    async with serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=1.0)
        try:
            assert await resp.read() == payload
        finally:
            resp.release()


def chunked(*pieces: bytes) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


async def test_a_flood_of_tiny_chunks_is_held_and_handed_on_in_few_pieces(pools: Callable[..., Pool]) -> None:
    n = 300_000
    async with serve(replying(chunked(*[b"x"] * n))) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(60), read_timeout=WAIT)
        try:
            await until(lambda: resp._done, timeout=30)  # the whole body is buffered before any of it is read
            pieces = [piece async for piece in resp.chunks()]
        finally:
            resp.release()
    assert b"".join(pieces) == b"x" * n
    assert len(pieces) <= n // COALESCE_BYTES + 1, len(pieces)


def test_a_flood_of_tiny_chunks_never_stalls_the_event_loop() -> None:
    """A million one-byte chunks: the most work the loop does between two ticks of another coroutine stays far
    below what parsing (or handing on) them all in one turn would cost. Work is the loop thread's CPU time, so a
    busy machine does not count. On uvloop, as keyrelay serves: libuv reads a busy socket up to 32 times per
    turn, where asyncio's own loop reads once."""
    n = 1_000_000
    body = b"1\r\nx\r\n" * n

    async def handler(conn: Conn) -> None:
        await conn.request()  # then all of it in one write: the socket buffers fill at once
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
        await conn.wait_eof()

    async def scenario() -> tuple[int, float]:
        longest, done = [0.0], asyncio.Event()

        async def ticker() -> None:
            last = time.thread_time()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.thread_time()
                longest[0] = max(longest[0], now - last)
                last = now

        pool = Pool(allow=LOOPBACK, max_connections=1)
        received = 0
        async with serve(handler) as up:
            ticks = asyncio.create_task(ticker())
            resp = await pool.request("GET", up.url(), [], None, deadline=soon(60), read_timeout=WAIT)
            try:
                async for piece in resp.chunks():
                    received += len(piece)
                    assert piece.find(b"secret") < 0  # what a redacting reader does with each piece
            finally:
                resp.release()
                done.set()
                await ticks
                await pool.close()
        return received, longest[0]

    received, longest = uvloop.run(scenario())
    assert received == n
    assert longest < 0.15, longest  # one read of tiny chunks is 20-40 ms; all that is ready at once, seconds


async def test_a_slow_reader_keeps_the_buffer_bounded_during_a_flood_of_tiny_chunks(
    pools: Callable[..., Pool]
) -> None:
    """Pausing for a loop turn (after every read, with chunks this small) never overrides the pause for a
    full buffer."""
    n = 1_000_000  # 2 MB of body in two-byte chunks
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"2\r\nab\r\n" * n + b"0\r\n\r\n"
    async with serve(replying(response)) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(60), read_timeout=WAIT)
        try:
            await until(lambda: resp._buffered > HIGH_WATER, timeout=30)
            await asyncio.sleep(0.3)  # many loop turns: time for reading to (wrongly) resume
            assert not resp._done and resp._buffered <= HIGH_WATER + READ_SIZE, resp._buffered
            assert await resp.read() == b"ab" * n
        finally:
            resp.release()


def _sizes(name: str) -> list[int]:
    rng = random.Random(name)
    if name == "random":
        return [rng.choice((1, 2, 3, 100, 4095, 4096, 4097, 70_000)) for _ in range(3000)]
    return [1] * 5000 + [5000] + [1] * 3 + [100_000] + [1] + [4095, 1, 4096, 1] * 50


@pytest.mark.parametrize("pattern", ["mixed", "random"])
@pytest.mark.parametrize("way", ["read", "chunks"])
async def test_merged_small_pieces_keep_the_body_exact(pools: Callable[..., Pool], pattern: str, way: str) -> None:
    pieces = [bytes([65 + i % 26]) * size for i, size in enumerate(_sizes(pattern))]
    response = chunked(*pieces)

    async def handler(conn: Conn) -> None:
        await conn.request()
        step = 7919  # framing split at awkward places
        for i in range(0, len(response), step):
            await conn.send(response[i:i + step])
        await conn.wait_eof()

    async with serve(handler) as up:
        resp = await pools().request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            data = await resp.read() if way == "read" else b"".join([c async for c in resp.chunks()])
        finally:
            resp.release()
    assert data == b"".join(pieces)


# --- SSRF: where the pool dials ---


async def test_loopback_is_refused_unless_allowed(pools: Callable[..., Pool]) -> None:
    dialed: list[str] = []
    async with serve(replying(OK)) as up:
        with pytest.raises(SsrfBlocked):
            await fetch(pools(allow=(), on_dial=dialed.append), up.url())
        assert up.connections == 0 and dialed == []
        _, data = await fetch(pools(allow=LOOPBACK, on_dial=dialed.append), up.url())
        assert data == b"ok" and up.connections == 1 and dialed == ["127.0.0.1"]


@pytest.mark.parametrize("answers", [["127.0.0.1"], ["10.0.0.1"], ["93.184.216.34", "127.0.0.1"],
                                     ["169.254.169.254"], ["::ffff:127.0.0.1"]])
async def test_a_private_dns_answer_is_refused_before_dialing(pools: Callable[..., Pool], answers: list[str]) -> None:
    dialed: list[str] = []
    async with serve(replying(OK)) as up:
        pool = pools(allow=(), getaddrinfo=fake_dns(*answers), on_dial=dialed.append)
        with pytest.raises(SsrfBlocked):
            await fetch(pool, up.url(host="api.example.test"))
        assert up.connections == 0 and dialed == []


@pytest.mark.parametrize("host", ["a b", "127.0.0.1\r\nX-Evil: 1", "api.test\r\nX-Evil: 1", "[::1\r\nX: y]"])
async def test_a_host_that_could_inject_never_reaches_the_wire(pools: Callable[..., Pool], host: str) -> None:
    calls: list[str] = []
    async with serve(replying(OK)) as up:
        with pytest.raises(InvalidRequest):
            await fetch(pools(getaddrinfo=fake_dns("127.0.0.1", calls=calls)), f"http://{host}:{up.port}/")
        assert up.connections == 0 and calls == []


async def test_dns_answers_are_cached_briefly(pools: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    async with serve(replying(CLOSE, close=True)) as up:  # every request needs a new connection
        pool = pools(getaddrinfo=fake_dns("127.0.0.1", calls=calls))
        for _ in range(3):
            assert (await fetch(pool, up.url(host="api.test")))[1] == b"ok"
        assert up.connections == 3 and calls == ["api.test"]
        monkeypatch.setattr(http1, "DNS_TTL", 0.05)
        await fetch(pool, up.url(host="other.test"))  # cached with the short TTL
        await asyncio.sleep(0.1)
        await fetch(pool, up.url(host="other.test"))
        assert calls == ["api.test", "other.test", "other.test"]


async def test_on_dial_sees_each_exact_address(pools: Callable[..., Pool]) -> None:
    dialed: list[str] = []
    async with serve(replying(OK)) as up:
        # nothing listens on 127.0.0.2 at this port: the pool moves on to the next validated answer
        pool = pools(getaddrinfo=fake_dns("127.0.0.2", "127.0.0.1"), on_dial=dialed.append)
        assert (await fetch(pool, up.url(host="api.test")))[1] == b"ok"
        assert dialed == ["127.0.0.2", "127.0.0.1"] and up.connections == 1


async def test_no_answer_accepts_a_connection_is_unreachable(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        port = up.port
    with pytest.raises(UpstreamUnreachable):
        await fetch(pools(), f"http://127.0.0.1:{port}/")


# --- the connection limit ---


async def test_max_connections_makes_the_next_request_wait(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=1)
        first = await pool.request("GET", up.url("/1"), [], None, deadline=soon(), read_timeout=WAIT)
        second = asyncio.create_task(fetch(pool, up.url("/2")))
        await asyncio.sleep(0.2)
        assert not second.done() and len(up.requests) == 1
        assert await first.read() == b"ok"
        first.release()
        _, data = await asyncio.wait_for(second, WAIT)
        assert data == b"ok" and up.connections == 1 and len(up.requests) == 2


async def test_waiting_for_a_slot_respects_the_deadline(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=1)
        first = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        try:
            with pytest.raises(UpstreamTimeout):
                await pool.request("GET", up.url(), [], None, deadline=soon(0.2), read_timeout=WAIT)
        finally:
            first.release()
        assert (await fetch(pool, up.url()))[1] == b"ok"


async def test_failed_requests_give_their_slot_back(pools: Callable[..., Pool]) -> None:
    async def handler(conn: Conn) -> None:
        for _ in range(100):
            req = await conn.request()
            if req is None:
                return
            if req.line.startswith("GET /slow"):
                return await conn.wait_eof()  # never answers
            await conn.send(OK)

    async with serve(handler) as up:
        pool = pools(max_connections=1, getaddrinfo=fake_dns("10.0.0.1"))
        for _ in range(3):
            with pytest.raises(SsrfBlocked):
                await fetch(pool, up.url(host="internal.test"))
            with pytest.raises(UpstreamUnreachable):
                await fetch(pool, f"http://127.0.0.2:{up.port}/")  # refused
            with pytest.raises(UpstreamTimeout):
                await pool.request("GET", up.url("/slow"), [], None, deadline=soon(0.1), read_timeout=WAIT)
            assert (await fetch(pool, up.url()))[1] == b"ok"
        assert pool._busy == 0


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_invalid_header_leaves_no_connection_behind(pools: Callable[..., Pool], streamed: bool) -> None:
    async with serve(replying(OK)) as up:
        pool = pools()
        await fetch(pool, up.url())  # one idle connection
        for _ in range(2):
            with pytest.raises(InvalidRequest):
                await fetch(pool, up.url(), "POST", [("X-Key", "secret\n")], body_of(b"x") if streamed else b"x")
        await fetch(pool, up.url())
        await asyncio.sleep(0.05)
        idle = sum(len(conns) for conns in pool._idle.values())
        leaked = len(pool._open) - idle
        await pool.close()  # before the upstream goes: no unretrieved head futures are left to log
        assert leaked == 0


async def test_a_cancelled_waiter_does_not_swallow_the_free_slot(pools: Callable[..., Pool]) -> None:
    async with serve(replying(OK)) as up:
        pool = pools(max_connections=1)
        first = await pool.request("GET", up.url(), [], None, deadline=soon(), read_timeout=WAIT)
        second = asyncio.create_task(fetch(pool, up.url()))
        third = asyncio.create_task(fetch(pool, up.url()))
        await asyncio.sleep(0.05)
        assert not second.done() and not third.done()
        assert await first.read() == b"ok"
        first.release()  # wakes `second`...
        second.cancel()  # ...whose caller gives up in the same turn
        with pytest.raises(asyncio.CancelledError):
            await second
        _, data = await asyncio.wait_for(third, 1.0)
        assert data == b"ok"


# --- TLS ---


@dataclass
class Tls:
    server: ssl.SSLContext
    trusting: ssl.SSLContext  # a client context trusting only this certificate


def self_signed(tmp_path: Path, *names: str) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyrelay test upstream")])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return Tls(server, ssl.create_default_context(cadata=cert_pem.decode()))


async def test_https_with_a_trusted_certificate(pools: Callable[..., Pool], tmp_path: Path) -> None:
    tls = self_signed(tmp_path, "127.0.0.1", "upstream.test")
    async with serve(replying(OK), ssl_context=tls.server) as up:
        pool = pools(ssl_context=tls.trusting, getaddrinfo=fake_dns("127.0.0.1"))
        for url in (up.url(), up.url(), up.url(host="upstream.test")):
            resp, data = await fetch(pool, url)
            assert (resp.status, data) == (200, b"ok")
        assert up.connections == 2  # keep-alive over TLS; another origin, another connection
    assert [r.header("host") for r in up.requests] == [f"127.0.0.1:{up.port}"] * 2 + [f"upstream.test:{up.port}"]


async def test_https_refuses_an_untrusted_certificate(pools: Callable[..., Pool], tmp_path: Path) -> None:
    tls = self_signed(tmp_path, "127.0.0.1")
    async with serve(replying(OK), ssl_context=tls.server) as up:
        with pytest.raises(UpstreamUnreachable):
            await fetch(pools(), up.url())  # the default context does not trust it
        assert up.connections == 0 and up.requests == []


async def test_https_checks_the_name_in_the_url(pools: Callable[..., Pool], tmp_path: Path) -> None:
    tls = self_signed(tmp_path, "other.test")
    async with serve(replying(OK), ssl_context=tls.server) as up:
        pool = pools(ssl_context=tls.trusting, getaddrinfo=fake_dns("127.0.0.1"))
        for host in ("127.0.0.1", "upstream.test"):
            with pytest.raises(UpstreamUnreachable):
                await fetch(pool, up.url(host=host))
        assert (await fetch(pool, up.url(host="other.test")))[1] == b"ok"
        assert up.connections == 1
