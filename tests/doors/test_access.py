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


# --- applications with limited power ---------------------------------------------------------------------------

def _app_token(kr: KeyrelayServer, client_id: str, secret: str) -> dict[str, str]:
    r = httpx.post(kr.url + "/api/v1/applications/token", json={"client_id": client_id, "client_secret": secret})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _limited(admin: Admin, workspaces: Any, scopes: list[str]) -> dict[str, Any]:
    r = admin.post("/api/v1/applications", {"name": "agent-1", "workspaces": workspaces, "scopes": scopes})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


def test_a_limited_application_reaches_only_its_workspaces_and_scopes(kr: KeyrelayServer, admin: Admin,
                                                                      upstream: Any) -> None:
    acme, other = admin.workspace("acme"), admin.workspace("other")
    admin.source(acme, upstream_url=upstream.url, slug="echo")
    admin.source(other, upstream_url=upstream.url, slug="echo")
    app = _limited(admin, ["acme"], ["proxy", "logs"])
    assert app["workspaces"] == [acme] and app["scopes"] == ["logs", "proxy"] and app["client_secret"]
    auth = _app_token(kr, app["client_id"], app["client_secret"])
    assert httpx.get(f"{kr.url}/api/{acme}/proxy/echo/echo", headers=auth).status_code == 200
    denied = httpx.get(f"{kr.url}/api/{other}/proxy/echo/echo", headers=auth)
    unknown = httpx.get(f"{kr.url}/api/{'0' * 8}-0000-0000-0000-{'0' * 12}/proxy/echo/echo", headers=auth)
    assert denied.status_code == unknown.status_code == 404
    assert denied.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert httpx.get(f"{kr.url}/api/v1/logs", params={"workspace_id": other}, headers=auth).status_code == 404
    rows = httpx.get(f"{kr.url}/api/v1/logs", headers=auth).json()["data"]
    assert rows and {e["workspace_id"] for e in rows} == {acme}
    for method, path, body in [("POST", "/api/v1/workspaces", {"name": "x"}), ("GET", "/api/v1/workspaces", None),
                               ("POST", "/api/v1/sources", {"workspace_id": acme, "connector": "http", "name": "y",
                                                            "config": {"upstream_url": upstream.url}}),
                               ("POST", "/api/v1/api-keys", {"workspace_id": acme, "scopes": ["proxy"]}),
                               ("POST", "/api/v1/applications", {"name": "z", "workspaces": "*", "scopes": ["proxy"]}),
                               ("GET", "/api/v1/applications", None)]:
        r = httpx.request(method, kr.url + path, json=body, headers=auth)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path, r.text)
    # scoped tokens it mints: only for its workspaces, never creating one, carrying at most its scopes
    own = httpx.post(kr.url + "/api/v1/embedded/scoped-token", json={"workspace_name": "acme"}, headers=auth)
    assert own.status_code == 200
    scoped = {"Authorization": f"Bearer {own.json()['token']}"}
    assert httpx.get(f"{kr.url}/api/{acme}/proxy/echo/echo", headers=scoped).status_code == 200
    execute = httpx.get(f"{kr.url}/api/v1/integrations/connectors", headers=scoped)
    assert execute.status_code == 403  # no `execute`: the application does not hold it
    for name in ("other", "brand-new"):
        r = httpx.post(kr.url + "/api/v1/embedded/scoped-token", json={"workspace_name": name}, headers=auth)
        assert r.status_code == 404
    assert "brand-new" not in str(admin.get("/api/v1/workspaces").json())


