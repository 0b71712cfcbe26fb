"""The ASGI application and its routing: request ids, framing limits, the plain-ASGI doors on the hot path, then
FastAPI (admin, tokens, logs, Airbyte-compatible routes; validation and OpenAPI) for everything else. FastAPI and
its routes are imported and built with the first request that needs them: a worker that serves only the
gateway, files, request API, MCP and probes never loads them (docs/performance.md).

The process's services are built by `runtime.py` in the lifespan; errors are rendered by `http/render.py`.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from keyrelay import boundedjson
from keyrelay.doors import files, gateway, mcp, probes, sonar
from keyrelay.errors import HeadersTooLarge, InternalError, InvalidRequest, KeyrelayError, Unavailable, UriTooLong
from keyrelay.http.asgi import (
    HEADERS_CHECKED,
    AsgiScope,
    Message,
    Receive,
    ResponseAborted,
    Send,
    Watched,
    WholeResponse,
    read_body,
    with_request_id,
)
from keyrelay.http.render import send_error
from keyrelay.ids import new_id
from keyrelay.manage.access import NewApplication
from keyrelay.ports import Clock
from keyrelay.runtime import Runtime, runtime
from keyrelay.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("keyrelay")
Door = Callable[[AsgiScope, Receive, Send], Awaitable[None]]
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
FORM_PAGES = ("/console/",)  # pages that post HTML forms: their bodies keep their own content type


class HotPath:
    """The plain-ASGI doors, dispatched before FastAPI. The gateway adds X-Request-Id to its own responses; the
    others get a `send` that adds it."""

    def __init__(self, rt: Runtime, settings: Settings) -> None:
        self.gateway = gateway.GatewayDoor(rt.relay)
        self._sonar = sonar.SonarDoor(rt.relay, max_body_bytes=settings.max_body_bytes)
        self._files = files.FilesDoor(rt.files)
        self._mcp = rt.mcp
        self._probes = probes.ProbesDoor(ready=rt.services.ready, metrics=rt.metrics.exposition,
                                         metrics_content_type=rt.metrics.content_type)

    def door(self, scope: AsgiScope) -> tuple[Door, bool] | None:
        """The door for this request and whether it adds X-Request-Id itself, or None for FastAPI."""
        if gateway.is_gateway(scope.get("raw_path") or scope["path"].encode()):
            return self.gateway, True
        path = scope["path"]
        if files.is_files(path):  # before sonar: both live under /api/v1/sonar/
            return self._files, False
        if sonar.is_sonar(path):
            return self._sonar, False
        if mcp.is_mcp(path):
            return self._mcp, False
        if probes.is_probe(path):
            return self._probes, False
        return None


class DirectGateway:
    """The gateway route served straight from the parsed request by keyrelay's own server (server.py's
    `DirectRoute`): no ASGI scope, the same door. Other servers reach the door through `KeyrelayApp.__call__`."""

    def __init__(self, door: gateway.GatewayDoor, settings: Settings) -> None:
        self._door = door
        self._max_url_bytes = settings.max_url_bytes

    def claims(self, url: bytes) -> bool:
        # origin-form only (an absolute-form target or a fragment takes the ASGI path, which parses them)
        return url[:5] == gateway.PREFIX and b"#" not in url and gateway.is_gateway(url.partition(b"?")[0])

    def serve(self, method: str, url: bytes, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send,
              whole: WholeResponse) -> Awaitable[None]:
        # the door's own coroutine, not one awaiting it: one frame less to resume at every await of the request
        raw_path, _, query = url.partition(b"?")
        request_id = _header_request_id(headers)
        if len(raw_path) + len(query) > self._max_url_bytes:  # as KeyrelayApp._check_framing
            return send_error(with_request_id(send, request_id), UriTooLong("Request URL is too long"), request_id)
        return self._door.serve(method, raw_path, query, headers, receive, send, whole, request_id.encode())


def build_api() -> FastAPI:
    """The FastAPI application of every route that is not a plain-ASGI door (imports FastAPI and the routes)."""
    from fastapi import FastAPI

    from keyrelay.doors import (
        access,
        admin,
        airbyte,
        approvals,
        connect,
        connect_api,
        connectors,
        console,
        observe,
        site,
        webhooks,
    )
    from keyrelay.http.responses import install_error_handlers

    api = FastAPI(title="keyrelay", version="0.1.0", docs_url=None, redoc_url=None,  # served by doors/site.py
                  description="Self-hosted credential gateway for AI agents. See docs/ in the repository.")
    for router in (access.router, access.tokens_router, admin.router, connectors.router, airbyte.router,
                   observe.router, site.router, connect_api.router, webhooks.router, connect.router, approvals.router,
                   console.router):
        api.include_router(router)
    install_error_handlers(api)
    return api


class KeyrelayApp:
    """The ASGI application."""

    def __init__(self, settings: Settings, *, on_bootstrap: Callable[[NewApplication], None] | None = None,
                 clock: Clock = time.time):
        self.settings = settings
        self._clock = clock  # wall-clock seconds for the runtime (tests pin it; see runtime.py)
        self._api: FastAPI | None = None
        self.runtime: Runtime | None = None
        self._hot: HotPath | None = None
        self.direct_route: DirectGateway | None = None  # for keyrelay's own server (server.py), once started
        self._on_bootstrap = on_bootstrap

    @property
    def api(self) -> FastAPI:
        """The FastAPI application, built on first use (a synchronous build: no request sees it half-made)."""
        if self._api is None:
            self._api = build_api()
            if self.runtime is not None:
                _bind(self._api, self.runtime)
        return self._api

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        watched = Watched(send)
        try:
            self._check_framing(scope)
            hot = self._hot
            if hot is None:
                raise Unavailable("keyrelay is starting")
            found = hot.door(scope)
            if found is not None:
                door, adds_id = found
                await door(scope, receive, watched if adds_id else with_request_id(watched, request_id))
                return
            await self._api_call(scope, receive, with_request_id(watched, request_id))
        except KeyrelayError as err:
            if watched.started:
                _failed_midway(scope, err, watched)
                return
            await send_error(with_request_id(watched, request_id), err, request_id)
        except Exception as exc:  # a bug: never the server's traceback (it may quote a header, a credential)
            if watched.started:
                _failed_midway(scope, exc, watched)
                return
            log.error("unhandled error on %s %s: %s", scope["method"], scope["path"], type(exc).__name__)
            await send_error(with_request_id(watched, request_id), InternalError("Internal error"), request_id)

    def _check_framing(self, scope: AsgiScope) -> None:
        s = self.settings
        headers = scope["headers"]
        if HEADERS_CHECKED not in scope.get("extensions", ()) and (  # else our server counted them already
                len(headers) > s.max_header_count or sum(len(k) + len(v) for k, v in headers) > s.max_header_bytes):
            raise HeadersTooLarge("Request headers are too large")
        if len(scope.get("raw_path") or b"") + len(scope["query_string"]) > s.max_url_bytes:
            raise UriTooLong("Request URL is too long")

    async def _api_call(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, scope, self.settings.max_admin_body_bytes)
        if body and not scope["path"].startswith(FORM_PAGES):
            _json_content_type(scope)
            if _too_deep(body):
                err = InvalidRequest(f"Malformed JSON body: nested more than {boundedjson.MAX_DEPTH} levels deep",
                                     field="body")
                from keyrelay.doors import airbyte  # loaded with the routes (`build_api`)
                if scope["path"].startswith(airbyte.PREFIX):
                    await airbyte.error_response(err)(scope, receive, send)
                    return
                raise err
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.api(scope, replay, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with runtime(self.settings, clock=self._clock) as rt:
                self.runtime = rt
                if self._api is not None:
                    _bind(self._api, rt)
                self._hot = HotPath(rt, self.settings)
                self.direct_route = DirectGateway(self._hot.gateway, self.settings)
                if rt.bootstrap is not None:
                    (self._on_bootstrap or _log_bootstrap)(rt.bootstrap)
                # Everything built so far lives as long as the process: keep it out of the cyclic GC's full
                # collections, which otherwise walk the whole (large) startup heap while requests wait.
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.direct_route = None
                self._hot = None
                self.runtime = None
        except Exception as exc:
            log.error("keyrelay failed to start: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": "keyrelay failed to start"})
            return
        await send({"type": "lifespan.shutdown.complete"})


def _failed_midway(scope: AsgiScope, exc: Exception, watched: Watched) -> None:
    """A failure after the response began. Finished: it was answered (FastAPI's handler rendered and logged it,
    then re-raised for the server to log: not here). Unfinished: cut the connection, with a bare error."""
    if watched.finished:
        return
    log.error("response cut short on %s %s: %s", scope["method"], scope["path"], type(exc).__name__)
    raise ResponseAborted("response cut short (the cause is logged above by its type)") from None


def _bind(api: FastAPI, rt: Runtime) -> None:
    """What the routes' dependencies read (http/deps.py)."""
    api.state.services = rt.services
    api.state.metrics = rt.metrics
    api.state.request_log = rt.request_log


