"""Signing in and out of the console over HTTP against a live keyrelay: the cookie's attributes, CSRF on the
sign-in forms, failures that never say which part was wrong, rate limits, one-time links that only a POST
spends, sign-out, idle expiry (the service's clock is moved, nothing sleeps), and bearer tokens that never open
a console session."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from keyrelay.manage.console import LINK_FAILED, SIGN_IN_FAILED, ConsoleService
from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer


def _console(kr: KeyrelayServer) -> ConsoleService:
    assert kr.app.runtime is not None
    service = kr.app.runtime.services.extras["console"]
    assert isinstance(service, ConsoleService)
    return service


def _set_cookie(r: httpx.Response, name: str) -> str:
    return next(c for c in r.headers.get_list("set-cookie") if c.startswith(name + "="))


def test_signed_out_pages_lead_to_the_sign_in_page(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/console")
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    r = httpx.get(kr.url + "/console/sources?workspace_id=w1")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in?next=/console/sources%3Fworkspace_id%3Dw1"
    page = httpx.get(kr.url + "/console/sign-in")
    assert page.status_code == 200
    assert_page_headers(page)
    assert 'name="client_secret"' in page.text and "keyrelay console-link" in page.text


def test_signing_in_sets_a_strict_http_only_session_cookie(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url)
    r = c.sign_in()
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    cookie = _set_cookie(r, "kr_console")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"path", "httponly", "samesite"} <= attrs and "secure" not in attrs  # plain http here
    assert "Path=/console" in cookie and "SameSite=Strict" in cookie
    assert c.session is not None and c.session.startswith("krc_")
    page = c.get("/console/")
    assert page.status_code == 200
    assert_page_headers(page)
    assert "bootstrap admin" in page.text
    assert c.session not in page.text  # the session value lives in the cookie only


@pytest.fixture
def secure_cookie(kr_settings: dict[str, Any]) -> None:
    kr_settings["console_secure_cookie"] = True


@pytest.fixture
def three_sign_ins(kr_settings: dict[str, Any]) -> None:
    kr_settings["console_sign_in_per_minute"] = 3


@pytest.mark.usefixtures("secure_cookie")
def test_the_cookies_are_secure_when_the_setting_says_so(kr: KeyrelayServer) -> None:
    page = httpx.get(kr.url + "/console/sign-in")  # (a TLS-terminating proxy would sit in front)
    pre = _set_cookie(page, "kr_console_pre")
    assert "; Secure" in pre
    r = httpx.post(kr.url + "/console/sign-in", cookies={"kr_console_pre": pre.split(";")[0].split("=", 1)[1]},
                   data={"csrf": csrf_of(page.text, "/console/sign-in"), "client_id": ADMIN_ID,
                         "client_secret": ADMIN_SECRET})
    assert r.status_code == 303
    assert "; Secure" in _set_cookie(r, "kr_console")


def test_a_new_sign_in_never_adopts_a_planted_session_value(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url)
    c.http.cookies.set("kr_console", "krc_" + "a" * 43, domain="127.0.0.1", path="/console")
    assert c.get("/console/").status_code == 303
    c.sign_in()
    assert c.session != "krc_" + "a" * 43


@pytest.mark.parametrize("case", ["missing", "another browser's", "another form's"])
def test_the_sign_in_form_needs_its_own_csrf_token(kr: KeyrelayServer, case: str) -> None:
    c, other = ConsoleClient(kr.url), ConsoleClient(kr.url)
    page = c.get("/console/sign-in").text
    token = {"missing": "", "another browser's": csrf_of(other.get("/console/sign-in").text, "/console/sign-in"),
             "another form's": ""}[case]
    if case == "another form's":  # the link form's token, from the same browser
        token = csrf_of(c.get("/console/link?token=krl_x").text, None)
    assert csrf_of(page, "/console/sign-in") != token
    r = c.http.post("/console/sign-in", data={"csrf": token, "client_id": ADMIN_ID, "client_secret": ADMIN_SECRET})
    assert r.status_code == 403
    assert "expired" in notice(r.text)
    assert c.session is None


def test_a_failed_sign_in_looks_the_same_whichever_part_was_wrong(kr: KeyrelayServer) -> None:
    answers = []
    for client_id, secret in ((ADMIN_ID, "krs_wrong"), ("kr_app_unknown", ADMIN_SECRET), ("", "")):
        c = ConsoleClient(kr.url)
        r = c.sign_in(client_id, secret)
        assert r.status_code == 401 and c.session is None
        answers.append(notice(r.text))
    assert answers == [SIGN_IN_FAILED] * 3


def test_keys_and_tokens_are_not_client_secrets(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    for secret in (admin.api_key(ws, ["proxy", "logs"]), admin.scoped_token("acme"), admin.token):
        assert ConsoleClient(kr.url).sign_in(ADMIN_ID, secret).status_code == 401


def test_a_bearer_token_never_opens_a_console_session(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    for token in (admin.token, admin.scoped_token("acme"), admin.api_key(ws, ["proxy", "logs"])):
        for headers, cookies in (({"Authorization": f"Bearer {token}"}, {}), ({}, {"kr_console": token})):
            r = httpx.get(kr.url + "/console/", headers=headers, cookies=cookies)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in"), token[:4]
            r = httpx.get(kr.url + "/console/logs/stream", headers=headers, cookies=cookies)
            assert r.status_code == 401


@pytest.mark.usefixtures("three_sign_ins")
def test_sign_in_attempts_are_limited(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url)
    for _ in range(3):
        assert c.sign_in(ADMIN_ID, "krs_guess").status_code == 401
    r = c.sign_in()  # the right secret, but from an address over its limit
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "Too many sign-in attempts" in notice(r.text)
    assert c.session is None


def test_a_one_time_link_is_spent_by_its_post_only_once(kr: KeyrelayServer) -> None:
    link = kr.run(_console(kr).create_link())
    url = f"/console/link?token={link.token}"
    c = ConsoleClient(kr.url)
    for _ in range(2):  # looking at the page (a preview, a prerender) does not spend the link
        page = c.get(url)
        assert page.status_code == 200
        assert_page_headers(page)
        assert link.token not in page.text  # the form posts back to this address: no token in the page
    token = csrf_of(page.text, None)
    r = c.http.post(url, data={"csrf": token})
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    assert c.get("/console/").status_code == 200
    again = ConsoleClient(kr.url)
    page = again.get(url)
    r = again.http.post(url, data={"csrf": csrf_of(page.text, None)})
    assert r.status_code == 401 and notice(r.text) == LINK_FAILED.replace("`", "")  # `code` is set as <code>
    assert again.session is None


def test_a_link_post_needs_its_csrf_token(kr: KeyrelayServer) -> None:
    link = kr.run(_console(kr).create_link())
    c = ConsoleClient(kr.url)
    c.get(f"/console/link?token={link.token}")
    assert c.http.post(f"/console/link?token={link.token}", data={"csrf": "x"}).status_code == 403
    page = c.get(f"/console/link?token={link.token}")  # the link was not spent
    assert c.http.post(f"/console/link?token={link.token}", data={"csrf": csrf_of(page.text, None)}).status_code == 303


def test_sign_out_ends_the_session_and_needs_its_csrf_token(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    value = c.session
    assert c.http.post("/console/sign-out", data={"csrf": "forged"}).status_code == 403
    assert c.get("/console/").status_code == 200
    r = c.submit("/console/", "/console/sign-out", {})
    assert (r.status_code, r.headers["location"]) == (303, "/console/sign-in?signed_out=1")
    assert "Max-Age=0" in _set_cookie(r, "kr_console")
    r = httpx.get(kr.url + "/console/", cookies={"kr_console": str(value)})  # the old value is dead everywhere
    assert r.status_code == 303
    assert "You are signed out." in httpx.get(kr.url + "/console/sign-in?signed_out=1").text


def test_an_idle_session_ends_and_the_page_says_so(kr: KeyrelayServer) -> None:
    console = _console(kr)
    c = ConsoleClient(kr.url).signed_in()
    assert c.get("/console/").status_code == 200
    try:
        console.clock = lambda: time.time() + console.idle_seconds - 100
        assert c.get("/console/").status_code == 200  # activity within the idle time keeps the session
        console.clock = lambda: time.time() + 2 * console.idle_seconds - 200
        assert c.get("/console/").status_code == 200
        console.clock = lambda: time.time() + 3 * console.idle_seconds
        r = c.get("/console/workspaces")
    finally:
        console.clock = time.time
    assert r.status_code == 303 and r.headers["location"].endswith("&ended=1")
    assert "Max-Age=0" in _set_cookie(r, "kr_console")
    assert "Your session ended" in c.get(r.headers["location"]).text
    assert c.get("/console/").status_code == 303  # even with the clock back: it ended


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/console/../api/v1/workspaces",
                                    "/\\evil.example", "javascript:alert(1)"])
def test_sign_in_never_sends_the_browser_off_the_console(kr: KeyrelayServer, target: str) -> None:
    c = ConsoleClient(kr.url)
    page = c.get("/console/sign-in", params={"next": target}).text
    assert re.search(r'name="next" value="/console/"', page)
    r = c.http.post("/console/sign-in", data={"csrf": csrf_of(page, "/console/sign-in"), "client_id": ADMIN_ID,
                                              "client_secret": ADMIN_SECRET, "next": target})
    assert (r.status_code, r.headers["location"]) == (303, "/console/")


def test_a_signed_in_visit_to_the_sign_in_page_goes_on(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    r = c.get("/console/sign-in?next=/console/keys")
    assert (r.status_code, r.headers["location"]) == (303, "/console/keys")
