"""Token routes and the token lifecycle: expiry, revocation, scopes and workspaces (contract: Auth routes)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import pytest

from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer


def test_application_token_is_issued_for_valid_client_credentials(kr: KeyrelayServer) -> None:
    for path in ("/api/v1/applications/token", "/api/v1/account/applications/token"):
        r = httpx.post(kr.url + path, json={"client_id": ADMIN_ID, "client_secret": ADMIN_SECRET})
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900
        assert body["access_token"].startswith("kra_")
        assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("creds", [
    {"client_id": ADMIN_ID, "client_secret": "wrong"},
    {"client_id": "nobody", "client_secret": ADMIN_SECRET},
])
def test_wrong_client_credentials_are_refused(kr: KeyrelayServer, creds: dict[str, str]) -> None:
    r = httpx.post(kr.url + "/api/v1/applications/token", json=creds)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


def test_missing_client_fields_name_the_field(kr: KeyrelayServer) -> None:
    r = httpx.post(kr.url + "/api/v1/applications/token", json={"client_id": ADMIN_ID})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "client_secret"


def test_scoped_token_creates_the_workspace_and_is_bound_to_it(admin: Admin) -> None:
    r = admin.post("/api/v1/embedded/scoped-token", {"workspace_name": "customer-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["expires_in"] == 1200 and body["token"].startswith("krw_")
    ws = admin.get(f"/api/v1/workspaces/{body['workspace_id']}").json()
    assert ws["name"] == "customer-1"
    again = admin.post("/api/v1/embedded/scoped-token", {"workspace_name": "customer-1"}).json()
    assert again["workspace_id"] == body["workspace_id"]
    own = admin.http.get("/api/v1/logs", params={"workspace_id": body["workspace_id"]},
                         headers={"Authorization": f"Bearer {body['token']}"})
    assert own.status_code == 200


def test_scoped_token_has_no_admin_power(admin: Admin) -> None:
    token = admin.scoped_token("customer-2")
    r = admin.http.post("/api/v1/workspaces", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


def test_scoped_token_cannot_see_another_workspace(admin: Admin) -> None:
    token = admin.scoped_token("a")
    other = admin.workspace("b")
    r = admin.http.get("/api/v1/logs", params={"workspace_id": other}, headers={"Authorization": f"Bearer {token}"})
    missing = admin.http.get("/api/v1/logs", params={"workspace_id": "00000000-0000-0000-0000-000000000000"},
                             headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == missing.status_code == 404
    assert _without_id(r.json()) == _without_id(missing.json())


def _without_id(body: dict[str, Any]) -> dict[str, Any]:
    err = dict(body["error"])
    err.pop("request_id", None)
    return err


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic abc", "Bearer kr_short", "Bearer " + "kra_" + "A" * 43,
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "bearer  " + "x" * 60,
])
def test_missing_malformed_or_unknown_tokens_are_401(kr: KeyrelayServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = httpx.get(kr.url + "/api/v1/workspaces", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


def test_api_key_lifecycle_create_list_revoke(admin: Admin) -> None:
    ws = admin.workspace("keys")
    r = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy", "logs"], "name": "agent"})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("kr_") and created["scopes"] == ["logs", "proxy"]
    listed = admin.get("/api/v1/api-keys", params={"workspace_id": ws}).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert key not in str(listed)
    use = {"Authorization": f"Bearer {key}"}
    assert admin.http.get("/api/v1/logs", headers=use).status_code == 200
    assert admin.http.delete(f"/api/v1/api-keys/{created['id']}", headers=admin.headers).status_code == 204
    r = admin.http.get("/api/v1/logs", headers=use)  # revocation is effective at once on this instance
    assert r.status_code == 401 and r.json()["error"]["message"] == "Token has been revoked"


def test_api_key_without_the_scope_is_forbidden(admin: Admin) -> None:
    ws = admin.workspace("scopes")
    key = admin.api_key(ws, ["proxy"])
    r = admin.http.get("/api/v1/logs", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_api_key_cannot_call_admin_routes(admin: Admin) -> None:
    ws = admin.workspace("noadmin")
    key = admin.api_key(ws, ["proxy", "files", "query", "execute", "mcp", "logs"])
    r = admin.http.post("/api/v1/api-keys", json={"workspace_id": ws, "scopes": ["proxy"]},
                        headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert len(admin.get("/api/v1/api-keys", params={"workspace_id": ws}).json()["data"]) == 1  # none was made


@pytest.mark.parametrize("body,field", [
    ({"workspace_id": "x", "scopes": ["nope"]}, "scopes.0"),
    ({"workspace_id": "x", "scopes": []}, "scopes"),
    ({"workspace_id": "x", "scopes": ["proxy"], "expires_at": "not a date"}, "expires_at"),
    ({"scopes": ["proxy"]}, "workspace_id"),
])
def test_invalid_api_key_requests_name_the_field(admin: Admin, body: dict[str, Any], field: str) -> None:
    r = admin.post("/api/v1/api-keys", body)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == field


def test_api_key_for_unknown_workspace_is_404(admin: Admin) -> None:
    r = admin.post("/api/v1/api-keys", {"workspace_id": "nope", "scopes": ["proxy"]})
    assert r.status_code == 404


def test_api_key_with_past_expiry_is_refused(admin: Admin) -> None:
    ws = admin.workspace("past")
    r = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"], "expires_at": "2001-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "expires_at"


@pytest.fixture
def no_cache(kr_settings: dict[str, Any]) -> None:
    kr_settings["token_cache_seconds"] = 0


def _expire_everything(kr: KeyrelayServer) -> None:
    db = sqlite3.connect(kr.settings.data_dir / "keyrelay.db")
    with db:
        db.execute("UPDATE tokens SET expires_at = ?", (time.time() - 1,))
        db.execute("UPDATE api_keys SET expires_at = ?", (time.time() - 1,))
    db.close()


def test_expired_tokens_and_keys_are_refused(no_cache: None, kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("exp")
    key = admin.api_key(ws, ["logs"])
    scoped = admin.scoped_token("exp")
    _expire_everything(kr)
    for token in (key, scoped, admin.token):
        r = httpx.get(kr.url + "/api/v1/logs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "Token has expired"
