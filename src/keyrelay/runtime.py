"""The wiring: `runtime(settings)` builds the adapters (database, vault, request log), the pipeline and the
services once per process, and tears them down (flushing the request log) on exit. `app.py` routes requests to
the doors built on top of it; the CLI runs admin operations against it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.approval_webhook import SignedWebhook
from keyrelay.connectors.cache import EntityCache
from keyrelay.connectors.execute import ConnectorService
from keyrelay.connectors.pagetoken import PageTokens
from keyrelay.connectors.spec import load_catalog
from keyrelay.doors.mcp import McpDoor
from keyrelay.doors.mcp.tools import Deps as McpDeps
from keyrelay.egress.destination import BaseUrl
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import InvalidRequest, Sealed, Unavailable
from keyrelay.files.service import FileService
from keyrelay.files.stores import StoreFactory
from keyrelay.http.asgi import sole_error
from keyrelay.http.services import Services
from keyrelay.manage.access import AccessService, NewApplication
from keyrelay.manage.approvals import ApprovalService
from keyrelay.manage.connect import ConnectService, ConnectSession, parse_allowlist
from keyrelay.manage.connections import ConnectFlow, connection_data
from keyrelay.manage.console import ConsoleService, SignInLimiter
from keyrelay.manage.destinations import Destinations
from keyrelay.manage.oauth_clients import OAuthClientService
from keyrelay.manage.sources import SourceService
from keyrelay.manage.traffic import TrafficService
from keyrelay.manage.webhooks import WebhookService, iso
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.guard import ConstraintGuard
from keyrelay.pipeline.oauth.tokens import OAuthSender, OAuthTokens
from keyrelay.pipeline.park import ApprovalGate, Limits, Links
from keyrelay.pipeline.ratelimit import RateLimiter, make_storage
from keyrelay.pipeline.relay import ConnectorFacts, Relay
from keyrelay.pipeline.resolve import SourceResolver
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.ports import Clock, DestinationOf
from keyrelay.requestlog import Metrics, RedisFeed, RequestLog, TableFeed
from keyrelay.settings import Settings
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.approvals import SqlApprovalStore
from keyrelay.store.budgets import BudgetLeases, SqlBudgetStore
from keyrelay.store.connect import SqlConnectStore
from keyrelay.store.console import SqlConsoleStore
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.meta import SqlMetaStore
from keyrelay.store.oauth_clients import SqlOAuthClientStore
from keyrelay.store.oauth_state import SqlOAuthStateStore
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.traffic import SqlTrafficStore
from keyrelay.store.webhooks import SqlWebhookStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, create_key_file, parse_master_key, read_key_file
from keyrelay.web.csrf import Csrf

log = logging.getLogger("keyrelay")
BINDING_MARKER = "credential_binding"  # set once every ciphertext of the older binding was re-sealed


@dataclass
class Runtime:
    """Everything built once per process."""

    services: Services
    metrics: Metrics
    request_log: RequestLog
    bootstrap: NewApplication | None
    relay: Relay
    files: FileService
    mcp: McpDoor
    approvals: ApprovalService


def load_master_key(settings: Settings) -> bytes | None:
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    return read_key_file(settings.key_file)


async def open_vault(settings: Settings, engine: AsyncEngine, meta: SqlMetaStore,
                     destination_of: DestinationOf, clock: Clock) -> KeyVault:
    """Load the key ring (sealed when the master key is missing or wrong; a key file is created only for an empty
    database), then, once per database, re-seal ciphertexts of the older binding to their destination (vault.py)."""
    keyring = SqlKeyRingStore(engine)
    master = load_master_key(settings)
    if master is None and not await keyring.keys():
        master = create_key_file(settings.key_file)  # first start: nothing to protect yet
    vault = KeyVault(keyring, master, clock=clock)
    await vault.load(may_create=True)
    if vault.sealed:
        log.error("keyrelay is SEALED (%s): credential-using requests answer 503", vault.sealed_reason)
        return vault
    if await meta.get(BINDING_MARKER) is None:
        done = await vault.rebind_legacy(destination_of)
        if done.reencrypted:
            log.warning("bound %d stored credential field(s) to their source's destination", done.reencrypted)
        if done.unreadable:
            log.error("%d stored credential field(s) did not decrypt and stay unusable; store those sources' "
                      "credentials again", done.unreadable)
        await meta.put_if_absent(BINDING_MARKER, "destination")
    return vault


def _allowlist(text: str) -> tuple[BaseUrl, ...]:
    try:
        return parse_allowlist(text)
    except InvalidRequest as err:
        raise ValueError(f"KEYRELAY_CONNECT_REDIRECT_ALLOWLIST: {err.message}") from None


def _connect_events(webhooks: WebhookService, connect: ConnectService, sources: SourceService,
                    tokens: OAuthTokens) -> None:
    """The events Connect's webhooks carry that other services notice (docs/connect.md)."""

    def expired(s: ConnectSession) -> None:
        webhooks.emit("connect_session.expired", {"connect_session_id": s.id, "workspace_id": s.workspace_id,
                                                  "source_id": s.source_id, "expired_at": iso(s.expires_at)})

    connect.on_expired = expired
    sources.on_deleted = lambda src: webhooks.emit("connection.deleted", connection_data(src))
    tokens.on_needs_reauth = lambda src: webhooks.emit(
        "connection.needs_reauth", {**connection_data(src), "status": "needs_reauth"})


