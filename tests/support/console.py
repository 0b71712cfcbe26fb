"""A console client for HTTP-level tests: an httpx client that keeps cookies like a browser and reads each form's
CSRF token from the page that carries the form."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from support.keyrelay import ADMIN_ID, ADMIN_SECRET


def csrf_of(page: str, action: str | None) -> str:
    """The CSRF token of the form posting to `action` (None: the form without an action) on `page`."""
    for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", page, re.S):
        attrs, body = form.group(1), form.group(2)
        found = re.search(r'action="([^"]*)"', attrs)
        if (found.group(1) if found else None) == action:
            token = re.search(r'name="csrf" value="([^"]+)"', body)
            assert token, f"the form posting to {action} has no CSRF token"
            return token.group(1)
    raise AssertionError(f"no form posts to {action!r} on this page")


def notice(page: str, kind: str = "bad") -> str:
    """The text of the page's first notice of this kind."""
    found = re.search(rf'<div class="notice {kind}"[^>]*>(.*?)</div>', page, re.S)
    assert found, f"no {kind} notice on the page"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def assert_page_headers(r: httpx.Response) -> None:
    """The strict headers every console page carries (web/headers.py)."""
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text and " onclick=" not in r.text and " style=" not in r.text


class ConsoleClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=20)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def sign_in(self, client_id: str = ADMIN_ID, client_secret: str = ADMIN_SECRET) -> httpx.Response:
        page = self.http.get("/console/sign-in")
        r = self.http.post("/console/sign-in", data={"csrf": csrf_of(page.text, "/console/sign-in"),
                                                     "client_id": client_id, "client_secret": client_secret,
                                                     "next": "/console/"})
        return r

    def signed_in(self) -> ConsoleClient:
        r = self.sign_in()
        assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
        return self

    def submit(self, page_path: str, action: str, data: dict[str, Any] | list[tuple[str, str]]) -> httpx.Response:
        """Post the form of `page_path` that posts to `action`, with its CSRF token and `data`."""
        page = self.http.get(page_path)
        assert page.status_code == 200, page.text
        token = csrf_of(page.text, action)
        pairs = list(data.items()) if isinstance(data, dict) else list(data)
        form: dict[str, list[str]] = {"csrf": [token]}
        for k, v in pairs:
            form.setdefault(k, []).extend(v if isinstance(v, list) else [str(v)])
        return self.http.post(action, data=form)

    @property
    def session(self) -> str | None:
        return self.http.cookies.get("kr_console")

    def close(self) -> None:
        self.http.close()
