"""Secret canaries (docs/security.md): credentials written through the admin API appear
in 0 bytes of API responses, logs, captured output or the database files / pg_dump, in any encoding.

The scanner is proven on data known to hold the canaries (the requests we sent, a file we wrote, a log line).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.canary import find, find_in_files, new_canary
from support.keyrelay import Admin, KeyrelayServer
from support.postgres import PostgresServer
from support.upstream import FakeUpstream


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, kr_settings: dict[str, Any]) -> Iterator[str | None]:
    """None for SQLite in data_dir, else the name of a fresh PostgreSQL database keyrelay runs on."""
    if request.param == "sqlite":
        yield None
        return
    pg: PostgresServer = request.getfixturevalue("postgres")
    name = "kr_canary_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    kr_settings["database_url"] = pg.sqlalchemy_url(name)
    yield name


@pytest.fixture
def loud_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _wire(r: httpx.Response) -> bytes:
    """What the client saw: status line, headers (raw), body."""
    head = f"HTTP/1.1 {r.status_code} {r.reason_phrase}\r\n".encode()
    head += b"".join(k + b": " + v + b"\r\n" for k, v in r.headers.raw)
    return head + b"\r\n" + r.content


class Recorder:
    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.responses: list[httpx.Response] = []
        admin.http.event_hooks["response"].append(self._keep)

    def _keep(self, r: httpx.Response) -> None:
        r.read()
        self.responses.append(r)


def _exercise(admin: Admin, c: dict[str, str], upstream: FakeUpstream) -> None:
    """Write every canary through the API, use them through the gateway, then read everything back."""
    ws = admin.workspace("canary-ws")
    creds = {"bearer_token": c["bearer"], "basic": {"username": "user", "password": c["password"]},
             "api_key": {"value": c["api_key"], "header": "X-Api-Key", "prefix": "Token "},
             "inject_headers": {"X-Secret": c["header"]}}
    body = {"workspace_id": ws, "connector": "http", "name": "Canary", "slug": "canary",
            "config": {"upstream_url": upstream.url}, "credentials": creds}
    r = admin.post("/api/v1/sources", body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    h = admin.headers
    assert admin.http.patch(f"/api/v1/sources/{sid}", json={"name": "Renamed"}, headers=h).status_code == 200
    assert admin.http.patch(f"/api/v1/sources/{sid}", json={"policy": {"timeout_seconds": 3}},
                            headers=h).status_code == 200
    second = admin.post("/api/v1/sources", {**body, "slug": "second"}).json()["id"]
    r = admin.http.patch(f"/api/v1/sources/{second}",
                         json={"credentials": {"bearer_token": c["patched"]}}, headers=h)
    assert r.status_code == 200
    r = admin.post("/v1/sources", {"workspaceId": ws, "name": "Seed", "sourceDefinitionId": "http",
                                   "configuration": {"upstream_url": "http://127.0.0.1:9",
                                                     "credentials": {"bearer_token": c["seed"]}}})
    assert r.status_code == 201
    scoped = admin.scoped_token("canary-ws")
    r = admin.http.post("/v1/integrations/sources", headers={"Authorization": f"Bearer {scoped}"},
                        json={"source_template_id": "http", "workspace_id": ws, "name": "Integration",
                              "config": {"upstream_url": "http://127.0.0.1:9"},
                              "auth_config": {"api_key": {"value": c["seed"], "query_param": "key"}}})
    assert r.status_code == 201
    # refused writes must not echo the value either
    bad = c["refused"]
    for wrong in ({"basic": {"username": bad}}, {"bearer_token": bad + "\n"}, {"unknown": bad},
                  {"api_key": {"value": bad, "header": "bad header"}}, {"bearer_token": [bad]}):
        r = admin.post("/api/v1/sources", {**body, "slug": "refused", "credentials": wrong})
        assert r.status_code == 400, r.text
    r = admin.post("/api/v1/sources", {**body, "slug": "refused", "credentials": bad})
    assert r.status_code == 400
    r = admin.http.post("/api/v1/sources", headers=h,
                        content=b'{"credentials": {"bearer_token": "' + bad.replace('"', '\\"').encode() + b'"')
    assert r.status_code == 400
    r = admin.http.patch(f"/api/v1/sources/{sid}", json={"credentials": {"bearer_token": bad, "x": 1}}, headers=h)
    assert r.status_code == 400
    r = admin.http.post("/api/v1/sources", headers=h,
                        content=b'{"credentials": {"bearer_token": "' + bad.encode().hex().encode() * 40000 + b'"}}')
    assert r.status_code == 413
    # use the credentials: the upstream receives them (positive control), the caller never sees them
    for tail in ("status/200", "status/404", "headers", "nope?x=1", "echo"):
        r = admin.http.get(f"/api/{ws}/proxy/canary/{tail}", headers=h)
        assert r.status_code < 500, (tail, r.text)
    received = b"".join(f"{k}: {v}\n".encode() for req in upstream.requests for k, v in req.headers)
    assert {hit[0] for hit in find(received, [c["bearer"], c["api_key"], c["header"]])} == {
        c["bearer"], c["api_key"], c["header"]}
    # read everything back
    for path, params in [
        (f"/api/v1/sources/{sid}", None), (f"/api/v1/sources/{second}", None), ("/api/v1/sources", None),
        ("/api/v1/sources", {"workspace_id": ws}), ("/api/v1/workspaces", None), (f"/api/v1/workspaces/{ws}", None),
        ("/api/v1/connectors", None), ("/api/v1/logs", None), ("/api/v1/logs", {"workspace_id": ws}),
        ("/api/v1/logs", {"source_id": sid}), ("/api/v1/api-keys", None), ("/metrics", None), ("/openapi.json", None),
        ("/readyz", None),
    ]:
        assert admin.get(path, params=params).status_code == 200, path
    assert admin.http.get("/api/v1/sources", headers={"Authorization": f"Bearer {scoped}"}).status_code == 200


def test_canaries_never_leave_the_vault(backend: str | None, loud_logs: pytest.LogCaptureFixture,
                                        capfd: pytest.CaptureFixture[str], kr: KeyrelayServer, admin: Admin,
                                        tmp_path: Path, request: pytest.FixtureRequest,
                                        upstream: FakeUpstream) -> None:
    c = {k: new_canary(k + "-") for k in ("bearer", "password", "api_key", "header", "patched", "seed",
                                          "refused")}
    canaries = list(c.values())
    rec = Recorder(admin)
    _exercise(admin, c, upstream)

    # positive control: the scanner sees the canaries in what we sent
    sent = b"".join(r.request.content for r in rec.responses if r.request.method in ("POST", "PATCH"))
    assert {hit[0] for hit in find(sent, canaries)} == set(canaries)

    leaks = [(r.request.method, str(r.request.url), hit) for r in rec.responses for hit in find(_wire(r), canaries)]
    assert leaks == []
    assert len(rec.responses) >= 30

    data_dir: Path = kr.settings.data_dir
    live_files = sorted(p for p in data_dir.iterdir() if p.is_file())
    if backend is None:
        names = {p.name for p in live_files}
        assert {"keyrelay.db", "keyrelay.db-wal", "keyrelay.db-shm", "master.key"} <= names
    assert find_in_files(live_files, canaries) == []
    if backend is not None:
        pg: PostgresServer = request.getfixturevalue("postgres")
        dump = pg.pg_dump(backend)
        assert b"source_secrets" in dump and len(dump) > 1000
        assert find(dump, canaries) == []
        assert find(pg.pg_dump(backend, "--format=custom"), canaries) == []

    out, err = capfd.readouterr()
    assert find(out + err, canaries) == []
    records = [r for phase in ("setup", "call") for r in loud_logs.get_records(phase)]
    assert any(r.name.startswith("keyrelay") for r in records)  # the server's own log lines are captured
    assert find("\n".join(r.getMessage() for r in records), canaries) == []
    assert find(loud_logs.text, canaries) == []

    # positive controls for the file and log scans
    control = new_canary("control-")
    f = tmp_path / "control.bin"
    f.write_bytes(b"\x00junk" + base64.b64encode(b"user:" + control.encode()) + b"more")
    assert find_in_files([f], [control]) != []
    logging.getLogger("keyrelay.test").error("control %s", control.encode().hex())
    assert find(loud_logs.text, [control]) != []


def test_canaries_absent_from_files_after_shutdown(loud_logs: pytest.LogCaptureFixture, tmp_path: Path,
                                                   kr_settings: dict[str, Any], upstream: FakeUpstream) -> None:
    """After a clean stop (WAL checkpointed into the main file) the files still hold no canary."""
    from support.keyrelay import make_settings

    c = {k: new_canary(k + "-") for k in ("bearer", "password", "api_key", "header", "patched", "seed",
                                          "refused")}
    with KeyrelayServer(make_settings(**kr_settings)) as server:
        adm = Admin(server.url)
        _exercise(adm, c, upstream)
        adm.close()
    files = [p for p in kr_settings["data_dir"].iterdir() if p.is_file()]
    assert any(p.name == "keyrelay.db" for p in files)
    assert find_in_files(files, list(c.values())) == []
    assert find(loud_logs.text, list(c.values())) == []
