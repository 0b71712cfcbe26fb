"""egress/upstream.py: which requests may share an upstream connection, and the deadlines a caller gets.

Against a real loopback upstream (asyncio.start_server on 127.0.0.1) that records on which connection each
request arrived and which connections the client closed. Every wait is bounded (`WAIT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import UpstreamTimeout
from keyrelay.model import Outbound

LOOPBACK = parse_cidrs("127.0.0.0/8")
WAIT = 5.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Recorder:
    port: int = 0
    seen: list[tuple[int, str]] = field(default_factory=list)  # (connection, request line)
    closed: list[int] = field(default_factory=list)  # connections the client ended

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def by_connection(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for conn, line in self.seen:
            out.setdefault(conn, []).append(line)
        return out


@contextlib.asynccontextmanager
async def upstream(answer: Callable[[asyncio.StreamWriter], object] | None = None) -> AsyncIterator[Recorder]:
    """Answers each request with OK (or calls `answer(writer)` and stops reading)."""
    rec = Recorder()
    count = 0
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        index = count
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            for _ in range(100):
                async with asyncio.timeout(WAIT * 2):
                    head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                               if k.strip().lower() == b"content-length"), 0)
                await reader.readexactly(length)
                rec.seen.append((index, head.split(b"\r\n", 1)[0].decode()))
                if answer is not None:
                    await answer(writer)  # type: ignore[misc]
                    return
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            rec.closed.append(index)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    try:
        yield rec
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=WAIT)


async def until(cond: Callable[[], bool]) -> None:
    end = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(allow=LOOPBACK, max_connections=10)
    yield c
    await c.close()


async def _get(client: UpstreamClient, url: str, **kw: object) -> bytes:
    sent = await client.send(Outbound(method="GET", url=url, headers=(), **kw))  # type: ignore[arg-type]
    try:
        return await sent.response.read()
    finally:
        sent.response.release()


async def test_requests_share_connections_only_within_their_pool_key(client: UpstreamClient) -> None:
    async with upstream() as up:
        for key in ("source-a", "source-b", "source-a", "source-b"):
            assert await _get(client, up.url(f"/{key}"), pool_key=key) == b"ok"
        assert up.by_connection() == {1: ["GET /source-a HTTP/1.1"] * 2, 2: ["GET /source-b HTTP/1.1"] * 2}


async def test_an_outbound_without_a_pool_key_gets_a_connection_of_its_own(client: UpstreamClient) -> None:
    async with upstream() as up:
        for _ in range(2):
            assert await _get(client, up.url()) == b"ok"
        await until(lambda: sorted(up.closed) == [1, 2])  # each closed after its one request
        assert len(up.by_connection()) == 2


async def test_token_requests_never_share_a_connection(client: UpstreamClient) -> None:
    async with upstream() as up:
        await _get(client, up.url("/api"), pool_key="source-a")  # an idle connection of the source
        status, data = await client.post_form(up.url("/token"), {"grant_type": "client_credentials"},
                                              timeout_seconds=WAIT)
        assert (status, data) == (200, b"ok")
        await _get(client, up.url("/api"), pool_key="source-a")
        assert up.by_connection() == {1: ["GET /api HTTP/1.1"] * 2, 2: ["POST /token HTTP/1.1"]}
        await until(lambda: up.closed == [2])  # the token request's connection was closed after it


async def _trickle(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):  # a byte every 20 ms: never idle for long, never done in time
        writer.write(b"a")
        await writer.drain()
        await asyncio.sleep(0.02)


async def test_the_request_deadline_bounds_reading_the_body(client: UpstreamClient) -> None:
    async with upstream(_trickle) as up:
        before = time.monotonic()
        sent = await client.send(Outbound(method="GET", url=up.url(), headers=(), timeout_seconds=0.3,
                                          pool_key="source-a"))
        assert before + 0.3 <= sent.deadline <= time.monotonic() + 0.3
        try:
            with pytest.raises(UpstreamTimeout):
                await sent.response.read()
        finally:
            sent.response.release()
        assert time.monotonic() - before < WAIT
        await until(lambda: up.closed == [1])


async def test_a_token_response_that_trickles_ends_by_its_deadline(client: UpstreamClient) -> None:
    async with upstream(_trickle) as up:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await client.post_form(up.url("/token"), {"grant_type": "client_credentials"}, timeout_seconds=0.3)
        assert time.monotonic() - started < WAIT
