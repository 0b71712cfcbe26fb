"""Connect journeys in a real browser (Debian's chromium through Playwright) against a real keyrelay, fake APIs
and a fake OAuth provider on loopback: an API key for Stripe, sign-in for GitHub and HubSpot, a reconnect after a
refused refresh, an app that opens the page in a popup or a frame and gets the result by postMessage, and an app
whose origin is not allowed to frame it. Every credential is a canary that must appear nowhere but at the API.

Screenshots of every page go to $SCREENSHOTS_DIR (docs/connect when refreshing the documentation), else to
the test's temporary directory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from support.browser import PHONE, browser, page_in
from support.canary import find, find_in_files, new_canary
from support.fakes.base import FakeApi
from support.fakes.github import FakeGitHub
from support.fakes.hubspot import FakeHubSpot
from support.fakes.stripe import FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.oauth import FakeOAuthProvider

CALLBACK = "/connect/oauth/callback"


class App(FakeApi):
    """The operator's web app on another origin: opens the connect page in a popup or a frame and shows what it
    receives by postMessage."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_post("/hooks", self.hook)

    async def page(self, request: web.Request) -> web.Response:
        url = json.dumps(request.query.get("connect", ""))
        framed = request.query.get("mode") == "frame"
        frame = '<iframe id="frame" title="connect" style="width:460px;height:640px;border:1px solid #ccc"></iframe>'
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Acme app</title></head><body>
<h1>Acme app</h1><button id="open">Connect an account</button><pre id="result"></pre>{frame if framed else ""}
<script>
var url = {url};
window.addEventListener("message", function (e) {{
  document.getElementById("result").textContent = JSON.stringify({{origin: e.origin, data: e.data}});
}});
document.getElementById("open").onclick = function () {{ window.open(url, "connect", "width=480,height=720"); }};
if ({json.dumps(framed)}) {{ document.getElementById("frame").src = url; }}
</script></body></html>"""
        return web.Response(text=html, content_type="text/html")

    async def hook(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "shots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def kr_settings(tmp_path: Path, app: App) -> dict[str, Any]:
    return {"data_dir": tmp_path / "data", "connect_redirect_allowlist": f"{app.url}, http://127.0.0.1:9",
            "webhook_retry_seconds": 0.2}


@pytest.fixture
def idp(kr: KeyrelayServer) -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider(redirect_uri=kr.url + CALLBACK, title="Provider (fake)") as provider:
        yield provider


@pytest.fixture
def app() -> Iterator[App]:
    with App() as a:
        yield a


@pytest.fixture
def loud_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def problems(page: Any) -> list[str]:
    """Console errors other than the status line of a page that answered 4xx on purpose (a refused form)."""
    return [e for e in page.errors if "the server responded with a status of 4" not in e]


class Seen:
    """Everything the browser saw (every URL it asked for, every page it showed) for the canary scan."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.pages: list[str] = []
        page.on("request", lambda req: self.urls.append(req.url))

    def keep(self, page: Any) -> None:
        self.pages.append(page.content())


