"""`keyrelay serve --workers 2`: two processes on one port, each with the whole pipeline, share what must be
shared (docs/performance.md, "Workers"): a source's rate limit, a token's budget, a revocation and the live logs,
on the embedded default (SQLite, the workers' shared rate-limit table, live logs read from the request-log table)
and on PostgreSQL + Redis. Each request goes on a new connection, so the kernel hands it to either worker; every
test first checks that both workers answered, so a test cannot pass because one worker served everything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.keyrelay import ADMIN_ID, ADMIN_SECRET, SCALE_OUT_MASTER_KEY, Admin
from support.net import free_port, stop_child, wait_listening
from support.upstream import FakeUpstream

KEYRELAY = str(Path(sys.executable).parent / "keyrelay")
N = 10


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(entry))
    return out


def _workers_of(pid: int) -> set[int]:
    """The supervisor's worker processes (its other child is multiprocessing's resource tracker)."""
    found = set()
    for child in _children(pid):
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            if b"resource_tracker" not in f.read():
                found.add(child)
    return found


@contextlib.contextmanager
def workers(tmp_path: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """`keyrelay serve --workers 2` in its own process group; yields its URL and the supervisor's pid once it
    answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env.update({"KEYRELAY_DATA_DIR": str(tmp_path / "data"), "KEYRELAY_ADMIN_CLIENT_ID": ADMIN_ID,
                "KEYRELAY_ADMIN_CLIENT_SECRET": ADMIN_SECRET, "KEYRELAY_UPSTREAM_ALLOW_CIDRS": "127.0.0.0/8",
                "KEYRELAY_LOG_FLUSH_SECONDS": "0.05", "KEYRELAY_TOKEN_CACHE_SECONDS": "0",
                "KEYRELAY_SOURCE_CACHE_SECONDS": "0", **settings})
    log = tmp_path / "serve.log"
    for _attempt in range(3):  # a free port may be taken by another process before the server binds it
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen([KEYRELAY, "serve", "--port", str(port), "--workers", "2"], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if wait_listening(proc, port, 60):
            break
        stop_child(proc)
    else:
        raise AssertionError(log.read_text()[-3000:])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        stop_child(proc, grace=20)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _get(url: str, token: str) -> int:
    """One request on a connection of its own."""
    with httpx.Client(timeout=30) as http:
        return http.get(url, headers={"Authorization": f"Bearer {token}", "Connection": "close"}).status_code


def _burst(url: str, token: str, count: int) -> list[int]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: _get(url, token), range(count)))


def _process_of(row: dict[str, Any]) -> str:
    return str(row["id"])[:16]  # a request-log id starts with its process's random prefix (keyrelay/ids.py)


