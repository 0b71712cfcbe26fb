"""`keyrelay vault rotate` re-encrypts every credential while a live server keeps serving (docs/security.md)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

SECRET = "rotation-canary-secret-42"


def test_rotation_under_load_fails_no_request_and_leaves_nothing_under_the_old_key(
        kr_settings: dict[str, Any], upstream: FakeUpstream) -> None:
    kr_settings["source_cache_seconds"] = 0  # decrypt on every request: the rotation is really in the path
    upstream.require_auth = f"Bearer {SECRET}"
    with KeyrelayServer(_settings(kr_settings)) as kr:
        admin = Admin(kr.url)
        ws = admin.workspace("rot")
        for i in range(5):
            admin.source(ws, upstream_url=upstream.url, slug=f"s{i}", credentials={"bearer_token": SECRET})
        key = admin.api_key(ws, ["proxy"])
        db = Path(kr.settings.data_dir) / "keyrelay.db"
        old_keys = _key_ids(db)
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=20) as client:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    r = client.get(f"{kr.url}/api/{ws}/proxy/s{i % 5}/echo", headers={"Authorization": f"Bearer {key}"})
                    statuses.append(r.status_code)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        env = {**os.environ, "KEYRELAY_DATA_DIR": str(kr.settings.data_dir)}
        for _ in range(2):
            done = subprocess.run([sys.executable, "-m", "keyrelay", "vault", "rotate"], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert "re-encrypted 5 credential field(s)" in done.stdout
        stop.set()
        worker.join(timeout=30)
        admin.close()
    assert len(statuses) > 20 and set(statuses) == {200}
    used = _used_key_ids(db)
    assert len(used) == 1 and not used & old_keys


def _settings(overrides: dict[str, Any]) -> Any:
    from support.keyrelay import make_settings

    return make_settings(**overrides)


def _key_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM vault_keys")}


def _used_key_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM source_secrets")}
