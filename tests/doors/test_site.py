"""The first-run pages: `/` explains the server, `/docs` and `/redoc` work with assets served from the package
(no CDN), every page carries the strict security headers, and `/static` serves only its own table of assets."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest

from keyrelay.web import assets
from support.browser import browser, page_in
from support.keyrelay import KeyrelayServer


def _csp(r: httpx.Response) -> dict[str, str]:
    out = {}
    for part in r.headers["content-security-policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


def test_the_root_is_a_landing_page_with_links_to_the_console_docs_and_health(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    for link in ('href="/console/"', 'href="/docs"', 'href="/healthz"', 'href="/readyz"'):
        assert link in r.text
    assert f"{kr.url}/api/v1/applications/token" in r.text  # a curl line that works against this server


def test_pages_carry_a_strict_policy_and_refuse_framing(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/")
    csp = _csp(r)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text and " on" + "click=" not in r.text  # nothing inline for a policy to forbid


def test_a_hostile_host_header_never_reaches_the_page(kr: KeyrelayServer) -> None:
    with socket.create_connection(("127.0.0.1", kr.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x<img src=y onerror=alert(1)>\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"<img src=y" not in body and b"onerror" not in body
    assert f"listens at <code>http://127.0.0.1:{kr.port}</code>".encode() in body  # the address it really has


@pytest.mark.parametrize(("page", "asset"), [("/docs", "vendor/swagger-ui-bundle.js"),
                                             ("/redoc", "vendor/redoc.standalone.js")])
def test_the_api_reference_loads_its_viewer_from_this_server(kr: KeyrelayServer, page: str, asset: str) -> None:
    r = httpx.get(kr.url + page)
    assert r.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources and all(s.startswith("/static/") for s in sources), sources  # never a CDN
    assert any(s.startswith(f"/static/{asset}?v=") for s in sources)
    for src in sources:
        got = httpx.get(kr.url + src)
        assert got.status_code == 200, src
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "immutable" in got.headers["cache-control"]  # versioned URLs may be cached for good
    assert _csp(r)["script-src"] == "'self'"
    assert 'data-spec="/openapi.json"' in r.text


def test_static_serves_only_its_own_assets(kr: KeyrelayServer) -> None:
    for path in ("/static/../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/nope.js",
                 "/static/vendor/../../keyrelay/app.py", "/static/"):
        r = httpx.get(kr.url + path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    r = httpx.get(kr.url + "/static/keyrelay.css")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/css")
    assert r.content == assets.read("keyrelay.css")


def test_every_listed_asset_is_in_the_package() -> None:
    for name in assets.ASSETS:
        data = assets.read(name)
        assert data, name


def test_the_api_reference_renders_in_a_real_browser_without_a_policy_violation(kr: KeyrelayServer,
                                                                                tmp_path: Path) -> None:
    with browser() as b, page_in(b) as page:
        page.goto(kr.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)  # operations rendered from openapi.json
        assert page.locator(".opblock").count() > 10
        assert not [e for e in page.errors if "Content Security Policy" in e], page.errors
        page.goto(kr.url + "/")
        assert page.locator("h1").inner_text() == "keyrelay is running"
        assert not page.errors, page.errors
