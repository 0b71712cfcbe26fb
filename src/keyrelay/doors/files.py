"""The file routes (seed 001), as plain ASGI:

* `GET /api/v1/sonar/files/{source_id}/list/{prefix}?page_token=&limit=` -> `{files, next_page_token?}`
* `GET|HEAD /api/v1/sonar/files/{source_id}/get/{path}` -> the bytes, streamed; one `Range` honoured.

The path is taken from `raw_path` and decoded once by `keyrelay.files.paths`. Nothing the agent sends besides
the path, `Range` and the two query parameters reaches the store: no agent header is ever forwarded or signed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from keyrelay.doors.asgi import AsgiScope, ClientGone, Receive, Send, header, send_body
from keyrelay.doors.render import dumps, error_headers
from keyrelay.errors import InvalidRequest, KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.files import listing, paths, reading
from keyrelay.files.ranges import Unsatisfiable
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Door, Inbound, Scope
from keyrelay.pipeline.policy import FILE_CONNECTOR_KINDS
from keyrelay.pipeline.relay import Admitted, Relay

PREFIX = "/api/v1/sonar/files/"
_ROUTE = re.compile(rb"/api/v1/sonar/files/([A-Za-z0-9_-]{1,64})/(list|get)(?:/(.*))?", re.DOTALL)



def is_files(path: str) -> bool:
    return path.startswith(PREFIX)



def _query(scope: AsgiScope) -> tuple[str | None, int]:
    try:
        query = parse_qs(scope["query_string"].decode("ascii"), strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("Malformed query string") from None
    token = query.get("page_token", [None])[-1]
    raw_limit = query.get("limit", [str(listing.LIMIT_DEFAULT)])[-1]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= listing.LIMIT_MAX:
        raise InvalidRequest(f"limit must be an integer from 1 to {listing.LIMIT_MAX}", field="limit")
    return token or None, int(raw_limit)


class FilesDoor:
    def __init__(self, relay: Relay, stores: StoreFactory, *, max_range_bytes: int) -> None:
        self._relay, self._stores, self._max_range = relay, stores, max_range_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        match = _ROUTE.fullmatch(raw)
        if match is None:
            await _error(scope, send, NotFound("No such route"))
            return
        source_id, action, rest = match.group(1).decode(), match.group(2).decode(), match.group(3) or b""
        method = scope["method"]
        try:
            if method not in ("GET", "HEAD") or (action == "list" and method != "GET"):
                raise MethodNotAllowed(f"Method {method[:16]} is not allowed on this route")
            target = rest.decode("latin-1")
            key = paths.list_prefix(target) if action == "list" else paths.file_key(target)
        except KeyrelayError as err:  # refused before the pipeline: still one log row
            await self._refuse(scope, send, self._inbound(scope, source_id, raw), err)
            return
        inbound = self._inbound(scope, source_id, raw)
        try:
            admitted = await self._relay.admit(inbound, kinds=FILE_CONNECTOR_KINDS)
        except KeyrelayError as err:  # admit has recorded it
            await _error(scope, send, err)
            return
        await self._serve(scope, receive, send, admitted, action, key)

    def _inbound(self, scope: AsgiScope, source_id: str, raw: bytes) -> Inbound:
        return Inbound(door=Door.FILES, method=scope["method"], path=raw.decode("latin-1"),
                       authorization=header(scope, b"authorization"), source_id=source_id, scope=Scope.FILES)

    async def _refuse(self, scope: AsgiScope, send: Send, inbound: Inbound, err: KeyrelayError) -> None:
        """Refuse a malformed request, after authenticating it like any other (so 401 beats 400)."""
        try:
            admitted = await self._relay.admit(inbound, kinds=FILE_CONNECTOR_KINDS)
        except KeyrelayError as first:
            await _error(scope, send, first)
            return
        admitted.recorder.done(err.status, err)
        await _error(scope, send, err)

    async def _serve(self, scope: AsgiScope, receive: Receive, send: Send, admitted: Admitted, action: str,
                     key: str) -> None:
        rec, source = admitted.recorder, admitted.resolved.source
        started, status = False, 500
        error: KeyrelayError | None = None
        try:
            release = self._relay.enter_workspace(source.workspace_id)
        except KeyrelayError as err:
            rec.done(err.status, err)
            await _error(scope, send, err)
            return
        try:
            fs = await self._stores.open(source, admitted.resolved.credentials)
            if action == "list":
                token, limit = _query(scope)
                page = await listing.list_page(fs, source_id=source.id, prefix=key, token=token, limit=limit)
                body: dict[str, Any] = {"files": [e.view() for e in page.files]}
                if page.next_page_token:
                    body["next_page_token"] = page.next_page_token
                data = dumps(body)
                status, started = 200, True
                await _json(send, 200, data)
                rec.bytes_out = len(data)
                return
            opened = await reading.open_file(fs, key, range_header=header(scope, b"range"),
                                             max_span=self._max_range, head_only=scope["method"] == "HEAD")
            status, started = opened.status, True
            await send({"type": "http.response.start", "status": opened.status, "headers": opened.headers})
            if opened.body is None:
                await send({"type": "http.response.body", "body": b""})
                return
            await _stream(opened.body, receive, send, rec)
        except ClientGone:
            error = None
        except KeyrelayError as err:
            error = err
            if not started:
                status = err.status
                await _error(scope, send, err)
        finally:
            release()
            rec.done(status, error)


async def _stream(body: AsyncIterator[bytes], receive: Receive, send: Send, rec: Any) -> None:
    """Pump the file to the agent; stop (and drop the store stream) if the agent disconnects."""

    async def counted() -> AsyncIterator[bytes]:
        async for chunk in body:
            rec.bytes_out += len(chunk)
            yield chunk

    await send_body(counted(), receive, send)


async def _json(send: Send, status: int, data: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": data})


async def _error(scope: AsgiScope, send: Send, err: KeyrelayError) -> None:
    body = dumps(err.body(scope.get("state", {}).get("request_id")))
    headers = [*error_headers(err), (b"content-length", str(len(body)).encode())]
    if isinstance(err, Unsatisfiable) and err.size is not None:
        headers.append((b"content-range", f"bytes */{err.size}".encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
