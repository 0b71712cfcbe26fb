"""The composition root over HTTP: request ids, health/readiness, OpenAPI, framing limits, error bodies."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.app import KeyrelayApp, create_app
from keyrelay.errors import UpstreamTimeout
from keyrelay.http.asgi import ResponseAborted
from support.keyrelay import Admin, KeyrelayServer, make_settings


def _contract_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    return err


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes, read the whole answer (the server closes after an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while len(out) < 1_000_000:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"connection: close" not in out.lower() and out.endswith(b"}"):
                break
    return out


def test_every_response_has_a_request_id(kr: KeyrelayServer, admin: Admin) -> None:
    responses = [
        httpx.get(kr.url + "/healthz"),
        admin.get("/api/v1/workspaces"),
        httpx.get(kr.url + "/api/v1/workspaces"),  # 401
        httpx.get(kr.url + "/no/such/route"),  # 404
        httpx.put(kr.url + "/api/v1/workspaces"),  # 405
        admin.post("/api/v1/workspaces", {}),  # 400
        httpx.get(kr.url + "/" + "a" * 9000),  # 414
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 405, 400, 414]


def test_a_valid_request_id_is_echoed(kr: KeyrelayServer) -> None:
    for rid in ("abc-123", "A.b_C-9", "x" * 64):
        for path in ("/healthz", "/nope"):
            r = httpx.get(kr.url + path, headers={"X-Request-Id": rid})
            assert r.headers["x-request-id"] == rid
    r = httpx.get(kr.url + "/nope", headers={"X-Request-Id": "trace-1"})
    assert r.json()["error"]["request_id"] == "trace-1"


@pytest.mark.parametrize("rid", ["", "x" * 65, "a b", "<script>", "id;drop", "../etc", "é".encode().decode("latin-1"),
                                 "a\tb"])
def test_a_hostile_request_id_is_replaced(kr: KeyrelayServer, rid: str) -> None:
    r = httpx.get(kr.url + "/nope", headers=[(b"X-Request-Id", rid.encode("latin-1"))])
    got = r.headers["x-request-id"]
    assert got != rid and len(got) == 32 and all(c in "0123456789abcdef" for c in got)
    assert r.json()["error"]["request_id"] == got


def test_only_one_request_id_header_is_returned(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/healthz", headers=[("X-Request-Id", "one"), ("X-Request-Id", "two")])
    assert len(r.headers.get_list("x-request-id")) == 1


def test_health_and_ready(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(kr.url + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def _other_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("how", ["wrong_key", "missing_key"])
def test_readyz_is_503_and_credentials_unusable_when_sealed(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    with KeyrelayServer(make_settings(data_dir=data)) as first:
        adm = Admin(first.url)
        ws = adm.workspace("w")
        src = adm.source(ws, upstream_url="http://127.0.0.1:9", credentials={"bearer_token": "t"})
        adm.close()
    key_file = data / "master.key"
    original = key_file.read_bytes()
    overrides: dict[str, Any] = {"master_key": _other_key()}
    if how == "missing_key":
        key_file.unlink()
        overrides = {}
    with KeyrelayServer(make_settings(data_dir=data, **overrides)) as sealed:
        assert httpx.get(sealed.url + "/healthz").status_code == 200  # the process is up
        _contract_error(httpx.get(sealed.url + "/readyz"), 503, "sealed")
        adm = Admin(sealed.url)  # tokens do not need the vault
        assert adm.get(f"/api/v1/sources/{src['id']}").status_code == 200  # metadata is readable
        r = adm.post("/api/v1/sources", {"workspace_id": ws, "connector": "http", "name": "new",
                                         "config": {"upstream_url": "http://127.0.0.1:9"},
                                         "credentials": {"bearer_token": "t2"}})
        _contract_error(r, 503, "sealed")
        r = adm.http.patch(f"/api/v1/sources/{src['id']}", json={"credentials": {"bearer_token": "t3"}},
                           headers=adm.headers)
        _contract_error(r, 503, "sealed")
        adm.close()
    if how == "missing_key":
        assert not key_file.exists()  # never a new key over existing data
        key_file.write_bytes(original)
    with KeyrelayServer(make_settings(data_dir=data)) as healed:
        assert httpx.get(healed.url + "/readyz").status_code == 200


_WORKER = """
import asyncio, json, sys
from keyrelay.app import create_app
from keyrelay.settings import Settings

