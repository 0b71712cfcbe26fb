"""server.py: the `keyrelay.whole_response` scope extension (one write per whole response), on a real uvicorn
response cycle with a recording transport, and end to end through the gateway on a real connection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, RequestResponseCycle

from keyrelay.server import protocol_for, send_whole, uvicorn_config
from support.adversarial import _drain, read_response, rss_bytes
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.raw_upstream import ScriptedConn, ScriptedUpstream
from support.upstream import FakeUpstream


class Recording:
    """Just enough of a transport for uvicorn's cycle: records writes and closes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def cycle(method: str = "GET", *, keep_alive: bool = True) -> tuple[RequestResponseCycle, Recording, list[int]]:
    transport = Recording()
    completed: list[int] = []
    c = RequestResponseCycle(
        scope={"type": "http", "method": method, "headers": []}, transport=transport,  # type: ignore[typeddict-item,arg-type]
        flow=FlowControl(transport), logger=logging.getLogger("test"),  # type: ignore[arg-type]
        access_logger=logging.getLogger("test.access"), access_log=False,
        default_headers=[(b"date", b"Sun, 22 Nov 2026 00:00:00 GMT")], message_event=asyncio.Event(),
        expect_100_continue=False, keep_alive=keep_alive, on_response=lambda: completed.append(1))
    return c, transport, completed


