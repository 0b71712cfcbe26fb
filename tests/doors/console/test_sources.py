"""Sources in the console against a live keyrelay and a loopback upstream: forms generated from the connector
schemas create sources that work through the gateway; settings and credentials change through forms; a stored
credential never reaches any page, not even a refused form; names render as text."""

from __future__ import annotations

import re

import httpx

from keyrelay.connectors.spec import load_catalog
from support.console import ConsoleClient, assert_page_headers, notice
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

CANARY = "sk_live_CANARY_4f1d2c9e"
XSS = "<img src=x onerror=alert(1)>"


def _sources(admin: Admin) -> list[dict[str, object]]:
    return list(admin.get("/api/v1/sources").json()["data"])


def _create(c: ConsoleClient, ws: str, upstream: FakeUpstream, *, name: str = "crm", token: str = CANARY,
            **extra: object) -> httpx.Response:
    page = f"/console/sources/new?workspace_id={ws}&connector=http"
    data: dict[str, object] = {"workspace_id": ws, "connector": "http", "name": name, "slug": "",
                               "config.upstream_url": upstream.url, "credentials.bearer_token": token,
                               "policy.allowed_methods": ["GET", "POST"], "policy.rate_limit_per_minute": "100",
                               "policy.timeout_seconds": "30.0"}
    data.update(extra)
    return c.submit(page, "/console/sources/new", data)


