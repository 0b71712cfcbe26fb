"""Rendering: the one error renderer (every door and route answers errors through it), and the public views of
stored objects (never a credential value)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from keyrelay.errors import InternalError, InvalidRequest, KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.model import ApiKey, Application, LogEntry, Source, Workspace
from keyrelay.pipeline import constraints

JSON = "application/json"
log = logging.getLogger("keyrelay")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON, headers=headers)


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


def error_response(err: KeyrelayError, request_id: str | None) -> Response:
    """The same error for FastAPI routes."""
    body = dumps(err.body(request_id))
    resp = Response(body, status_code=err.status)
    resp.raw_headers = [*error_headers(err, length=len(body)), *err.headers]
    return resp


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """Name the offending field; never echo the submitted value (it may be a secret)."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequest("Malformed JSON body", field="body")
    field = ".".join(loc) or "body"
    return InvalidRequest(f"Invalid {field}: {first.get('msg', 'invalid value')}", field=field)


def install_error_handlers(api: FastAPI) -> None:
    """Every error of a FastAPI route in the contract's body: keyrelay's own errors, request validation,
    Starlette's 404/405, and anything unexpected (a fixed message; the details go to the server log only)."""

    def rid(request: Request) -> str | None:
        value: str | None = request.scope.get("state", {}).get("request_id")
        return value

    @api.exception_handler(KeyrelayError)
    async def _keyrelay(request: Request, exc: KeyrelayError) -> Response:
        return error_response(exc, rid(request))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc), rid(request))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        err: KeyrelayError = NotFound("No such route")
        if exc.status_code == 405:
            err = MethodNotAllowed(f"Method {request.method} is not allowed on this route")
        elif exc.status_code != 404:
            err = InvalidRequest("Bad request")
        return error_response(err, rid(request))

    @api.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(InternalError("Internal error"), rid(request))


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
