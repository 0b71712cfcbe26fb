"""The connect page (doors/connect.py) over HTTP: who may frame it, CSRF on every form, escaping of everything
that is not keyrelay's own text, secrets never rendered back, and the answers for links that cannot be used."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.connectors.spec import load_catalog
from keyrelay.doors.connect import CALLBACK_PATH, _scrub, cookie_name
from keyrelay.manage.connect_forms import credential_fields
from keyrelay.manage.connections import Offer
from keyrelay.web.pages import render
from support.connect import browserless, csrf_of, form_page, submit_key
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
def kr_settings(tmp_path: Path) -> dict[str, Any]:
    return {"data_dir": tmp_path / "data", "connect_redirect_allowlist": "https://app.example.com"}


def session(admin: Admin, **body: Any) -> dict[str, Any]:
    r = admin.post("/api/v1/connect/sessions", {"workspace": "acme", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _csp(r: httpx.Response) -> dict[str, str]:
    return {p.strip().split(" ", 1)[0]: p.strip().partition(" ")[2] for p in
            r.headers["content-security-policy"].split(";")}


def test_by_default_no_page_may_be_framed(kr: KeyrelayServer, admin: Admin) -> None:
    s = session(admin)
    client = browserless(kr.url)
    for r in (client.get(f"/connect/{s['token']}"), client.get(f"/connect/{s['token']}/stripe"),
              client.get("/connect/krc_unknown"), client.get(f"/connect/{s['token']}/nope")):
        assert _csp(r)["frame-ancestors"] == "'none'" and r.headers["x-frame-options"] == "DENY"
        assert _csp(r)["script-src"] == "'self'" and r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer" and "<script>" not in r.text
        assert r.headers["cross-origin-opener-policy"] == "same-origin"  # no window keeps a handle on it


def test_the_sessions_allowed_origins_and_only_they_may_frame_it(kr: KeyrelayServer, admin: Admin) -> None:
    s = session(admin, allowed_origins=["https://app.example.com", "http://127.0.0.1:3000"])
    for path in (f"/connect/{s['token']}", f"/connect/{s['token']}/stripe"):
        r = httpx.get(kr.url + path)
        assert _csp(r)["frame-ancestors"] == "https://app.example.com http://127.0.0.1:3000"
        assert "x-frame-options" not in r.headers
        assert r.headers["cross-origin-opener-policy"] == "unsafe-none"  # a popup keeps its opener
    r = httpx.get(f"{kr.url}/connect/{s['token'][:-2]}xx")  # a guessed link learns nothing about a session
    assert _csp(r)["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "other-session", "other-connector"])
def test_a_form_post_without_its_csrf_token_is_refused_and_nothing_happens(kr: KeyrelayServer, admin: Admin,
                                                                          csrf: str | None) -> None:
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe", "hubspot"], config={"stripe": {"base_url": stripe.url}})
        client = browserless(kr.url)
        if csrf == "other-session":
            csrf = csrf_of(form_page(client, session(admin)["token"], "stripe").text)
        elif csrf == "other-connector":
            csrf = csrf_of(form_page(client, s["token"], "hubspot").text)
        data = {"credentials.api_key": API_KEY} | ({} if csrf is None else {"csrf": csrf})
        for path in (f"/connect/{s['token']}/stripe", f"/connect/{s['token']}/stripe/oauth"):
            r = client.post(path, data=data)
            assert r.status_code == 403 and "did not come from this page" in r.text
        assert stripe.requests == []
    assert admin.get("/api/v1/sources").json()["data"] == []


def test_connector_names_and_upstream_messages_are_escaped(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}})
        client = browserless(kr.url)
        r = client.get(f"/connect/{s['token']}/" + XSS.replace("/", "%2F"))
        assert r.status_code in (404, 405) and "<script>" not in r.text and "onerror=" not in r.text
        stripe.fail_next = [(401, {}, {"error": {"message": "Invalid API Key " + XSS, "type": "x"}})]
        r = submit_key(client, s["token"], "stripe", {"credentials.api_key": "sk_test_wrong_key_42"})
        assert r.status_code == 422
        assert "<script>alert(2)</script>" not in r.text and "<img src=x" not in r.text
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in r.text


def test_catalog_text_is_escaped_too() -> None:
    spec = dataclasses.replace(load_catalog()["stripe"], title=XSS)
    offer = Offer(spec=spec, fields=credential_fields(spec), oauth=True, oauth_fields=[])
    for page in (render("connect/pick.html", offers=[offer], token="krc_t", cancel_url=None, reconnect=False),
                 render("connect/form.html", spec=spec, offer=offer, csrf="c", action="/a", error=XSS,
                        error_field=None, values={"config.x": XSS}, back_url=None, token="krc_t", cancel_url=XSS,
                        reconnect=False)):
        text = page.decode()
        assert "<script>" not in text and "<img src=x" not in text and "&lt;script&gt;" in text


def test_secrets_are_never_rendered_back(kr: KeyrelayServer, admin: Admin) -> None:
    secret = "sk_test_" + "s3cr3t" * 6
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}})
        r = submit_key(browserless(kr.url), s["token"], "stripe", {"credentials.api_key": secret})
    assert r.status_code == 422 and secret not in r.text and secret[8:20] not in r.text
    assert re.search(r'<input[^>]*type="password"[^>]*>', r.text)
    assert not re.search(r'<input[^>]*type="password"[^>]*value=', r.text)


@pytest.mark.parametrize("reason,status,text", [("unknown", 404, "not valid"), ("expired", 410, "has expired"),
                                                ("used", 410, "already used")])
def test_a_link_that_cannot_be_used_says_why(kr: KeyrelayServer, admin: Admin, reason: str, status: int,
                                             text: str) -> None:
    s = session(admin, connectors=["stripe"])
    token = s["token"]
    if reason == "unknown":
        token = "krc_" + "x" * 43
    else:
        column = "expires_at" if reason == "expired" else "status"
        with sqlite3.connect(kr.settings.data_dir / "keyrelay.db") as db:
            db.execute(f"UPDATE connect_sessions SET {column} = ? WHERE id = ?",
                       (time.time() - 1 if reason == "expired" else "connected", s["id"]))
    for path in (f"/connect/{token}", f"/connect/{token}/stripe"):
        r = httpx.get(kr.url + path)
        assert r.status_code == status and text in r.text


def test_the_status_and_done_pages_follow_the_session(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}},
                    allowed_origins=["https://app.example.com"])
        client = browserless(kr.url)
        assert client.get(f"/connect/{s['token']}/status").json() == {"status": "pending"}
        assert client.get(f"/connect/{s['token']}/done").status_code == 303
        assert submit_key(client, s["token"], "stripe", {"credentials.api_key": API_KEY}).status_code == 200
    assert client.get(f"/connect/{s['token']}/status").json() == {"status": "connected"}
    done = client.get(f"/connect/{s['token']}/done")
    assert done.status_code == 200 and "Stripe is connected" in done.text
    assert 'data-origins="[&#34;https://app.example.com&#34;]"' in done.text
    assert client.get("/connect/krc_nope/status").status_code == 404


def test_a_cancel_link_goes_back_to_the_app_with_the_outcome(kr: KeyrelayServer, admin: Admin) -> None:
    s = session(admin, connectors=["stripe"], redirect_url="https://app.example.com/settings")
    page = form_page(browserless(kr.url), s["token"], "stripe").text
    assert f'href="https://app.example.com/settings?connect_session={s["id"]}&amp;status=cancelled"' in page


def test_a_sign_in_form_may_send_the_browser_to_its_provider_only(kr: KeyrelayServer, admin: Admin) -> None:
    r = admin.http.put("/api/v1/oauth-clients/github", headers=admin.headers,
                       json={"client_id": "c", "client_secret": "s"})
    assert r.status_code == 200
    s = session(admin, connectors=["github", "stripe"])
    assert _csp(httpx.get(f"{kr.url}/connect/{s['token']}/github"))["form-action"] == "'self' https://github.com"
    assert _csp(httpx.get(f"{kr.url}/connect/{s['token']}/stripe"))["form-action"] == "'self'"


def test_starting_a_sign_in_binds_it_to_this_browser_with_a_narrow_cookie(kr: KeyrelayServer, admin: Admin) -> None:
    admin.http.put("/api/v1/oauth-clients/github", headers=admin.headers, json={"client_id": "c", "client_secret": "s"})
    s = session(admin, connectors=["github"])
    client = browserless(kr.url)
    r = client.post(f"/connect/{s['token']}/github/oauth",
                    data={"csrf": csrf_of(form_page(client, s["token"], "github").text)})
    assert r.status_code == 303 and r.headers["location"].startswith("https://github.com/login/oauth/authorize?")
    state = httpx.URL(r.headers["location"]).params["state"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(state)}={s['token']};")
    for flag in (f"Path={CALLBACK_PATH}", "HttpOnly", "SameSite=Lax", "Max-Age="):
        assert flag in cookie
    assert s["token"] not in r.headers["location"]


def test_over_https_the_binding_cookie_is_secure(tmp_path: Path) -> None:
    from support.keyrelay import make_settings

    with KeyrelayServer(make_settings(data_dir=tmp_path, public_url="https://connect.example.com")) as server:
        admin = Admin(server.url)
        admin.http.put("/api/v1/oauth-clients/github", headers=admin.headers,
                       json={"client_id": "c", "client_secret": "s"})
        s = session(admin, connectors=["github"])
        client = browserless(server.url)
        r = client.post(f"/connect/{s['token']}/github/oauth",
                        data={"csrf": csrf_of(form_page(client, s["token"], "github").text)})
        admin.close()
    assert r.status_code == 303 and "; Secure" in r.headers["set-cookie"]
    redirect_uri = httpx.URL(r.headers["location"]).params["redirect_uri"]
    assert redirect_uri == "https://connect.example.com" + CALLBACK_PATH


def test_what_the_customer_typed_is_cut_out_of_an_upstream_reason() -> None:
    """A second layer behind the pipeline's redaction of injected values."""
    assert _scrub("Invalid key sk_live_abcdef (sk_live_abcdef)", ["sk_live_abcdef", "ab"]) == \
        "Invalid key **** (****)"


def test_a_callback_without_state_is_refused(kr: KeyrelayServer) -> None:
    for query in ("", "?code=abc", "?error=access_denied", "?state=" + "x" * 5000):
        r = httpx.get(kr.url + CALLBACK_PATH + query)
        assert r.status_code in (400, 414) and "<script>" not in r.text


def test_the_pages_assets_are_served(kr: KeyrelayServer) -> None:
    for name, kind in (("connect.js", "text/javascript"), ("connect.css", "text/css")):
        r = httpx.get(f"{kr.url}/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
