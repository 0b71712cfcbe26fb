"""Connect's admin routes (doors/connect_api.py) over HTTP: only application tokens reach them; a session's token
is in the create answer only; an OAuth client's secret is never returned; the URLs handed out point at this
keyrelay (or KEYRELAY_PUBLIC_URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer, make_settings

SECRET = "oauth-client-secret-canary-31f0"
ROUTES = [("POST", "/api/v1/connect/sessions"), ("GET", "/api/v1/connect/sessions"),
          ("GET", "/api/v1/connect/sessions/x"), ("DELETE", "/api/v1/connect/sessions/x"),
          ("PUT", "/api/v1/oauth-clients/github"), ("GET", "/api/v1/oauth-clients"),
          ("GET", "/api/v1/oauth-clients/github"), ("DELETE", "/api/v1/oauth-clients/github")]


def test_a_session_is_created_listed_read_and_deleted_and_its_token_is_shown_once(kr: KeyrelayServer,
                                                                                  admin: Admin) -> None:
    r = admin.post("/api/v1/connect/sessions", {"workspace": "acme", "connectors": ["stripe", "github"],
                                                "allowed_origins": ["https://app.example.com"], "expires_in": 900})
    assert r.status_code == 201, r.text
    made = r.json()
    token = made["token"]
    assert made["url"] == f"{kr.url}/connect/{token}" and token.startswith("krc_")
    assert (made["connectors"], made["allowed_origins"], made["status"]) == \
        (["stripe", "github"], ["https://app.example.com"], "pending")
    listed = admin.get("/api/v1/connect/sessions", params={"workspace_id": made["workspace_id"]})
    one = admin.get(f"/api/v1/connect/sessions/{made['id']}")
    assert [s["id"] for s in listed.json()["data"]] == [made["id"]] and one.json()["id"] == made["id"]
    for read in (listed, one):
        assert token not in read.text and token[4:] not in read.text and "url" not in read.json()
    assert httpx.get(made["url"]).status_code == 200  # the picker: two connectors
    assert admin.http.delete(f"/api/v1/connect/sessions/{made['id']}", headers=admin.headers).status_code == 204
    assert httpx.get(made["url"]).status_code == 404
    assert admin.get(f"/api/v1/connect/sessions/{made['id']}").status_code == 404


@pytest.mark.parametrize("body,field", [
    ({"connectors": ["nope"]}, "connectors"), ({"expires_in": 7200}, "expires_in"),
    ({"redirect_url": "https://evil.example.com/"}, "redirect_url"), ({"token": "mine"}, "token"),
    ({"allowed_origins": ["https://app.example.com/path"]}, "allowed_origins"),
])
def test_bad_session_bodies_are_refused_by_field(kr: KeyrelayServer, admin: Admin, body: dict[str, Any],
                                                 field: str) -> None:
    r = admin.post("/api/v1/connect/sessions", {"workspace": "acme", **body})
    assert r.status_code == 400 and r.json()["error"]["field"] == field


def test_only_application_tokens_reach_the_routes(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    for auth in (None, f"Bearer {admin.api_key(ws, ['proxy', 'execute'])}", f"Bearer {admin.scoped_token('acme')}"):
        headers = {"Authorization": auth} if auth else {}
        for method, path in ROUTES:
            r = httpx.request(method, kr.url + path, headers=headers, json={"workspace": "acme"})
            assert r.status_code == (401 if auth is None else 403), (method, path, auth, r.text)


def test_a_connect_token_opens_no_api_route(kr: KeyrelayServer, admin: Admin) -> None:
    made = admin.post("/api/v1/connect/sessions", {"workspace": "acme"}).json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    for method, path in [*ROUTES, ("GET", "/api/v1/sources"), ("GET", "/api/v1/workspaces"),
                         ("GET", f"/api/{made['workspace_id']}/proxy/any/x"), ("GET", "/api/v1/logs")]:
        r = httpx.request(method, kr.url + path, headers=auth, json={})
        assert r.status_code == 401, (method, path, r.text)


def test_an_oauth_client_secret_is_write_only(kr: KeyrelayServer, admin: Admin) -> None:
    r = admin.http.put("/api/v1/oauth-clients/github", headers=admin.headers,
                       json={"client_id": "Iv1.abc", "client_secret": SECRET, "scopes": ["repo"]})
    assert r.status_code == 200, r.text
    view = r.json()
    assert (view["client_id"], view["client_secret"], view["scopes"]) == ("Iv1.abc", "set", ["repo"])
    assert view["redirect_uri"] == f"{kr.url}/connect/oauth/callback"
    for read in (r, admin.get("/api/v1/oauth-clients"), admin.get("/api/v1/oauth-clients/github")):
        assert read.status_code == 200 and SECRET not in read.text
    assert admin.http.delete("/api/v1/oauth-clients/github", headers=admin.headers).status_code == 204
    assert admin.get("/api/v1/oauth-clients/github").status_code == 404
    r = admin.http.put("/api/v1/oauth-clients/stripe", headers=admin.headers,
                       json={"client_id": "c", "client_secret": SECRET})
    assert r.status_code == 404 and SECRET not in r.text


def test_the_public_url_setting_names_where_browsers_and_providers_come(tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path, public_url="https://connect.example.com/")
    with KeyrelayServer(settings) as server:
        admin = Admin(server.url)
        made = admin.post("/api/v1/connect/sessions", {"workspace": "acme"}).json()
        assert made["url"] == f"https://connect.example.com/connect/{made['token']}"
        r = admin.http.put("/api/v1/oauth-clients/hubspot", headers=admin.headers,
                           json={"client_id": "c", "client_secret": "s"})
        assert r.json()["redirect_uri"] == "https://connect.example.com/connect/oauth/callback"
        admin.close()


@pytest.mark.parametrize("value", ["https://x.example.com/prefix", "ftp://x.example.com", "https://u@x.example.com",
                                   "x.example.com"])
def test_a_public_url_that_is_not_an_origin_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        make_settings(data_dir=tmp_path, public_url=value)