def test_an_admin_application_grants_no_more_than_it_holds(kr: KeyrelayServer, admin: Admin) -> None:
    other = admin.workspace("other")
    acme = admin.workspace("acme2")
    boss = _limited(admin, [acme], ["admin", "proxy"])
    auth = _app_token(kr, boss["client_id"], boss["client_secret"])
    wider = [({"name": "a", "workspaces": "*", "scopes": ["proxy"]}, 403),
             ({"name": "a", "workspaces": ["other"], "scopes": ["proxy"]}, 404),
             ({"name": "a", "workspaces": [acme], "scopes": ["execute"]}, 403)]
    for body, status in wider:
        assert httpx.post(kr.url + "/api/v1/applications", json=body, headers=auth).status_code == status
    ok = httpx.post(kr.url + "/api/v1/applications", json={"name": "a", "workspaces": ["acme2"], "scopes": ["proxy"]},
                    headers=auth)
    assert ok.status_code == 201
    listed = httpx.get(kr.url + "/api/v1/applications", headers=auth).json()["data"]
    assert {a["client_id"] for a in listed} == {boss["client_id"], ok.json()["client_id"]}  # not the bootstrap
    assert httpx.post(kr.url + "/api/v1/workspaces", json={"name": "n"}, headers=auth).status_code == 403
    assert [w["id"] for w in httpx.get(kr.url + "/api/v1/workspaces", headers=auth).json()["data"]] == [acme]
    key = httpx.post(kr.url + "/api/v1/api-keys", json={"workspace_id": acme, "scopes": ["proxy"]}, headers=auth)
    assert key.status_code == 201
    assert httpx.post(kr.url + "/api/v1/api-keys", json={"workspace_id": acme, "scopes": ["files"]},
                      headers=auth).status_code == 403
    elsewhere = httpx.post(kr.url + "/api/v1/api-keys", json={"workspace_id": other, "scopes": ["proxy"]}, headers=auth)
    assert elsewhere.status_code == 404
    assert admin.get("/api/v1/api-keys", params={"workspace_id": other}).json()["data"] == []
    bootstrap = next(a for a in admin.get("/api/v1/applications").json()["data"] if a["workspaces"] == "*")
    assert httpx.delete(f"{kr.url}/api/v1/applications/{bootstrap['id']}", headers=auth).status_code == 404


def test_revoking_narrowing_and_rotating_an_application_reach_its_tokens(kr: KeyrelayServer, admin: Admin,
                                                                         upstream: Any) -> None:
    acme = admin.workspace("acme3")
    admin.source(acme, upstream_url=upstream.url, slug="echo")
    app = _limited(admin, [acme], ["proxy", "execute"])
    auth = _app_token(kr, app["client_id"], app["client_secret"])
    scoped = {"Authorization": "Bearer " + httpx.post(kr.url + "/api/v1/embedded/scoped-token", headers=auth,
                                                      json={"workspace_name": "acme3"}).json()["token"]}
    url = f"{kr.url}/api/{acme}/proxy/echo/echo"
    assert httpx.get(url, headers=auth).status_code == httpx.get(url, headers=scoped).status_code == 200
    narrowed = admin.http.patch(f"/api/v1/applications/{app['id']}", json={"scopes": ["execute"]},
                                headers=admin.headers)
    assert narrowed.status_code == 200 and narrowed.json()["scopes"] == ["execute"]
    assert httpx.get(url, headers=auth).status_code == 403  # tokens already issued follow the application
    assert httpx.get(url, headers=scoped).status_code == 403
    admin.http.patch(f"/api/v1/applications/{app['id']}", json={"scopes": ["proxy"]}, headers=admin.headers)
    rotated = admin.post(f"/api/v1/applications/{app['id']}/rotate-secret", {})
    assert rotated.status_code == 200 and rotated.json()["client_secret"] != app["client_secret"]
    assert httpx.get(url, headers=auth).status_code == 401
    fresh = _app_token(kr, app["client_id"], rotated.json()["client_secret"])
    assert httpx.get(url, headers=fresh).status_code == 200
    assert admin.http.delete(f"/api/v1/applications/{app['id']}", headers=admin.headers).status_code == 204
    assert httpx.get(url, headers=fresh).status_code == 401
    r = httpx.post(kr.url + "/api/v1/applications/token",
                   json={"client_id": app["client_id"], "client_secret": rotated.json()["client_secret"]})
    assert r.status_code == 401


# --- attenuation -------------------------------------------------------------------------------------------------

def _attenuate(kr: KeyrelayServer, parent: str, constraints: dict[str, Any], **extra: Any) -> httpx.Response:
    return httpx.post(kr.url + "/api/v1/tokens/attenuate", json={"constraints": constraints, **extra},
                      headers={"Authorization": f"Bearer {parent}"})


