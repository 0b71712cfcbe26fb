"""Crash durability (docs/security.md: encryption at rest; the short CI form): `kill -9` a real `keyrelay serve`
at random moments while it acknowledges writes; after every restart, every acknowledged write is still there,
every credential still decrypts to what was written, revoked keys stay revoked, and SQLite's integrity check
passes.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from keyrelay.runtime import runtime
from keyrelay.settings import Settings
from keyrelay.store.engine import make_engine
from keyrelay.store.sources import SqlSourceStore
from keyrelay.vault import KeyVault
from support.keyrelay import ADMIN_ID, ADMIN_SECRET
from support.net import free_port, stop_child, wait_listening
from support.secrets import revealed

KEYRELAY = str(Path(sys.executable).parent / "keyrelay")
CYCLES = 20
START_TIMEOUT_S = 30.0


class Server:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir, self.log = data_dir, log
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        self.env.update({"KEYRELAY_DATA_DIR": str(data_dir), "KEYRELAY_ADMIN_CLIENT_ID": ADMIN_ID,
                         "KEYRELAY_ADMIN_CLIENT_SECRET": ADMIN_SECRET,
                         "KEYRELAY_UPSTREAM_ALLOW_CIDRS": "127.0.0.0/8", "KEYRELAY_LOG_FLUSH_SECONDS": "0.05"})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        for _attempt in range(3):  # the port (reused across restarts) may be taken by another process meanwhile
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen([KEYRELAY, "serve", "--port", str(self.port)], env=self.env,
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                             start_new_session=True)
            if wait_listening(self.proc, self.port, START_TIMEOUT_S):
                break
            assert "address already in use" in self.log.read_text()[-3000:].lower(), self.log.read_text()[-3000:]
            self.port = free_port()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("keyrelay did not become ready:\n" + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, grace=10)
            self.proc = None


class Load:
    """Writes in background threads until the server dies; remembers what was acknowledged."""

    def __init__(self, url: str, token: str, workspace: str, cycle: int) -> None:
        self.http = httpx.Client(base_url=url, timeout=5, headers={"Authorization": f"Bearer {token}"})
        self.workspace, self.cycle = workspace, cycle
        self.sources: dict[str, str] = {}  # acknowledged source id -> its bearer token
        self.revoked: dict[str, str] = {}  # acknowledged revoked key id -> the key
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._sources), threading.Thread(target=self._keys)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        self.http.close()

    def _sources(self) -> None:
        for i in range(10_000):
            if self.stop.is_set():
                return
            token = f"tok-{self.cycle}-{i}-" + os.urandom(8).hex()
            body = {"workspace_id": self.workspace, "connector": "http", "name": f"s-{self.cycle}-{i}",
                    "config": {"upstream_url": "http://127.0.0.1:9/v1"},
                    "credentials": {"bearer_token": token, "basic": {"username": "u", "password": token}}}
            try:
                r = self.http.post("/api/v1/sources", json=body)
            except httpx.TransportError:
                return
            self.statuses.append(r.status_code)
            if r.status_code == 201:
                self.sources[r.json()["id"]] = token

    def _keys(self) -> None:
        for _ in range(10_000):
            if self.stop.is_set():
                return
            try:
                r = self.http.post("/api/v1/api-keys", json={"workspace_id": self.workspace, "scopes": ["logs"]})
                self.statuses.append(r.status_code)
                if r.status_code != 201:
                    continue
                created = r.json()
                d = self.http.delete(f"/api/v1/api-keys/{created['id']}")
            except httpx.TransportError:
                return
            self.statuses.append(d.status_code)
            if d.status_code == 204:
                self.revoked[created["id"]] = created["key"]


def _integrity(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


async def _decrypt_all(data_dir: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Every source's credentials opened by the vault, and the number of rows a rotation re-encrypted."""
    settings = Settings(data_dir=data_dir, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET)
    engine = make_engine(settings.resolved_database_url)
    try:
        async with runtime(settings) as rt:
            vault = rt.services.vault
            assert isinstance(vault, KeyVault) and not vault.sealed
            store = SqlSourceStore(engine)
            opened = {}
            for src in await store.list_sources(limit=100_000):
                creds = await vault.open(workspace_id=src.workspace_id, source_id=src.id,
                                         destination=rt.services.sources.destinations(src.connector, src.config),
                                         sealed=await store.load_sealed(src.id))
                opened[src.id] = revealed(dict(creds.fields))
            rotated = await vault.rotate()  # (re)decrypts every row once more
        return opened, rotated.reencrypted
    finally:
        await engine.dispose()


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    server = Server(data_dir, tmp_path / "serve.log")
    acked: dict[str, str] = {}
    revoked: dict[str, str] = {}
    statuses: list[int] = []
    try:
        server.start()
        token = httpx.post(server.url + "/api/v1/applications/token",
                           json={"client_id": ADMIN_ID, "client_secret": ADMIN_SECRET}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        ws = httpx.post(server.url + "/api/v1/workspaces", json={"name": "durable"}, headers=auth).json()["id"]
        for cycle in range(CYCLES):
            if cycle:
                server.start()
                # the application token issued before the first crash is still valid
                assert httpx.get(server.url + "/api/v1/workspaces", headers=auth).status_code == 200
            with Load(server.url, token, ws, cycle) as load:
                time.sleep(rng.uniform(0.02, 0.4))
                server.kill9()
            acked.update(load.sources)
            revoked.update(load.revoked)
            statuses += load.statuses
            _integrity(data_dir / "keyrelay.db")

        server.start()  # after the last crash: everything acknowledged is visible through the API
        r = httpx.get(server.url + "/api/v1/sources", params={"workspace_id": ws}, headers=auth, timeout=30)
        present = {s["id"]: s for s in r.json()["data"]}
        missing = set(acked) - set(present)
        assert not missing, f"seed={seed}: {len(missing)} acknowledged sources lost"
        assert all(present[sid]["credentials"] == ["basic", "bearer_token"] for sid in acked)
        for kid, key in revoked.items():
            r = httpx.get(server.url + "/api/v1/logs", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 401, (seed, kid)
        server.stop()
    finally:
        server.stop()

    assert len(acked) >= CYCLES and len(revoked) >= 1, (seed, len(acked), len(revoked))
    assert 500 not in statuses
    _integrity(data_dir / "keyrelay.db")
    opened, rotated = asyncio.run(_decrypt_all(data_dir))
    for sid, token in acked.items():
        assert opened[sid] == {"bearer_token": token, "basic": {"username": "u", "password": token}}, seed
    assert rotated == 2 * len(opened)
    _integrity(data_dir / "keyrelay.db")
