"""The pipeline owns every request's life (pipeline/relay.py): exactly one request-log entry on every path, the
workspace slot given back on every path, and the upstream's own status logged beside keyrelay's.

The pipeline is assembled from its real parts (SQLite, vault, stores, the upstream client) in the test's loop,
in front of a real loopback upstream; only the log sink is in memory so its entries can be counted exactly.
The workspace cap is 1 throughout, so a slot that was not given back shows as a 429 on the next request.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keyrelay.connectors.cache import EntityCache
from keyrelay.connectors.execute import ConnectorService, ExecuteRequest
from keyrelay.connectors.pagetoken import PageTokens
from keyrelay.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from keyrelay.model import ById, Door, Inbound, LogEntry, Scope, Source, Tail
from keyrelay.pipeline.policy import API_CONNECTOR_KINDS
from keyrelay.pipeline.relay import CLIENT_CLOSED, Exchange, Relayed, Reply
from keyrelay.ports import LogSink
from support.fakes.stripe import FakeStripe
from support.pipeline import MemoryLog, Pipeline, assembled
from support.upstream import FakeUpstream

BAD_TOKEN = "Bearer kr_" + "x" * 43


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path, workspace_cap=1, max_body_bytes=1000) as pipe:
        yield pipe


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: every connection to it is refused, for as long as the
    test runs (no other process can take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _execute_inbound(source: Source, p: Pipeline) -> Inbound:
    return Inbound(door=Door.EXECUTE, method="POST", path="/execute", authorization=p.auth, source=ById(source.id),
                   scope=Scope.EXECUTE)


async def _ok(ex: Exchange) -> Reply:
    return Reply(body=b"ok")


async def assert_slot_free(p: Pipeline, source: Source) -> None:
    """With a cap of 1, this is refused (429) if an earlier request still holds the workspace's slot."""
    before = len(p.log.entries)
    out = await p.relay.handle(_execute_inbound(source, p), kinds=API_CONNECTOR_KINDS, work=_ok)
    assert out.status == 200 and out.body == b"ok"
    assert len(p.log.entries) == before + 1


def only(entries: list[LogEntry]) -> LogEntry:
    assert len(entries) == 1, entries
    return entries[0]