async def test_a_whole_response_is_one_write() -> None:
    c, transport, completed = cycle()
    assert send_whole(c, 200, [(b"content-type", b"application/json"), (b"content-length", b"2")], b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 00:00:00 GMT\r\n"
                                b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"]
    assert c.response_complete and completed == [1] and not transport.closed


async def test_head_keeps_the_length_and_sends_no_body() -> None:
    c, transport, _ = cycle("HEAD")
    assert send_whole(c, 200, [(b"content-length", b"5")], b"")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 00:00:00 GMT\r\ncontent-length: 5\r\n\r\n"]


async def test_without_keep_alive_the_connection_closes_after_the_write() -> None:
    c, transport, completed = cycle(keep_alive=False)
    assert send_whole(c, 204, [], b"")
    assert transport.writes[0].endswith(b"connection: close\r\n\r\n") and transport.closed and completed == [1]


@pytest.mark.parametrize("byte", range(256))
async def test_every_byte_uvicorn_refuses_in_a_header_falls_back(byte: int) -> None:
    """The one-write path refuses exactly the name and value bytes uvicorn's own checks refuse."""
    b = bytes((byte,))
    for name, value in ((b"x-" + b + b"n", b"v"), (b"x-n", b"v" + b + b"v")):
        c, transport, _ = cycle()
        bad = bool(HEADER_RE.search(name) or HEADER_VALUE_RE.search(value))
        assert send_whole(c, 200, [(name, value), (b"content-length", b"2")], b"{}") is not bad
        assert bool(transport.writes) is not bad


@pytest.mark.parametrize(("status", "headers", "body"), [
    (200, [(b"content-length", b"3")], b"{}"),  # length differs from the body
    (200, [], b"{}"),  # no length: needs the ordinary path to frame it
    (200, [(b"content-length", b"2"), (b"content-length", b"2")], b"{}"),
    (200, [(b"transfer-encoding", b"chunked")], b"{}"),
    (200, [(b"connection", b"close"), (b"content-length", b"2")], b"{}"),
    (200, [(b"x-bad", b"a\r\nb"), (b"content-length", b"2")], b"{}"),
    (200, [(b"bad name", b"x"), (b"content-length", b"2")], b"{}"),
    (204, [], b"x"),  # a body where none may be
    (99, [], b""),
])
async def test_anything_unusual_falls_back_to_the_ordinary_sends(
        status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    c, transport, completed = cycle()
    assert not send_whole(c, status, headers, body)
    assert transport.writes == [] and not c.response_started and completed == []


async def test_a_started_response_is_never_written_twice() -> None:
    c, transport, _ = cycle()
    assert send_whole(c, 200, [(b"content-length", b"0")], b"")
    assert not send_whole(c, 200, [(b"content-length", b"0")], b"")
    assert len(transport.writes) == 1


@pytest.fixture(params=[True, False], ids=["direct", "asgi"])
def direct(request: pytest.FixtureRequest) -> bool:
    """The gateway route on the server's direct path, or through ASGI as under another server."""
    return bool(request.param)


@pytest.fixture()
def gateway(tmp_path: Path, upstream: FakeUpstream, direct: bool) -> Iterator[tuple[KeyrelayServer, str, str]]:
    with KeyrelayServer(make_settings(data_dir=tmp_path), direct=direct) as server:
        admin = Admin(server.url)
        ws = admin.workspace("whole")
        admin.source(ws, upstream_url=upstream.url)
        key = admin.api_key(ws, ["proxy"])
        admin.close()
        yield server, ws, key


def _read(reader: Any, method: str) -> tuple[int, dict[str, str], bytes]:
    status = int(reader.readline().split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
    return status, headers, reader.read(length)


def test_pipelined_gateway_requests_each_get_their_whole_response(gateway: tuple[KeyrelayServer, str, str]) -> None:
    server, ws, key = gateway
    auth = f"Host: x\r\nAuthorization: Bearer {key}\r\n"
    requests = (f"GET /api/{ws}/proxy/echo/echo?n=1 HTTP/1.1\r\n{auth}\r\n"
                f"HEAD /api/{ws}/proxy/echo/echo HTTP/1.1\r\n{auth}\r\n"
                f"GET /api/{ws}/proxy/echo/echo?n=3 HTTP/1.1\r\n{auth}Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        reader = sock.makefile("rb")
        (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = (_read(reader, m) for m in ("GET", "HEAD", "GET"))
        assert reader.read() == b""  # closed after the third response, nothing more on the wire
    assert (s1, s2, s3) == (200, 200, 200)
    assert int(h1["content-length"]) == len(b1) and b'"n", "1"' in b1
    assert b2 == b"" and int(h2["content-length"]) > 0
    assert h3.get("connection") == "close" and b'"n", "3"' in b3
    assert len({h1["x-request-id"], h2["x-request-id"], h3["x-request-id"]}) == 3


@pytest.mark.parametrize(("target", "status", "reaches"), [
    ("/api/{ws}/proxy/echo/echo?x=/proxy/a/b", 200, "/echo?x=/proxy/a/b"),
    ("/api/{ws}/proxy/echo/echo#/frag", 200, "/echo"),  # a fragment is never sent on
    ("/api/{ws}?a/proxy/echo/echo", 404, None),  # "/proxy/" only in the query: not a gateway path
    ("/api/{ws}#/proxy/echo/echo", 404, None),
    ("http://x/api/{ws}/proxy/echo/echo?y=1", 200, "/echo?y=1"),  # absolute form (RFC 9112 3.2.2)
])
def test_gateway_targets_are_read_the_same_on_every_path(gateway: tuple[KeyrelayServer, str, str],
                                                         upstream: FakeUpstream, target: str, status: int,
                                                         reaches: str | None) -> None:
    server, ws, key = gateway
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {target.format(ws=ws)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     "Connection: close\r\n\r\n".encode())
        got, _, body = _read(sock.makefile("rb"), "GET")
    assert got == status, body
    assert [r.raw_path for r in upstream.requests] == ([reaches] if reaches else [])


def test_a_pipelined_request_waits_for_the_slower_one_before_it(gateway: tuple[KeyrelayServer, str, str]) -> None:
    """The second request is answered only after the first, however fast its own upstream answer is."""
    server, ws, key = gateway
    auth = f"Host: x\r\nAuthorization: Bearer {key}\r\n"
    requests = (f"GET /api/{ws}/proxy/echo/slow?delay=0.3 HTTP/1.1\r\n{auth}\r\n"
                f"GET /api/{ws}/proxy/echo/echo?n=2 HTTP/1.1\r\n{auth}Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        reader = sock.makefile("rb")
        (s1, _, b1), (s2, _, b2) = (_read(reader, "GET") for _ in range(2))
    assert (s1, s2) == (200, 200) and b'"slow"' in b1 and b'"n", "2"' in b2


def test_expect_100_continue_gets_its_interim_response_before_the_body(gateway: tuple[KeyrelayServer, str, str],
                                                                       upstream: FakeUpstream) -> None:
    server, ws, key = gateway
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /api/{ws}/proxy/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     "Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n".encode())
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100 ")  # the body is sent only after this
        assert reader.readline() == b"\r\n"
        sock.sendall(b"hello")
        status, _, body = _read(reader, "POST")
    assert status == 200 and b"hello" in body and [r.body for r in upstream.requests] == [b"hello"]


def test_gateway_requests_leave_no_cyclic_garbage(gateway: tuple[KeyrelayServer, str, str]) -> None:
    """Each proxied request must be freed by reference counting alone: a reference cycle per request (as the
    whole-response extension once made: scope -> extension -> cycle -> scope) costs the cyclic GC's time on
    the hot path and grows memory between collections."""
    server, ws, key = gateway
    request = f"GET /api/{ws}/proxy/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for _ in range(20):  # warm: caches, connection pool, first log flush
            sock.sendall(request)
            assert _read(reader, "GET")[0] == 200
        gc.collect()
        gc.disable()
        try:
            for _ in range(200):
                sock.sendall(request)
                assert _read(reader, "GET")[0] == 200
            unreachable = gc.collect()
        finally:
            gc.enable()
    assert unreachable < 200, f"{unreachable} objects in reference cycles after 200 requests"


@pytest.mark.parametrize("target", ["/healthz", "/api/ws/proxy/up/x"])
def test_headers_over_the_limit_are_refused_even_when_the_url_is_short(tmp_path: Path, direct: bool,
                                                                       target: str) -> None:
    """The protocol's own budget is headers + URL; the header limit alone still holds (the app checks it
    whenever the server could not vouch for it), on every path to the app."""
    settings = make_settings(data_dir=tmp_path, max_header_bytes=2048, max_url_bytes=8192)
    with KeyrelayServer(settings, direct=direct) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode() + b"a" * 3000 + b"\r\n\r\n")
        status, headers, body = _read(s.makefile("rb"), "GET")
    assert status == 431 and b"headers_too_large" in body and headers.get("x-request-id")


@pytest.mark.parametrize("target", ["/healthz?", "/api/ws/proxy/up/x?", "/api/ws/proxy/up/"])
def test_a_url_over_the_limit_is_414_on_every_path(tmp_path: Path, direct: bool, target: str) -> None:
    """The URL limit alone (path and query), below the protocol's budget of headers + URL."""
    settings = make_settings(data_dir=tmp_path, max_header_bytes=8192, max_url_bytes=1024)
    with KeyrelayServer(settings, direct=direct) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {target}{'a' * 1100} HTTP/1.1\r\nHost: x\r\nX-Request-Id: r-414\r\n\r\n".encode())
        status, headers, body = _read(s.makefile("rb"), "GET")
    assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"
    assert headers.get("x-request-id") == "r-414"


# --- limits on bytes received (GuardedHttpTools) ---------------------------------------------------------------


@pytest.fixture()
def served(tmp_path: Path, upstream: FakeUpstream, direct: bool) -> Iterator[tuple[KeyrelayServer, str, str]]:
    """keyrelay with a source on the fake upstream; (server, gateway path, API key)."""
    with KeyrelayServer(make_settings(data_dir=tmp_path, header_timeout_seconds=30), direct=direct) as server:
        admin = Admin(server.url)
        ws = admin.workspace("limits")
        admin.source(ws, upstream_url=upstream.url)
        key = admin.api_key(ws, ["proxy"])
        admin.close()
        yield server, f"/api/{ws}/proxy/echo/echo", key


def _budget(server: KeyrelayServer) -> int:
    return protocol_for(server.settings).max_head_bytes


FLOOD_CAP = 64 * 1024 * 1024


def _flood(port: int, prefix: bytes, filler: bytes, *, peak_rss: list[int] | None = None) -> tuple[int, bytes]:
    """Send `prefix`, then `filler` over and over until keyrelay answers or closes (at most FLOOD_CAP bytes);
    (bytes sent, what keyrelay sent back). With `peak_rss`, sample this process's RSS meanwhile."""
    stop = threading.Event()

    def sample() -> None:
        assert peak_rss is not None
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], rss_bytes())
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True) if peak_rss is not None else None
    if sampler is not None:
        sampler.start()
    sent = 0
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(prefix)
            sent = len(prefix)
            while sent < FLOOD_CAP:
                if select.select([sock], [], [], 0)[0]:  # an answer (or the close) is there
                    with contextlib.suppress(ConnectionResetError):
                        chunk = sock.recv(65536)
                        answer += chunk
                        if chunk and b"HTTP/1.1 431 " not in answer:
                            continue  # the answer to a complete request before the flood: keep flooding
                    break
                try:
                    sock.sendall(filler)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break
                sent += len(filler)
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while chunk := sock.recv(65536):
                    answer += chunk
    finally:
        stop.set()
        if sampler is not None:
            sampler.join(5)
    return sent, answer


ENDLESS = {  # (what comes first, what then repeats, where the line is)
    "request line": (b"GET /healthz?q=", b"a" * 65536),
    "header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-", b"a" * 65536),
    "header value": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536),
    "whitespace before a value": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big:", b" " * 65536),
    "second request": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nX-Big: ", b"a" * 65536),
}


