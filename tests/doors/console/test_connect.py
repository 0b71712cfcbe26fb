"""Connect links in the console (doors/console/connect.py): a connect session made through the connect service
for chosen connectors, its link shown once on the page answering the form (never in a console URL), CSRF on
the forms, a limited application's workspaces only, and a reconnect link for a source in `needs_reauth`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream


def _link(page: str) -> str:
    found = re.search(r'<code class="secret-once connect-url" id="shown-once">([^<]+)</code>', page)
    assert found, "no connect link on the page"
    return found.group(1)


def _sessions(admin: Admin, ws: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = admin.get("/api/v1/connect/sessions", params={"workspace_id": ws}).json()["data"]
    return out


def test_a_connect_link_is_made_for_the_chosen_connectors_and_shown_once(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    assert f'href="/console/workspaces/{ws}/connect"' in c.get(f"/console/workspaces/{ws}").text
    form = c.get(f"/console/workspaces/{ws}/connect")
    assert form.status_code == 200 and 'value="stripe"' in form.text
    assert_page_headers(form)
    r = c.submit(f"/console/workspaces/{ws}/connect", f"/console/workspaces/{ws}/connect",
                 [("connectors", "stripe"), ("connectors", "github"), ("expires_in", "900")])
    assert r.status_code == 201, r.text
    assert_page_headers(r)
    url = _link(r.text)
    token = url.rsplit("/", 1)[1]
    assert url == f"{kr.url}/connect/{token}" and token.startswith("krc_")
    assert str(r.url) == f"{kr.url}/console/workspaces/{ws}/connect"  # the token is in no console URL
    [made] = _sessions(admin, ws)
    assert made["connectors"] == ["stripe", "github"] and made["status"] == "pending" and made["source_id"] is None
    assert token not in str(made)
    assert httpx.get(url).status_code == 200  # the end customer's page
    for path in ("/console/", f"/console/workspaces/{ws}", "/console/workspaces"):
        assert token not in c.get(path).text


def test_a_bad_choice_is_refused_by_the_service(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit(f"/console/workspaces/{ws}/connect", f"/console/workspaces/{ws}/connect",
                 {"connectors": "http"})  # not a connector that can be checked live
    assert r.status_code == 400 and "connectors may name only" in notice(r.text)
    assert _sessions(admin, ws) == []


def test_the_form_needs_its_csrf_token(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws, other = admin.workspace("acme"), admin.workspace("globex")
    src = admin.source(ws, upstream_url=upstream.url)
    c = ConsoleClient(kr.url).signed_in()
    token = csrf_of(c.get(f"/console/workspaces/{other}/connect").text, f"/console/workspaces/{other}/connect")
    for data in ({"connectors": "stripe"}, {"csrf": "x"}, {"csrf": token}):  # none, made up, another workspace's
        r = c.http.post(f"/console/workspaces/{ws}/connect", data=data)
        assert r.status_code == 403, data
        assert_page_headers(r)
    assert c.http.post(f"/console/sources/{src['id']}/reconnect", data={"csrf": token}).status_code == 403
    assert _sessions(admin, ws) == []


def test_a_limited_application_connects_only_its_workspaces(kr: KeyrelayServer, admin: Admin) -> None:
    mine, theirs = admin.workspace("mine-corp"), admin.workspace("theirs-corp")
    r = admin.post("/api/v1/applications", {"name": "op", "workspaces": [mine], "scopes": ["admin", "proxy"]})
    c = ConsoleClient(kr.url)
    assert c.sign_in(r.json()["client_id"], r.json()["client_secret"]).status_code == 303
    assert c.get(f"/console/workspaces/{theirs}/connect").status_code == 404
    made = c.submit(f"/console/workspaces/{mine}/connect", f"/console/workspaces/{mine}/connect",
                    {"connectors": "stripe"})
    assert made.status_code == 201 and len(_sessions(admin, mine)) == 1 and _sessions(admin, theirs) == []
    viewer = admin.post("/api/v1/applications", {"name": "viewer", "workspaces": "*", "scopes": ["proxy"]}).json()
    v = ConsoleClient(kr.url)
    assert v.sign_in(viewer["client_id"], viewer["client_secret"]).status_code == 303
    assert v.get(f"/console/workspaces/{mine}/connect").status_code == 403


def test_a_source_that_needs_reauth_gets_a_reconnect_link(kr: KeyrelayServer, admin: Admin,
                                                          upstream: FakeUpstream) -> None:
    from keyrelay.store.engine import make_engine
    from keyrelay.store.sources import SqlSourceStore

    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url="", slug="stripe", connector="stripe", config={"base_url": upstream.url},
                       credentials={"api_key": "sk_test_reconnect"})
    c = ConsoleClient(kr.url).signed_in()
    action = f"/console/sources/{src['id']}/reconnect"
    assert action not in c.get(f"/console/sources/{src['id']}").text  # only when the upstream refused

    async def refused() -> None:
        engine = make_engine(kr.settings.resolved_database_url)
        try:
            await SqlSourceStore(engine).update_source(src["id"], changes={"status": "needs_reauth"}, sealed=None,
                                                       now=0.0)
        finally:
            await engine.dispose()

    asyncio.run(refused())
    r = c.submit(f"/console/sources/{src['id']}", action, {})
    assert r.status_code == 201, r.text
    token = _link(r.text).rsplit("/", 1)[1]
    [made] = _sessions(admin, ws)
    assert made["source_id"] == src["id"] and made["connectors"] == ["stripe"]
    assert "sk_test_reconnect" not in r.text and token not in c.get(f"/console/sources/{src['id']}").text