def _too_deep(body: bytes) -> bool:
    """A JSON body nested past the bound (FastAPI's own parse would fail on it, or code walking it later)."""
    try:
        boundedjson.loads(body)
    except boundedjson.TooDeep:
        return True
    except ValueError:
        return False  # not JSON: the route's validation says so
    return False


def _request_id(scope: AsgiScope) -> str:
    return _header_request_id(scope["headers"])


def _header_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The agent's X-Request-Id when well-formed, else a new one."""
    for k, v in headers:
        if k == b"x-request-id" and _REQUEST_ID.fullmatch(v):
            return str(v.decode())
    return new_id()


def _json_content_type(scope: AsgiScope) -> None:
    """Every API body is JSON: treat a missing or form content type (curl's default) as JSON."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    current = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    if current and b"json" in current.lower():
        return
    scope["headers"] = [*headers, (b"content-type", b"application/json")]


def _log_bootstrap(app: NewApplication) -> None:
    log.warning("created bootstrap application client_id=%s (secret shown once by `keyrelay init`/`serve`)",
                app.client_id)


def create_app(settings: Settings | None = None, **kwargs: Any) -> KeyrelayApp:
    return KeyrelayApp(settings or Settings(), **kwargs)


def worker_app() -> KeyrelayApp:
    """One worker of `keyrelay serve --workers N` (an app factory: each worker process reads the settings the
    supervisor put in its environment)."""
    return KeyrelayApp(Settings())