@pytest.mark.parametrize(("prefix", "filler"), ENDLESS.values(), ids=ENDLESS.keys())
def test_a_header_line_that_never_ends_gets_431_after_a_bounded_number_of_bytes(
        served: tuple[KeyrelayServer, str, str], prefix: bytes, filler: bytes) -> None:
    server, _, _ = served
    sent, answer = _flood(server.port, prefix, filler)
    first = b"HTTP/1.1 200 " if prefix.count(b"\r\n\r\n") else b"HTTP/1.1 431 "  # a keep-alive request first
    assert answer.startswith(first) and answer.count(b"HTTP/1.1 431 ") == 1, answer[:300]
    assert b'"code": "headers_too_large"' in answer
    assert sent < FLOOD_CAP // 4, sent  # keyrelay stopped reading; the rest sat in socket buffers


def test_an_endless_header_line_costs_bounded_memory(served: tuple[KeyrelayServer, str, str]) -> None:
    server, _, _ = served
    peak = [rss_bytes()]
    baseline = peak[0]
    sent, answer = _flood(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, peak_rss=peak)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert peak[0] - baseline < 16 * 1024 * 1024, (peak[0] - baseline, sent)


@pytest.mark.parametrize("extra", [1, 65536])
def test_an_unfinished_head_is_refused_once_the_bytes_received_pass_the_limit(
        served: tuple[KeyrelayServer, str, str], extra: int) -> None:
    """Exactly the budget plus a little, then silence: the line never ends, the answer comes at once (the
    header-read timeout here is 30 s, longer than this test waits)."""
    server, _, _ = served
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    data = head + b"a" * (_budget(server) - len(head) + extra)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        r = read_response(sock, timeout=10)
    assert r.status == 431 and r.closed and json.loads(r.body)["error"]["code"] == "headers_too_large"


