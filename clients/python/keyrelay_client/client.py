"""`Keyrelay` and `AsyncKeyrelay`: one client per keyrelay server and credential.

    kr = Keyrelay("http://127.0.0.1:8080", client_id=..., client_secret=...)   # application (admin) client
    agent = Keyrelay(api_key="kr_...")                                          # URL from KEYRELAY_URL

Both take the base URL and one credential (see `keyrelay_client.config` for the environment variables), and:

* `timeout`: seconds, or an `httpx.Timeout`, for every call (default 30 s, 10 s to connect);
* `retry`: a `RetryPolicy` (default: 3 attempts, jittered exponential backoff, `Retry-After` honoured);
* `sleep` and `clock`: what waits between retries and what times token renewal (tests pass fakes);
* `transport`: an httpx transport, e.g. to route through a proxy.

They own an httpx connection pool: use them as context managers, or call `close()` / `aclose()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from keyrelay_client.admin import (
    ApiKeyOps,
    ApiKeys,
    ApplicationOps,
    Applications,
    AsyncApiKeys,
    AsyncApplications,
    AsyncConnectors,
    AsyncConnectSessions,
    AsyncSources,
    AsyncWorkspaces,
    ConnectorOps,
    Connectors,
    ConnectSessionOps,
    ConnectSessions,
    SourceOps,
    Sources,
    WorkspaceOps,
    WorkspaceRef,
    Workspaces,
    own_workspace_id,
)
from keyrelay_client.auth import ApplicationAuth, BearerAuth
from keyrelay_client.config import ClientCredentials, Config, resolve
from keyrelay_client.connector import AsyncConnector, Connector, bind
from keyrelay_client.doors import DoorOps, gateway_url
from keyrelay_client.files import AsyncFiles, FileOps, Files
from keyrelay_client.logs import AsyncLogs, LogOps, Logs
from keyrelay_client.retry import RetryPolicy
from keyrelay_client.runner import AsyncRunner, SyncRunner
from keyrelay_client.surface import AsyncResource, SyncResource, apaged, awaiting, blocking, paged

__version__ = "0.1.0"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = f"keyrelay-client/{__version__}"
APPLICATION_TOKEN_PREFIX = "kra_"  # noqa: S105 - a prefix, not a token


def make_auth(config: Config, clock: Callable[[], float]) -> httpx.Auth:
    cred = config.credential
    if isinstance(cred, ClientCredentials):
        return ApplicationAuth(config.base_url, cred.client_id, cred.client_secret, clock=clock)
    return BearerAuth(cred.value)


class _Configured:
    """What both clients share: the resolved configuration, the auth, the timeout, and how they show."""

    def _configure(self, config: Config, timeout: float | httpx.Timeout, clock: Callable[[], float]) -> None:
        self._config = config
        self.base_url = config.base_url
        self._auth = make_auth(config, clock)
        self._timeout = httpx.Timeout(timeout)
        cred = config.credential  # only an application token may hold admin; API keys and krw_/krc_ tokens never do
        self._admin = isinstance(cred, ClientCredentials) or cred.value.startswith(APPLICATION_TOKEN_PREFIX)

    def _gateway(self, wid: str, slug: str, client_options: Mapping[str, Any]) -> dict[str, Any]:
        """Options for the gateway client of `Keyrelay.http` / `AsyncKeyrelay.http`."""
        if {"base_url", "auth"} & set(client_options):
            raise TypeError("http() sets base_url and auth itself")
        return {"timeout": self._timeout, "headers": {"User-Agent": USER_AGENT}, **client_options,
                "base_url": gateway_url(self.base_url, wid, slug), "auth": self._auth}

    def __repr__(self) -> str:
        cred = self._config.credential
        shown = f"client_id={cred.client_id!r}" if isinstance(cred, ClientCredentials) else f"{cred.kind}=<hidden>"
        return f"{type(self).__name__}({str(self.base_url)!r}, {shown})"


class Keyrelay(_Configured, SyncResource):
    """The synchronous client. Thread-safe: one instance may serve many threads."""

    def __init__(self, base_url: str | None = None, *, client_id: str | None = None,
                 client_secret: str | None = None, api_key: str | None = None, token: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None, env: Mapping[str, str] | None = None) -> None:
        self._configure(resolve(base_url, client_id=client_id, client_secret=client_secret, api_key=api_key,
                                token=token, env=env), timeout, clock)
        self._http = httpx.Client(base_url=self.base_url, auth=self._auth, timeout=self._timeout,
                                  transport=transport, headers={"User-Agent": USER_AGENT})
        runner = SyncRunner(self._http, retry or RetryPolicy(), sleep)
        super().__init__(runner, DoorOps())
        self.workspaces = Workspaces(runner, WorkspaceOps())
        self.sources = Sources(runner, SourceOps())
        self.api_keys = ApiKeys(runner, ApiKeyOps())
        self.applications = Applications(runner, ApplicationOps())
        self.connect_sessions = ConnectSessions(runner, ConnectSessionOps())
        self.connectors = Connectors(runner, ConnectorOps())
        self.files = Files(runner, FileOps())
        self.logs = Logs(runner, LogOps())

    request = blocking(DoorOps.request)
    execute = blocking(DoorOps.execute)
    query = paged(DoorOps.query)

    def http(self, workspace: WorkspaceRef, slug: str, **client_options: Any) -> httpx.Client:
        """An `httpx.Client` on the gateway route of source `slug` in `workspace` (an id, a `Workspace`, or a name:
        looking a name up needs an application holding `admin`; other credentials pass the id).

        Its base URL is `{base_url}/api/{workspace_id}/proxy/{slug}/` and it sends this client's keyrelay token
        (renewed like every other call), so any httpx-based SDK works through keyrelay::

            gw = kr.http("acme", "openai")
            client = openai.OpenAI(base_url=str(gw.base_url), api_key="unused", http_client=gw)

        keyrelay replaces the SDK's own `Authorization` with the stored credential. The caller owns the returned
        client (close it, or use it as a context manager). `client_options` go to `httpx.Client`.
        """
        return httpx.Client(**self._gateway(self._runner.run(own_workspace_id(workspace)), slug, client_options))

    def connector(self, name: str, *, workspace: WorkspaceRef, source: str | None = None) -> Connector:
        """A facade over the workspace's `name` source (pass `source=` an id, slug or name when there are several):
        `kr.connector("stripe", workspace="acme").customers.list(limit=10)`. An API key or token needs the
        `execute` scope, and finds sources by id or name (not slug)."""
        return Connector(self._runner, self._runner.run(bind(name, workspace, source, admin=self._admin)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncKeyrelay(_Configured, AsyncResource):
    """The asyncio client: the same methods as `Keyrelay`, awaited (listings are `async for` iterators)."""

    def __init__(self, base_url: str | None = None, *, client_id: str | None = None,
                 client_secret: str | None = None, api_key: str | None = None, token: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.AsyncBaseTransport | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._configure(resolve(base_url, client_id=client_id, client_secret=client_secret, api_key=api_key,
                                token=token, env=env), timeout, clock)
        self._http = httpx.AsyncClient(base_url=self.base_url, auth=self._auth, timeout=self._timeout,
                                       transport=transport, headers={"User-Agent": USER_AGENT})
        runner = AsyncRunner(self._http, retry or RetryPolicy(), sleep)
        super().__init__(runner, DoorOps())
        self.workspaces = AsyncWorkspaces(runner, WorkspaceOps())
        self.sources = AsyncSources(runner, SourceOps())
        self.api_keys = AsyncApiKeys(runner, ApiKeyOps())
        self.applications = AsyncApplications(runner, ApplicationOps())
        self.connect_sessions = AsyncConnectSessions(runner, ConnectSessionOps())
        self.connectors = AsyncConnectors(runner, ConnectorOps())
        self.files = AsyncFiles(runner, FileOps())
        self.logs = AsyncLogs(runner, LogOps())

    request = awaiting(DoorOps.request)
    execute = awaiting(DoorOps.execute)
    query = apaged(DoorOps.query)

    async def http(self, workspace: WorkspaceRef, slug: str, **client_options: Any) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` on the gateway route of source `slug` in `workspace`; see `Keyrelay.http`."""
        return httpx.AsyncClient(**self._gateway(await self._runner.run(own_workspace_id(workspace)), slug,
                                                 client_options))

    async def connector(self, name: str, *, workspace: WorkspaceRef, source: str | None = None) -> AsyncConnector:
        """A facade over the workspace's `name` source; see `Keyrelay.connector`."""
        return AsyncConnector(self._runner, await self._runner.run(bind(name, workspace, source, admin=self._admin)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
