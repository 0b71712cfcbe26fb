"""The gateway route `ANY /api/{workspace_id}/proxy/{slug}/{tail}`, as plain ASGI.

Request and response bodies stream; small bodies are read whole (one upstream write, exact length). A client
that disconnects while a streamed response is in flight cancels the upstream request.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound
from keyrelay.http.asgi import WHOLE_RESPONSE, AsgiScope, ClientGone, Receive, Send, WholeResponse, send_relayed
from keyrelay.http.render import send_error
from keyrelay.model import BySlug, Door, Inbound, Tail
from keyrelay.pipeline import approval
from keyrelay.pipeline.relay import Relay

PREFIX = b"/api/"
READ_WHOLE_MAX = 64 * 1024
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def is_gateway(raw_path: bytes) -> bool:
    parts = raw_path.split(b"/", 5)
    return len(parts) >= 5 and parts[1] == b"api" and parts[3] == b"proxy"


def parse_path(raw_path: bytes) -> tuple[str, str, str]:
    """(workspace_id, slug, raw tail) from the still-encoded path."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        text = raw_path.decode("latin-1")
        parts = text.split("/", 5)
        if _ID.fullmatch(parts[2]) and _ID.fullmatch(parts[4]):
            raise InvalidRequest("Path must be ASCII (percent-encode other bytes)") from None
        raise NotFound("Source not found") from None
    parts = text.split("/", 5)
    workspace, slug = parts[2], parts[4]
    if not _ID.fullmatch(workspace) or not _ID.fullmatch(slug):
        raise NotFound("Source not found")
    return workspace, slug, parts[5] if len(parts) > 5 else ""


def _request_facts(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, str | None, float | None]:
    """(declared length, has a body at all, Authorization, `Prefer: wait`) in one pass. Framing itself was already
    checked by the HTTP server."""
    length: int | None = None
    chunked = False
    authorization: str | None = None
    wait: float | None = None
    for k, v in headers:
        if k == b"content-length":
            if not v.isdigit():
                raise InvalidRequest("Invalid Content-Length")
            length = int(v)
        elif k == b"transfer-encoding":
            chunked = True
        elif k == b"authorization" and authorization is None:
            authorization = v.decode("latin-1")
        elif k == b"prefer" and wait is None:
            wait = approval.prefer_wait(v.decode("latin-1"))
    return length, chunked or bool(length), authorization, wait


async def _read_all(receive: Receive) -> bytes:
    body = bytearray()  # one buffer, not one object per message
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


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

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await self.serve(scope["method"], scope.get("raw_path") or scope["path"].encode(), scope["query_string"],
                         scope["headers"], receive, send, scope.get("extensions", {}).get(WHOLE_RESPONSE),
                         str(scope.get("state", {}).get("request_id", "")).encode())

    async def serve(self, method: str, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]],
                    receive: Receive, send: Send, whole: WholeResponse | None, request_id: bytes) -> None:
        """One gateway request, from the ASGI scope (`__call__`) or straight from the server (server.py's direct
        route): `whole` sends a whole response in one write where the server offers it."""
        started = False
        try:
            workspace, slug, tail = parse_path(raw_path)
            length, has_body, authorization, wait = _request_facts(headers)
            body: bytes | AsyncIterator[bytes] | None = None
            streaming_in = False
            if has_body:
                if length is not None and length <= READ_WHOLE_MAX:
                    body = await _read_all(receive)
                else:
                    streaming_in = True
                    body = _stream(receive)
            inbound = Inbound(
                door=Door.GATEWAY, method=method, path=f"/api/{workspace}/proxy/{slug}/{tail}",
                authorization=authorization, source=BySlug(workspace, slug),
                target=Tail(tail, query.decode("latin-1")), headers=tuple(headers),
                body=body, content_length=length, wait_seconds=wait,
            )
            relayed = await self._relay.relay(inbound)
            started = True
            relayed.headers.append((b"x-request-id", request_id))
            if relayed.streaming:
                await send_relayed(relayed, receive, send, watch=not streaming_in)
            # a whole body: one write when the server offers it (server.py), else two sends
            elif whole is None or not whole(relayed.status, relayed.headers, relayed.body):
                await send({"type": "http.response.start", "status": relayed.status, "headers": relayed.headers})
                await send({"type": "http.response.body", "body": relayed.body})
        except ClientGone:
            return
        except KeyrelayError as err:
            if started:
                return  # the response is under way: end it by closing the connection
            await send_error(send, err, request_id.decode() or None, ((b"x-request-id", request_id),))
