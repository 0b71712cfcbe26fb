"""API keys and applications in the console: a new key or client secret is shown once, on the answer to the
form, and works; lists never show it; a revoked key is refused at the next request."""

from __future__ import annotations

import re

import httpx

from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream


def _shown_once(page: str) -> str:
    found = re.search(r'<code class="secret-once" id="shown-once">([^<]+)</code>', page)
    assert found, "no value shown"
    return found.group(1)


def test_a_key_is_shown_once_works_and_stops_working_when_revoked(kr: KeyrelayServer, admin: Admin,
                                                                  upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    admin.source(ws, upstream_url=upstream.url)
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": ws, "name": "support-agent",
                                                    "scopes": ["proxy", "logs"], "expires_in_days": "30"})
    assert r.status_code == 201
    assert_page_headers(r)
    key = _shown_once(r.text)
    assert key.startswith("kr_") and "only time it is shown" in r.text
    url = f"{kr.url}/api/{ws}/proxy/echo/echo"
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    (listed,) = admin.get("/api/v1/api-keys").json()["data"]
    assert listed["scopes"] == ["logs", "proxy"] and listed["name"] == "support-agent" and listed["expires_at"]
    keys_page = c.get("/console/keys").text
    assert key not in keys_page and key[:7] in keys_page  # recognisable, never whole
    confirm = c.get(f"/console/keys/{listed['id']}/revoke")
    assert "Revoke API key support-agent?" in confirm.text
    r = c.submit(f"/console/keys/{listed['id']}/revoke", f"/console/keys/{listed['id']}/revoke", {})
    assert (r.status_code, r.headers["location"]) == (303, "/console/keys?done=revoked")
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "revoked" in notice(c.get("/console/keys?done=revoked").text, "ok")
    for path in ("/console/", "/console/keys", f"/console/workspaces/{ws}", "/console/logs"):
        assert key not in c.get(path).text, path


def test_a_key_gets_only_the_scopes_ticked(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    admin.source(ws, upstream_url=upstream.url)
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": ws, "scopes": ["logs", "root"]})
    key = _shown_once(r.text)
    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"}
                     ).status_code == 403
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": ws})
    assert r.status_code == 400 and "scope" in notice(r.text)
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": ws, "scopes": "proxy", "expires_in_days": "-1"})
    assert r.status_code == 400 and "days" in notice(r.text)
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": "nope", "scopes": "proxy"})
    assert r.status_code == 404


def test_a_key_is_offered_and_given_data_scopes_only(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/keys").text
    offered = set(re.findall(r'name="scopes" value="([^"]+)"', page))
    assert offered == {"proxy", "files", "query", "execute", "mcp", "logs"}  # never admin or approve
    for scope in ("admin", "approve"):
        r = c.submit("/console/keys", "/console/keys", {"workspace_id": ws, "scopes": ["proxy", scope]})
        assert r.status_code == 400 and "data scopes" in notice(r.text)
    assert admin.get("/api/v1/api-keys").json()["data"] == []


def test_revoking_needs_the_token_for_that_key(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    admin.source(ws, upstream_url=upstream.url)
    first, second = admin.api_key(ws, ["proxy"]), admin.api_key(ws, ["proxy"])
    ids = [k["id"] for k in admin.get("/api/v1/api-keys").json()["data"]]
    c = ConsoleClient(kr.url).signed_in()

    other = csrf_of(c.get(f"/console/keys/{ids[1]}/revoke").text, f"/console/keys/{ids[1]}/revoke")
    assert c.http.post(f"/console/keys/{ids[0]}/revoke", data={"csrf": other}).status_code == 403
    for key in (first, second):
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"}
                         ).status_code == 200


def test_an_application_secret_is_shown_once_and_signs_in(kr: KeyrelayServer, admin: Admin) -> None:
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit("/console/applications", "/console/applications",
                 {"name": "billing-backend", "workspaces": "*", "scopes": ["admin", "proxy", "logs"]})
    assert r.status_code == 201
    assert_page_headers(r)
    secret = _shown_once(r.text)
    client_id = re.search(r'<dd><code class="mono">([^<]+)</code></dd>', r.text).group(1)  # type: ignore[union-attr]
    token = httpx.post(kr.url + "/api/v1/applications/token", json={"client_id": client_id, "client_secret": secret})
    assert token.status_code == 200
    assert ConsoleClient(kr.url).sign_in(client_id, secret).status_code == 303
    listing = c.get("/console/applications").text
    assert client_id in listing and secret not in listing and "billing-backend" in listing
    assert re.search(r"bootstrap admin <span class=\"badge\">you</span>", listing)
    (created,) = [a for a in admin.get("/api/v1/applications").json()["data"] if a["client_id"] == client_id]
    assert (created["workspaces"], created["scopes"]) == ("*", ["admin", "logs", "proxy"])
    r = c.submit("/console/applications", "/console/applications", {"name": " ", "workspaces": "*", "scopes": "proxy"})
    assert r.status_code == 400
    r = c.submit("/console/applications", "/console/applications", {"name": "nothing", "workspaces": "*"})
    assert r.status_code == 400 and "scope" in notice(r.text)
