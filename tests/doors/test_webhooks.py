"""Webhook routes (doors/webhooks.py) over HTTP: the signing secret is in the create answer only, only
application tokens reach the routes, and the delivery log of an endpoint can be read."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx

from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream


def test_an_endpoint_is_registered_listed_logged_and_deleted(kr: KeyrelayServer, admin: Admin,
                                                             upstream: FakeUpstream) -> None:
    r = admin.post("/api/v1/webhooks", {"url": upstream.url + "/echo", "events": ["connection.created",
                                                                                  "connection.deleted"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_") and hook["events"] == ["connection.created", "connection.deleted"]
    for read in (admin.get("/api/v1/webhooks"), admin.get(f"/api/v1/webhooks/{hook['id']}")):
        assert read.status_code == 200 and secret not in read.text and "secret" not in read.text
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url)
    assert admin.http.delete(f"/api/v1/sources/{src['id']}", headers=admin.headers).status_code == 204
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        if log and log[0]["status"] == "delivered":
            break
        time.sleep(0.05)
    [entry] = log
    assert (entry["event"], entry["status"], entry["attempts"], entry["last_status"]) == \
        ("connection.deleted", "delivered", 1, 200)
    assert any(r.raw_path == "/echo" for r in upstream.requests)
    assert admin.http.delete(f"/api/v1/webhooks/{hook['id']}", headers=admin.headers).status_code == 204
    assert admin.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").status_code == 404


def test_bad_bodies_and_forbidden_addresses_are_refused(kr: KeyrelayServer, admin: Admin) -> None:
    for body, status, field in [
        ({"url": "https://h.example.com/k", "events": ["nope"]}, 400, "events"),
        ({"url": "https://h.example.com/k", "events": []}, 400, "events"),
        ({"url": "https://h.example.com/k#x", "events": ["connection.created"]}, 400, "url"),
        ({"url": "http://10.1.2.3/k", "events": ["connection.created"]}, 422, "url"),
    ]:
        r = admin.post("/api/v1/webhooks", body)
        assert (r.status_code, r.json()["error"]["field"]) == (status, field), r.text


def test_only_application_tokens_reach_the_routes(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    key = admin.api_key(ws, ["proxy", "logs"])
    for method, path in [("POST", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks/x"),
                         ("DELETE", "/api/v1/webhooks/x"), ("GET", "/api/v1/webhooks/x/deliveries")]:
        assert httpx.request(method, kr.url + path, json={}).status_code == 401
        r = httpx.request(method, kr.url + path, json={}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403, (method, path)


def test_an_expired_session_is_announced_by_the_worker(tmp_path: Path, upstream: FakeUpstream) -> None:
    from keyrelay.manage.webhooks import verify
    from support.keyrelay import make_settings

    with KeyrelayServer(make_settings(data_dir=tmp_path, webhook_retry_seconds=0.1)) as server:
        admin = Admin(server.url)
        secret = admin.post("/api/v1/webhooks", {"url": upstream.url + "/echo",
                                                 "events": ["connect_session.expired"]}).json()["secret"]
        made = admin.post("/api/v1/connect/sessions", {"workspace": "acme", "expires_in": 60}).json()
        with sqlite3.connect(tmp_path / "keyrelay.db") as db:
            db.execute("UPDATE connect_sessions SET expires_at = ? WHERE id = ?", (time.time() - 1, made["id"]))
        deadline = time.monotonic() + 15
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        [got] = upstream.requests
        assert admin.get(f"/api/v1/connect/sessions/{made['id']}").json()["status"] == "expired"
        admin.close()
    event = json.loads(got.body)
    assert (event["type"], event["data"]["connect_session_id"], event["data"]["workspace_id"]) == \
        ("connect_session.expired", made["id"], made["workspace_id"])
    assert verify(secret, got.header("Keyrelay-Signature") or "", got.body, now=time.time())
    assert made["token"] not in got.body.decode()
