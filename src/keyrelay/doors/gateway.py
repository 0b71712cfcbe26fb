"""The gateway route `ANY /api/{workspace_id}/proxy/{slug}/{tail}` (seed 003), as plain ASGI.

Request and response bodies stream; small bodies are read whole (one upstream write, exact length). A client
that disconnects while a streamed response is in flight cancels the upstream request.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from keyrelay.doors.asgi import ClientGone, Receive, Scope, Send, header, send_body
from keyrelay.doors.render import dumps, error_headers
from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound
from keyrelay.model import Door, Inbound, Target
from keyrelay.pipeline.relay import Relay, Relayed

PREFIX = b"/api/"
READ_WHOLE_MAX = 64 * 1024
_ID = re.compile(rb"[A-Za-z0-9_-]{1,64}")

# a refused body is not read to its end: close the connection instead of draining it (bar 12)
_CLOSE = {413: [(b"connection", b"close")]}



def is_gateway(raw_path: bytes) -> bool:
    parts = raw_path.split(b"/", 5)
    return len(parts) >= 5 and parts[1] == b"api" and parts[3] == b"proxy"


def parse_path(raw_path: bytes) -> tuple[str, str, str]:
    """(workspace_id, slug, raw tail) from the still-encoded path."""
    parts = raw_path.split(b"/", 5)
    workspace, slug = parts[2], parts[4]
    if not _ID.fullmatch(workspace) or not _ID.fullmatch(slug):
        raise NotFound("Source not found")
    tail = parts[5] if len(parts) > 5 else b""
    try:
        return workspace.decode(), slug.decode(), tail.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequest("Path must be ASCII (percent-encode other bytes)") from None


def _content_length(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(declared length, has a body at all). Framing itself was already checked by the HTTP server."""
    length: int | None = None
    chunked = False
    for k, v in headers:
        if k == b"content-length":
            if not v.isdigit():
                raise InvalidRequest("Invalid Content-Length")
            length = int(v)
        elif k == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class GatewayDoor:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        started = False
        try:
            workspace, slug, tail = parse_path(raw_path)
            length, has_body = _content_length(scope["headers"])
            body: bytes | AsyncIterator[bytes] | None = None
            streaming_in = False
            if has_body:
                if length is not None and length <= READ_WHOLE_MAX:
                    body = await _read_all(receive)
                else:
                    streaming_in = True
                    body = _stream(receive)
            inbound = Inbound(
                door=Door.GATEWAY, method=scope["method"], path=f"/api/{workspace}/proxy/{slug}/{tail}",
                authorization=header(scope, b"authorization"), workspace_id=workspace, slug=slug,
                target=Target(tail=tail, query=scope["query_string"].decode("latin-1")),
                raw_headers=tuple(scope["headers"]), body=body, content_length=length,
            )
            relayed = await self._relay.relay(inbound)
            started = True
            await _respond(relayed, receive, send, watch=not streaming_in)
        except ClientGone:
            return
        except KeyrelayError as err:
            if started:
                return  # the response is under way: end it by closing the connection
            request_id = scope.get("state", {}).get("request_id")
            body_bytes = dumps(err.body(request_id))
            await send({"type": "http.response.start", "status": err.status,
                        "headers": [*error_headers(err), (b"content-length", str(len(body_bytes)).encode()),
                                    *_CLOSE.get(err.status, ())]})
            await send({"type": "http.response.body", "body": body_bytes})



async def _respond(relayed: Relayed, receive: Receive, send: Send, *, watch: bool) -> None:
    chunks = relayed.chunks()
    await send({"type": "http.response.start", "status": relayed.status, "headers": relayed.headers})
    try:
        await send_body(chunks, receive, send, watch=watch)
    except ClientGone:
        await chunks.aclose()  # releases the upstream connection and records the event
    # a KeyrelayError mid-body reaches __call__, which ends the started response by closing the connection
