"""Responses of the FastAPI routes (admin, tokens, logs, console, connect, Airbyte-compatible): JSON bodies, and
the contract's error shape for every failure FastAPI sees, rendered as http/render.py renders it for the
plain-ASGI doors. Only the routes import this module, so the admin framework loads with them (app.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from keyrelay.errors import InternalError, InvalidRequest, KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.http.render import JSON, dumps, error_headers

log = logging.getLogger("keyrelay")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON, headers=headers)


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
