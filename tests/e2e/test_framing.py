"""Framing strictness and slow clients (security.md rule 10; bars 10, 11, 13): raw bytes on a socket to a real
keyrelay, each carrying a valid API key and a gateway path to a real upstream, so a request that slipped through
would show up at the upstream. Every case ends in 400/431 (414 for an over-long target) with the connection
closed, no 500 and no traceback, and the upstream receives 0 requests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from support.adversarial import Watcher, raw_exchange, read_response
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream


@dataclass
class Env:
    kr: KeyrelayServer
    upstream: FakeUpstream
    path: str
    key: str
    watcher: Watcher

    def head(self, method: str = "POST", *, host: bool = True) -> str:
        return (f"{method} {self.path} HTTP/1.1\r\n" + ("Host: 127.0.0.1\r\n" if host else "")
                + f"Authorization: Bearer {self.key}\r\n")


def _setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> Env:
    ws = admin.workspace("framing")
    admin.source(ws, upstream_url=upstream.url, slug="up", credentials={"bearer_token": "framing-secret-0042"})
    key = admin.api_key(ws, ["proxy"])
    return Env(kr, upstream, f"/api/{ws}/proxy/up/echo", key, Watcher(hosts=[f"127.0.0.1:{upstream.port}"]))



@pytest.fixture(params=[True, False], ids=["direct", "asgi"])
def kr_direct(request: pytest.FixtureRequest) -> bool:
    """Every case on both of the server's paths to the gateway door (server.py)."""
    return bool(request.param)

@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> Iterator[Env]:
    e = _setup(kr, admin, upstream)
    yield e
    e.watcher.verify()


