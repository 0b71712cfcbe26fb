"""The composition root: `create_app(settings)` builds adapters, services and doors, and routes requests.

Hot-path doors (gateway) are plain ASGI and are dispatched here before FastAPI sees the request; everything
else (admin, tokens, logs) goes through FastAPI for validation and OpenAPI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from keyrelay.connectors.cache import EntityCache
from keyrelay.connectors.execute import ConnectorService
from keyrelay.connectors.pagetoken import PageTokens
from keyrelay.connectors.spec import load_catalog
from keyrelay.doors import access, admin, airbyte, connectors, files, gateway, mcp, observe, sonar
from keyrelay.doors.asgi import (
    HEADERS_CHECKED,
    AsgiScope,
    Message,
    Receive,
    Send,
    read_body,
    sole_error,
    with_request_id,
)
from keyrelay.doors.deps import Services
from keyrelay.doors.mcp_tools import Deps as McpDeps
from keyrelay.doors.render import dumps, error_headers, error_response
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import (
    HeadersTooLarge,
    InternalError,
    InvalidRequest,
    KeyrelayError,
    MethodNotAllowed,
    NotFound,
    Sealed,
    Unavailable,
    UriTooLong,
)
from keyrelay.files.stores import StoreFactory
from keyrelay.ids import new_id
from keyrelay.manage.access import AccessService, NewApplication
from keyrelay.manage.sources import SourceService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.oauth.tokens import OAuthSender, OAuthTokens
from keyrelay.pipeline.ratelimit import RateLimiter, make_storage
from keyrelay.pipeline.relay import ConnectorFacts, Relay
from keyrelay.pipeline.resolve import SourceResolver
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.requestlog import Metrics, RedisFeed, RequestLog
from keyrelay.settings import Settings
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.meta import SqlMetaStore
from keyrelay.store.oauth_state import SqlOAuthStateStore
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, create_key_file, parse_master_key, read_key_file

log = logging.getLogger("keyrelay")
HotPath = Callable[[AsgiScope, Receive, Send, str], Awaitable[bool]]
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


@dataclass
class Runtime:
    services: Services
    metrics: Metrics
    events: RequestLog
    bootstrap: NewApplication | None
    hot_path: HotPath


def load_master_key(settings: Settings) -> bytes | None:
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    return read_key_file(settings.key_file)


@contextlib.asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Build every adapter and service; tear them down (flushing the request log) on exit."""
    if settings.is_sqlite or settings.master_key is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    catalog = load_catalog()  # fail before touching any data if a definition is broken
    engine = make_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
        clock = time.time
        vault_store = SqlKeyRingStore(engine)
        master = load_master_key(settings)
        if master is None and not await vault_store.keys():
            master = create_key_file(settings.key_file)  # first start: nothing to protect yet
        vault = KeyVault(vault_store, master, clock=clock)
        await vault.load(may_create=True)
        if vault.sealed:
            log.error("keyrelay is SEALED (%s): credential-using requests answer 503", vault.sealed_reason)
        hmac_key = await SqlMetaStore(engine).put_if_absent(
            "token_hmac_key", base64.b64encode(secrets.token_bytes(32)).decode())
        auth_store, ws_store = SqlAccessStore(engine), SqlWorkspaceStore(engine)
        hasher = TokenHasher(base64.b64decode(hmac_key))
        authn = Authenticator(auth_store, hasher, clock, cache_seconds=settings.token_cache_seconds)
        access = AccessService(auth=auth_store, workspaces=ws_store, hasher=hasher, authenticator=authn,
                               clock=clock)
        secret = settings.admin_client_secret.get_secret_value() if settings.admin_client_secret else None
        bootstrap = await access.ensure_bootstrap(settings.admin_client_id, secret)
        workspaces = WorkspaceService(store=ws_store, clock=clock)
        sources = SourceService(sources=SqlSourceStore(engine), workspaces=workspaces, vault=vault, catalog=catalog,
                                clock=clock, allow=settings.allow_networks)
        sources.local_roots = tuple(p.resolve() for p in settings.local_root_paths)
        log_store = SqlRequestLogStore(engine)
        metrics = Metrics()
        events = RequestLog(log_store, metrics, clock=clock, flush_seconds=settings.log_flush_seconds,
                          retention_days=settings.log_retention_days)

        async def ready() -> None:
            try:
                await log_store.ping()
            except Exception:
                raise Unavailable("Database unreachable") from None
            if vault.sealed:
                raise Sealed("The vault is sealed: the master key is missing or wrong")
            if not events.healthy:
                raise Unavailable("Request log cannot be written")

        resolver = SourceResolver(SqlSourceStore(engine), vault, clock, cache_seconds=settings.source_cache_seconds)
        upstream = UpstreamClient(allow=settings.allow_networks, max_connections=settings.upstream_max_connections)
        oauth = OAuthSender(OAuthTokens(store=SqlOAuthStateStore(engine), vault=vault, upstream=upstream, clock=clock),
                            upstream)
        relay = Relay(
            authenticator=authn, resolver=resolver, upstream=upstream, events=events, clock=clock,
            limiter=RateLimiter(make_storage(settings.redis_url), caller_limit=settings.caller_rate_limit_per_minute),
            connectors={n: ConnectorFacts(c.kind, c.default_base_url, c.auth) for n, c in catalog.items()},
            max_body_bytes=settings.max_body_bytes, workspace_cap=settings.workspace_max_concurrency, oauth=oauth,
        )
        page_key = await SqlMetaStore(engine).put_if_absent(
            "page_token_key", base64.b64encode(secrets.token_bytes(32)).decode())
        entity_cache = EntityCache(clock)
        connector_service = ConnectorService(relay=relay, catalog=catalog, cache=entity_cache,
                                             tokens=PageTokens(base64.b64decode(page_key)))

        def source_changed(source_id: str) -> None:
            resolver.forget(source_id)
            entity_cache.forget_source(source_id)

        sources.on_change = source_changed
        workspaces.on_change = lambda: source_changed("*")
        stores = StoreFactory(allow=settings.allow_networks, local_roots=settings.local_root_paths)
        mcp_door = mcp.McpDoor(McpDeps(relay=relay, authenticator=authn, sources=sources, connectors=connector_service,
                                       catalog=catalog, stores=stores, max_range_bytes=settings.max_range_bytes),
                               settings)
        services = Services(settings=settings, authenticator=authn, access=access,
                            workspaces=workspaces, sources=sources,
                            catalog=catalog, logs=log_store, vault=vault, ready=ready, connectors=connector_service,
                            extras={})
        stop = asyncio.Event()
        # not a TaskGroup: it would wrap an error raised in the caller's block in an ExceptionGroup
        background = [asyncio.create_task(events.run(stop))]
        if settings.redis_url:
            background.append(asyncio.create_task(RedisFeed(events, settings.redis_url).run(stop)))
        try:
            async with mcp_door.running():  # the MCP SDK's task group lives as long as the runtime
                yield Runtime(services, metrics, events, bootstrap, hot_path(relay, settings, stores, mcp_door))
        except BaseExceptionGroup as group:  # that task group wraps errors raised in the caller's block:
            raise sole_error(group) from None  # hand them back as themselves
        finally:
            stop.set()
            try:
                await asyncio.gather(*background)
            finally:
                await upstream.close()
    finally:
        await engine.dispose()