def session(admin: Admin, **body: Any) -> dict[str, Any]:
    r = admin.post("/api/v1/connect/sessions", {"workspace": "acme", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def register(admin: Admin, connector: str, idp: FakeOAuthProvider) -> None:
    r = admin.http.put(f"/api/v1/oauth-clients/{connector}", headers=admin.headers, json={
        "client_id": idp.client_id, "client_secret": idp.client_secret, "authorize_url": idp.authorize_url,
        "token_url": idp.token_url})
    assert r.status_code == 200, r.text


def webhook(admin: Admin, app: App) -> str:
    r = admin.post("/api/v1/webhooks", {"url": app.url + "/hooks", "events": [
        "connection.created", "connection.updated", "connection.deleted", "connection.needs_reauth",
        "connect_session.expired"]})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def events(app: App, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = [json.loads(r.body) for r in app.requests if r.raw_path == "/hooks"]
        if len(got) >= want:
            return got
        time.sleep(0.05)
    raise AssertionError(f"expected {want} webhook deliveries, got {len(got)}")


def test_stripe_with_an_api_key(kr: KeyrelayServer, admin: Admin, app: App, chromium: Any, shots: Path,
                                loud_logs: pytest.LogCaptureFixture) -> None:
    key, wrong = new_canary("sk_live_"), new_canary("sk_wrong_")
    with FakeStripe() as stripe:
        stripe.authorized = lambda r: r.headers.get("Authorization") == f"Bearer {key}"  # type: ignore
        webhook(admin, app)
        s = session(admin, connectors=["stripe", "github", "hubspot", "zendesk-support"],
                    config={"stripe": {"base_url": stripe.url}})
        with page_in(chromium) as page:
            seen = Seen(page)
            page.goto(s["url"])
            assert page.locator("h1").inner_text() == "Connect an account"
            page.screenshot(path=shots / "pick.png", full_page=True)
            page.click("text=Stripe")
            assert page.locator("h1").inner_text() == "Connect Stripe"
            page.screenshot(path=shots / "stripe-form.png", full_page=True)
            page.fill("input[name='credentials.api_key']", wrong)
            page.click("button[type=submit]")
            page.wait_for_selector(".notice.bad")
            assert "Stripe refused these credentials" in page.locator(".notice.bad").inner_text()
            assert page.input_value("input[name='credentials.api_key']") == ""  # never filled back in
            seen.keep(page)
            page.screenshot(path=shots / "stripe-check-failed.png", full_page=True)
            assert admin.get("/api/v1/sources").json()["data"] == []
            page.fill("input[name='credentials.api_key']", key)
            page.click("button[type=submit]")
            page.wait_for_selector(".done")
            assert page.locator("h1").inner_text() == "Stripe is connected"
            seen.keep(page)
            page.screenshot(path=shots / "done.png", full_page=True)
            assert not problems(page), page.errors
        upstream = b"".join(f"{r.headers}".encode() for r in stripe.requests)
    [src] = admin.get("/api/v1/sources").json()["data"]
    [created] = events(app, 1)
    assert created["type"] == "connection.created" and created["data"]["source_id"] == src["id"]
    _no_canary([key, wrong], seen=seen, kr=kr, admin=admin, app=app, logs=loud_logs, positive=upstream)


def _no_canary(canaries: list[str], *, seen: Seen, kr: KeyrelayServer, admin: Admin, app: App,
               logs: pytest.LogCaptureFixture, positive: bytes) -> None:
    """The secrets reached the upstream (the scanner works) and nowhere else."""
    assert find(positive, canaries[:1]), "positive control: the upstream got the secret"
    time.sleep(0.2)  # the request log is written in batches
    places = {
        "urls": "\n".join(seen.urls), "pages": "\n".join(seen.pages), "logs": logs.text,
        "request log": admin.get("/api/v1/logs").text, "webhooks": b"".join(r.body for r in app.requests),
        "sources": admin.get("/api/v1/sources").text, "sessions": admin.get("/api/v1/connect/sessions").text,
    }
    for where, data in places.items():
        assert find(data, canaries) == [], where
    assert find_in_files(sorted(kr.settings.data_dir.glob("keyrelay.db*")), canaries) == []


def test_github_and_hubspot_sign_in(kr: KeyrelayServer, admin: Admin, app: App, idp: FakeOAuthProvider,
                                    chromium: Any, shots: Path, loud_logs: pytest.LogCaptureFixture) -> None:
    with FakeGitHub() as github, FakeHubSpot() as hubspot:
        for api in (github, hubspot):
            api.authorized = lambda r: idp.accepts(r.headers.get("Authorization"))  # type: ignore
        for connector in ("github", "hubspot"):
            register(admin, connector, idp)
        webhook(admin, app)
        s1 = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
        s2 = session(admin, connectors=["hubspot"], config={"hubspot": {"base_url": hubspot.url}},
                     redirect_url=app.url + "/")
        with page_in(chromium) as page:
            seen = Seen(page)
            page.goto(s1["url"])
            assert page.locator("h1").inner_text() == "Connect GitHub"
            page.screenshot(path=shots / "github-form.png", full_page=True)
            page.click("text=Continue with GitHub")
            page.click("#allow")  # the provider's own consent page
            page.wait_for_selector(".done")
            assert page.locator("h1").inner_text() == "GitHub is connected"
            seen.keep(page)
            page.goto(s2["url"])
            page.click("text=Continue with HubSpot")
            page.click("#allow")
            page.wait_for_url(app.url + "/?*")  # back in the app, with the outcome in the URL
            assert "status=connected" in page.url and f"connect_session={s2['id']}" in page.url
            assert not problems(page), page.errors
        srcs = {x["connector"]: x for x in admin.get("/api/v1/sources").json()["data"]}
        assert {c: x["credentials"] for c, x in srcs.items()} == {"github": ["oauth2"], "hubspot": ["oauth2"]}
        key = admin.api_key(srcs["hubspot"]["workspace_id"], ["execute"])
        for connector, entity, action in (("github", "viewer", "get"), ("hubspot", "contacts", "list")):
            r = httpx.post(f"{kr.url}/api/v1/connectors/instances/{srcs[connector]['id']}/execute",
                           json={"entity": entity, "action": action}, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        assert [c.form["grant_type"] for c in idp.token_calls] == ["authorization_code"] * 2
        upstream = b"".join(f"{r.headers}".encode() for r in github.requests)
    assert [e["type"] for e in events(app, 2)] == ["connection.created"] * 2
    secrets = [*[t for t in idp.issued if not t.startswith("code-")], idp.client_secret]
    _no_canary(secrets, seen=seen, kr=kr, admin=admin, app=app, logs=loud_logs, positive=upstream)


def test_reconnect_after_a_refused_refresh(kr: KeyrelayServer, admin: Admin, app: App, idp: FakeOAuthProvider,
                                           chromium: Any, shots: Path) -> None:
    with FakeHubSpot() as hubspot:
        hubspot.authorized = lambda r: idp.accepts(r.headers.get("Authorization"))  # type: ignore
        register(admin, "hubspot", idp)
        idp.knobs.auto_approve = True
        webhook(admin, app)
        s = session(admin, connectors=["hubspot"], config={"hubspot": {"base_url": hubspot.url}})
        with page_in(chromium) as page:
            page.goto(s["url"])
            page.click("text=Continue with HubSpot")
            page.wait_for_selector(".done")
        [src] = admin.get("/api/v1/sources").json()["data"]
        admin.http.patch(f"/api/v1/sources/{src['id']}", headers=admin.headers,
                         json={"policy": {"rate_limit_per_minute": 11}})
        key = admin.api_key(src["workspace_id"], ["execute"])

        def call() -> httpx.Response:
            return httpx.post(f"{kr.url}/api/v1/connectors/instances/{src['id']}/execute", timeout=30,
                              json={"entity": "contacts", "action": "list"},
                              headers={"Authorization": f"Bearer {key}"})

        assert call().status_code == 200
        idp.revoke_refresh_tokens()  # the customer withdrew consent at HubSpot
        r = call()
        assert (r.status_code, r.json()["error"]["code"]) == (502, "upstream_auth_failed")
        assert admin.get(f"/api/v1/sources/{src['id']}").json()["status"] == "needs_reauth"
        needs = [e for e in events(app, 2) if e["type"] == "connection.needs_reauth"]
        assert needs and needs[0]["data"]["source_id"] == src["id"]

        again = session(admin, workspace=src["workspace_id"], source_id=src["id"])
        with page_in(chromium) as page:
            page.goto(again["url"])
            assert page.locator("h1").inner_text() == "Reconnect HubSpot"
            page.screenshot(path=shots / "reconnect.png", full_page=True)
            page.click("text=Continue with HubSpot")
            page.wait_for_selector(".done")
            assert page.locator("h1").inner_text() == "HubSpot is reconnected"
        after = admin.get(f"/api/v1/sources/{src['id']}").json()
        assert (after["id"], after["slug"], after["status"]) == (src["id"], src["slug"], "active")
        assert after["policy"]["rate_limit_per_minute"] == 11
        assert call().status_code == 200
    updated = [e for e in events(app, 3) if e["type"] == "connection.updated"]
    assert updated and updated[0]["data"]["connect_session_id"] == again["id"]


def test_an_app_opens_the_page_in_a_popup_and_gets_the_result(kr: KeyrelayServer, admin: Admin, app: App,
                                                              chromium: Any, shots: Path) -> None:
    key = new_canary("sk_live_")
    with FakeStripe() as stripe:
        stripe.authorized = lambda r: r.headers.get("Authorization") == f"Bearer {key}"  # type: ignore
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}},
                    allowed_origins=[app.url])
        with page_in(chromium) as page:
            page.goto(f"{app.url}/?connect={s['url']}")
            with page.expect_popup() as info:
                page.click("#open")
            popup = info.value
            popup.wait_for_selector("input[name='credentials.api_key']")
            popup.fill("input[name='credentials.api_key']", key)
            popup.click("button[type=submit]")
            popup.wait_for_selector(".done")
            page.wait_for_function("document.getElementById('result').textContent.length > 0", timeout=10_000)
            got = json.loads(page.locator("#result").inner_text())
            assert not problems(page), page.errors
    [src] = admin.get("/api/v1/sources").json()["data"]
    assert got == {"origin": kr.url, "data": {"type": "keyrelay:connect", "connect_session": s["id"],
                                              "status": "connected", "source_id": src["id"]}}
    assert key not in json.dumps(got)


def test_an_app_frames_the_page_and_gets_the_result(kr: KeyrelayServer, admin: Admin, app: App, chromium: Any,
                                                    shots: Path) -> None:
    key = new_canary("sk_live_")
    with FakeStripe() as stripe:
        stripe.authorized = lambda r: r.headers.get("Authorization") == f"Bearer {key}"  # type: ignore
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}},
                    allowed_origins=[app.url])
        with page_in(chromium) as page:
            page.goto(f"{app.url}/?mode=frame&connect={s['url']}")
            frame = page.frame_locator("#frame")
            frame.locator("input[name='credentials.api_key']").fill(key)
            page.screenshot(path=shots / "embedded-frame.png", full_page=True)
            frame.locator("button[type=submit]").click()
            frame.locator(".done").wait_for()
            page.wait_for_function("document.getElementById('result').textContent.length > 0", timeout=10_000)
            got = json.loads(page.locator("#result").inner_text())
    assert got["origin"] == kr.url and got["data"]["status"] == "connected"