def test_a_source_created_through_the_form_works_through_the_gateway(kr: KeyrelayServer, admin: Admin,
                                                                      upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    r = _create(c, ws, upstream)
    assert r.status_code == 303, r.text
    (src,) = _sources(admin)
    assert r.headers["location"] == f"/console/sources/{src['id']}?done=created"
    assert (src["slug"], src["credentials"], src["config"]) == ("crm", ["bearer_token"], {"upstream_url": upstream.url})
    assert src["policy"]["allowed_methods"] == ["GET", "POST"] and src["policy"]["rate_limit_per_minute"] == 100
    key = admin.api_key(ws, ["proxy"])
    got = httpx.get(f"{kr.url}/api/{ws}/proxy/crm/echo", headers={"Authorization": f"Bearer {key}"})
    assert got.status_code == 200
    assert upstream.requests[-1].header("authorization") == f"Bearer {CANARY}"
    page = c.get(r.headers["location"])
    assert_page_headers(page)
    assert "Source created" in notice(page.text, "ok")
    assert f"/api/{ws}/proxy/crm/&lt;path&gt;" in page.text  # how agents reach it


def test_every_connector_has_a_form_with_empty_credential_inputs(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    for connector, spec in load_catalog().items():
        page = c.get(f"/console/sources/new?workspace_id={ws}&connector={connector}")
        assert page.status_code == 200, connector
        assert_page_headers(page)
        for key in spec.credentials_schema.get("properties") or {}:
            assert f'name="credentials.{key}' in page.text, (connector, key)
        for tag in re.findall(r'<(?:input|textarea)[^>]*name="credentials\.[^"]*"[^>]*>', page.text):
            assert "value=" not in tag, (connector, tag)
        for key in spec.config_schema.get("properties") or {}:
            assert f'name="config.{key}"' in page.text, (connector, key)


def test_the_first_step_picks_a_workspace_and_a_connector(kr: KeyrelayServer, admin: Admin) -> None:
    admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/sources/new")
    assert page.status_code == 200
    for spec in load_catalog().values():
        assert f'value="{spec.name}"' in page.text
    assert "Create a workspace" not in page.text


def test_a_refused_form_comes_back_without_its_credentials(kr: KeyrelayServer, admin: Admin,
                                                           upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    for extra, status in (({"config.upstream_url": "ftp://files.example"}, 400),
                          ({"policy.rate_limit_per_minute": "lots"}, 400),
                          ({"config.upstream_url": "https://169.254.169.254/latest"}, 422)):
        r = _create(c, ws, upstream, **extra)
        assert r.status_code == status, r.text
        assert notice(r.text)
        assert CANARY not in r.text
        assert 'value="crm"' in r.text  # what is not secret is kept
    assert _sources(admin) == []


def test_settings_change_through_the_form(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": CANARY})
    c = ConsoleClient(kr.url).signed_in()
    page = f"/console/sources/{src['id']}"
    base = {"name": "echo", "slug": "echo", "status": "active", "config.upstream_url": upstream.url,
            "policy.timeout_seconds": "30.0"}
    r = c.submit(page, page, base)
    assert r.headers["location"].endswith("?done=unchanged")
    r = c.submit(page, page, base | {"name": "CRM", "policy.allowed_methods": ["GET"],
                                     "policy.rate_limit_per_minute": "5", "status": "inactive"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=saved")
    got = admin.get(f"/api/v1/sources/{src['id']}").json()
    assert (got["name"], got["status"], got["policy"]["allowed_methods"], got["policy"]["rate_limit_per_minute"]) == (
        "CRM", "inactive", ["GET"], 5)
    assert got["credentials"] == ["bearer_token"]  # untouched
    assert CANARY not in c.get(page).text
    r = c.submit(page, page, base | {"slug": "Not A Slug"})
    assert r.status_code == 400 and "slug" in notice(r.text)


def test_credentials_are_replaced_never_shown(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": CANARY})
    key = admin.api_key(ws, ["proxy"])
    c = ConsoleClient(kr.url).signed_in()
    page = f"/console/sources/{src['id']}/credentials"
    shown = c.get(page)
    assert shown.status_code == 200 and "bearer_token" in shown.text and CANARY not in shown.text
    r = c.submit(page, page, {"config.upstream_url": upstream.url})
    assert r.status_code == 400 and "Fill in the new credentials" in notice(r.text)
    r = c.submit(page, page, {"config.upstream_url": upstream.url, "credentials.basic.username": "bot",
                              "credentials.basic.password": "pw-2"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=credentials")
    assert admin.get(f"/api/v1/sources/{src['id']}").json()["credentials"] == ["basic"]
    httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
    assert upstream.requests[-1].header("authorization") == "Basic Ym90OnB3LTI="
    assert "pw-2" not in c.get(f"/console/sources/{src['id']}").text


def test_no_console_page_ever_shows_a_stored_credential(kr: KeyrelayServer, admin: Admin,
                                                        upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": CANARY, "api_key": {
        "value": CANARY + "-2", "header": "X-Key"}})
    key = admin.api_key(ws, ["proxy"])
    httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo?token={CANARY}", headers={"Authorization": f"Bearer {key}"})
    c = ConsoleClient(kr.url).signed_in()
    paths = ["/console/", "/console/workspaces", f"/console/workspaces/{ws}", "/console/sources",
             f"/console/sources/{src['id']}", f"/console/sources/{src['id']}/credentials",
             f"/console/sources/{src['id']}/delete", "/console/keys", "/console/applications", "/console/logs",
             f"/console/logs?source_id={src['id']}", "/console/vault",
             f"/console/sources/new?workspace_id={ws}&connector=http"]
    for path in paths:
        r = c.get(path)
        assert r.status_code == 200, path
        assert CANARY not in r.text, path
        assert "sk_live_CANARY" not in r.text, path


def test_a_source_is_deleted_after_a_confirmation(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url)
    c = ConsoleClient(kr.url).signed_in()
    page = f"/console/sources/{src['id']}/delete"
    assert "Delete source echo?" in c.get(page).text and _sources(admin)
    r = c.submit(page, page, {})
    assert (r.status_code, r.headers["location"]) == (303, "/console/sources?done=deleted")
    assert _sources(admin) == []


def test_a_hostile_source_name_renders_as_text(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    assert _create(c, ws, upstream, name=XSS, slug="xss").status_code == 303
    (src,) = _sources(admin)
    key = admin.api_key(ws, ["proxy"])
    httpx.get(f"{kr.url}/api/{ws}/proxy/xss/echo", headers={"Authorization": f"Bearer {key}"})
    for path in ("/console/", "/console/sources", f"/console/sources/{src['id']}", f"/console/workspaces/{ws}",
                 f"/console/sources/{src['id']}/delete", "/console/logs"):
        page = c.get(path).text
        assert "<img" not in page, path
    assert "&lt;img src=x onerror=alert(1)&gt;" in c.get("/console/sources").text


def test_a_source_that_needs_new_credentials_says_so(kr: KeyrelayServer, admin: Admin,
                                                     upstream: FakeUpstream) -> None:
    import asyncio

    from keyrelay.store.engine import make_engine
    from keyrelay.store.sources import SqlSourceStore

    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url)

    async def refused() -> None:  # what the OAuth refresh does when the upstream refuses the stored grant
        engine = make_engine(kr.settings.resolved_database_url)
        try:
            await SqlSourceStore(engine).update_source(src["id"], changes={"status": "needs_reauth"}, sealed=None,
                                                       now=0.0)
        finally:
            await engine.dispose()

    asyncio.run(refused())
    c = ConsoleClient(kr.url).signed_in()
    assert "need new credentials" in notice(c.get("/console/").text, "warn")
    page = c.get(f"/console/sources/{src['id']}").text
    assert "needs re-auth" in page and f'href="/console/sources/{src["id"]}/credentials">Replace them' in page