def test_a_child_token_is_the_intersection_with_its_parent(kr: KeyrelayServer, admin: Admin, upstream: Any) -> None:
    ws = admin.workspace("att")
    admin.source(ws, upstream_url=upstream.url, slug="echo")
    admin.source(ws, upstream_url=upstream.url, slug="other")
    made = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"],
                                           "constraints": {"sources": ["echo"], "methods": ["GET", "POST"]}})
    parent = made.json()["key"]
    r = _attenuate(kr, parent, {"methods": ["POST", "DELETE"], "sources": ["echo", "other"]}, expires_in=600)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    child, body = r.json()["token"], r.json()
    assert child.startswith("krc_") and body["constraints"]["methods"] == ["DELETE", "POST"]
    assert body["expires_at"] is not None
    h = {"Authorization": f"Bearer {child}"}
    assert httpx.post(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=h, content=b"x").status_code == 200
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=h).json()["error"]["constraint"] == "methods"
    assert httpx.delete(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=h).json()["error"]["constraint"] == "methods"
    assert httpx.post(f"{kr.url}/api/{ws}/proxy/other/echo", headers=h).json()["error"]["constraint"] == "sources"
    # a grandchild: still within both; revoking the parent revokes every descendant
    grand = _attenuate(kr, child, {"paths": ["/echo"]}).json()["token"]
    g = {"Authorization": f"Bearer {grand}"}
    assert httpx.post(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=g).status_code == 200
    assert admin.http.delete(f"/api/v1/api-keys/{made.json()['id']}", headers=admin.headers).status_code == 204
    for auth in (h, g):
        assert httpx.post(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=auth).status_code == 401


def test_a_child_never_outlives_its_parent_and_can_revoke_itself(kr: KeyrelayServer, admin: Admin,
                                                                 upstream: Any) -> None:
    ws = admin.workspace("att2")
    admin.source(ws, upstream_url=upstream.url, slug="echo")
    scoped = admin.scoped_token("att2")  # lives 1200 s
    long = _attenuate(kr, scoped, {}, expires_in=86400).json()
    short = _attenuate(kr, scoped, {"expires_at": "2099-01-01T00:00:00Z"}, expires_in=60).json()
    now = time.time()
    assert now + 1100 < _ts(long["expires_at"]) <= now + 1201
    assert _ts(short["expires_at"]) <= now + 61
    grand = _attenuate(kr, short["token"], {}, expires_in=86400).json()
    assert _ts(grand["expires_at"]) <= _ts(short["expires_at"])
    h = {"Authorization": f"Bearer {short['token']}"}
    g = {"Authorization": f"Bearer {grand['token']}"}
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=g).status_code == 200
    assert httpx.post(kr.url + "/api/v1/tokens/revoke", headers=h).status_code == 204
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=h).status_code == 401
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=g).status_code == 401
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo",
                     headers={"Authorization": f"Bearer {long['token']}"}).status_code == 200
    not_derived = httpx.post(kr.url + "/api/v1/tokens/revoke", headers={"Authorization": f"Bearer {scoped}"})
    assert not_derived.status_code == 400


def test_a_constrained_token_manages_and_mints_nothing(kr: KeyrelayServer, admin: Admin) -> None:
    child = _attenuate(kr, admin.token, {"methods": ["GET"]}).json()["token"]
    h = {"Authorization": f"Bearer {child}"}
    assert httpx.post(kr.url + "/api/v1/workspaces", json={"name": "x"}, headers=h).status_code == 403
    assert httpx.post(kr.url + "/api/v1/embedded/scoped-token", json={"workspace_name": "x"},
                      headers=h).status_code == 403
    assert _attenuate(kr, child, {"methods": ["GET", "POST"]}).status_code == 201  # narrower only by intersection


def test_bad_attenuation_requests_name_the_field(kr: KeyrelayServer, admin: Admin) -> None:
    assert _attenuate(kr, admin.token, {"paths": ["nope"]}).json()["error"]["field"] == "constraints.paths"
    assert _attenuate(kr, admin.token, {}, expires_in=0).status_code == 400
    anon = httpx.post(kr.url + "/api/v1/tokens/attenuate", json={"constraints": {}})
    assert anon.status_code == 401


def _ts(iso_time: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def test_api_keys_hold_data_scopes_only(admin: Admin) -> None:
    ws = admin.workspace("keys-only-data")
    for scope in ("admin", "approve"):
        r = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy", scope]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "scopes"
    bad = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"], "constraints": {"paths": ["x"]}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "constraints.paths"
