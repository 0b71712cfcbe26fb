"""The sync and async runners against a scripted loopback peer: retries, Retry-After, idempotency, network
failures, timeouts, streaming into a sink, errors thrown into operations. Sleeps are recorded, never slept."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyrelay_client import (
    ConnectionFailed,
    NotFound,
    RateLimited,
    RequestTimeout,
    Unavailable,
    UnexpectedResponse,
    UpstreamTimeout,
)
from keyrelay_client.calls import Call, Operation, obj
from keyrelay_client.retry import RetryPolicy
from keyrelay_client.runner import AsyncRunner, SyncRunner
from support.scripted import Reply, ScriptedServer

UNAVAILABLE = {"error": {"code": "unavailable", "message": "Starting", "request_id": "r1"}}


class Runner:
    """A SyncRunner, or an AsyncRunner driven on a private loop, behind one sync interface."""

    def __init__(self, mode: str, base_url: str, policy: RetryPolicy, timeout: float = 5.0) -> None:
        self.sleeps: list[float] = []
        self.mode = mode
        self.loop = asyncio.new_event_loop()
        if mode == "sync":
            self.client: Any = httpx.Client(base_url=base_url, timeout=timeout)
            self.inner: Any = SyncRunner(self.client, policy, self.sleeps.append)
        else:
            async def sleep(seconds: float) -> None:
                self.sleeps.append(seconds)

            self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout)
            self.inner = AsyncRunner(self.client, policy, sleep)

    def run(self, op: Operation[Any]) -> Any:
        result = self.inner.run(op)
        return result if self.mode == "sync" else self.loop.run_until_complete(result)

    def close(self) -> None:
        if self.mode == "sync":
            self.client.close()
        else:
            self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture
def make(mode: str, scripted: ScriptedServer) -> Iterator[Any]:
    made: list[Runner] = []

    def factory(attempts: int = 3, base_url: str | None = None, timeout: float = 5.0) -> Runner:
        runner = Runner(mode, base_url or scripted.url, RetryPolicy(attempts=attempts, rng=random.Random(3)), timeout)
        made.append(runner)
        return runner

    yield factory
    for r in made:
        r.close()


def one(call: Call) -> Operation[dict[str, Any]]:
    return obj((yield call))


def test_a_transient_error_on_a_get_is_retried_after_a_jittered_wait(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/x", Reply(503, UNAVAILABLE), Reply(200, {"ok": True}))
    runner = make()
    assert runner.run(one(Call("GET", "/x"))) == {"ok": True}
    assert len(scripted.seen("GET", "/x")) == 2
    assert len(runner.sleeps) == 1 and 0.25 <= runner.sleeps[0] <= 0.5  # first step of base_delay 0.5


def test_retry_after_is_waited_exactly(make: Any, scripted: ScriptedServer) -> None:
    limited = {"error": {"code": "rate_limited", "message": "Slow down", "retry_after": 3, "request_id": "r"}}
    scripted.on("GET", "/x", Reply(429, limited, {"Retry-After": "3"}), Reply(200, {"ok": 1}))
    runner = make()
    assert runner.run(one(Call("GET", "/x"))) == {"ok": 1}
    assert runner.sleeps == [3.0]


def test_retries_are_bounded_and_the_last_error_is_raised(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/x", Reply(503, UNAVAILABLE))
    runner = make(attempts=4)
    with pytest.raises(Unavailable) as err:
        runner.run(one(Call("GET", "/x")))
    assert err.value.request_id == "r1"
    assert len(scripted.seen("GET", "/x")) == 4 and len(runner.sleeps) == 3


def test_a_non_idempotent_call_is_not_repeated_once_sent(make: Any, scripted: ScriptedServer) -> None:
    timeout = {"error": {"code": "upstream_timeout", "message": "Slow upstream", "request_id": "r"}}
    scripted.on("POST", "/x", Reply(504, timeout))
    with pytest.raises(UpstreamTimeout):
        make().run(one(Call("POST", "/x", json={})))
    assert len(scripted.seen("POST", "/x")) == 1
    scripted.on("POST", "/y", Reply(504, timeout), Reply(200, {"ok": 2}))  # unless declared idempotent
    assert make().run(one(Call("POST", "/y", json={}, idempotent=True))) == {"ok": 2}


def test_a_dropped_connection_repeats_only_idempotent_calls(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("POST", "/x", Reply(drop=True))
    with pytest.raises(ConnectionFailed) as err:
        make().run(one(Call("POST", "/x", json={"a": 1})))
    assert err.value.status is None and "POST /x" in err.value.message
    assert len(scripted.seen("POST", "/x")) == 1
    scripted.on("GET", "/y", Reply(drop=True), Reply(200, {"ok": 3}))
    assert make().run(one(Call("GET", "/y"))) == {"ok": 3}


def test_a_refused_connection_is_retried_even_for_a_post(make: Any) -> None:
    """Nothing was sent, so nothing can be repeated."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        runner = make(attempts=3, base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectionFailed):
            runner.run(one(Call("POST", "/x", json={})))
    assert len(runner.sleeps) == 2


