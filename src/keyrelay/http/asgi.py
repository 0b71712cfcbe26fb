"""Plain-ASGI plumbing shared by the hot-path doors and the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from keyrelay.errors import PayloadTooLarge
from keyrelay.pipeline.relay import Relayed

# ASGI scope extensions offered by keyrelay's own server (server.py); other ASGI servers simply lack them
WHOLE_RESPONSE = "keyrelay.whole_response"  # callable(status, headers, body) -> bool: the response in one write
HEADERS_CHECKED = "keyrelay.headers_checked"  # the server already enforced the header count and size limits

AsgiScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WholeResponse = Callable[[int, list[tuple[bytes, bytes]], bytes], bool]  # the WHOLE_RESPONSE extension's shape


def header(scope: AsgiScope, name: bytes) -> str | None:
    """The first value of a request header (names are lowercase in ASGI)."""
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def read_body(receive: Receive, scope: AsgiScope, limit: int) -> bytes:
    """The whole request body, refusing a declared or actual size over `limit` without reading far past it."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    body, more = b"", bytearray()  # held in one buffer, never as one object per message (bounded by bytes)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        if len(body) + len(more) + len(chunk) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        if not body:
            body = chunk
        else:
            more += chunk
        if not message.get("more_body", False):
            return body + more if more else body


def with_request_id(send: Send, request_id: str) -> Send:
    """A `send` that adds X-Request-Id to the response head."""
    rid_header = (b"x-request-id", request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), rid_header]
        await send(message)

    return send_with_id


class Watched:
    """A `send` that remembers how far the response got, so that a failure can still be answered (or the
    connection cut) correctly: app.py's last line of defence."""

    __slots__ = ("_send", "finished", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)


class ResponseAborted(Exception):
    """A failure after the response began: the server closes the connection (the cause is logged by type)."""


class ClientGone(Exception):
    """The agent closed its connection."""


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside (nested) single-member exception groups, else the group itself."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def send_relayed(relayed: Relayed, receive: Receive, send: Send, *, watch: bool = True) -> None:
    """Send a streamed answer: its head, then its body as it arrives. However it ends (the whole body sent, the
    agent gone, an error part-way), the stream is closed, so the pipeline records the request once and gives
    back what it held."""
    chunks = relayed.chunks()
    try:
        await send({"type": "http.response.start", "status": relayed.status, "headers": relayed.headers})
        await send_body(chunks, receive, send, watch=watch)
    finally:
        await chunks.aclose()
        relayed.discard()  # a stream that never started


async def send_body(chunks: AsyncIterator[bytes], receive: Receive, send: Send, *, watch: bool = True) -> None:
    """Send `chunks` as the response body. With `watch`, an agent that disconnects stops the pump at once
    (raises ClientGone) instead of draining the upstream into a closed socket. Errors keep their own type."""
    if not watch:
        await _pump(chunks, send)
        return
    try:
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(_watch(receive))
            await _pump(chunks, send)
            watcher.cancel()
    except BaseExceptionGroup as group:
        raise sole_error(group) from None


async def _pump(chunks: AsyncIterator[bytes], send: Send) -> None:
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _watch(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
