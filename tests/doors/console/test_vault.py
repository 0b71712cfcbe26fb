"""The vault page: sealed or not, the key ring's ids and states (never key material), and rotation through a
form that needs its CSRF token."""

from __future__ import annotations

import re

import httpx

from support.console import ConsoleClient, assert_page_headers, notice
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream


def _keys(page: str) -> list[tuple[str, str, str]]:
    return re.findall(r'<tr><td class="mono">([0-9a-f-]{36})</td>\s*<td><span class="badge[^"]*">(\w+)</span></td>\s*'
                      r'<td class="num">(\d+)</td>', page)


def test_rotation_retires_the_key_and_reseals_every_field(kr: KeyrelayServer, admin: Admin,
                                                          upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": "sk_live_a", "basic": {
        "username": "u", "password": "p"}})
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/vault")
    assert_page_headers(page)
    assert "unsealed" in page.text
    ((first, state, fields),) = _keys(page.text)
    assert (state, fields) == ("active", "2")
    assert c.http.post("/console/vault/rotate", data={"csrf": "nope"}).status_code == 403
    assert len(_keys(c.get("/console/vault").text)) == 1
    r = c.submit("/console/vault", "/console/vault/rotate", {})
    assert r.status_code == 200 and "2 credential field(s) re-encrypted" in notice(r.text, "ok")
    keys = _keys(r.text)
    assert [(k[0] == first, k[1], k[2]) for k in keys] == [(True, "retired", "0"), (False, "active", "2")]
    key = admin.api_key(ws, ["proxy"])


    assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"}
                     ).status_code == 200
    assert upstream.requests[-1].header("authorization") == "Bearer sk_live_a"