def approval_gate(settings: Settings, *, engine: AsyncEngine, vault: KeyVault, request_log: RequestLog,
                  hasher: TokenHasher, upstream: UpstreamClient, clock: Clock) -> tuple[ApprovalGate,
                                                                                        SignedWebhook | None]:
    """The park step's gate (docs/approvals.md) and, when one is configured, the webhook that announces approvals."""
    events = None
    if settings.approval_webhook_url is not None and settings.approval_webhook_secret is not None:
        events = SignedWebhook(url=settings.approval_webhook_url, upstream=upstream, clock=clock,
                               secret=settings.approval_webhook_secret.get_secret_value())
    limits = Limits(max_body_bytes=settings.approval_max_body_bytes,
                    max_response_bytes=settings.approval_max_response_bytes,
                    max_wait_seconds=settings.approval_max_wait_seconds, max_pending=settings.approval_max_pending,
                    result_ttl_seconds=settings.approval_result_ttl_seconds)
    links = Links(base=(settings.public_url or "").rstrip("/"), page=settings.approval_page_url)
    gate = ApprovalGate(store=SqlApprovalStore(engine), cipher=vault, sink=request_log, clock=clock, hasher=hasher,
                        events=events, limits=limits, links=links)
    return gate, events


def live_log_feed(settings: Settings, request_log: RequestLog,
                  store: SqlRequestLogStore) -> RedisFeed | TableFeed | None:
    """What brings other processes' request-log events to this one's live-log listeners: Redis across instances,
    the request-log table across the workers of one server on the embedded database, else nothing to bring."""
    if settings.redis_url:
        return RedisFeed(request_log, settings.redis_url)
    if settings.workers > 1:
        return TableFeed(request_log, store)
    return None


