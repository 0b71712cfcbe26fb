"""http/asgi.py: reading a whole request body is bounded by bytes, however the ASGI server splits it."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keyrelay.errors import KeyrelayError, PayloadTooLarge, UpstreamUnreachable
from keyrelay.http.asgi import (
    ClientGone,
    Watched,
    header,
    read_body,
    send_body,
    send_relayed,
    sole_error,
    with_request_id,
)
from keyrelay.pipeline.relay import Relayed


def _receive(pieces: int, piece: bytes) -> Any:
    """An ASGI `receive` handing the body over in `pieces` messages of `piece`, each a new object (as uvicorn's
    `bytes(self.body)` makes one per message)."""
    sent = 0
    template = bytearray(piece)

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        if sent > pieces:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(template), "more_body": True}

    return receive


async def test_many_small_messages_are_held_in_one_buffer() -> None:
    """Two-byte messages would cost ~40 bytes each as separate objects: 200,000 of them ~8 MiB for 400 KB."""
    pieces = 200_000
    tracemalloc.start()
    try:
        body = await read_body(_receive(pieces, b"ab"), {"headers": []}, limit=10 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body == b"ab" * pieces
    assert peak < 3 * len(body), peak


@pytest.mark.parametrize(("pieces", "piece"), [(1, b"x" * 1000), (3, b"abc"), (0, b"")])
async def test_the_body_is_exact(pieces: int, piece: bytes) -> None:
    assert await read_body(_receive(pieces, piece), {"headers": []}, limit=4096) == piece * pieces


async def test_the_limit_counts_every_byte() -> None:
    assert await read_body(_receive(10, b"ab"), {"headers": []}, limit=20) == b"ab" * 10
    with pytest.raises(PayloadTooLarge):
        await read_body(_receive(11, b"ab"), {"headers": []}, limit=21)


def _scope(**headers: str) -> dict[str, Any]:
    return {"headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}

def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive

async def test_read_body_joins_the_parts() -> None:
    receive = _receiver({"type": "http.request", "body": b"ab", "more_body": True},
                        {"type": "http.request", "body": b"cd"})
    assert await read_body(receive, _scope(content_length="4"), limit=4) == b"abcd"

async def test_read_body_refuses_a_declared_size_over_the_limit_without_reading() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("must not read")

    with pytest.raises(PayloadTooLarge):
        await read_body(receive, _scope(content_length="5"), limit=4)

async def test_read_body_stops_at_the_limit_when_the_size_was_not_declared() -> None:
    parts = [{"type": "http.request", "body": b"xxx", "more_body": True} for _ in range(3)]
    receive = _receiver(*parts)
    with pytest.raises(PayloadTooLarge):
        await read_body(receive, _scope(), limit=5)

async def test_read_body_of_a_gone_agent_is_empty() -> None:
    assert await read_body(_receiver({"type": "http.disconnect"}), _scope(), limit=5) == b""
    assert header(_scope(x_a="1"), b"x-a") == "1" and header(_scope(), b"x-a") is None

async def test_with_request_id_adds_the_header_to_the_head_only() -> None:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    wrapped = with_request_id(send, "rid-1")
    await wrapped({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
    await wrapped({"type": "http.response.body", "body": b"x"})
    assert sent[0]["headers"] == [(b"a", b"b"), (b"x-request-id", b"rid-1")] and "headers" not in sent[1]

def test_sole_error_unwraps_single_member_groups_only() -> None:
    inner = ValueError("x")
    assert sole_error(BaseExceptionGroup("g", [ExceptionGroup("h", [inner])])) is inner
    two = ExceptionGroup("g", [ValueError(), KeyError()])
    assert sole_error(two) is two

def _relayed(chunks: list[bytes], ended: list[KeyrelayError | None], *, fail: KeyrelayError | None = None,
             forever: bool = False) -> Relayed:
    async def stream() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c
        if fail is not None:
            raise fail
        if forever:
            await asyncio.Event().wait()

    return Relayed(status=200, headers=[(b"content-type", b"text/plain")], stream=stream(), finish=ended.append)

async def test_send_relayed_sends_head_and_body_and_ends_the_stream_once() -> None:
    ended: list[KeyrelayError | None] = []
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {}

    await send_relayed(_relayed([b"a", b"b"], ended), receive, send)
    assert [m.get("body") for m in sent] == [None, b"a", b"b", b""] and sent[0]["status"] == 200
    assert ended == [None]

async def test_an_agent_that_goes_away_stops_the_pump_and_ends_the_stream() -> None:
    ended: list[KeyrelayError | None] = []
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    with pytest.raises(ClientGone):
        await send_relayed(_relayed([b"a"], ended, forever=True), _receiver({"type": "http.disconnect"}), send)
    assert ended == [None] and [m.get("body") for m in sent] == [None, b"a"]

async def test_an_error_part_way_keeps_its_type_and_ends_the_stream_with_it() -> None:
    ended: list[KeyrelayError | None] = []
    err = UpstreamUnreachable("cut")

    async def send(m: dict[str, Any]) -> None:
        return None

    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {}

    with pytest.raises(UpstreamUnreachable):
        await send_relayed(_relayed([b"a"], ended, fail=err), receive, send)
    assert ended == [err]

async def test_send_body_without_watching_just_pumps() -> None:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    async def receive() -> dict[str, Any]:
        raise AssertionError("not watched")

    await send_body(chunks(), receive, send, watch=False)
    assert [(m["body"], m["more_body"]) for m in sent] == [(b"x", True), (b"", False)]


async def test_watched_tells_how_far_a_response_got() -> None:
    seen: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        seen.append(message)

    watched = Watched(send)
    assert (watched.started, watched.finished) == (False, False)
    await watched({"type": "http.response.start", "status": 200, "headers": []})
    await watched({"type": "http.response.body", "body": b"a", "more_body": True})
    assert (watched.started, watched.finished) == (True, False)
    await watched({"type": "http.response.body", "body": b"b"})
    assert (watched.started, watched.finished) == (True, True) and len(seen) == 3