def test_a_head_just_under_the_budget_is_served(served: tuple[KeyrelayServer, str, str]) -> None:
    """The budget leaves room for the largest head the per-field limits allow, however it is split into reads
    (a head that completes within one read never meets the budget: only bytes still unparsed count)."""
    server, _, _ = served
    s = server.settings
    url = b"/healthz?" + b"q" * (s.max_url_bytes - len(b"/healthz?"))
    fields = [b"Host: x\r\n"] + [b"X-%02d: " % i + b"v" * 150 + b"\r\n" for i in range(s.max_header_count - 1)]
    head = b"GET " + url + b" HTTP/1.1\r\n" + b"".join(fields) + b"\r\n"
    assert len(head) > s.max_header_bytes + s.max_url_bytes - 4096
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head[:-2])
        time.sleep(0.2)  # so the server reads the unfinished head on its own (passes either way)
        sock.sendall(head[-2:])
        r = read_response(sock, timeout=10, close_wait=0.1)
    assert r.status == 200, r.body


def test_the_server_loads_no_websocket_protocol(tmp_path: Path) -> None:
    """Besides the refusal in the protocol: uvicorn itself never switches a connection to WebSocket."""
    config = uvicorn_config(lambda *a: None, make_settings(data_dir=tmp_path), host="127.0.0.1", port=0)
    config.load()
    assert config.ws_protocol_class is None


