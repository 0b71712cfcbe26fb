"""What every console route shares: where a sign-in may lead, the cookie's attributes, form parsing, and
errors as HTML pages with the strict headers."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

from keyrelay.doors.console.session import COOKIE_PATH, Form, cookie, pre_session, safe_next
from keyrelay.settings import Settings
from support.console import ConsoleClient, assert_page_headers, csrf_of
from support.keyrelay import KeyrelayServer


@pytest.mark.parametrize(("value", "want"), [
    (None, "/console/"), ("", "/console/"), ("/console/keys", "/console/keys"),
    ("/console/logs?door=mcp&status=5xx", "/console/logs?door=mcp&status=5xx"),
    ("/console", "/console/"), ("/api/v1/workspaces", "/console/"), ("https://evil.example/console/", "/console/"),
    ("//evil.example/console/", "/console/"), ("/console//evil.example", "/console/"), ("/console/\\x", "/console/"),
    ("/console/../api", "/console/"), ("/console/%2e%2e/api", "/console/"), ("/console/./keys", "/console/"),
    ("/console/keys\r\nSet-Cookie: x=1", "/console/"), ("/console/k\u00e9ys", "/console/"),
])
def test_a_sign_in_only_ever_leads_to_a_console_page(value: str | None, want: str) -> None:
    assert safe_next(value) == want


def _request(scheme: str, secure: bool | None, cookies: str = "") -> Request:
    settings = Settings(console_secure_cookie=secure)
    app = SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(settings=settings)))
    headers = [(b"cookie", cookies.encode())] if cookies else []
    return Request({"type": "http", "scheme": scheme, "app": app, "headers": headers, "path": "/console/",
                    "server": ("keyrelay.example", 443), "query_string": b""})


@pytest.mark.parametrize(("scheme", "setting", "secure"), [("http", None, False), ("https", None, True),
                                                          ("http", True, True), ("https", False, False)])
def test_cookies_are_secure_under_tls_unless_told_otherwise(scheme: str, setting: bool | None, secure: bool) -> None:
    value = cookie(_request(scheme, setting), "kr_console", "v", max_age=10)
    parts = [p.strip() for p in value.split(";")]
    assert parts[:4] == ["kr_console=v", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Strict"]
    assert "Max-Age=10" in parts
    assert ("Secure" in parts) is secure


def test_the_pre_session_value_is_reused_only_when_it_looks_like_one_we_made() -> None:
    value, cookies = pre_session(_request("http", None))
    assert len(value) == 43 and len(cookies) == 1 and cookies[0].startswith(f"kr_console_pre={value};")
    assert pre_session(_request("http", None, f"kr_console_pre={value}")) == (value, [])
    planted, cookies = pre_session(_request("http", None, "kr_console_pre=<script>"))
    assert planted != "<script>" and cookies


def test_a_form_gives_every_value_of_a_field() -> None:
    form = Form({"scopes": ["proxy", "logs"], "name": ["a"]})
    assert (form.get("name"), form.get("missing"), form.all("scopes"), form.all("missing")) == ("a", "", ["proxy",
                                                                                                         "logs"], [])


def test_a_form_must_be_urlencoded(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    token = csrf_of(c.get("/console/workspaces").text, "/console/workspaces")
    r = c.http.post("/console/workspaces", json={"csrf": token, "name": "acme"})
    assert r.status_code == 400 and "application/x-www-form-urlencoded" in r.text
    assert_page_headers(r)
    r = c.http.post("/console/workspaces", content=b"csrf=" + token.encode() + b"&name=%ff%fe",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "could not be read" in r.text


def test_errors_are_pages_with_the_strict_headers(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    for path in ("/console/workspaces/nope", "/console/sources/nope", "/console/logs?status=7xx",
                 "/console/logs?door=teleport"):
        r = c.get(path)
        assert r.status_code in (400, 404), path
        assert r.headers["content-type"].startswith("text/html")
        assert_page_headers(r)
        assert "Back to the overview" in r.text and 'href="/console/keys"' in r.text  # the signed-in frame
    r = httpx.get(kr.url + "/console/logs/stream")
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert 'href="/console/keys"' not in r.text  # no navigation for a stranger


def test_an_unknown_console_route_is_not_found(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/console/nope")
    assert r.status_code == 404


