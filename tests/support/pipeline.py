"""The pipeline assembled from its real parts, in the test's own event loop, for tests whose unit is the pipeline
(or a service built on it): SQLite in tmp_path, the real vault, stores, authenticator, resolver, rate limiter and
upstream client. Only the request log is an in-memory sink and the clock a hand-moved one, so a test can count
log entries exactly and move time without sleeping.

    async with assembled(tmp_path) as p:
        src = await p.source(upstream.url)
        relayed = await p.relay.relay(p.inbound(src, "/echo"))
        [entry] = p.log.entries
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.connectors.spec import ConnectorSpec, load_catalog
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.manage.access import AccessService
from keyrelay.manage.destinations import Destinations
from keyrelay.manage.sources import SourceService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.model import (
    ALL_SCOPES,
    DATA_SCOPES,
    BySlug,
    Caller,
    CallerKind,
    Door,
    Inbound,
    LogEntry,
    Scope,
    Source,
    Tail,
)
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.ratelimit import LocalWindows, RateLimiter
from keyrelay.pipeline.relay import ConnectorFacts, Relay
from keyrelay.pipeline.resolve import SourceResolver
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, new_key

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ADMIN = Caller(kind=CallerKind.APPLICATION, id="app:test", workspace_id=None, scopes=ALL_SCOPES)


class ManualClock:
    """Wall-clock seconds that move only when the test moves them (starts at the start of a minute)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class MemoryLog:
    """A LogSink that keeps every entry; `healthy` can be switched off to test failing closed."""

    entries: list[LogEntry] = field(default_factory=list)
    healthy: bool = True

    def emit(self, event: LogEntry) -> None:
        self.entries.append(event)


@dataclass
class Pipeline:
    engine: AsyncEngine
    clock: ManualClock
    log: MemoryLog
    relay: Relay
    upstream: UpstreamClient
    access: AccessService
    authenticator: Authenticator
    workspaces: WorkspaceService
    sources: SourceService
    resolver: SourceResolver
    vault: KeyVault
    catalog: Mapping[str, ConnectorSpec]
    workspace_id: str
    key: str  # an API key of the workspace with every scope

    @property
    def auth(self) -> str:
        return f"Bearer {self.key}"

    async def source(self, upstream_url: str, *, slug: str = "echo", connector: str = "http",
                     credentials: dict[str, Any] | None = None, policy: dict[str, Any] | None = None,
                     config: dict[str, Any] | None = None) -> Source:
        body: dict[str, Any] = {"workspace_id": self.workspace_id, "connector": connector, "name": slug,
                                "slug": slug, "config": config or {"upstream_url": upstream_url},
                                "credentials": credentials or {}}
        if policy is not None:
            body["policy"] = policy
        return await self.sources.create_source(ADMIN, body)

    async def api_key(self, scopes: frozenset[Scope]) -> str:
        _, secret = await self.access.create_api_key(workspace_id=self.workspace_id, scopes=scopes, name="t",
                                                     expires_at=None)
        return secret

    def inbound(self, source: Source, tail: str = "/echo", *, method: str = "GET", query: str = "",
                authorization: str | None = None, scope: Scope = Scope.PROXY, body: Any = None,
                content_length: int | None = None, door: Door = Door.GATEWAY) -> Inbound:
        return Inbound(door=door, method=method, path=f"/api/{source.workspace_id}/proxy/{source.slug}{tail}",
                       authorization=self.auth if authorization is None else authorization,
                       source=BySlug(source.workspace_id, source.slug), scope=scope,
                       target=Tail(tail.lstrip("/"), query), body=body, content_length=content_length)


@functools.cache
def shared_catalog() -> Mapping[str, ConnectorSpec]:
    """The connector catalog, loaded once per run (loading and checking it takes over a second)."""
    return load_catalog()


@contextlib.asynccontextmanager
async def assembled(tmp_path: Path, *, workspace_cap: int = 64, max_body_bytes: int = 1024 * 1024,
                    caller_limit: int | None = None, database_url: str | None = None) -> AsyncIterator[Pipeline]:
    clock = ManualClock()
    engine = make_engine(database_url or f"sqlite+aiosqlite:///{tmp_path / 'pipeline.db'}")
    upstream = UpstreamClient(allow=LOOPBACK, max_connections=32)
    try:
        await upgrade(engine)
        vault = KeyVault(SqlKeyRingStore(engine), new_key(), clock=clock)
        await vault.load(may_create=True)
        access_store, workspace_store = SqlAccessStore(engine), SqlWorkspaceStore(engine)
        hasher = TokenHasher(b"k" * 32)
        authn = Authenticator(access_store, hasher, clock, cache_seconds=0)
        access = AccessService(auth=access_store, workspaces=workspace_store, hasher=hasher, authenticator=authn,
                               clock=clock)
        workspaces = WorkspaceService(store=workspace_store, clock=clock)
        catalog = shared_catalog()
        sources = SourceService(sources=SqlSourceStore(engine), workspaces=workspaces, vault=vault,
                                catalog=catalog, clock=clock, allow=LOOPBACK)
        resolver = SourceResolver(SqlSourceStore(engine), vault, clock, cache_seconds=0,
                                  destination_of=Destinations(catalog))
        sources.on_change = resolver.forget
        log = MemoryLog()
        relay = Relay(
            authenticator=authn, resolver=resolver, upstream=upstream, log=log, clock=clock,
            limiter=RateLimiter(LocalWindows(clock), caller_limit=caller_limit),
            connectors={n: ConnectorFacts(c.kind, c.default_base_url, c.auth, c.is_catalog_api)
                        for n, c in catalog.items()},
            max_body_bytes=max_body_bytes, workspace_cap=workspace_cap,
        )
        ws = await workspaces.create("pipeline")
        _, key = await access.create_api_key(workspace_id=ws.id, scopes=DATA_SCOPES, name="all", expires_at=None)
        yield Pipeline(engine=engine, clock=clock, log=log, relay=relay, upstream=upstream, access=access,
                       authenticator=authn, workspaces=workspaces, sources=sources, resolver=resolver, vault=vault,
                       catalog=catalog, workspace_id=ws.id, key=key)
    finally:
        await upstream.close()
        await engine.dispose()



def hammer_shared_windows(path: str, n: int, limit: int, start: Any, out: Any) -> None:
    """A worker process's part of a shared rate-limit test: `n` hits on one key at one instant, begun together
    with the other processes (`start`, a barrier); puts how many passed."""
    from keyrelay.pipeline.ratelimit import SharedWindows

    windows = SharedWindows(Path(path), lambda: 1_800_000_030.0)
    start.wait(60)
    out.put(sum(windows.hit("source/shared", limit) == 0 for _ in range(n)))
