"""Connect's services assembled in-process on the real stores, vault and catalog, with a clock the test moves.

    async with assembled(tmp_path) as p:
        made = await p.connect.create(ADMIN, {"workspace": "acme"})
        p.clock.now += 3600

For journeys over HTTP, `connect_page(...)` drives a connect page with httpx the way a browser without
JavaScript does (it follows the form, posts the CSRF token, keeps cookies).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.connectors.spec import ConnectorSpec, load_catalog
from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.manage.connect import ConnectService, parse_allowlist
from keyrelay.manage.sources import SourceService
from keyrelay.manage.webhooks import WebhookService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.model import ALL_SCOPES, Caller, CallerKind
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.connect import SqlConnectStore
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.webhooks import SqlWebhookStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, new_key
from support.db import migrated_engine

ADMIN = Caller(kind=CallerKind.APPLICATION, id="app:test", workspace_id=None, scopes=ALL_SCOPES)
LOOPBACK = parse_cidrs("127.0.0.0/8")


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Parts:
    engine: AsyncEngine
    clock: Clock
    vault: KeyVault
    catalog: dict[str, ConnectorSpec]
    hasher: TokenHasher
    workspaces: WorkspaceService
    sources: SourceService
    connect: ConnectService
    store: SqlConnectStore
    upstream: UpstreamClient

    def webhooks(self, **kw: Any) -> WebhookService:
        return WebhookService(store=SqlWebhookStore(self.engine), vault=self.vault, upstream=self.upstream,
                              clock=self.clock, allow=LOOPBACK, **kw)


@contextlib.asynccontextmanager
async def assembled(tmp_path: Path, *, allowlist: str = "https://app.example.com/back",
                    database_url: str | None = None) -> AsyncIterator[Parts]:
    async with migrated_engine(database_url, tmp_path) as engine:
        clock = Clock()
        vault = KeyVault(SqlKeyRingStore(engine), new_key(), clock=clock)
        await vault.load(may_create=True)
        catalog = load_catalog()
        workspaces = WorkspaceService(store=SqlWorkspaceStore(engine), clock=clock)
        sources = SourceService(sources=SqlSourceStore(engine), workspaces=workspaces, vault=vault, catalog=catalog,
                                clock=clock, allow=LOOPBACK)
        hasher = TokenHasher(b"k" * 32)
        store = SqlConnectStore(engine)
        connect = ConnectService(store=store, workspaces=workspaces, sources=sources, catalog=catalog, hasher=hasher,
                                 clock=clock, redirect_allowlist=parse_allowlist(allowlist), allow=LOOPBACK)
        upstream = UpstreamClient(allow=LOOPBACK, max_connections=20)
        try:
            yield Parts(engine, clock, vault, catalog, hasher, workspaces, sources, connect, store, upstream)
        finally:
            await upstream.close()


# --- over HTTP ------------------------------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def browserless(base_url: str) -> httpx.Client:
    """A client like a browser with JavaScript off: cookies kept, redirects followed by hand."""
    return httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)


def form_page(client: httpx.Client, token: str, connector: str) -> httpx.Response:
    r = client.get(f"/connect/{token}/{connector}")
    assert r.status_code == 200, r.text
    return r


def submit_key(client: httpx.Client, token: str, connector: str, fields: dict[str, str]) -> httpx.Response:
    csrf = csrf_of(form_page(client, token, connector).text)
    return client.post(f"/connect/{token}/{connector}", data={"csrf": csrf, **fields})


def sign_in(client: httpx.Client, token: str, connector: str, fields: dict[str, str] | None = None) -> httpx.Response:
    """Post the sign-in form and follow the provider's redirects (an auto-approving provider) back to keyrelay;
    returns keyrelay's answer to the callback."""
    csrf = csrf_of(form_page(client, token, connector).text)
    r = client.post(f"/connect/{token}/{connector}/oauth", data={"csrf": csrf, **(fields or {})})
    assert r.status_code == 303, r.text
    r = httpx.get(r.headers["location"], follow_redirects=False, timeout=30)  # at the provider
    assert r.status_code == 302, r.text
    return client.get(r.headers["location"])  # back at keyrelay, with this browser's cookies
