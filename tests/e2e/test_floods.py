"""Floods from hostile peers cost bounded memory and event-loop time (docs/security.md, "Bounded everything").

Through a real keyrelay, with a raw-socket agent or a scripted raw-socket upstream: a header line that never
ends, or millions of tiny chunks, in either direction. Event-loop time is measured as the most CPU time
keyrelay's loop thread spent between two ticks of a coroutine running on that loop (work done without letting
anything else run; CPU time, not wall time, so a busy machine that schedules the thread rarely does not count);
memory as the peak RSS of this process (keyrelay runs in-process) while the flood lasts. The bounds are far from
what the floods cost before (seconds of stall, hundreds of MiB) and far above what they cost now.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import httpx
import pytest

from support.adversarial import Watcher, read_response, rss_bytes
from support.keyrelay import Admin, KeyrelayServer
from support.raw_upstream import ScriptedConn, ScriptedUpstream
from support.upstream import FakeUpstream

SECRET = "flood-secret-0042"
MAX_STALL = 0.2  # CPU seconds the event loop may spend without a turn (one read of tiny chunks: 20-40 ms)
MAX_GROWTH = 48 * 1024 * 1024  # RSS growth while a flood lasts
TICK = 0.005
MIB = 1024 * 1024


@dataclass
class Probe:
    """Measures keyrelay's event loop from inside (longest gap between ticks) and this process's RSS."""

    kr: KeyrelayServer
    stop: threading.Event = field(default_factory=threading.Event)
    longest: float = 0.0
    baseline: int = 0
    peak: int = 0
    _ticks: Future[None] | None = None
    _sampler: threading.Thread | None = None

    async def _tick(self) -> None:
        last = time.thread_time()  # CPU time of keyrelay's loop thread: this coroutine runs on it
        while not self.stop.is_set():
            await asyncio.sleep(TICK)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self.stop.wait(0.01)

    def __enter__(self) -> Probe:
        assert self.kr.loop is not None
        self.baseline = self.peak = rss_bytes()
        self._ticks = asyncio.run_coroutine_threadsafe(self._tick(), self.kr.loop)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._ticks is not None and self._sampler is not None
        self._ticks.result(timeout=10)
        self._sampler.join(10)

    def check(self) -> None:
        assert self.longest < MAX_STALL, f"keyrelay's event loop worked {self.longest:.3f} s without a turn"
        assert self.peak - self.baseline < MAX_GROWTH, f"RSS grew {(self.peak - self.baseline) / 2**20:.1f} MiB"


def _source(admin: Admin, upstream_url: str, **policy: object) -> tuple[str, str]:
    ws = admin.workspace("floods")
    admin.source(ws, upstream_url=upstream_url, slug="up", credentials={"bearer_token": SECRET},
                 policy=dict(policy) or None)
    return f"/api/{ws}/proxy/up", admin.api_key(ws, ["proxy"])


async def _answer_after_head(conn: ScriptedConn, *parts: bytes) -> None:
    """Read one request head, then write `parts` (waiting for each to drain), then wait for the client to go."""
    await conn.reader.readuntil(b"\r\n\r\n")
    for part in parts:
        conn.writer.write(part)
        await conn.writer.drain()
    while await conn.reader.read(65536):
        pass


TINY_CHUNKS = 1_000_000
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"



@pytest.fixture(params=[True, False], ids=["direct", "asgi"])
def kr_direct(request: pytest.FixtureRequest) -> bool:
    """Every case on both of the server's paths to the gateway door (server.py)."""
    return bool(request.param)

@pytest.fixture
def tiny_chunks() -> Iterator[ScriptedUpstream]:
    body = b"1\r\nx\r\n" * TINY_CHUNKS

    async def script(conn: ScriptedConn) -> None:
        await _answer_after_head(conn, CHUNKED_HEAD, *(body[i:i + MIB] for i in range(0, len(body), MIB)),
                                 b"0\r\n\r\n")

    with ScriptedUpstream(script) as up:
        yield up


def test_an_upstream_flood_of_tiny_chunks_never_stalls_the_loop(kr: KeyrelayServer, admin: Admin,
                                                                tiny_chunks: ScriptedUpstream) -> None:
    path, key = _source(admin, tiny_chunks.url)
    with Probe(kr) as probe, httpx.Client(base_url=kr.url, timeout=60) as client, \
            client.stream("GET", f"{path}/chunks", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200
        received = sum(len(piece) for piece in r.iter_raw())
    assert received == TINY_CHUNKS
    probe.check()


def test_an_agent_flood_of_tiny_chunks_never_stalls_the_loop(kr: KeyrelayServer, admin: Admin,
                                                             upstream: FakeUpstream) -> None:
    """A chunked request body of a million one-byte chunks, streamed through the gateway to the upstream."""
    path, key = _source(admin, upstream.url, max_body_bytes=2 * TINY_CHUNKS)
    head = (f"POST {path}/status/200 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    with Probe(kr) as probe, socket.create_connection(("127.0.0.1", kr.port), timeout=60) as sock:
        sock.sendall(head + b"1\r\nx\r\n" * TINY_CHUNKS + b"0\r\n\r\n")
        r = read_response(sock, timeout=60)
    assert r.status == 200 and upstream.requests[-1].body == b"x" * TINY_CHUNKS
    probe.check()


@pytest.mark.parametrize("where", ["header value", "status line", "trailer"])
def test_an_upstream_line_that_never_ends_is_a_502(kr: KeyrelayServer, admin: Admin, where: str) -> None:
    """Long before the source's timeout (60 s here, a 504): the limit counts bytes received."""
    filler = b"a" * 65536
    sent = [0]

    async def script(conn: ScriptedConn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        conn.writer.write({"header value": b"HTTP/1.1 200 OK\r\nX-Big: ", "status line": b"HTTP/1.1 200 ",
                           "trailer": CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-Trailer: "}[where])
        for _ in range(1024):  # 64 MiB at most
            conn.writer.write(filler)
            await conn.writer.drain()
            sent[0] += len(filler)

    with ScriptedUpstream(script) as up:
        path, key = _source(admin, up.url, timeout_seconds=60)
        watcher = Watcher(hosts=[f"127.0.0.1:{up.port}"])
        with Probe(kr) as probe, watcher.client(kr.url, headers={"Authorization": f"Bearer {key}"}) as client:
            if where == "trailer":  # the head was fine: the body breaks off and the connection closes
                with pytest.raises(httpx.RemoteProtocolError), \
                        client.stream("GET", f"{path}/big", extensions={"kr_stream": True}) as r:
                    assert r.status_code == 200
                    r.read()
            else:
                r = client.get(f"{path}/big")
                assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    probe.check()
    assert sent[0] < 16 * 1024 * 1024, sent  # keyrelay stopped reading after the limit plus a read
    watcher.verify()