def test_a_silent_peer_times_out(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/hang", Reply(hang=True))
    runner = make(attempts=1, timeout=0.2)
    with pytest.raises(RequestTimeout) as err:
        runner.run(one(Call("GET", "/hang")))
    assert err.value.code == "timeout" and err.value.status is None


def test_a_call_timeout_overrides_the_client_timeout(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/hang", Reply(hang=True))
    runner = make(attempts=1, timeout=30)
    with pytest.raises(RequestTimeout):
        runner.run(one(Call("GET", "/hang", timeout=httpx.Timeout(0.2))))


def test_an_operation_may_catch_an_error_thrown_into_it(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/fallback", Reply(200, {"found": "fallback"}))

    def op() -> Operation[Any]:
        try:
            yield Call("GET", "/missing")
        except NotFound:
            return obj((yield Call("GET", "/fallback")))
        return None

    assert make().run(op()) == {"found": "fallback"}


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.opened = 0
        self.closed: list[bool] = []

    def open(self, response: httpx.Response) -> None:
        self.opened += 1

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def close(self, *, complete: bool) -> None:
        self.closed.append(complete)


def test_a_sink_receives_the_body_and_hears_whether_it_completed(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/file", Reply(503, UNAVAILABLE), Reply(200, body=b"x" * 100_000))
    sink = ListSink()
    make().run(one_sink(Call("GET", "/file", sink=sink)))
    assert b"".join(sink.chunks) == b"x" * 100_000 and sink.opened == 1 and sink.closed == [True]

    scripted.on("GET", "/cut", Reply(200, body=b"y" * 1000, cut=10))
    cut = ListSink()
    with pytest.raises(ConnectionFailed):
        make().run(one_sink(Call("GET", "/cut", sink=cut)))
    assert cut.closed == [False] and len(scripted.seen("GET", "/cut")) == 1  # bytes arrived: never repeated


def one_sink(call: Call) -> Operation[int]:
    response = yield call
    return response.status_code


def test_error_statuses_are_not_retried_when_not_transient(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/gone", Reply(404, {"error": {"code": "not_found", "message": "No", "request_id": "q"}}))
    runner = make()
    with pytest.raises(NotFound):
        runner.run(one(Call("GET", "/gone")))
    assert runner.sleeps == [] and len(scripted.seen("GET", "/gone")) == 1


def test_a_rate_limit_with_a_long_retry_after_is_raised_at_once(make: Any, scripted: ScriptedServer) -> None:
    long = {"error": {"code": "rate_limited", "message": "m", "retry_after": 3600, "request_id": "r"}}
    scripted.on("GET", "/x", Reply(429, long))
    runner = make()
    with pytest.raises(RateLimited) as err:
        runner.run(one(Call("GET", "/x")))
    assert err.value.retry_after == 3600 and runner.sleeps == []


def test_a_body_that_cannot_be_decoded_is_an_unexpected_response(make: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/x", Reply(200, body=b"not gzip at all", headers={"Content-Encoding": "gzip"}))
    with pytest.raises(UnexpectedResponse, match="could not be decoded"):
        make().run(one(Call("GET", "/x")))
    assert len(scripted.seen("GET", "/x")) == 1
