"""Least privilege in the console: a session reaches what its application's tokens reach. An application limited
to some workspaces sees and acts on those only (another workspace's objects are absent from every list and 404
on their own pages); one without `admin` gets a "Not allowed" page inside the console's frame, never a 500."""

from __future__ import annotations

from typing import Any

import httpx

from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import Admin, KeyrelayServer, logged
from support.upstream import FakeUpstream


def _application(admin: Admin, name: str, workspaces: list[str] | str, scopes: list[str]) -> dict[str, Any]:
    r = admin.post("/api/v1/applications", {"name": name, "workspaces": workspaces, "scopes": scopes})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _signed_in_as(kr: KeyrelayServer, app: dict[str, Any]) -> ConsoleClient:
    c = ConsoleClient(kr.url)
    r = c.sign_in(app["client_id"], app["client_secret"])
    assert r.status_code == 303, r.text
    return c


def _two_customers(admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    mine, theirs = admin.workspace("mine-corp"), admin.workspace("theirs-corp")
    own = admin.source(mine, upstream_url=upstream.url, slug="own-src")
    other = admin.source(theirs, upstream_url=upstream.url, slug="other-src")
    own_key, other_key = admin.api_key(mine, ["proxy"]), admin.api_key(theirs, ["proxy"])
    keys = {k["workspace_id"]: k["id"] for k in admin.get("/api/v1/api-keys").json()["data"]}
    return {"mine": mine, "theirs": theirs, "own": own, "other": other, "own_key": own_key,
            "other_key": other_key, "own_key_id": keys[mine], "other_key_id": keys[theirs]}


def test_a_limited_application_sees_only_its_workspaces(kr: KeyrelayServer, admin: Admin,
                                                         upstream: FakeUpstream) -> None:
    w = _two_customers(admin, upstream)
    for key, slug, ws in ((w["own_key"], "own-src", w["mine"]), (w["other_key"], "other-src", w["theirs"])):
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/{slug}/echo",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 200
    logged(admin, 2)
    _application(admin, "theirs-agent", [w["theirs"]], ["proxy"])  # an application of the other customer
    app = _application(admin, "mine-operator", [w["mine"]], ["admin", "proxy", "logs"])
    c = _signed_in_as(kr, app)

    pages = ["/console/", "/console/workspaces", "/console/sources", "/console/keys", "/console/applications",
             "/console/logs", f"/console/workspaces/{w['mine']}", f"/console/sources/{w['own']['id']}"]
    for path in pages:
        page = c.get(path)
        assert page.status_code == 200, (path, page.text)
        assert_page_headers(page)
        assert "theirs-corp" not in page.text and "other-src" not in page.text, path
        assert "theirs-agent" not in page.text, path
        assert w["theirs"] not in page.text and w["other"]["id"] not in page.text, path
    assert "mine-corp" in c.get("/console/workspaces").text and "own-src" in c.get("/console/sources").text
    logs = c.get("/console/logs").text
    assert "own-src" in logs and "/other-src/" not in logs
    assert w["own_key_id"] in c.get("/console/keys").text
    assert 'href="/console/vault"' not in c.get("/console/").text  # the key ring serves every workspace

    for path in (f"/console/workspaces/{w['theirs']}", f"/console/workspaces/{w['theirs']}/delete",
                 f"/console/sources/{w['other']['id']}", f"/console/sources/{w['other']['id']}/credentials",
                 f"/console/sources/{w['other']['id']}/delete", f"/console/sources/new?workspace_id={w['theirs']}"
                 "&connector=http", f"/console/keys/{w['other_key_id']}/revoke",
                 f"/console/logs?workspace_id={w['theirs']}"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert_page_headers(r)
    assert c.get("/console/vault").status_code == 403


def test_a_limited_application_cannot_act_outside_its_workspaces(kr: KeyrelayServer, admin: Admin,
                                                                 upstream: FakeUpstream) -> None:
    w = _two_customers(admin, upstream)
    app = _application(admin, "mine-operator", [w["mine"]], ["admin", "proxy"])
    c = _signed_in_as(kr, app)
    # a form of its own, pointed at another workspace's objects: refused as unknown, nothing changes
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": w["theirs"], "scopes": "proxy"})
    assert r.status_code == 404
    assert [k["workspace_id"] for k in admin.get("/api/v1/api-keys").json()["data"]].count(w["theirs"]) == 1
    r = c.submit("/console/keys", "/console/keys", {"workspace_id": w["mine"], "scopes": "logs"})
    assert r.status_code == 403 and "logs" in notice(r.text)  # a scope it does not hold itself
    r = c.submit(f"/console/sources/new?workspace_id={w['mine']}&connector=http", "/console/sources/new",
                 {"workspace_id": w["theirs"], "connector": "http", "name": "sneaky",
                  "config.upstream_url": upstream.url})
    assert r.status_code == 404
    # CSRF tokens are bound to the object, so the other workspace's forms cannot even be sent
    token = csrf_of(c.get(f"/console/workspaces/{w['mine']}/delete").text, f"/console/workspaces/{w['mine']}/delete")
    assert c.http.post(f"/console/workspaces/{w['theirs']}/delete", data={"csrf": token}).status_code == 403
    r = c.submit("/console/workspaces", "/console/workspaces", {"name": "new-corp"}) \
        if 'action="/console/workspaces"' in c.get("/console/workspaces").text else None
    assert r is None  # no "New workspace" form: a new workspace would lie outside its reach
    assert [s["slug"] for s in admin.get("/api/v1/sources").json()["data"]] == ["own-src", "other-src"]
    assert {x["name"] for x in admin.get("/api/v1/workspaces").json()["data"]} == {"mine-corp", "theirs-corp"}

    # applications: it could grant only its own workspaces and scopes
    page = c.get("/console/applications").text
    assert 'value="*"' not in page and w["theirs"] not in page and 'value="logs"' not in page
    for data, status in (({"name": "x", "workspaces": "*", "scopes": "proxy"}, 403),
                         ({"name": "x", "workspaces": w["theirs"], "scopes": "proxy"}, 404),
                         ({"name": "x", "workspaces": w["mine"], "scopes": ["proxy", "approve"]}, 403)):
        assert c.submit("/console/applications", "/console/applications", data).status_code == status, data
    r = c.submit("/console/applications", "/console/applications",
                 {"name": "mine-agent-backend", "workspaces": w["mine"], "scopes": "proxy"})
    assert r.status_code == 201
    (granted,) = [a for a in admin.get("/api/v1/applications").json()["data"] if a["name"] == "mine-agent-backend"]
    assert (granted["workspaces"], granted["scopes"]) == ([w["mine"]], ["proxy"])


def test_an_application_without_admin_gets_a_clear_refusal(kr: KeyrelayServer, admin: Admin,
                                                            upstream: FakeUpstream) -> None:
    w = _two_customers(admin, upstream)
    watcher = _signed_in_as(kr, _application(admin, "log-watcher", [w["mine"]], ["logs"]))
    assert watcher.get("/console/").headers["location"] == "/console/logs"  # where signing in lands
    page = watcher.get("/console/logs")
    assert page.status_code == 200 and 'href="/console/keys"' not in page.text
    for path in ("/console/workspaces", "/console/sources", "/console/keys", "/console/applications",
                 "/console/vault", f"/console/workspaces/{w['mine']}", f"/console/sources/{w['own']['id']}"):
        r = watcher.get(path)
        assert r.status_code == 403, path
        assert_page_headers(r)
        assert "admin" in r.text and 'action="/console/sign-out"' in r.text  # in the frame: signing out works
    nothing = _signed_in_as(kr, _application(admin, "approver", "*", ["approve"]))
    for path in ("/console/", "/console/logs", "/console/logs/stream"):
        assert nothing.get(path).status_code == 403, path
