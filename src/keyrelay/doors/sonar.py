"""The request API `POST /api/v1/sonar/apis/{source_id}/request`, as plain ASGI.

Body `{method, url, headers?, body?}`; `url` must lie under the source's base URL. The answer is the
contract's envelope `{status_code, headers, response_body, body}`; upstream errors are reported inside it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from keyrelay.doors.asgi import AsgiScope, Receive, Send, header, read_body
from keyrelay.doors.render import dumps, error_headers
from keyrelay.errors import InvalidRequest, KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.model import Door, Inbound, Target
from keyrelay.pipeline.relay import Relay

_PATH = re.compile(r"/api/v1/sonar/apis/([A-Za-z0-9_-]{1,64})/request")
_METHOD = re.compile(r"[A-Za-z]{1,16}")
RESPONSE_MAX = 16 * 1024 * 1024

# a refused body is not read to its end: close the connection instead of draining it (docs/errors.md)
_CLOSE = {413: [(b"connection", b"close")]}


def is_sonar(path: str) -> bool:
    return path.startswith("/api/v1/sonar/apis/")


def parse_request(raw: bytes) -> tuple[str, str, dict[str, str] | None, bytes | None]:
    """(method, url, headers, body bytes) from the JSON body, with errors naming the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("Malformed JSON body", field="body") from None
    return parse_fields(data)


def parse_fields(data: Any) -> tuple[str, str, dict[str, str] | None, bytes | None]:
    """The same, from an already decoded object (the request API's body, or MCP tool arguments)."""
    if not isinstance(data, dict):
        raise InvalidRequest("Body must be a JSON object", field="body")
    method, url, headers, body = data.get("method", "GET"), data.get("url"), data.get("headers"), data.get("body")
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise InvalidRequest("method must be an HTTP method name", field="method")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("url is required and must be a string", field="url")
    if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise InvalidRequest("headers must be an object of strings", field="headers")
    payload: bytes | None = None
    if isinstance(body, str):
        payload = body.encode()
    elif body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return method.upper(), url, headers, payload



def envelope(status: int, headers: list[tuple[bytes, bytes]], data: bytes, truncated: bool) -> dict[str, Any]:
    merged: dict[str, str] = {}
    for k, v in headers:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    text = data.decode("utf-8", errors="replace")
    parsed: Any = None
    if data and not truncated:
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
    out: dict[str, Any] = {"status_code": status, "headers": merged, "response_body": text, "body": parsed}
    if truncated:
        out["truncated"] = True
    return out


def request_inbound(parsed: tuple[str, str, dict[str, str] | None, bytes | None], *, door: Door, path: str,
                    authorization: str | None, source_id: str) -> Inbound:
    """The pipeline's view of one request-API call (`parsed` comes from `parse_request`/`parse_fields`)."""
    method, url, headers, payload = parsed
    return Inbound(door=door, method=method, path=path, authorization=authorization, source_id=source_id,
                   target=Target(url=url), json_headers=headers, body=payload,
                   content_length=None if payload is None else len(payload))


async def relay_request(relay: Relay, inbound: Inbound) -> dict[str, Any]:
    """Relay one request-API call and read the upstream answer (at most RESPONSE_MAX bytes) into the envelope."""
    relayed = await relay.relay(inbound)
    body, truncated = bytearray(), False  # one buffer, bounded by bytes (not one object per piece)
    chunks = relayed.chunks()
    try:
        async for chunk in chunks:
            if len(body) + len(chunk) > RESPONSE_MAX:
                body += chunk[: RESPONSE_MAX - len(body)]
                truncated = True
                break
            body += chunk
    finally:
        await chunks.aclose()  # releases the upstream response and records the event
    return envelope(relayed.status, relayed.headers, bytes(body), truncated)


class SonarDoor:
    def __init__(self, relay: Relay, *, max_body_bytes: int) -> None:
        self._relay = relay
        self._max_body = max_body_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            match = _PATH.fullmatch(scope["path"])
            if match is None:
                raise NotFound("No such route")
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"Method {scope['method']} is not allowed on this route")
            # the JSON wrapper adds a little to the forwarded body's own limit
            raw = await read_body(receive, scope, self._max_body * 2 + 65536)
            inbound = request_inbound(parse_request(raw), door=Door.SONAR, path=scope["path"],
                                      authorization=header(scope, b"authorization"), source_id=match.group(1))
            out = dumps(await relay_request(self._relay, inbound))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
        except KeyrelayError as err:
            body = dumps(err.body(scope.get("state", {}).get("request_id")))
            await send({"type": "http.response.start", "status": err.status,
                        "headers": [*error_headers(err), (b"content-length", str(len(body)).encode()),
                                    *_CLOSE.get(err.status, ())]})
            await send({"type": "http.response.body", "body": body})