async def wait_for(check: object, timeout: float = 10.0) -> None:
    """Poll `check()` on the test's loop until it is truthy (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, f"not true within {timeout}s"
        await asyncio.sleep(0.01)


# --- relay (HTTP passthrough) ------------------------------------------------------------------------------

async def test_a_whole_answer_is_logged_once_with_its_sizes(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    out = await p.relay.relay(p.inbound(src, "/echo", method="POST", body=b"12345", content_length=5))
    assert not out.streaming and out.status == 200 and b'"method": "POST"' in out.body
    e = only(p.log.entries)  # recorded before `relay` returned
    assert (e.status, e.door, e.method, e.source_id, e.workspace_id) == (200, "gateway", "POST", src.id,
                                                                          src.workspace_id)
    assert e.bytes_in == 5 and e.bytes_out == len(out.body) and e.upstream_latency_ms is not None
    assert e.error_code is None and e.caller is not None and e.caller.startswith("key:")
    await assert_slot_free(p, src)


@pytest.mark.parametrize("authorization,scope,error", [
    (BAD_TOKEN, Scope.PROXY, Unauthenticated),
    (None, Scope.FILES, Forbidden),  # the key has every scope, but a files source is not a proxy target
])
async def test_a_request_refused_at_admit_is_logged_once_and_sends_nothing(
        p: Pipeline, upstream: FakeUpstream, authorization: str | None, scope: Scope,
        error: type[Exception]) -> None:
    src = await p.source(upstream.url)
    inbound = p.inbound(src, authorization=authorization)
    if error is Forbidden:
        key = await p.api_key(frozenset({Scope.FILES}))
        inbound = p.inbound(src, authorization=f"Bearer {key}")
    with pytest.raises(error) as caught:
        await p.relay.relay(inbound)
    e = only(p.log.entries)
    assert (e.status, e.error_code) == (caught.value.status, caught.value.code)  # type: ignore[attr-defined]
    assert upstream.requests == []
    await assert_slot_free(p, src)


async def test_an_unhealthy_log_refuses_before_authenticating(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    p.log.healthy = False
    with pytest.raises(Unavailable):
        await p.relay.relay(p.inbound(src))
    assert only(p.log.entries).status == 503 and upstream.requests == []


@pytest.mark.parametrize("tail,body,error", [
    ("/%2e%2e/admin", None, InvalidRequest),  # a path escape, refused while building the URL
    ("/echo", b"x" * 1001, PayloadTooLarge),  # a body over the limit, refused while building the request
])
async def test_a_request_refused_in_build_is_logged_once_and_sends_nothing(
        p: Pipeline, upstream: FakeUpstream, tail: str, body: bytes | None, error: type[Exception]) -> None:
    src = await p.source(upstream.url)
    with pytest.raises(error):
        await p.relay.relay(p.inbound(src, tail, method="PUT", body=body))
    e = only(p.log.entries)
    assert e.status == (400 if error is InvalidRequest else 413)
    assert upstream.requests == []
    await assert_slot_free(p, src)


async def test_an_unreachable_upstream_is_logged_once_as_502(p: Pipeline, refusing_port: int) -> None:
    src = await p.source(f"http://127.0.0.1:{refusing_port}")
    with pytest.raises(UpstreamUnreachable):
        await p.relay.relay(p.inbound(src))
    e = only(p.log.entries)
    assert (e.status, e.error_code) == (502, "upstream_unreachable")
    await assert_slot_free(p, src)


async def test_an_upstream_timeout_is_logged_once_as_504(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url, policy={"timeout_seconds": 0.3})
    with pytest.raises(UpstreamTimeout):
        await p.relay.relay(p.inbound(src, "/slow", query="delay=10"))  # a deliberately slow upstream
    e = only(p.log.entries)
    assert (e.status, e.error_code) == (504, "upstream_timeout")
    assert len(upstream.requests) == 1  # a timed-out request is not retried
    await assert_slot_free(p, src)


async def test_an_agent_that_goes_away_is_logged_once_as_499(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    task = asyncio.create_task(p.relay.relay(p.inbound(src, "/slow", query="delay=30")))
    await wait_for(lambda: upstream.requests)  # the request is at the upstream, waiting for its answer
    assert p.log.entries == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert only(p.log.entries).status == CLIENT_CLOSED
    await assert_slot_free(p, src)


async def test_a_stream_is_logged_once_when_read_to_its_end(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    out = await p.relay.relay(p.inbound(src, "/stream", query="chunks=5&size=16"))
    assert out.streaming and p.log.entries == []  # not yet: the stream is still open
    with pytest.raises(RateLimited):  # the open stream holds the workspace's one slot
        await p.relay.relay(p.inbound(src, "/echo"))
    assert [e.status for e in p.log.entries] == [429]
    body = b"".join([chunk async for chunk in out.chunks()])
    assert body == b"".join(bytes([48 + i]) * 16 for i in range(5))
    e = p.log.entries[-1]
    assert len(p.log.entries) == 2 and (e.status, e.bytes_out, e.error_code) == (200, 80, None)
    out.discard()  # a second end records nothing more
    assert len(p.log.entries) == 2
    await assert_slot_free(p, src)


async def test_an_abandoned_stream_is_logged_once_and_gives_everything_back(p: Pipeline,
                                                                            upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    out = await p.relay.relay(p.inbound(src, "/stream", query="chunks=50&size=1000&delay=0.2"))
    chunks = out.chunks()
    first = await anext(chunks)
    assert first and p.log.entries == []
    await chunks.aclose()  # the agent stopped reading
    e = only(p.log.entries)
    assert e.status == 200 and 0 < e.bytes_out < 50_000
    await assert_slot_free(p, src)


async def test_a_stream_discarded_unread_is_logged_once(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    out = await p.relay.relay(p.inbound(src, "/stream", query="chunks=3"))
    out.discard()
    out.discard()
    assert only(p.log.entries).bytes_out == 0
    await assert_slot_free(p, src)


async def test_a_buffered_read_past_the_deadline_is_logged_once_as_a_timeout(p: Pipeline,
                                                                            upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url, policy={"timeout_seconds": 1})
    out = await p.relay.relay(p.inbound(src, "/stream", query="chunks=3&delay=5"))  # headers now, body slowly
    with pytest.raises(UpstreamTimeout):
        await out.read(1_000_000)
    e = only(p.log.entries)
    assert (e.status, e.error_code) == (200, "upstream_timeout")  # the status was already sent; the error says why
    await assert_slot_free(p, src)


# --- handle (a door's work in an exchange) -----------------------------------------------------------------

async def test_handle_logs_a_whole_reply_once(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)

    async def work(ex: Exchange) -> Reply:
        assert ex.source.id == src.id and ex.caller.id.startswith("key:")
        return Reply(status=201, body=b"hello")

    out = await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work)
    assert (out.status, out.body, out.streaming) == (201, b"hello", False)
    e = only(p.log.entries)
    assert (e.status, e.bytes_out, e.door, e.upstream_status) == (201, 5, "execute", None)
    await assert_slot_free(p, src)


async def test_handle_logs_work_that_raises_once_with_its_error(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)

    async def work(ex: Exchange) -> Reply:
        raise NotFound("no such record")

    with pytest.raises(NotFound):
        await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work)
    e = only(p.log.entries)
    assert (e.status, e.error_code, e.error_message) == (404, "not_found", "no such record")
    await assert_slot_free(p, src)


async def test_handle_logs_work_that_fails_unexpectedly_once(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)

    async def work(ex: Exchange) -> Reply:
        raise RuntimeError("a bug in a door's work")

    with pytest.raises(RuntimeError):
        await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work)
    only(p.log.entries)
    await assert_slot_free(p, src)


async def test_handle_logs_work_that_runs_past_the_timeout_once_as_504(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url, policy={"timeout_seconds": 0.2})
    never = asyncio.Event()

    async def work(ex: Exchange) -> Reply:
        await never.wait()  # work that never ends by itself
        return Reply()

    with pytest.raises(UpstreamTimeout):
        await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work)
    e = only(p.log.entries)
    assert (e.status, e.error_code) == (504, "upstream_timeout")
    await assert_slot_free(p, src)


async def test_handle_logs_a_streamed_reply_once_when_it_ends(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    async def work(ex: Exchange) -> Reply:
        return Reply(stream=parts())

    out = await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work, bounded=False)
    assert out.streaming and p.log.entries == []
    assert [c async for c in out.chunks()] == [b"ab", b"cde"]
    assert only(p.log.entries).bytes_out == 5
    await assert_slot_free(p, src)


async def test_handle_refused_at_admit_or_at_the_gate_is_logged_once(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)
    bad = Inbound(door=Door.EXECUTE, method="POST", path="/x", authorization=BAD_TOKEN, source=ById(src.id),
                  scope=Scope.EXECUTE)
    with pytest.raises(Unauthenticated):
        await p.relay.handle(bad, kinds=API_CONNECTOR_KINDS, work=_ok)
    assert [e.status for e in p.log.entries] == [401]
    held = await p.relay.relay(p.inbound(src, "/stream", query="chunks=2"))  # holds the one slot
    with pytest.raises(RateLimited):
        await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=_ok)
    assert [e.status for e in p.log.entries] == [401, 429]
    held.discard()
    assert len(p.log.entries) == 3
    await assert_slot_free(p, src)


async def test_exchange_logs_the_upstream_status_beside_keyrelays(p: Pipeline, upstream: FakeUpstream) -> None:
    src = await p.source(upstream.url)

    async def work(ex: Exchange) -> Reply:
        passed = await ex.send(Inbound(door=Door.EXECUTE, method="GET", path="/x", authorization=None,
                                       source=ById(src.id), target=Tail("status/401")))
        await passed.read(10_000)
        raise UpstreamRejected("The upstream API refused the stored credentials (401)")

    with pytest.raises(UpstreamRejected):
        await p.relay.handle(_execute_inbound(src, p), kinds=API_CONNECTOR_KINDS, work=work)
    e = only(p.log.entries)
    assert (e.status, e.error_code, e.upstream_status) == (403, "upstream_rejected", 401)
    assert e.upstream_latency_ms is not None
    await assert_slot_free(p, src)


async def test_execute_logs_403_beside_the_upstreams_401(tmp_path: Path) -> None:
    """The real execute service: a revoked key upstream (401) is keyrelay's 403 upstream_rejected."""
    with FakeStripe() as stripe:
        async with assembled(tmp_path) as p:
            src = await p.source("", connector="stripe", slug="stripe", config={"base_url": stripe.url},
                                 credentials={"api_key": "sk_test_revoked"})
            service = ConnectorService(relay=p.relay, catalog=p.catalog, cache=EntityCache(p.clock),
                                       tokens=PageTokens(b"t" * 32))
            with pytest.raises(UpstreamRejected):
                await service.execute(ExecuteRequest(authorization=p.auth, source_id=src.id, entity="customers",
                                                     action="list", params={"limit": 1}))
            e = only(p.log.entries)
            assert (e.status, e.upstream_status, e.door) == (403, 401, "execute")
            assert len(stripe.requests) == 1


def test_the_memory_log_is_a_log_sink() -> None:
    sink: LogSink = MemoryLog()
    assert sink.healthy


def test_relayed_whole_body_reads_are_cut_at_the_limit() -> None:
    out = Relayed(status=200, headers=[], body=b"abcdef")
    assert asyncio.run(out.read(4)) == (b"abcd", True)
    assert asyncio.run(out.read(6)) == (b"abcdef", False)