def hot_path(relay: Relay, settings: Settings, stores: StoreFactory, mcp_door: mcp.McpDoor) -> HotPath:
    """The plain-ASGI doors, dispatched before FastAPI: answers True when one of them took the request.
    The gateway adds X-Request-Id to its own responses; the others get a `send` that adds it."""
    gateway_door = gateway.GatewayDoor(relay)
    sonar_door = sonar.SonarDoor(relay, max_body_bytes=settings.max_body_bytes)
    files_door = files.FilesDoor(relay, stores, max_range_bytes=settings.max_range_bytes)

    async def dispatch(scope: AsgiScope, receive: Receive, send: Send, request_id: str) -> bool:
        raw = scope.get("raw_path") or scope["path"].encode()
        if gateway.is_gateway(raw):
            await gateway_door(scope, receive, send)
            return True
        path = scope["path"]
        door: Callable[[AsgiScope, Receive, Send], Awaitable[None]]
        if files.is_files(path):  # before sonar: both live under /api/v1/sonar/
            door = files_door
        elif sonar.is_sonar(path):
            door = sonar_door
        elif mcp.is_mcp(path):
            door = mcp_door
        else:
            return False
        await door(scope, receive, with_request_id(send, request_id))
        return True

    return dispatch


def build_api() -> FastAPI:
    api = FastAPI(title="keyrelay", version="0.1.0", docs_url="/docs", redoc_url=None,
                  description="Self-hosted credential gateway for AI agents. See docs/ in the repository.")
    for router in (access.router, admin.router, connectors.router, airbyte.router, observe.router):
        api.include_router(router)

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

    return api


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """Name the offending field; never echo the submitted value (it may be a secret)."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequest("Malformed JSON body", field="body")
    field = ".".join(loc) or "body"
    return InvalidRequest(f"Invalid {field}: {first.get('msg', 'invalid value')}", field=field)


class KeyrelayApp:
    """The ASGI application: request ids, framing limits, hot-path dispatch, then FastAPI."""

    def __init__(self, settings: Settings, *, on_bootstrap: Callable[[NewApplication], None] | None = None):
        self.settings = settings
        self.api = build_api()
        self.runtime: Runtime | None = None
        self._on_bootstrap = on_bootstrap

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        try:
            self._check_framing(scope)
            rt = self.runtime
            if rt is None:
                raise Unavailable("keyrelay is starting")
            if await rt.hot_path(scope, receive, send, request_id):
                return
            await self._api_call(scope, receive, with_request_id(send, request_id))
        except KeyrelayError as err:
            await _send_error(with_request_id(send, request_id), err, request_id)

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
        if body:
            _json_content_type(scope)
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
            async with runtime(self.settings) as rt:
                self.runtime = rt
                self.api.state.services = rt.services
                self.api.state.metrics = rt.metrics
                self.api.state.events = rt.events
                if rt.bootstrap is not None:
                    (self._on_bootstrap or _log_bootstrap)(rt.bootstrap)
                # Everything built so far lives as long as the process: keep it out of the cyclic GC's full
                # collections, which otherwise walk the whole (large) startup heap while requests wait.
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.runtime = None
        except Exception as exc:
            log.error("keyrelay failed to start: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": "keyrelay failed to start"})
            return
        await send({"type": "lifespan.shutdown.complete"})


def _request_id(scope: AsgiScope) -> str:
    for k, v in scope["headers"]:
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




async def _send_error(send: Send, err: KeyrelayError, request_id: str) -> None:
    body = dumps(err.body(request_id))
    headers = [*error_headers(err), (b"content-length", str(len(body)).encode())]
    if err.status in (413, 431, 414):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _log_bootstrap(app: NewApplication) -> None:
    log.warning("created bootstrap application client_id=%s (secret shown once by `keyrelay init`/`serve`)",
                app.client_id)


def create_app(settings: Settings | None = None, **kwargs: Any) -> KeyrelayApp:
    return KeyrelayApp(settings or Settings(), **kwargs)

