"""Rendering: the one JSON error body, and the public views of stored objects (never a credential value)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.responses import Response

from keyrelay.errors import KeyrelayError
from keyrelay.model import ApiKey, LogEntry, Source, Workspace

JSON = "application/json"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON, headers=headers)


def error_headers(err: KeyrelayError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", JSON.encode()), (b"cache-control", b"no-store")]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(err.retry_after).encode()))
    return headers


async def send_error(send: Callable[[dict[str, Any]], Awaitable[None]], err: KeyrelayError, request_id: str | None,
                     extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """The contract's error body as a plain-ASGI response."""
    body = dumps(err.body(request_id))
    headers = [*error_headers(err), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(err: KeyrelayError, request_id: str | None) -> Response:
    resp = Response(dumps(err.body(request_id)), status_code=err.status, media_type=JSON)
    resp.headers["cache-control"] = "no-store"
    if err.retry_after is not None:
        resp.headers["retry-after"] = str(err.retry_after)
    return resp


def workspace_view(ws: Workspace) -> dict[str, Any]:
    return {"id": ws.id, "name": ws.name, "created_at": iso(ws.created_at)}


def source_view(src: Source) -> dict[str, Any]:
    p = src.policy
    return {
        "id": src.id, "workspace_id": src.workspace_id, "connector": src.connector, "name": src.name,
        "slug": src.slug, "config": dict(src.config), "status": src.status,
        "credentials": list(src.credential_fields),
        "policy": {
            "allowed_methods": None if p.allowed_methods is None else sorted(p.allowed_methods),
            "forward_headers": None if p.forward_headers is None else sorted(p.forward_headers),
            "rate_limit_per_minute": p.rate_limit_per_minute, "timeout_seconds": p.timeout_seconds,
            "max_body_bytes": p.max_body_bytes, "allow_writes": p.allow_writes,
            "cache_ttl_seconds": p.cache_ttl_seconds,
        },
        "created_at": iso(src.created_at), "updated_at": iso(src.updated_at),
    }


def api_key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id, "workspace_id": key.workspace_id, "name": key.name, "scopes": sorted(key.scopes),
        "hint": key.hint, "created_at": iso(key.created_at), "expires_at": iso(key.expires_at),
        "revoked": key.revoked_at is not None,
    }


def event_view(e: LogEntry) -> dict[str, Any]:
    return {
        "id": e.id, "ts": iso(e.ts), "workspace_id": e.workspace_id, "source_id": e.source_id, "door": e.door,
        "method": e.method, "path": e.path, "status": e.status, "latency_ms": round(e.latency_ms, 3),
        "upstream_latency_ms": None if e.upstream_latency_ms is None else round(e.upstream_latency_ms, 3),
        "bytes_in": e.bytes_in, "bytes_out": e.bytes_out, "error_code": e.error_code,
        "error_message": e.error_message, "caller": e.caller, "connector": e.connector,
    }
