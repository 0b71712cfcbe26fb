"""Rendering: the one error renderer (every door answers errors through it; the FastAPI routes through
http/responses.py, which wraps it), and the public views of stored objects (never a credential value).

Nothing here imports the admin framework: the gateway, files, sonar and MCP doors render errors through this
module, and a worker that serves only them never loads FastAPI (docs/performance.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from keyrelay.errors import KeyrelayError
from keyrelay.model import ApiKey, Application, LogEntry, Source, Workspace
from keyrelay.pipeline import constraints

JSON = "application/json"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# The request's body or head was refused before it was read to its end: close the connection rather than
# drain it (docs/errors.md).
CLOSES_CONNECTION = frozenset({413, 414, 431})


def error_headers(err: KeyrelayError, *, length: int) -> list[tuple[bytes, bytes]]:
    """The headers of every keyrelay error response."""
    headers = [(b"content-type", JSON.encode()), (b"cache-control", b"no-store"),
               (b"content-length", str(length).encode())]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(err.retry_after).encode()))
    if err.status in CLOSES_CONNECTION:
        headers.append((b"connection", b"close"))
    return headers


async def send_error(send: Callable[[dict[str, Any]], Awaitable[None]], err: KeyrelayError, request_id: str | None,
                     extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """The contract's error body as a plain-ASGI response: the one renderer for every plain-ASGI door."""
    body = dumps(err.body(request_id))
    headers = [*error_headers(err, length=len(body)), *err.headers, *extra_headers]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def workspace_view(ws: Workspace) -> dict[str, Any]:
    return {"id": ws.id, "name": ws.name, "created_at": iso(ws.created_at)}


def source_view(src: Source) -> dict[str, Any]:
    return {
        "id": src.id, "workspace_id": src.workspace_id, "connector": src.connector, "name": src.name,
        "slug": src.slug, "config": dict(src.config), "status": src.status,
        "credentials": list(src.credential_fields),
        "policy": src.policy.to_mapping(),
        "created_at": iso(src.created_at), "updated_at": iso(src.updated_at),
    }


def application_view(app: Application) -> dict[str, Any]:
    """An application without its secret (only a digest of it is stored)."""
    return {"id": app.id, "client_id": app.client_id, "name": app.name, "created_at": iso(app.created_at),
            "revoked": app.revoked_at is not None, "revoked_at": iso(app.revoked_at),
            "workspaces": "*" if app.workspaces is None else sorted(app.workspaces), "scopes": sorted(app.scopes)}


def api_key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id, "workspace_id": key.workspace_id, "name": key.name, "scopes": sorted(key.scopes),
        "hint": key.hint, "created_at": iso(key.created_at), "expires_at": iso(key.expires_at),
        "revoked": key.revoked_at is not None,
        "constraints": None if key.constraints is None else constraints.view(key.constraints),
    }


def event_view(e: LogEntry) -> dict[str, Any]:
    return {
        "id": e.id, "ts": iso(e.ts), "workspace_id": e.workspace_id, "source_id": e.source_id, "door": e.door,
        "method": e.method, "path": e.path, "status": e.status, "latency_ms": round(e.latency_ms, 3),
        "upstream_latency_ms": None if e.upstream_latency_ms is None else round(e.upstream_latency_ms, 3),
        "bytes_in": e.bytes_in, "bytes_out": e.bytes_out, "error_code": e.error_code,
        "error_message": e.error_message, "caller": e.caller, "connector": e.connector,
        "would_deny": e.would_deny, "approval_id": e.approval_id,
    }