def _rows(admin: Admin, source_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        rows: list[dict[str, Any]] = admin.get("/api/v1/logs", params={"source_id": source_id,
                                                                        "limit": 1000}).json()["data"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


class Listener:
    """The live-log stream of one worker, read in a thread."""

    def __init__(self, url: str, token: str) -> None:
        self.entries: list[dict[str, Any]] = []
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, args=(url, token), daemon=True)

    def _listen(self, url: str, token: str) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "GET", url + "/api/v1/logs/stream", headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(30, read=2)) as r:
            self._connected.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.entries.append(json.loads(line[6:]))
                if self._stop.is_set():
                    return

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._connected.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _shared_state(url: str, upstream: FakeUpstream) -> None:
    admin = Admin(url)
    ws = admin.workspace("workers")
    free = admin.source(ws, upstream_url=upstream.url, slug="free")
    limited = admin.source(ws, upstream_url=upstream.url, slug="limited", policy={"rate_limit_per_minute": N})
    key = admin.api_key(ws, ["proxy"])
    base = f"{url}/api/{ws}/proxy"

    # live logs: one worker streams; requests go to both; every one reaches the stream
    with Listener(url, admin.token) as listener:
        sent = 0
        while sent < 200:
            assert _burst(f"{base}/free/echo?n={sent}", key, 1) == [200]
            sent += 1
            if sent >= 20 and len({_process_of(e) for e in listener.entries}) == 2:
                break
        deadline = time.monotonic() + 20
        while len(listener.entries) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len({_process_of(e) for e in listener.entries}) == 2, "the stream saw one worker only"
    assert sorted(e["path"] for e in listener.entries) == sorted(f"/api/{ws}/proxy/free/echo" for _ in range(sent))

    # a source's rate limit: 3N requests at once, across both workers, pass N times (N + 1 if the burst crosses
    # a minute boundary: the sliding window's previous minute then weighs a little less than 1); per-worker
    # counters would pass about 2N
    codes = _burst(f"{base}/limited/echo", key, 3 * N)
    rows = _rows(admin, limited["id"], 3 * N)
    assert len({_process_of(r) for r in rows}) == 2, "one worker served the whole burst"
    assert codes.count(200) in (N, N + 1) and codes.count(429) == 3 * N - codes.count(200), codes

    # a budget: exact across workers
    r = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"],
                                        "constraints": {"budget": {"requests": N, "per": None}}})
    budgeted = r.json()["key"]
    codes = _burst(f"{base}/free/echo", budgeted, 3 * N)
    assert codes.count(200) == N and codes.count(403) == 2 * N, codes

    # a revocation made through one worker holds on every worker at once (token cache off)
    doomed = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"]}).json()
    assert set(_burst(f"{base}/free/echo", doomed["key"], 10)) == {200}
    assert admin.http.delete(f"/api/v1/api-keys/{doomed['id']}", headers=admin.headers).status_code in (200, 204)
    assert set(_burst(f"{base}/free/echo", doomed["key"], 20)) == {401}
    rows = _rows(admin, free["id"], 0)
    assert len({_process_of(r) for r in rows}) == 2


def test_workers_share_limits_budgets_revocation_and_live_logs(tmp_path: Path, upstream: FakeUpstream) -> None:
    with workers(tmp_path, KEYRELAY_MAX_HEADER_BYTES="2048") as (url, parent):
        _shared_state(url, upstream)
        # each worker's server keeps the configured limits (the protocol class is made in the worker)
        big = {"X-Big": "a" * 4000, "Connection": "close"}
        assert {httpx.get(url + "/healthz", headers=big, timeout=10).status_code for _ in range(6)} == {431}
        # a worker that dies is replaced, and the server keeps answering meanwhile
        before = _workers_of(parent)
        assert len(before) == 2
        os.kill(min(before), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _workers_of(parent)
            if len(now) == 2 and now != before:
                break
            time.sleep(0.1)
        assert len(now) == 2 and min(before) not in now
        admin = Admin(url)
        deadline = time.monotonic() + 60
        while httpx.get(url + "/readyz", timeout=5).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin.get("/api/v1/workspaces").status_code == 200
    assert (tmp_path / "data" / "ratelimit.windows").exists()  # the embedded default's shared table


def test_workers_on_postgresql_and_redis(tmp_path: Path, upstream: FakeUpstream, postgres: Any,
                                         redis_server: Any) -> None:
    name = "kr_" + uuid.uuid4().hex[:12]
    postgres.create_database(name)
    with workers(tmp_path, KEYRELAY_DATABASE_URL=postgres.sqlalchemy_url(name), KEYRELAY_REDIS_URL=redis_server.url,
                 KEYRELAY_MASTER_KEY=SCALE_OUT_MASTER_KEY) as (url, _):
        _shared_state(url, upstream)
    assert not (tmp_path / "data" / "ratelimit.windows").exists()  # Redis holds the limits


def test_workers_on_postgresql_need_redis(tmp_path: Path, postgres: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env.update({"KEYRELAY_DATA_DIR": str(tmp_path / "data"), "KEYRELAY_DATABASE_URL": postgres.sqlalchemy_url()})
    out = subprocess.run([KEYRELAY, "serve", "--port", str(free_port()), "--workers", "2"], env=env,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and "needs KEYRELAY_REDIS_URL" in out.stderr


@pytest.mark.parametrize("value", ["0", "65"])
def test_a_worker_count_out_of_range_is_refused(value: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")},
           "KEYRELAY_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([KEYRELAY, "serve", "--workers", value], env=env, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "--workers" in out.stderr