class Background:
    """The runtime's background loops. One that ends while the runtime still serves is logged at once and fails
    readiness (`/readyz`), instead of being noticed only when the process stops."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.tasks: list[asyncio.Task[None]] = []
        self.stopped: list[str] = []

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"keyrelay {name}")
        task.add_done_callback(lambda t: self._ended(name, t))
        self.tasks.append(task)

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._stop.is_set():
            return
        self.stopped.append(name)
        exc = None if task.cancelled() else task.exception()
        log.error("background task %s stopped while serving: %s", name,
                  "cancelled" if task.cancelled() else type(exc).__name__ if exc is not None else "returned")


@contextlib.asynccontextmanager
async def runtime(settings: Settings, *, clock: Clock = time.time) -> AsyncIterator[Runtime]:
    """Build every adapter and service; tear them down (flushing the request log) on exit. `clock` (wall-clock
    seconds) is for tests that must not depend on the time of day, e.g. a rate-limit window boundary."""
    if settings.is_sqlite or settings.master_key is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    catalog = load_catalog()  # fail before touching any data if a definition is broken
    engine = make_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
        meta = SqlMetaStore(engine)
        destination_of = Destinations(catalog)
        vault = await open_vault(settings, engine, meta, destination_of, clock)
        hmac_key = await meta.put_if_absent("token_hmac_key", base64.b64encode(secrets.token_bytes(32)).decode())
        access_store, workspace_store = SqlAccessStore(engine), SqlWorkspaceStore(engine)
        hasher = TokenHasher(base64.b64decode(hmac_key))
        authn = Authenticator(access_store, hasher, clock, cache_seconds=settings.token_cache_seconds)
        access = AccessService(auth=access_store, workspaces=workspace_store, hasher=hasher, authenticator=authn,
                               clock=clock)
        secret = settings.admin_client_secret.get_secret_value() if settings.admin_client_secret else None
        bootstrap = await access.ensure_bootstrap(settings.admin_client_id, secret)
        workspaces = WorkspaceService(store=workspace_store, clock=clock)
        sources = SourceService(sources=SqlSourceStore(engine), workspaces=workspaces, vault=vault, catalog=catalog,
                                clock=clock, allow=settings.allow_networks)
        sources.local_roots = tuple(p.resolve() for p in settings.local_root_paths)
        log_store = SqlRequestLogStore(engine)
        metrics = Metrics()
        request_log = RequestLog(log_store, metrics, clock=clock, flush_seconds=settings.log_flush_seconds,
                                 retention_days=settings.log_retention_days)

        stop = asyncio.Event()
        loops = Background(stop)

        async def ready() -> None:
            if loops.stopped:
                raise Unavailable(f"A background task stopped: {loops.stopped[0]}")
            try:
                await log_store.ping()
            except Exception:
                raise Unavailable("Database unreachable") from None
            if vault.sealed:
                raise Sealed("The vault is sealed: the master key is missing or wrong")
            if not request_log.healthy:
                raise Unavailable("Request log cannot be written")

        resolver = SourceResolver(SqlSourceStore(engine), vault, clock, cache_seconds=settings.source_cache_seconds,
                                  destination_of=destination_of)
        upstream = UpstreamClient(allow=settings.allow_networks, max_connections=settings.upstream_max_connections)
        oauth_state = SqlOAuthStateStore(engine)
        oauth_tokens = OAuthTokens(store=oauth_state, vault=vault, upstream=upstream, clock=clock,
                                   destination_of=destination_of)
        oauth = OAuthSender(oauth_tokens, upstream)
        gate, approval_events = approval_gate(settings, engine=engine, vault=vault, request_log=request_log,
                                              hasher=hasher, upstream=upstream, clock=clock)
        budgets = BudgetLeases(SqlBudgetStore(engine), clock)
        relay = Relay(
            authenticator=authn, resolver=resolver, upstream=upstream, log=request_log, clock=clock,
            limiter=RateLimiter(make_storage(settings.redis_url, clock=clock, shared=settings.shared_windows_path),
                                caller_limit=settings.caller_rate_limit_per_minute),
            connectors={n: ConnectorFacts(c.kind, c.default_base_url, c.auth, c.is_catalog_api)
                        for n, c in catalog.items()},
            max_body_bytes=settings.max_body_bytes, workspace_cap=settings.workspace_max_concurrency, oauth=oauth,
            guard=ConstraintGuard(budgets, clock),
            approvals=gate,
        )
        page_key = await meta.put_if_absent("page_token_key", base64.b64encode(secrets.token_bytes(32)).decode())
        entity_cache = EntityCache(clock)
        connector_service = ConnectorService(relay=relay, catalog=catalog, cache=entity_cache,
                                             tokens=PageTokens(base64.b64decode(page_key)))

        def source_changed(source_id: str) -> None:
            resolver.forget(source_id)
            entity_cache.forget_source(source_id)

        def workspace_deleted() -> None:  # its sources, API keys and scoped tokens went with it
            source_changed("*")
            authn.forget_all()

        approvals = ApprovalService(gate=gate, relay=relay, connectors=connector_service, hasher=hasher, clock=clock,
                                    retention_seconds=settings.log_retention_days * 86_400.0)
        sources.on_change = source_changed
        workspaces.on_change = workspace_deleted
        stores = StoreFactory(allow=settings.allow_networks, local_roots=settings.local_root_paths)
        files = FileService(relay, stores, max_range_bytes=settings.max_range_bytes)
        mcp_door = McpDoor(McpDeps(relay=relay, authenticator=authn, sources=sources, connectors=connector_service,
                                   catalog=catalog, files=files, approvals=approvals), settings)
        webhooks = WebhookService(store=SqlWebhookStore(engine), vault=vault, upstream=upstream, clock=clock,
                                  allow=settings.allow_networks, retry_base_seconds=settings.webhook_retry_seconds,
                                  poll_seconds=min(5.0, settings.webhook_retry_seconds))
        connect = ConnectService(store=SqlConnectStore(engine), workspaces=workspaces, sources=sources, catalog=catalog,
                                 hasher=hasher, clock=clock, allow=settings.allow_networks,
                                 redirect_allowlist=_allowlist(settings.connect_redirect_allowlist))
        clients = OAuthClientService(store=SqlOAuthClientStore(engine), vault=vault, catalog=catalog, clock=clock,
                                     allow=settings.allow_networks)
        flow = ConnectFlow(sessions=connect, sources=sources, clients=clients, catalog=catalog, relay=relay,
                           upstream=upstream, oauth_state=oauth_state, vault=vault, hasher=hasher, webhooks=webhooks,
                           clock=clock)
        _connect_events(webhooks, connect, sources, oauth_tokens)
        csrf_key = await meta.put_if_absent("connect_csrf_key", base64.b64encode(secrets.token_bytes(32)).decode())
        extras = {"connect": connect, "connect_flow": flow, "oauth_clients": clients, "webhooks": webhooks,
                  "connect_csrf": Csrf(base64.b64decode(csrf_key)), "approvals": approvals}
        console_key = await meta.put_if_absent("console_csrf_key", base64.b64encode(secrets.token_bytes(32)).decode())
        console = ConsoleService(
            store=SqlConsoleStore(engine), access=access_store, hasher=hasher, vault=vault, clock=clock,
            limiter=SignInLimiter(make_storage(settings.redis_url, clock=clock, shared=settings.shared_windows_path)),
            idle_seconds=settings.console_idle_seconds, lifetime_seconds=settings.console_session_seconds,
            link_seconds=settings.console_link_seconds, sign_in_per_minute=settings.console_sign_in_per_minute)
        extras |= {"console": console, "console_csrf": Csrf(base64.b64decode(console_key)),  # doors/console/
                   "traffic": TrafficService(SqlTrafficStore(engine), clock)}
        services = Services(settings=settings, authenticator=authn, access=access, workspaces=workspaces,
                            sources=sources, catalog=catalog, logs=log_store, vault=vault, ready=ready,
                            connectors=connector_service, extras=extras)
        # not a TaskGroup: it would wrap an error raised in the caller's block in an ExceptionGroup
        loops.start("request log", request_log.run(stop))
        loops.start("webhooks", webhooks.run(stop, tick=connect.expire_due))
        loops.start("approvals", approvals.run(stop))
        loops.start("budgets", budgets.run(stop))
        if approval_events is not None:
            loops.start("approval events", approval_events.run(stop))
        feed = live_log_feed(settings, request_log, log_store)
        if feed is not None:
            loops.start("live log feed", feed.run(stop))
        try:
            async with mcp_door.running():  # the MCP SDK (loaded on first use) stops with the runtime
                yield Runtime(services, metrics, request_log, bootstrap, relay, files, mcp_door, approvals)
        except BaseExceptionGroup as group:  # that task group wraps errors raised in the caller's block:
            raise sole_error(group) from None  # hand them back as themselves
        finally:
            stop.set()
            try:
                await asyncio.gather(*loops.tasks)
            finally:
                await upstream.close()
    finally:
        await engine.dispose()
