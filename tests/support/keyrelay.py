"""A real keyrelay served by uvicorn in a background thread on 127.0.0.1, plus a small admin client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvloop

from keyrelay.app import KeyrelayApp, create_app
from keyrelay.server import protocol_for, uvicorn_config
from keyrelay.settings import Settings

ADMIN_ID = "test-admin"
ADMIN_SECRET = "test-admin-secret-0123456789"


def make_settings(*, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "admin_client_id": ADMIN_ID, "admin_client_secret": ADMIN_SECRET,
        "upstream_allow_cidrs": "127.0.0.0/8", "log_flush_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


class KeyrelayServer:
    """Serve `create_app(settings)` with uvicorn (httptools) on uvloop, as `keyrelay serve` does, in a thread;
    stop cleanly on exit."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None, direct: bool = True) -> None:
        """`clock`: wall-clock seconds for the server (e.g. `support.pipeline.ManualClock`), so a test of a
        per-minute limit cannot straddle a window boundary; default: the real clock. `direct=False`: the gateway
        route through ASGI, as under another ASGI server (server.py)."""
        self.settings = settings
        # bound here, on a port the OS picks, and handed to uvicorn: no other process can take it in between
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: KeyrelayApp = create_app(settings) if clock is None else create_app(settings, clock=clock)
        config = uvicorn_config(self.app, settings, host="127.0.0.1", port=self.port, loop="uvloop",
                                http=protocol_for(settings, direct=direct))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        self.loop.close()

    def __enter__(self) -> KeyrelayServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("keyrelay did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (to reach services directly in a test)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)


class Admin:
    """Application-token client for setting up workspaces, sources and keys in tests."""

    def __init__(self, base_url: str, client_id: str = ADMIN_ID, client_secret: str = ADMIN_SECRET) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=20)
        r = self.http.post("/api/v1/applications/token", json={"client_id": client_id, "client_secret": client_secret})
        r.raise_for_status()
        self.token = r.json()["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers, **kw)

    def workspace(self, name: str) -> str:
        r = self.post("/api/v1/workspaces", {"name": name})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def source(self, workspace_id: str, *, upstream_url: str, credentials: dict[str, Any] | None = None,
               policy: dict[str, Any] | None = None, slug: str = "echo", connector: str = "http",
               config: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"workspace_id": workspace_id, "connector": connector, "name": slug, "slug": slug,
                                "config": config or {"upstream_url": upstream_url},
                                "credentials": credentials or {}}
        if policy is not None:
            body["policy"] = policy
        r = self.post("/api/v1/sources", body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def api_key(self, workspace_id: str, scopes: list[str]) -> str:
        r = self.post("/api/v1/api-keys", {"workspace_id": workspace_id, "scopes": scopes})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def scoped_token(self, workspace_name: str) -> str:
        r = self.post("/api/v1/embedded/scoped-token", {"workspace_name": workspace_name})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def close(self) -> None:
        self.http.close()


SCALE_OUT_MASTER_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="  # base64 of 32 bytes, tests only


@contextlib.contextmanager
def scaled_out_pair(tmp_path: Path, postgres: Any, redis_url: str) -> Iterator[tuple[KeyrelayServer, KeyrelayServer]]:
    """Two keyrelay instances on one fresh PostgreSQL database and one Redis: the scale-out topology."""
    name = "kr_" + uuid.uuid4().hex[:12]
    postgres.create_database(name)
    common = {"database_url": postgres.sqlalchemy_url(name), "redis_url": redis_url,
              "master_key": SCALE_OUT_MASTER_KEY}
    with KeyrelayServer(make_settings(data_dir=tmp_path / "a", **common)) as one, \
            KeyrelayServer(make_settings(data_dir=tmp_path / "b", **common)) as two:
        yield one, two


@contextlib.contextmanager
def first_live_log(base_url: str, token: str, *, timeout: float = 15) -> Iterator[list[dict[str, Any]]]:
    """Listen on `/api/v1/logs/stream` in a thread; the yielded list gets the first entry seen (bounded wait)."""
    got: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", base_url + "/api/v1/logs/stream", headers={"Authorization": f"Bearer {token}"},
                          timeout=timeout) as r:
            for line in r.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    connected.wait(timeout)
    yield got
    t.join(timeout)


def logged(admin: Admin, count: int, *, timeout: float = 10.0, **params: Any) -> list[dict[str, Any]]:
    """Request-log rows matching `params` (workspace_id, source_id, status, ...) once at least `count` of them
    are flushed (rows are written in batches, so they appear a moment after the answer). Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = admin.get("/api/v1/logs", params={"limit": 1000, **params}).json()["data"]
        if len(rows) >= count:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} of {count} request-log rows after {timeout}s: {rows}")
        time.sleep(0.02)
