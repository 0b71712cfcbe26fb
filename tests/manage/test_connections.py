"""What the connect page does (manage/connections.py), driven over HTTP like a browser without JavaScript against
a real keyrelay, fake APIs and a strict fake OAuth provider: credentials are checked live and stored only if
they work; a session is spent once; reconnect replaces credentials in place; every way an authorization can be
tampered with, replayed, cross-wired or refused ends with nothing stored."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from keyrelay.connectors.provider import Discovery, provider_of
from keyrelay.manage.connections import ConnectFlow, connection_data
from support.connect import browserless, csrf_of, form_page, sign_in, submit_key
from support.fakes.base import FakeApi
from support.fakes.github import FakeGitHub
from support.fakes.hubspot import FakeHubSpot
from support.fakes.salesforce import API as SALESFORCE_API
from support.fakes.salesforce import FakeSalesforce
from support.fakes.shopify import BASE_PATH as SHOPIFY_BASE
from support.fakes.shopify import FakeShopify
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.oauth import FakeOAuthProvider
from support.upstream import FakeUpstream

CALLBACK = "/connect/oauth/callback"


@pytest.fixture
def kr_settings(tmp_path: Path) -> dict[str, Any]:
    return {"data_dir": tmp_path / "data", "connect_redirect_allowlist": "https://app.example.com/back"}


@pytest.fixture
def idp(kr: KeyrelayServer) -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider(redirect_uri=kr.url + CALLBACK) as provider:
        provider.knobs.auto_approve = True
        yield provider


@pytest.fixture
def github(idp: FakeOAuthProvider) -> Iterator[FakeGitHub]:
    with FakeGitHub() as api:
        api.authorized = lambda request: idp.accepts(request.headers.get("Authorization"))  # type: ignore[method-assign]
        yield api


def register(admin: Admin, connector: str, idp: FakeOAuthProvider) -> None:
    r = admin.http.put(f"/api/v1/oauth-clients/{connector}", headers=admin.headers, json={
        "client_id": idp.client_id, "client_secret": idp.client_secret, "authorize_url": idp.authorize_url,
        "token_url": idp.token_url})
    assert r.status_code == 200, r.text


def session(admin: Admin, **body: Any) -> dict[str, Any]:
    r = admin.post("/api/v1/connect/sessions", {"workspace": "acme", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def sources(admin: Admin) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = admin.get("/api/v1/sources").json()["data"]
    return out


def status_of(admin: Admin, s: dict[str, Any]) -> str:
    return str(admin.get(f"/api/v1/connect/sessions/{s['id']}").json()["status"])


def execute(admin: Admin, src: dict[str, Any], entity: str, action: str) -> httpx.Response:
    key = admin.api_key(src["workspace_id"], ["execute"])
    return httpx.post(f"{admin.http.base_url}/api/v1/connectors/instances/{src['id']}/execute", timeout=30,
                      json={"entity": entity, "action": action}, headers={"Authorization": f"Bearer {key}"})


# --- API-key forms ---------------------------------------------------------------------------------------------

def test_a_key_that_fails_the_live_check_is_not_stored_and_a_good_one_spends_the_session(
        kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}})
        client = browserless(kr.url)
        r = submit_key(client, s["token"], "stripe", {"credentials.api_key": "sk_test_wrong_key_9876"})
        assert r.status_code == 422
        assert "Stripe refused these credentials: Invalid API Key provided" in r.text
        assert "sk_test_wrong_key_9876" not in r.text
        assert sources(admin) == [] and status_of(admin, s) == "pending"
        r = submit_key(client, s["token"], "stripe", {"credentials.api_key": API_KEY})
        assert r.status_code == 200 and "Stripe is connected" in r.text
        [src] = sources(admin)
        assert (src["connector"], src["slug"], src["credentials"], src["config"]) == \
            ("stripe", "stripe", ["api_key"], {"base_url": stripe.url})
        assert status_of(admin, s) == "connected"
        assert admin.get(f"/api/v1/connect/sessions/{s['id']}").json()["connected_source_id"] == src["id"]
        assert execute(admin, src, "customers", "list").status_code == 200
        r = client.get(f"/connect/{s['token']}/stripe")
        assert r.status_code == 410 and "already used" in r.text
        assert [q.raw_path for q in stripe.requests].count("/v1/customers?limit=1") == 2


def test_a_session_runs_a_bounded_number_of_live_checks(kr: KeyrelayServer, admin: Admin) -> None:
    """The page is no oracle for trying many stolen keys against an API."""
    from keyrelay.manage.connect import MAX_CHECKS

    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}})
        client = browserless(kr.url)
        for i in range(MAX_CHECKS):
            r = submit_key(client, s["token"], "stripe", {"credentials.api_key": f"sk_test_guess_{i:04d}"})
            assert r.status_code == 422
        r = submit_key(client, s["token"], "stripe", {"credentials.api_key": API_KEY})
        assert r.status_code == 429 and "Too many attempts" in r.text
        assert len(stripe.requests) == MAX_CHECKS
    assert sources(admin) == []


def test_a_second_connection_of_one_connector_gets_its_own_slug(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        for _ in range(2):
            s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}})
            assert submit_key(browserless(kr.url), s["token"], "stripe",
                              {"credentials.api_key": API_KEY}).status_code == 200
    assert sorted(src["slug"] for src in sources(admin)) == ["stripe", "stripe-2"]


def test_with_a_redirect_url_the_page_sends_the_customer_back_with_the_outcome(kr: KeyrelayServer,
                                                                               admin: Admin) -> None:
    with FakeStripe() as stripe:
        s = session(admin, connectors=["stripe"], config={"stripe": {"base_url": stripe.url}},
                    redirect_url="https://app.example.com/back/integrations")
        r = submit_key(browserless(kr.url), s["token"], "stripe", {"credentials.api_key": API_KEY})
    [src] = sources(admin)
    assert r.status_code == 303
    assert r.headers["location"] == (f"https://app.example.com/back/integrations?connect_session={s['id']}"
                                     f"&status=connected&source_id={src['id']}")


def test_reconnect_replaces_the_credentials_in_place(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        ws = admin.workspace("acme")
        src = admin.source(ws, upstream_url="", connector="stripe", slug="billing",
                           config={"base_url": stripe.url}, credentials={"api_key": "sk_test_revoked_00000"},
                           policy={"rate_limit_per_minute": 7, "allow_writes": True})
        assert execute(admin, src, "customers", "list").status_code == 403  # the old key no longer works
        s = session(admin, workspace=ws, source_id=src["id"])
        assert s["connectors"] == ["stripe"]
        client = browserless(kr.url)
        r = client.get(s["url"])
        assert r.status_code == 303 and r.headers["location"].endswith("/stripe")
        assert "Reconnect Stripe" in form_page(client, s["token"], "stripe").text
        r = submit_key(client, s["token"], "stripe", {"credentials.api_key": API_KEY})
        assert r.status_code == 200 and "Stripe is reconnected" in r.text
        [after] = sources(admin)
        assert (after["id"], after["slug"], after["policy"]) == (src["id"], "billing", src["policy"])
        assert after["config"] == {"base_url": stripe.url} and after["status"] == "active"
        assert execute(admin, after, "customers", "list").status_code == 200


def test_a_source_deleted_before_its_reconnect_is_not_recreated(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        ws = admin.workspace("acme")
        src = admin.source(ws, upstream_url="", connector="stripe", slug="billing", config={"base_url": stripe.url},
                           credentials={"api_key": "sk_test_revoked_00000"})
        s = session(admin, workspace=ws, source_id=src["id"])
        assert admin.http.delete(f"/api/v1/sources/{src['id']}", headers=admin.headers).status_code == 204
        r = submit_key(browserless(kr.url), s["token"], "stripe", {"credentials.api_key": API_KEY})
    assert r.status_code == 422 and sources(admin) == [] and status_of(admin, s) == "pending"


# --- OAuth ---------------------------------------------------------------------------------------------------------

def test_github_sign_in_stores_an_oauth2_credential_and_uses_the_first_token(
        kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider, github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    r = sign_in(browserless(kr.url), s["token"], "github")
    assert r.status_code == 200 and "GitHub is connected" in r.text
    [src] = sources(admin)
    assert (src["credentials"], src["status"]) == (["oauth2"], "active")
    [call] = idp.token_calls
    assert call.form["grant_type"] == "authorization_code" and call.form["redirect_uri"] == kr.url + CALLBACK
    assert execute(admin, src, "viewer", "get").status_code == 200
    assert len(idp.token_calls) == 1  # the authorization's own access token: no refresh needed
    q = idp.authorize_requests[0]
    assert (q["scope"], q["code_challenge_method"]) == ("repo read:org read:user", "S256")


def test_a_token_that_never_expires_and_cannot_refresh_is_stored_as_the_connectors_own_token(
        kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider, github: FakeGitHub) -> None:
    register(admin, "github", idp)
    idp.knobs.issue_refresh_token, idp.knobs.expires_in = False, None  # a GitHub OAuth App
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    assert sign_in(browserless(kr.url), s["token"], "github").status_code == 200
    [src] = sources(admin)
    assert src["credentials"] == ["token"]
    assert execute(admin, src, "viewer", "get").status_code == 200


def test_an_expiring_token_without_a_refresh_token_is_refused_and_nothing_is_stored(
        kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider) -> None:
    register(admin, "hubspot", idp)
    idp.knobs.issue_refresh_token = False
    with FakeHubSpot() as hubspot:
        hubspot.authorized = lambda request: idp.accepts(request.headers.get("Authorization"))  # type: ignore
        s = session(admin, connectors=["hubspot"], config={"hubspot": {"base_url": hubspot.url}})
        client = browserless(kr.url)
        r = sign_in(client, s["token"], "hubspot")
        assert r.status_code == 400 and "granted no refresh token" in r.text
        assert sources(admin) == [] and status_of(admin, s) == "pending"
        assert f'href="/connect/{s["token"]}/hubspot"' in r.text  # try again, in the same browser
        idp.knobs.issue_refresh_token = True
        assert sign_in(client, s["token"], "hubspot").status_code == 200
    assert [x["credentials"] for x in sources(admin)] == [["oauth2"]]


def test_a_provider_refusal_is_shown_and_nothing_is_stored(kr: KeyrelayServer, admin: Admin,
                                                           idp: FakeOAuthProvider, github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    idp.knobs.auto_approve = False
    client = browserless(kr.url)
    r = client.post(f"/connect/{s['token']}/github/oauth",
                    data={"csrf": csrf_of(form_page(client, s["token"], "github").text)})
    consent = httpx.get(r.headers["location"])
    assert consent.status_code == 200 and "wants access" in consent.text
    denied = httpx.post(idp.authorize_url, data={**idp.authorize_requests[-1], "decision": "deny"})
    r = client.get(denied.headers["location"])
    assert r.status_code == 400 and "cancelled or access was not granted" in r.text
    assert idp.token_calls == [] and sources(admin) == []


def test_the_token_endpoints_error_is_shown_and_nothing_is_stored(kr: KeyrelayServer, admin: Admin,
                                                                  idp: FakeOAuthProvider, github: FakeGitHub) -> None:
    register(admin, "github", idp)
    idp.knobs.token_error = "invalid_client"
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    r = sign_in(browserless(kr.url), s["token"], "github")
    assert r.status_code == 400 and "The provider refused the authorization (invalid_client)" in r.text
    assert sources(admin) == []


def _started(client: httpx.Client, token: str, connector: str) -> str:
    """Start a sign-in and stop at the provider: the authorize URL."""
    r = client.post(f"/connect/{token}/{connector}/oauth",
                    data={"csrf": csrf_of(form_page(client, token, connector).text)})
    assert r.status_code == 303
    return str(r.headers["location"])


def _callback_of(idp: FakeOAuthProvider, authorize_url: str) -> str:
    r = httpx.get(authorize_url)
    assert r.status_code == 302
    return str(r.headers["location"])


def test_a_tampered_state_is_refused(kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider,
                                     github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    client = browserless(kr.url)
    callback = _callback_of(idp, _started(client, s["token"], "github"))
    for tampered in (callback.replace("state=", "state=x"), callback.split("&state=")[0],
                     callback.replace("state=", "state=%00")):
        r = client.get(tampered)
        assert r.status_code == 400 and "invalid, expired or was already used" in r.text
    assert idp.token_calls == [] and sources(admin) == []
    assert client.get(callback).status_code == 200  # the untouched one still works, once


def test_a_replayed_state_is_refused(kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider,
                                     github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    client = browserless(kr.url)
    callback = _callback_of(idp, _started(client, s["token"], "github"))
    assert client.get(callback).status_code == 200
    r = client.get(callback)
    assert r.status_code == 400 and "already used" in r.text
    assert len(sources(admin)) == 1 and len(idp.token_calls) == 1


def test_a_callback_in_another_browser_is_refused(kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider,
                                                  github: FakeGitHub) -> None:
    """Login CSRF: an attacker's authorization finished in a victim's browser connects nothing."""
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    callback = _callback_of(idp, _started(browserless(kr.url), s["token"], "github"))
    r = browserless(kr.url).get(callback)  # no cookie of this session
    assert r.status_code == 400 and "started in another browser" in r.text
    assert s["token"] not in r.text
    assert idp.token_calls == [] and sources(admin) == []


def test_a_code_from_another_session_fails_pkce_and_nothing_is_stored(
        kr: KeyrelayServer, admin: Admin, idp: FakeOAuthProvider, github: FakeGitHub) -> None:
    """An intercepted code redeemed with another authorization's state: the verifier does not match."""
    register(admin, "github", idp)
    victim = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    attacker = session(admin, workspace="evil", connectors=["github"], config={"github": {"base_url": github.url}})
    stolen = _callback_of(idp, _started(browserless(kr.url), victim["token"], "github"))
    code = stolen.split("code=")[1].split("&")[0]
    client = browserless(kr.url)
    own = _callback_of(idp, _started(client, attacker["token"], "github"))
    own_state = own.split("state=")[1]
    r = client.get(f"{kr.url}{CALLBACK}?code={code}&state={own_state}")
    assert r.status_code == 400 and "refused the authorization (invalid_grant)" in r.text
    [call] = idp.token_calls
    assert call.status == 400 and call.form["code"] == code
    assert sources(admin) == []