HEAVY = ("fastapi", "starlette", "alembic", "obstore", "limits", "jinja2", "mcp")

async def call(app, method, path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    return [sent[0]["status"], json.loads(sent[-1]["body"]).get("error", {}).get("code")]

async def main():
    app = create_app(Settings())
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    hot = [await call(app, "GET", "/healthz"), await call(app, "GET", "/api/ws1/proxy/src/x"),
           await call(app, "POST", "/api/v1/sonar/apis/src1/request")]
    before = [m for m in HEAVY if m in sys.modules]
    admin = await call(app, "GET", "/api/v1/workspaces")
    after = [m for m in HEAVY if m in sys.modules]
    await inbox.put({"type": "lifespan.shutdown"})
    await life
    print(json.dumps({"hot": hot, "before": before, "admin": admin, "after": after}))

asyncio.run(main())
"""


def test_a_worker_loads_the_admin_framework_and_migrations_only_when_needed(tmp_path: Path) -> None:
    env = {**os.environ, "KEYRELAY_DATA_DIR": str(tmp_path / "data"), "KEYRELAY_LOG_LEVEL": "ERROR"}
    env.pop("KEYRELAY_DATABASE_URL", None)
    run = [sys.executable, "-c", _WORKER]
    first = json.loads(subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=True).stdout)
    assert "alembic" in first["before"]  # a new database: migrated at start
    again = json.loads(subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=True).stdout)
    # the probes, the gateway (401: no token) and the request API (400: no body) answered without FastAPI, Alembic
    # (the database is at the head), the object stores, the Redis limiter, the templates or the MCP SDK
    assert again["hot"] == [[200, None], [401, "unauthenticated"], [400, "invalid_request"]]
    assert again["before"] == []
    assert again["admin"] == [401, "unauthenticated"]  # an admin route: FastAPI is built then, and answers
    assert "fastapi" in again["after"] and "alembic" not in again["after"]


def test_openapi_lists_the_admin_routes(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    expected = {
        "/api/v1/workspaces": {"get", "post"}, "/api/v1/workspaces/{workspace_id}": {"get", "delete"},
        "/api/v1/connectors": {"get"}, "/api/v1/sources": {"get", "post"},
        "/api/v1/sources/{source_id}": {"get", "patch", "delete"}, "/v1/sources": {"post"},
        "/v1/integrations/sources": {"post"}, "/api/v1/applications/token": {"post"},
        "/api/v1/embedded/scoped-token": {"post"}, "/api/v1/api-keys": {"get", "post"},
        "/api/v1/api-keys/{key_id}": {"delete"}, "/api/v1/logs": {"get"},
        "/api/v1/connect/sessions": {"get", "post"}, "/api/v1/connect/sessions/{session_id}": {"get", "delete"},
        "/api/v1/oauth-clients": {"get"}, "/api/v1/oauth-clients/{connector}": {"get", "put", "delete"},
        "/api/v1/webhooks": {"get", "post"}, "/api/v1/webhooks/{webhook_id}": {"get", "delete"},
        "/api/v1/webhooks/{webhook_id}/deliveries": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    # the plain-ASGI doors (gateway, files, request API, MCP, probes) are not FastAPI routes
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


def _is_431(r: httpx.Response) -> None:
    assert r.status_code == 431, r.text
    assert r.json()["error"]["code"] == "headers_too_large"
    assert r.headers.get("connection") == "close"


def test_too_many_headers_is_431(kr: KeyrelayServer) -> None:
    n = kr.settings.max_header_count
    ok = httpx.get(kr.url + "/healthz", headers={f"x-h{i}": "v" for i in range(n - 10)})
    assert ok.status_code == 200
    _is_431(httpx.get(kr.url + "/healthz", headers={f"x-h{i}": "v" for i in range(n + 1)}))


def test_header_bytes_over_the_limit_is_431(kr: KeyrelayServer) -> None:
    _is_431(httpx.get(kr.url + "/healthz", headers={"x-big": "v" * (kr.settings.max_header_bytes + 1)}))


def test_431_carries_a_request_id(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/healthz", headers={f"x-h{i}": "v" for i in range(kr.settings.max_header_count + 1)})
    _contract_error(r, 431, "headers_too_large")


def test_over_long_url_is_414(kr: KeyrelayServer) -> None:
    limit = kr.settings.max_url_bytes
    _contract_error(httpx.get(kr.url + "/" + "a" * (limit + 1)), 414, "uri_too_long")
    _contract_error(httpx.get(kr.url + "/healthz?q=" + "a" * limit), 414, "uri_too_long")
    assert httpx.get(kr.url + "/healthz?q=" + "a" * (limit // 2)).status_code == 200


def test_unknown_route_is_the_contract_404(kr: KeyrelayServer, admin: Admin) -> None:
    for r in (httpx.get(kr.url + "/nope"), admin.get("/api/v1/nothing-here"), httpx.post(kr.url + "/x/y/z")):
        err = _contract_error(r, 404, "not_found")
        assert set(err) == {"code", "message", "request_id"}


def test_wrong_method_is_405(kr: KeyrelayServer, admin: Admin) -> None:
    for r in (httpx.put(kr.url + "/api/v1/workspaces"), admin.http.patch("/api/v1/workspaces", json={}),
              httpx.post(kr.url + "/healthz")):
        err = _contract_error(r, 405, "method_not_allowed")
        assert r.request.method in err["message"]


def test_raw_socket_errors_carry_a_request_id(kr: KeyrelayServer) -> None:
    port = int(kr.url.rsplit(":", 1)[1])
    out = _raw(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 414") and b"x-request-id:" in head


class _ScriptedDoors:
    """Stands in for the plain-ASGI doors: `/api/...` paths get the scripted door, the rest go to FastAPI."""

    def __init__(self, door: Any) -> None:
        self._door = door

    def door(self, scope: dict[str, Any]) -> tuple[Any, bool] | None:
        return (self._door, False) if scope["path"].startswith("/api/") else None


def _scripted_app(tmp_path: Path, door: Any) -> KeyrelayApp:
    app = create_app(make_settings(data_dir=tmp_path))
    app._hot = _ScriptedDoors(door)  # type: ignore[assignment]  # no lifespan: nothing else is needed
    return app


_LEAK = "Bearer sk_live_never_logged"


async def _start(send: Any, *, more: bool) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": more})


async def test_a_bug_in_a_door_answers_the_contract_500_and_logs_its_type_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def door(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError(_LEAK)

    app = _scripted_app(tmp_path, door)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/api/ws/proxy/src/x", headers={"X-Request-Id": "bug-1"})
    assert _contract_error(r, 500, "internal_error")["request_id"] == "bug-1"
    assert "RuntimeError" in caplog.text and "sk_live" not in caplog.text and "sk_live" not in r.text


@pytest.mark.parametrize("failure", [RuntimeError(_LEAK), UpstreamTimeout(_LEAK)])
async def test_a_failure_after_the_response_began_cuts_it_with_a_bare_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: Exception) -> None:
    async def door(scope: Any, receive: Any, send: Any) -> None:
        await _start(send, more=True)
        raise failure

    app = _scripted_app(tmp_path, door)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with pytest.raises(ResponseAborted) as cut:  # the server closes the connection on it
            await c.get("/api/ws/proxy/src/x")
    assert "sk_live" not in str(cut.value) and cut.value.__cause__ is None and cut.value.__suppress_context__
    assert type(failure).__name__ in caplog.text and "sk_live" not in caplog.text


async def test_a_failure_after_a_finished_response_changes_nothing(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def door(scope: Any, receive: Any, send: Any) -> None:
        await _start(send, more=False)
        raise RuntimeError(_LEAK)

    app = _scripted_app(tmp_path, door)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/api/ws/proxy/src/x")
    assert (r.status_code, r.text) == (200, "partial") and "sk_live" not in caplog.text


async def test_a_bug_in_a_fastapi_route_is_answered_once_and_never_reaches_the_server(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError(_LEAK)

    app = _scripted_app(tmp_path, None)
    app.api.add_api_route("/boom", boom)
    # Starlette re-raises after its handler answered, for the server to log with the traceback: not any more
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/boom")
    _contract_error(r, 500, "internal_error")
    assert "RuntimeError" in caplog.text and "sk_live" not in caplog.text