def test_an_origin_that_is_not_allowed_cannot_frame_the_page(kr: KeyrelayServer, admin: Admin, app: App,
                                                             chromium: Any) -> None:
    with App() as other:
        s = session(admin, connectors=["stripe"], allowed_origins=[other.url])
        with page_in(chromium) as page:
            page.goto(f"{app.url}/?mode=frame&connect={s['url']}")
            page.wait_for_function(
                "() => performance.getEntriesByType('resource').some(e => e.name.includes('/connect/'))")
            assert len(page.frames) == 2
            assert all("Connect Stripe" not in f.content() for f in page.frames if f != page.main_frame)
            assert any("frame-ancestors" in e for e in page.errors), page.errors


def test_the_page_on_a_phone(kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider, chromium: Any,
                             shots: Path) -> None:
    register(admin, "zendesk-support", idp)
    s = session(admin, connectors=["zendesk-support"], redirect_url="http://127.0.0.1:9/back")
    with page_in(chromium, viewport=PHONE) as page:
        page.goto(s["url"])
        assert page.locator("h1").inner_text() == "Connect Zendesk Support"
        page.screenshot(path=shots / "zendesk-phone.png", full_page=True)
        assert page.locator("input[name='config.subdomain']").count() == 2  # sign-in and key form each ask
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], "nothing overflows sideways on a phone"
        page.goto(kr.url + "/connect/krc_" + "x" * 43)
        page.screenshot(path=shots / "link-not-valid.png", full_page=True)


def test_a_cancelled_sign_in_offers_to_try_again(kr: KeyrelayServer, admin: Admin, app: App,
                                                 idp: FakeOAuthProvider, chromium: Any, shots: Path) -> None:
    with FakeHubSpot() as hubspot:
        hubspot.authorized = lambda r: idp.accepts(r.headers.get("Authorization"))  # type: ignore
        register(admin, "hubspot", idp)
        s = session(admin, connectors=["hubspot"], config={"hubspot": {"base_url": hubspot.url}},
                    redirect_url=app.url + "/settings")
        with page_in(chromium) as page:
            page.goto(s["url"])
            page.click("text=Continue with HubSpot")
            page.click("#deny")
            page.wait_for_selector(".problem")
            assert page.locator("h1").inner_text() == "The account was not connected"
            assert "cancelled" in page.locator(".problem").inner_text()
            page.screenshot(path=shots / "sign-in-cancelled.png", full_page=True)
            page.click("text=Try again")
            page.click("text=Continue with HubSpot")
            page.click("#allow")
            page.wait_for_url(app.url + "/settings?*")
            assert "status=connected" in page.url
    assert len(admin.get("/api/v1/sources").json()["data"]) == 1