def test_a_refusal_mid_body_never_writes_into_a_response_under_way(tmp_path: Path, direct: bool) -> None:
    """The upstream answers (a streamed response) before the agent's chunked body is done; the body then goes
    on in a line that never ends. The agent gets one response, cut off, never a second status line in it."""
    async def script(conn: ScriptedConn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n")
        await conn.writer.drain()
        while await conn.reader.read(65536):  # keeps the response open, reads whatever comes
            pass

    with ScriptedUpstream(script) as up, KeyrelayServer(make_settings(data_dir=tmp_path), direct=direct) as server:
        admin = Admin(server.url)
        ws = admin.workspace("midbody")
        admin.source(ws, upstream_url=up.url)
        key = admin.api_key(ws, ["proxy"])
        admin.close()
        head = (f"POST /api/{ws}/proxy/echo/up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            got = b""
            while b"hello" not in got:  # the response is under way
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"1;ext=" + b"a" * (_budget(server) + 65536))
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while chunk := sock.recv(65536):
                    got += chunk
    assert got.startswith(b"HTTP/1.1 200 ") and got.count(b"HTTP/1.1 ") == 1, got[:400]


@pytest.mark.parametrize("where", ["chunk extension", "chunk size", "trailer"])
def test_an_endless_line_in_a_chunked_body_is_refused(served: tuple[KeyrelayServer, str, str],
                                                      upstream: FakeUpstream, where: str) -> None:
    server, path, key = served
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n").encode()
    prefix, filler = {"chunk extension": (head + b"1;ext=", b"a" * 65536), "chunk size": (head, b"0" * 65536),
                      "trailer": (head + b"0\r\nX-Trailer: ", b"a" * 65536)}[where]
    sent, answer = _flood(server.port, prefix, filler)
    assert sent < FLOOD_CAP // 4, sent
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"code": "invalid_request"' in answer, answer[:200]
    assert upstream.requests == []  # the body never completed


@pytest.mark.parametrize("door", ["request API", "gateway"])
def test_trailer_fields_never_join_the_request_headers(tmp_path: Path, upstream: FakeUpstream, direct: bool,
                                                       door: str) -> None:
    """A trailer named Authorization, after a body, must not authenticate a request that had none."""
    with KeyrelayServer(make_settings(data_dir=tmp_path), direct=direct) as server:
        admin = Admin(server.url)
        ws = admin.workspace("trailers")
        src = admin.source(ws, upstream_url=upstream.url)
        key = admin.api_key(ws, ["proxy"])
        admin.close()
        body = json.dumps({"method": "GET", "url": upstream.url + "/echo"}).encode()
        target = f"/api/v1/sonar/apis/{src['id']}/request" if door == "request API" else f"/api/{ws}/proxy/echo/echo"
        request = (f"POST {target} HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode() \
            + b"%x\r\n%s\r\n" % (len(body), body) + f"0\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            r = read_response(sock, timeout=10, close_wait=0.1)
    assert r.status == 401 and json.loads(r.body)["error"]["code"] == "unauthenticated"
    assert upstream.requests == []


# --- protocol upgrades -------------------------------------------------------------------------------------------


UPGRADES = {
    "websocket": "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n",
    "h2c": "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    "upgrade without connection": "Upgrade: websocket\r\n",
}


@pytest.mark.parametrize("upgrade", UPGRADES.values(), ids=UPGRADES.keys())
@pytest.mark.parametrize("target", ["gateway", "healthz"])
def test_protocol_upgrades_are_refused_with_400(served: tuple[KeyrelayServer, str, str], upstream: FakeUpstream,
                                                upgrade: str, target: str) -> None:
    server, path, key = served
    request = (f"GET {path if target == 'gateway' else '/healthz'} HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {key}\r\n{upgrade}\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request + b"\x81\x85frame")  # what a client may send right after, in the new protocol
        r = read_response(sock, timeout=10)
    error = json.loads(r.body)["error"]
    assert (r.status, r.closed, error["code"]) == (400, True, "invalid_request")
    assert "not supported" in error["message"] and error["request_id"] == r.header("x-request-id")
    assert upstream.requests == []


# --- the direct route (DirectCycle) ------------------------------------------------------------------------------


STREAMED = [b"a" * 10, b"", b"b" * (8 * 1024 * 1024), b"c" * 5]
FLOOD_PIECE, FLOOD_PIECES = b"f" * (1024 * 1024), 64


class ScriptedRoute:
    """A direct route that claims /direct/... and does what the path's last segment says; every other request
    goes to the ASGI app below (and is answered `asgi`)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, list[tuple[bytes, bytes]], bytes]] = []
        self.pieces_sent = 0

    def claims(self, url: bytes) -> bool:
        return url.startswith(b"/direct/")

    async def serve(self, method: str, url: bytes, headers: list[tuple[bytes, bytes]], receive: Any, send: Any,
                    whole: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        self.seen.append((method, url, headers, body))
        action = url.rpartition(b"/")[2].partition(b"?")[0]
        if action == b"raise":
            raise RuntimeError("a bug in the route")
        if action == b"silent":
            return  # no response at all
        if action == b"sleep":  # longer than the keep-alive timeout of the test below
            await asyncio.sleep(2.5)
        if action == b"half":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            return  # a started response, never completed
        if action in (b"stream", b"flood"):  # chunked; a flood is far more than the socket buffers can hold
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for piece in STREAMED if action == b"stream" else [FLOOD_PIECE] * FLOOD_PIECES:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                self.pieces_sent += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        answer = b"direct:" + body
        assert whole(200, [(b"content-length", str(len(answer)).encode())], answer)


class DirectApp:
    def __init__(self) -> None:
        self.direct_route = ScriptedRoute()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"asgi"})


@contextlib.contextmanager
def serving(app: Any, tmp_path: Path, *, direct: bool = True, **overrides: Any) -> Iterator[int]:
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(app, make_settings(data_dir=tmp_path), host="127.0.0.1", port=0, loop="uvloop",
                            http=protocol_for(make_settings(data_dir=tmp_path), direct=direct), **overrides)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_the_direct_route_gets_the_parsed_request_and_answers_in_one_write(tmp_path: Path) -> None:
    app = DirectApp()
    with serving(app, tmp_path) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /direct/echo?q=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  v \t\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /direct/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
        reader = sock.makefile("rb")
        answers = [_read(reader, "POST"), _read(reader, "GET"), _read(reader, "POST")]
    assert [(s, b) for s, _, b in answers] == [(200, b"direct:hello"), (200, b"asgi"), (200, b"direct:abcde")]
    (m1, u1, h1, _), (m2, u2, h2, _) = app.direct_route.seen
    assert (m1, u1, m2, u2) == ("POST", b"/direct/echo?q=1", "POST", b"/direct/echo")
    assert (b"x-thing", b"v") in h1 and (b"host", b"x") in h1  # lowercase names, no trailing whitespace
    assert not any(name == b"x-trailer" for name, _ in h2)  # trailers never join the headers


def _chunked(reader: Any) -> list[bytes]:
    """The pieces of a chunked body, read strictly: a hex size line, exactly that many bytes, CRLF."""
    pieces = []
    while True:
        size_line = reader.readline()
        assert size_line.endswith(b"\r\n") and size_line[:-2].isalnum(), size_line[:40]
        size = int(size_line[:-2], 16)
        if size == 0:
            assert reader.readline() == b"\r\n"
            return pieces
        pieces.append(reader.read(size))
        assert reader.read(2) == b"\r\n"


def test_a_streamed_response_is_framed_exactly_and_the_connection_kept(tmp_path: Path) -> None:
    app = DirectApp()
    with serving(app, tmp_path) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /direct/stream HTTP/1.1\r\nHost: x\r\n\r\nGET /direct/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 200")
        head = []
        while (line := reader.readline()) != b"\r\n":
            head.append(line.lower())
        assert b"transfer-encoding: chunked\r\n" in head
        assert _chunked(reader) == [p for p in STREAMED if p]  # an empty piece writes nothing
        assert _read(reader, "GET")[2] == b"direct:"  # the next request, on the same connection


def test_a_streamed_response_waits_for_a_reader_that_does_not_read(tmp_path: Path) -> None:
    """Flow control: while the agent reads nothing, the route's sends wait once the socket's buffers and the
    transport's high-water mark are full, instead of queueing the whole 64 MiB in memory."""
    app = DirectApp()
    with serving(app, tmp_path) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /direct/flood HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and app.direct_route.pieces_sent < FLOOD_PIECES:
            time.sleep(0.05)
        assert app.direct_route.pieces_sent < FLOOD_PIECES // 2  # held back, not buffered
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 200")
        while reader.readline() != b"\r\n":
            pass
        assert sum(len(p) for p in _chunked(reader)) == len(FLOOD_PIECE) * FLOOD_PIECES  # then all of it
    assert app.direct_route.pieces_sent == FLOOD_PIECES


def test_without_the_direct_path_everything_takes_asgi(tmp_path: Path) -> None:
    app = DirectApp()
    with serving(app, tmp_path, direct=False) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /direct/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = _read(sock.makefile("rb"), "GET")
    assert (status, body) == (200, b"asgi") and app.direct_route.seen == []


@pytest.mark.parametrize("action", ["raise", "silent"])
def test_a_direct_route_that_fails_to_answer_gets_a_500_and_the_connection_closes(tmp_path: Path,
                                                                                  action: str) -> None:
    app = DirectApp()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    with serving(app, tmp_path) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        logger.addHandler(handler)  # after the server configured its logging, which resets the handlers
        try:
            sock.sendall(f"GET /direct/{action} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            r = read_response(sock, timeout=10, close_wait=5)
        finally:
            logger.removeHandler(handler)
    assert r.status == 500 and r.closed and b"a bug" not in r.body
    assert json.loads(r.body)["error"]["code"] == "internal_error"
    logged = "\n".join(logging.Formatter().format(rec) for rec in records)
    assert "a bug" not in logged  # an exception's text may carry a header value: logged by type only
    assert ("RuntimeError" in logged) == (action == "raise")


def test_a_direct_route_that_leaves_a_response_unfinished_closes_the_connection(tmp_path: Path) -> None:
    app = DirectApp()
    with serving(app, tmp_path) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /direct/half HTTP/1.1\r\nHost: x\r\n\r\nGET /direct/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):  # ends when the server closes: the second request is never answered
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("path", ["/direct/echo", "/other"])
def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(tmp_path: Path, path: str) -> None:
    """The keep-alive timeout (coarse idle deadlines, at most a second late) closes a connection that sends
    nothing after a response; one that goes on sending is served."""
    with serving(DirectApp(), tmp_path, timeout_keep_alive=1) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for _ in range(3):  # each request in turn, well within the timeout
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert _read(reader, "GET")[0] == 200
        sock.sendall(b"GET /direct/sleep HTTP/1.1\r\nHost: x\r\n\r\n")  # a request that outlasts the timeout
        assert _read(reader, "GET")[0] == 200  # the timeout runs only while the connection is idle
        closed, extra = _drain(sock, 10)  # then nothing: closed after ~1-2 s, well before this deadline
    assert closed and extra == b""