def _cases(env: Env) -> dict[str, bytes]:
    post, get = env.head("POST"), env.head("GET")
    no_host = env.head("GET", host=False)
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(150))
    return {name: data.encode("latin-1") if isinstance(data, str) else data for name, data in {
        "CL+TE": post + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "TE+CL": post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "CL+TE (TE obfuscated)": post + "Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
        "duplicate CL, same value": post + "Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        "duplicate CL, different values": post + "Content-Length: 4\r\nContent-Length: 10\r\n\r\nabcdefghij",
        "CL list": post + "Content-Length: 4, 4\r\n\r\nabcd",
        "CL negative": post + "Content-Length: -1\r\n\r\nabcd",
        "CL signed": post + "Content-Length: +4\r\n\r\nabcd",
        "CL hex": post + "Content-Length: 0x4\r\n\r\nabcd",
        "space before colon": post + "Content-Length : 4\r\n\r\nabcd",
        "TE not chunked last": post + "Transfer-Encoding: chunked, identity\r\n\r\nabcd",
        "TE unknown": post + "Transfer-Encoding: xchunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        "duplicate TE": post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad chunk size": post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
        "obs-fold": get + "X-Folded: a\r\n b\r\n\r\n",
        "obs-fold tab": get + "X-Folded: a\r\n\tb\r\n\r\n",
        "obs-fold on CL": post + "Content-Length:\r\n 4\r\n\r\nabcd",
        "bare LF everywhere": get.replace("\r\n", "\n") + "\n",
        "bare LF in one header": get + "X-A: 1\nX-B: 2\r\n\r\n",
        "bare CR": get + "X-A: 1\rX-B: 2\r\n\r\n",
        "NUL in a header value": get + "X-A: a\x00b\r\n\r\n",
        "invalid header name": get + "X A: 1\r\n\r\n",
        "missing Host": no_host + "\r\n",
        "duplicate Host": get + "Host: 127.0.0.2\r\n\r\n",
        "duplicate Host, same value": get + "Host: 127.0.0.1\r\n\r\n",
        "oversized header": get + "X-Big: " + "a" * 40_000 + "\r\n\r\n",
        "oversized header section": get + "".join(f"X-{i}: {'b' * 1000}\r\n" for i in range(40)) + "\r\n",
        "too many headers": get + many + "\r\n",
        "over-long target": f"GET {env.path}/{'a' * 30_000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "HTTP/1.1 request line with extra token": f"GET {env.path} HTTP/1.1 x\r\nHost: 127.0.0.1\r\n\r\n",
        "unknown version": f"GET {env.path} HTTP/3.7\r\nHost: 127.0.0.1\r\n\r\n",
        "whitespace in target": f"GET {env.path} x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    }.items()}


EXPECTED = {"oversized header": {431}, "oversized header section": {431}, "too many headers": {431},
            "over-long target": {414, 431}}


def test_malformed_framing_is_refused_and_closed(env: Env) -> None:
    wrong = []
    for name, data in _cases(env).items():
        try:
            r = raw_exchange(env.kr.port, data)
        except ConnectionError as exc:  # closed without any answer
            wrong.append((name, f"no response: {exc}"))
            continue
        env.watcher.note(r.status, r.body, name)
        if r.status not in EXPECTED.get(name, {400}) or not r.closed:
            wrong.append((name, r.status, r.closed, r.body[:120]))
    assert wrong == [], "\n".join(map(str, wrong))
    assert env.upstream.requests == []
    # positive control: the same head, well-formed, does reach the upstream
    r = raw_exchange(env.kr.port, (env.head("POST") + "Content-Length: 4\r\nConnection: close\r\n\r\nabcd").encode())
    assert r.status == 200 and env.upstream.requests[-1].body == b"abcd"
    env.watcher.note(r.status, b"", "control")
    r = raw_exchange(env.kr.port, f"GET {env.path} HTTP/1.0\r\nAuthorization: Bearer {env.key}\r\n\r\n".encode())
    assert r.status == 200 and r.closed  # HTTP/1.0 may omit Host
    assert len(env.upstream.requests) == 2


def test_smuggled_second_request_never_reaches_the_upstream(env: Env) -> None:
    # a CL/TE disagreement that would hide a second request inside the first one's body
    smuggled = f"GET /api/x/proxy/up/steal HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {env.key}\r\n\r\n"
    body = f"0\r\n\r\n{smuggled}"
    data = (env.head("POST") + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n{body}").encode()
    with socket.create_connection(("127.0.0.1", env.kr.port), timeout=10) as sock:
        sock.sendall(data)
        r = read_response(sock)
    env.watcher.note(r.status, r.body, "smuggle")
    assert r.status == 400 and r.closed
    time.sleep(0.2)
    assert env.upstream.requests == []


# --- slow clients ---------------------------------------------------------------------------------------------------


def _closed_within(sock: socket.socket, limit: float, dribble: bytes = b"") -> float | None:
    """Send `dribble` one byte every 0.2 s; the seconds until the server closes, or None within `limit`."""
    started = time.monotonic()
    sock.setblocking(False)
    i = 0
    while (elapsed := time.monotonic() - started) < limit:
        try:
            data = sock.recv(4096)
            if not data:
                return elapsed
            if b" 408 " in data[:16] or b" 400 " in data[:16]:
                continue  # an answer before closing is fine; keep waiting for the close
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return elapsed
        if i < len(dribble):
            try:
                sock.send(dribble[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            i += 1
        time.sleep(0.2)
    return None


@pytest.fixture
def slow_env(kr_settings: dict[str, Any], kr_direct: bool, request: pytest.FixtureRequest,
             upstream: FakeUpstream) -> Iterator[Env]:
    kr_settings["header_timeout_seconds"] = 1  # `kr` is made only after this (kr_direct: for its parameters)
    kr: KeyrelayServer = request.getfixturevalue("kr")
    admin: Admin = request.getfixturevalue("admin")
    e = _setup(kr, admin, upstream)
    yield e
    e.watcher.verify()


def test_slowloris_connections_are_closed_within_the_header_timeout(slow_env: Env) -> None:
    env = slow_env
    limit = 1 + 2  # header_timeout_seconds + 2 s
    head = (env.head("GET") + "X-Slow: " + "z" * 100 + "\r\n\r\n").encode()
    socks = [socket.create_connection(("127.0.0.1", env.kr.port), timeout=5) for _ in range(20)]
    results: dict[int, float | None] = {}
    try:
        for s in socks[1:]:  # 19 connections that opened and sent a few bytes of a request line
            s.sendall(b"GET /api/")

        def watch(i: int) -> None:
            results[i] = _closed_within(socks[i], limit + 1.5, b"" if i else head)

        threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(len(socks))]
        for t in threads:
            t.start()
        # legitimate traffic keeps flowing meanwhile
        with httpx.Client(base_url=env.kr.url, headers={"Authorization": f"Bearer {env.key}"}, timeout=5) as c:
            for _ in range(5):
                r = c.get(env.path)
                env.watcher.note(r.status_code, b"", "legit")
                assert r.status_code == 200
        for t in threads:
            t.join(limit + 3)
    finally:
        for s in socks:
            s.close()
    slow = {i: t for i, t in results.items() if t is None or t > limit}
    assert len(results) == len(socks) and slow == {}, results
    assert len(env.upstream.requests) == 5  # only the legitimate requests


def test_idle_and_second_request_headers_also_time_out(slow_env: Env) -> None:
    env = slow_env
    with socket.create_connection(("127.0.0.1", env.kr.port), timeout=5) as idle:
        assert _closed_within(idle, 3.5) is not None  # never sent a byte
    with socket.create_connection(("127.0.0.1", env.kr.port), timeout=5) as s:
        s.sendall((env.head("GET") + "\r\n").encode())  # a complete first request, keep-alive
        r = read_response(s, close_wait=0.1)
        env.watcher.note(r.status, r.body, "first")
        assert r.status == 200 and not r.closed
        taken = _closed_within(s, 4.5, (env.head("GET") + "X-Slow: zzzzzzzzzzzzzzzzzzzzzzzz\r\n\r\n").encode())
        assert taken is not None and taken <= 3.0, taken
    assert len(env.upstream.requests) == 1
