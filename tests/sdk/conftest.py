"""Fixtures for the SDK tests: one live keyrelay for the session, fresh workspaces per test, and clients in both
flavours.

Tests that take `mode` run twice: with `Keyrelay`, and with `AsyncKeyrelay` driven through `Blocking`, which runs
every coroutine and async iterator the async client returns on one private event loop. The same assertions
therefore hold for both clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay_client import AsyncKeyrelay, Keyrelay, RetryPolicy
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer, make_settings
from support.scripted import ScriptedServer
from support.upstream import FakeUpstream


class Blocking:
    """A synchronous view of an async SDK object: calls return results, async iterators become iterators."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        return _sync(getattr(self._target, name), self._loop)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _sync(self._target(*args, **kwargs), self._loop)

    def __iter__(self) -> Iterator[Any]:
        it = aiter(self._target)
        try:
            while True:
                try:
                    yield _sync(self._loop.run_until_complete(anext(it)), self._loop)
                except StopAsyncIteration:
                    return
        finally:
            if hasattr(it, "aclose"):
                self._loop.run_until_complete(it.aclose())

    def __enter__(self) -> Any:
        return _sync(self._loop.run_until_complete(self._target.__aenter__()), self._loop)

    def __exit__(self, *exc: Any) -> None:
        self._loop.run_until_complete(self._target.__aexit__(*exc))

    def __repr__(self) -> str:
        return repr(self._target)

    def __dir__(self) -> list[str]:
        return dir(self._target)


def _sync(value: Any, loop: asyncio.AbstractEventLoop) -> Any:
    if inspect.iscoroutine(value):
        return _sync(loop.run_until_complete(value), loop)
    if isinstance(value, type | BaseException) or dataclasses.is_dataclass(value):
        return value
    if (isinstance(value, httpx.AsyncClient) or inspect.isasyncgen(value) or callable(value)
            or type(value).__module__.startswith("keyrelay_client")):
        return Blocking(value, loop)
    return value


@pytest.fixture(scope="session")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory local file sources of the session's keyrelay may serve."""
    return tmp_path_factory.mktemp("files-root")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, files_root: Path) -> Iterator[KeyrelayServer]:
    """One live keyrelay for every SDK test (each test works in workspaces of its own)."""
    settings = make_settings(data_dir=tmp_path_factory.mktemp("kr-data"), local_roots=str(files_root))
    with KeyrelayServer(settings) as kr:
        yield kr


@pytest.fixture(scope="session")
def raw(server: KeyrelayServer) -> Iterator[Admin]:
    """A plain httpx admin client, to set the scene without the SDK under test."""
    client = Admin(server.url)
    yield client
    client.close()


@pytest.fixture
def workspace(raw: Admin) -> dict[str, str]:
    """A fresh workspace: {"id", "name"}."""
    name = "ws-" + uuid.uuid4().hex[:10]
    return {"id": raw.workspace(name), "name": name}


@pytest.fixture
def echo(raw: Admin, workspace: dict[str, str], upstream: FakeUpstream) -> dict[str, Any]:
    """An `http` source `echo` in the workspace, forwarding to a fake upstream with a bearer credential."""
    return raw.source(workspace["id"], upstream_url=upstream.url, credentials={"bearer_token": "sk-upstream-1"},
                      slug="echo")


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(mode: str) -> Iterator[Callable[..., Any]]:
    """`connect(base_url, **options)`: a `Keyrelay`, or an `AsyncKeyrelay` behind `Blocking`; closed afterwards.
    Retries never sleep for real: `sleep` records the delays in `connect.sleeps`."""
    loop = asyncio.new_event_loop()
    made: list[Any] = []
    sleeps: list[float] = []

    def sync_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def async_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(base_url: str, **options: Any) -> Any:
        options.setdefault("env", {})
        options.setdefault("retry", RetryPolicy(rng=random.Random(7)))
        if mode == "sync":
            client: Any = Keyrelay(base_url, sleep=sync_sleep, **options)
            made.append(client)
            return client
        aclient = AsyncKeyrelay(base_url, sleep=async_sleep, **options)
        made.append(aclient)
        return Blocking(aclient, loop)

    make.sleeps = sleeps  # type: ignore[attr-defined]
    yield make
    for client in made:
        if isinstance(client, AsyncKeyrelay):
            loop.run_until_complete(client.aclose())
        else:
            client.close()
    loop.close()


@pytest.fixture
def client(connect: Callable[..., Any], server: KeyrelayServer) -> Any:
    """An admin SDK client (client credentials of the bootstrap application) on the live keyrelay."""
    return connect(server.url, client_id=ADMIN_ID, client_secret=ADMIN_SECRET)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as peer:
        yield peer