def test_a_token_endpoint_that_redirects_elsewhere_is_not_followed(kr: KeyrelayServer, admin: Admin,
                                                                   idp: FakeOAuthProvider,
                                                                   github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    with FakeUpstream() as elsewhere:
        idp.knobs.redirect_token_to = elsewhere.url + "/oauth/token"
        r = sign_in(browserless(kr.url), s["token"], "github")
        assert elsewhere.requests == []
    assert r.status_code == 400 and "redirect" in r.text and sources(admin) == []


def test_a_session_that_expired_during_the_sign_in_connects_nothing(kr: KeyrelayServer, admin: Admin,
                                                                    idp: FakeOAuthProvider,
                                                                    github: FakeGitHub) -> None:
    register(admin, "github", idp)
    s = session(admin, connectors=["github"], config={"github": {"base_url": github.url}})
    client = browserless(kr.url)
    authorize = _started(client, s["token"], "github")
    with sqlite3.connect(kr.settings.data_dir / "keyrelay.db") as db:
        db.execute("UPDATE connect_sessions SET expires_at = ? WHERE id = ?", (time.time() - 1, s["id"]))
    r = client.get(_callback_of(idp, authorize))
    assert r.status_code == 400 and idp.token_calls == [] and sources(admin) == []


def test_salesforce_takes_its_instance_url_from_the_token_response(kr: KeyrelayServer, admin: Admin,
                                                                   idp: FakeOAuthProvider) -> None:
    register(admin, "salesforce", idp)
    with FakeSalesforce() as sf:
        sf.authorized = lambda request: idp.accepts(request.headers.get("Authorization"))  # type: ignore
        idp.knobs.extra = {"instance_url": "https://acme.my.salesforce.com", "id": "https://login/id/00D/005"}
        s = session(admin, connectors=["salesforce"], config={"salesforce": {"base_url": sf.url + SALESFORCE_API}})
        assert sign_in(browserless(kr.url), s["token"], "salesforce").status_code == 200
    [src] = sources(admin)
    assert src["config"]["instance_url"] == "https://acme.my.salesforce.com" and src["credentials"] == ["oauth2"]


def test_shopify_asks_for_the_shop_first_and_checks_it(kr: KeyrelayServer, admin: Admin,
                                                       idp: FakeOAuthProvider) -> None:
    register(admin, "shopify", idp)
    idp.knobs.issue_refresh_token, idp.knobs.expires_in = False, None  # offline tokens
    with FakeShopify() as shop:
        shop.authorized = lambda request: idp.accepts(  # type: ignore[method-assign]
            request.headers.get("X-Shopify-Access-Token"), scheme="")
        s = session(admin, connectors=["shopify"], config={"shopify": {"base_url": shop.url + SHOPIFY_BASE}})
        client = browserless(kr.url)
        page = form_page(client, s["token"], "shopify").text
        assert 'name="config.shop"' in page and 'name="credentials.access_token"' in page
        csrf = csrf_of(page)
        r = client.post(f"/connect/{s['token']}/shopify/oauth", data={"csrf": csrf, "config.shop": "evil.com/x"})
        assert r.status_code == 400 and idp.authorize_requests == []
        assert '<span class="field-error" role="alert">Invalid config.shop' in r.text  # the schema said no
        r = sign_in(client, s["token"], "shopify", {"config.shop": "acme-store"})
        assert r.status_code == 200, r.text
    [src] = sources(admin)
    assert src["config"]["shop"] == "acme-store" and src["credentials"] == ["access_token"]


def test_jiras_site_is_discovered_with_the_new_token(kr: KeyrelayServer) -> None:
    class Resources(FakeApi):
        def routes(self, app: web.Application) -> None:
            app.router.add_get("/oauth/token/accessible-resources", self.list)

        def authorized(self, request: web.Request) -> bool:
            return request.headers.get("Authorization") == "Bearer at-new"

        async def list(self, request: web.Request) -> web.Response:
            return web.json_response([{"id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "name": "acme",
                                       "url": "https://acme.atlassian.net", "scopes": ["read:jira-work"]}])

    assert kr.app.runtime is not None
    flow: ConnectFlow = kr.app.runtime.services.extras["connect_flow"]
    provider = provider_of(kr.app.runtime.services.catalog["jira"].raw)
    assert provider is not None and provider.discover is not None
    with Resources() as api:
        found = kr.run(flow._discover(provider, Discovery(url=api.url + "/oauth/token/accessible-resources",
                                                          records="", config=provider.discover.config), "at-new"))
    assert found == {"base_url": "https://api.atlassian.com/ex/jira/1324a887-45db-1bf4-1e99-ef0ff456d421",
                     "subdomain": "acme"}


def test_a_webhook_payload_names_the_connection_never_a_credential() -> None:
    from keyrelay.model import Policy, Source

    src = Source(id="s1", workspace_id="w1", connector="stripe", name="Stripe", slug="stripe", config={},
                 policy=Policy(), status="active", credential_fields=("api_key",), created_at=1.0, updated_at=2.0)
    assert connection_data(src, session_id="cs1") == {
        "source_id": "s1", "workspace_id": "w1", "connector": "stripe", "name": "Stripe", "slug": "stripe",
        "status": "active", "updated_at": "1970-01-01T00:00:02Z", "connect_session_id": "cs1"}
