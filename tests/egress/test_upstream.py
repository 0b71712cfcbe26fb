"""egress/upstream.py: which requests may share an upstream connection, and the deadlines a caller gets.

Against a real loopback upstream (asyncio.start_server on 127.0.0.1) that records on which connection each
request arrived and which connections the client closed. Every wait is bounded (`WAIT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from keyrelay.egress import upstream as upstream_module
from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.egress.upstream import MAX_RETRIES, UpstreamClient
from keyrelay.errors import KeyrelayError, UpstreamTimeout, UpstreamUnreachable
from keyrelay.model import Outbound
from support.upstream import FakeUpstream

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


LOOPBACK_b = (ipaddress.ip_network("127.0.0.0/8"),)

@pytest.fixture
async def client_b() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(allow=LOOPBACK_b, max_connections=8)
    yield c
    await c.close()

def _out(url: str, *, method: str = "GET", idempotent: bool | None = None, body: object = None,
         timeout: float = 10.0, headers: tuple[tuple[str, str], ...] = ()) -> Outbound:
    return Outbound(method=method, url=url, headers=headers, body=body,  # type: ignore[arg-type]
                    timeout_seconds=timeout, idempotent=method in ("GET", "HEAD") if idempotent is None else idempotent)

def _flaky(up: FakeUpstream, **query: object) -> str:
    args = "&".join(f"{k}={v}" for k, v in {"key": uuid.uuid4().hex, **query}.items())
    return f"{up.url}/flaky?{args}"

async def test_an_idempotent_request_is_retried_past_a_passing_5xx(client_b: UpstreamClient,
                                                                   upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(_flaky(upstream, fail=2, status=503)))
    assert sent.response.status == 200
    assert (await sent.response.read()).endswith(b'"attempt": 2}')
    sent.response.release()
    assert len(upstream.requests) == 3

async def test_retries_are_bounded_and_the_last_answer_is_returned(client_b: UpstreamClient,
                                                                   upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(upstream.url + "/status/502"))
    assert sent.response.status == 502
    sent.response.release()
    assert len(upstream.requests) == 1 + MAX_RETRIES

@pytest.mark.parametrize("status", [500, 501, 400, 404])
async def test_other_statuses_are_never_retried(client_b: UpstreamClient, upstream: FakeUpstream, status: int) -> None:
    sent = await client_b.send(_out(_flaky(upstream, fail=1, status=status)))
    assert sent.response.status == status
    sent.response.release()
    assert len(upstream.requests) == 1

async def test_a_post_is_not_retried(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(_flaky(upstream, fail=1), method="POST", body=b"{}"))
    assert sent.response.status == 503
    sent.response.release()
    assert len(upstream.requests) == 1

async def test_a_post_marked_idempotent_with_a_replayable_body_is_retried(client_b: UpstreamClient,
                                                                          upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(_flaky(upstream, fail=1), method="POST", idempotent=True, body=b"{}"))
    assert sent.response.status == 200
    sent.response.release()
    assert [r.body for r in upstream.requests] == [b"{}", b"{}"]  # the same bytes, sent again

async def test_a_streamed_body_is_never_replayed(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part one,"
        yield b"part two"

    sent = await client_b.send(_out(_flaky(upstream, fail=1), method="PUT", idempotent=True, body=body()))
    assert sent.response.status == 503  # it cannot be sent twice: the upstream's answer comes back as it is
    sent.response.release()
    assert [r.body for r in upstream.requests] == [b"part one,part two"]

async def test_retry_after_on_a_429_is_honoured(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(_flaky(upstream, fail=1, status=429, retry_after=1)))
    assert sent.response.status == 200
    sent.response.release()
    first, second = upstream.requests
    assert second.at - first.at >= 0.95  # waited the second it was told to (loop timers may fire a hair early)

async def test_a_429_without_a_usable_retry_after_is_returned_at_once(client_b: UpstreamClient,
                                                                      upstream: FakeUpstream) -> None:
    for value in (None, "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5"):
        upstream.clear()
        query = {"fail": 1, "status": 429} | ({} if value is None else {"retry_after": value.replace(" ", "%20")})
        sent = await client_b.send(_out(_flaky(upstream, **query)))
        assert sent.response.status == 429, value
        sent.response.release()
        assert len(upstream.requests) == 1, value

async def test_a_retry_after_past_the_deadline_is_not_waited_for(client_b: UpstreamClient,
                                                                upstream: FakeUpstream) -> None:
    started = time.monotonic()
    sent = await client_b.send(_out(_flaky(upstream, fail=1, status=429, retry_after=30), timeout=5))
    assert sent.response.status == 429
    sent.response.release()
    assert len(upstream.requests) == 1 and time.monotonic() - started < 4

async def test_a_broken_connection_is_retried_for_an_idempotent_request(client_b: UpstreamClient,
                                                                        upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamUnreachable):
        await client_b.send(_out(upstream.url + "/garbage"))  # not HTTP at all, every time
    assert len(upstream.requests) == 1 + MAX_RETRIES

async def test_a_broken_connection_is_not_retried_for_a_post(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamUnreachable):
        await client_b.send(_out(upstream.url + "/garbage", method="POST", body=b"x"))
    assert len(upstream.requests) == 1

async def test_backoff_never_runs_past_the_deadline(client_b: UpstreamClient, upstream: FakeUpstream,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "_jittered", lambda attempt: 60.0)  # a backoff far past the deadline
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # refused at once rather than after sleeping past the deadline
        await client_b.send(_out(upstream.url + "/garbage", timeout=10.0))
    assert time.monotonic() - started < 10.0  # sleeping the backoff would take 60 s
    assert len(upstream.requests) == 1

async def test_nothing_is_retried_once_the_response_has_begun(client_b: UpstreamClient,
                                                             upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(upstream.url + "/reset"))  # headers and some body, then the connection dies
    assert sent.response.status == 200
    with pytest.raises(KeyrelayError):
        async for _ in sent.response.chunks():
            pass
    sent.response.release()
    assert len(upstream.requests) == 1

async def test_a_slow_upstream_times_out_at_the_deadline(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await client_b.send(_out(upstream.url + "/slow?delay=10", timeout=0.3))  # a deliberately slow peer
    assert time.monotonic() - started < 3
    assert len(upstream.requests) == 1

async def test_redirects_are_returned_and_no_header_is_added(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client_b.send(_out(upstream.url + "/redirect?to=/echo", headers=(("X-Only", "1"),)))
    assert sent.response.status == 302 and sent.response.header(b"location") == b"/echo"
    sent.response.release()
    [seen] = upstream.requests
    names = {k.lower() for k, _ in seen.headers}
    assert "x-only" in names and not names & {"accept-encoding", "cookie", "user-agent", "authorization"}

async def test_post_form_is_sent_once_and_read_whole(client_b: UpstreamClient, upstream: FakeUpstream) -> None:
    status, body = await client_b.post_form(_flaky(upstream, fail=1), {"grant_type": "refresh_token"},
                                          timeout_seconds=5)
    assert status == 503 and b'"attempt": 0' in body  # a refresh token may be single-use: never sent twice
    [seen] = upstream.requests
    assert seen.body == b"grant_type=refresh_token"
    assert seen.header("Content-Type") == "application/x-www-form-urlencoded"
    with pytest.raises(KeyrelayError):
        await client_b.post_form(upstream.url + "/big?size=100000", {}, timeout_seconds=5, max_bytes=1000)
