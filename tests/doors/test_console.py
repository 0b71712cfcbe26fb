"""The operator console as a whole: every console route answers a stranger with the sign-in page (or 401 on the
event stream) and does nothing; every page carries the strict headers; and an operator's first session in a
real browser (Debian's chromium through Playwright) works end to end, at desktop and phone widths, with no
policy violation, while hostile names stay text in the rows the page's script writes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from keyrelay.doors.console import PARTS
from support.browser import PHONE, browser, page_in
from support.console import ConsoleClient, assert_page_headers
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer
from support.upstream import FakeUpstream

XSS = "<img src=x onerror=alert(1)>"
PUBLIC = {"/console", "/console/sign-in", "/console/link"}  # reachable before signing in


def _routes() -> list[tuple[str, str]]:
    out = []
    for part in PARTS:
        for route in part.router.routes:
            assert isinstance(route, APIRoute)
            out.extend((method, route.path) for method in sorted(route.methods))
    return out


def test_the_route_table_is_what_this_file_covers() -> None:
    paths = {p for _, p in _routes()}
    assert len(paths) >= 20 and all(p == "/console" or p.startswith("/console/") for p in paths)


@pytest.fixture
def objects(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, str]:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url)
    admin.api_key(ws, ["proxy"])
    key_id = admin.get("/api/v1/api-keys").json()["data"][0]["id"]
    return {"workspace_id": ws, "source_id": str(src["id"]), "key_id": key_id,
            "approval_id": "00000000-0000-0000-0000-000000000000"}  # only posted to, and refused, by a stranger


def _fill(path: str, objects: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: objects[m.group(1)], path)


def test_a_stranger_gets_the_sign_in_page_and_changes_nothing(kr: KeyrelayServer, admin: Admin,
                                                              objects: dict[str, str]) -> None:
    before = (admin.get("/api/v1/workspaces").json(), admin.get("/api/v1/sources").json(),
              admin.get("/api/v1/api-keys").json())
    for method, path in _routes():
        if path in PUBLIC:
            continue
        url = kr.url + _fill(path, objects)
        r = httpx.request(method, url, data={"name": "x", "csrf": "x"} if method == "POST" else None,
                          headers={"Authorization": f"Bearer {admin.token}"})  # a bearer token does not help
        if path == "/console/logs/stream":
            assert r.status_code == 401
            continue
        assert r.status_code == 303, (method, path)
        assert r.headers["location"].startswith("/console/sign-in?next=/console/"), (method, path)
    after = (admin.get("/api/v1/workspaces").json(), admin.get("/api/v1/sources").json(),
             admin.get("/api/v1/api-keys").json())
    assert after == before


def test_every_page_carries_the_strict_headers(kr: KeyrelayServer, objects: dict[str, str]) -> None:
    c = ConsoleClient(kr.url)
    for path in ("/console/sign-in", "/console/link?token=krl_x"):
        assert_page_headers(c.get(path))
    c.signed_in()
    for method, path in _routes():
        if method != "GET" or path in PUBLIC or path == "/console/logs/stream":
            continue
        r = c.get(_fill(path, objects))
        assert r.status_code == 200, path
        assert_page_headers(r)
        assert r.headers["x-frame-options"] == "DENY"


# --- in a real browser ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


def _sign_in(page: Any, url: str) -> None:
    page.goto(url + "/console/")
    page.fill("#client_id", ADMIN_ID)
    page.fill("#client_secret", ADMIN_SECRET)
    page.click("form[action='/console/sign-in'] button[type=submit]")
    page.wait_for_url(url + "/console/")


def test_a_first_session_in_a_browser(kr: KeyrelayServer, chromium: Any, upstream: FakeUpstream) -> None:
    with page_in(chromium) as page:
        _sign_in(page, kr.url)
        assert page.locator("h1").inner_text() == "Overview"
        # a workspace
        page.click("nav >> text=Workspaces")
        page.fill("#ws-name", "acme")
        page.click("form[action='/console/workspaces'] button[type=submit]")
        page.wait_for_selector("text=Workspace created")
        ws = page.url.split("/console/workspaces/")[1].split("?")[0]
        # a source against the loopback upstream, from the form the http connector's schema generates
        page.click("text=Add source")
        page.check("input[name=connector][value=http]")
        page.click("text=Continue")
        page.fill("#src-name", "crm")
        page.fill("#f-config-upstream_url", upstream.url)
        page.fill("#f-credentials-bearer_token", "sk_live_browser")
        page.click("form[action='/console/sources/new'] button[type=submit]")
        page.wait_for_selector("text=Source created")
        # a key, shown once
        page.goto(f"{kr.url}/console/keys?workspace_id={ws}")
        page.fill("#key-name", "agent")
        page.click("#new-key button[type=submit]")
        key = page.locator("#shown-once").inner_text().strip()
        assert key.startswith("kr_")
        # a proxied request shows up in the live logs within 2 s
        page.goto(kr.url + "/console/logs")
        page.wait_for_selector("#live-state.on")
        r = httpx.get(f"{kr.url}/api/{ws}/proxy/crm/echo?page=1", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert upstream.requests[-1].header("authorization") == "Bearer sk_live_browser"
        row = page.wait_for_selector("#log-rows tr:has-text('/crm/echo')", timeout=2000)
        assert "200" in row.inner_text() and "crm" in row.inner_text() and "acme" in row.inner_text()
        row.click()  # the detail view
        page.wait_for_selector("#log-detail[open]")
        detail = page.locator("#log-detail-fields").inner_text()
        assert f"/api/{ws}/proxy/crm/echo" in detail and "key:" in detail
        page.keyboard.press("Escape")
        # ... and in the overview's counts (the request log is written in batches: poll with a deadline)
        deadline = time.monotonic() + 5
        while True:
            page.goto(kr.url + "/console/")
            count = page.locator(".stat:has-text('Requests / min') .sub").inner_text()
            if count.startswith("1 ") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert count == "1 in the hour"
        assert page.locator("table:has-text('Busiest') >> text=crm").count() == 1 or "crm" in page.content()
        # revoke the key: the next request is refused
        page.goto(kr.url + "/console/keys")
        page.click("a.button:has-text('Revoke')")
        page.click("form[action$='/revoke'] button[type=submit]")
        page.wait_for_selector("text=The key was revoked")
        r = httpx.get(f"{kr.url}/api/{ws}/proxy/crm/echo", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401
        # signing out ends it
        page.click("text=Sign out")
        page.wait_for_url(re.compile(r".*/console/sign-in\?signed_out=1$"))
        page.goto(kr.url + "/console/keys")
        assert "/console/sign-in" in page.url
        assert not page.errors, page.errors  # no CSP violation, no script error


def test_hostile_names_stay_text_in_live_rows(kr: KeyrelayServer, admin: Admin, chromium: Any,
                                              upstream: FakeUpstream) -> None:
    ws = admin.workspace(XSS)
    src = admin.source(ws, upstream_url=upstream.url, slug="xss")
    admin.http.patch(f"/api/v1/sources/{src['id']}", json={"name": XSS}, headers=admin.headers)
    key = admin.api_key(ws, ["proxy"])
    with page_in(chromium) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _sign_in(page, kr.url)
        page.goto(kr.url + "/console/logs")
        page.wait_for_selector("#live-state.on")
        httpx.get(f"{kr.url}/api/{ws}/proxy/xss/echo/%3Cimg%20src=x%20onerror=alert(2)%3E",
                  headers={"Authorization": f"Bearer {key}"})
        row = page.wait_for_selector("#log-rows tr.fresh", timeout=2000)
        assert XSS in row.inner_text()  # the names, as text
        assert page.locator("#log-rows img").count() == 0
        row.click()
        assert XSS in page.locator("#log-detail-fields").inner_text()
        assert page.locator("#log-detail img").count() == 0
        page.goto(kr.url + "/console/sources")
        assert page.locator("main img").count() == 0 and XSS in page.locator("main").inner_text()
        assert not dialogs and not page.errors, (dialogs, page.errors)


PHONE_PAGES = ["/console/", "/console/workspaces", "/console/sources", "/console/keys", "/console/logs",
               "/console/vault", "/console/applications", "/console/sources/{source_id}",
               "/console/sources/new?workspace_id={workspace_id}&connector=http", "/console/workspaces/{workspace_id}"]


def test_pages_fit_a_phone(kr: KeyrelayServer, chromium: Any, objects: dict[str, str]) -> None:
    with page_in(chromium, viewport=PHONE) as page:
        _sign_in(page, kr.url)
        for path in PHONE_PAGES:
            page.goto(kr.url + _fill(path, objects))
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
            assert page.locator("nav >> text=Live logs").is_visible(), path
        assert not page.errors, page.errors
