"""The Airbyte-compatible hosted API (docs/airbyte.md) over HTTP: route shapes, auth, error bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer, logged, make_settings

STRIPE_DEF = "e094cb9a-26de-4645-8761-65c0c425d1de"
CONNECTORS = "/api/v1/integrations/connectors"


class SlowStripe(FakeStripe):
    """`cus_slow` takes 2.5 s to answer (for the 504 mapping: the source's timeout is 1 s)."""

    async def get(self, request: web.Request) -> web.Response:
        if request.match_info["id"] == "cus_slow":
            await asyncio.sleep(2.5)
        return await super().get(request)


@pytest.fixture(scope="module")
def kr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyrelayServer]:
    """One keyrelay for the module: tests that change state use their own workspace or source."""
    with KeyrelayServer(make_settings(data_dir=tmp_path_factory.mktemp("kr") / "data")) as server:
        yield server


@pytest.fixture(scope="module")
def admin(kr: KeyrelayServer) -> Iterator[Admin]:
    client = Admin(kr.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def slow_stripe() -> Iterator[FakeStripe]:
    with SlowStripe() as fake:
        yield fake


@pytest.fixture
def stripe(slow_stripe: FakeStripe) -> FakeStripe:
    slow_stripe.requests.clear()
    slow_stripe.fail_next.clear()
    return slow_stripe


def _stripe_source(admin: Admin, ws: str, url: str, **kw: Any) -> dict[str, Any]:
    return admin.source(ws, upstream_url="", connector="stripe", slug="stripe", config={"base_url": url},
                        credentials={"api_key": API_KEY}, **kw)


@pytest.fixture(scope="module")
def module_env(kr: KeyrelayServer, admin: Admin, slow_stripe: FakeStripe) -> Iterator[dict[str, Any]]:
    ws = admin.workspace("acme")
    src = _stripe_source(admin, ws, slow_stripe.url, policy={"timeout_seconds": 1})
    http_src = admin.source(ws, upstream_url="http://127.0.0.1:9/v1", slug="raw")
    other_ws = admin.workspace("globex")
    other = _stripe_source(admin, other_ws, slow_stripe.url)
    key = admin.api_key(ws, ["execute"])
    with httpx.Client(base_url=kr.url, headers={"Authorization": f"Bearer {key}"}, timeout=20) as http:
        yield {"ws": ws, "src": src, "http_src": http_src, "other_ws": other_ws, "other": other, "http": http,
               "query_only": {"Authorization": f"Bearer {admin.api_key(ws, ['query'])}"},
               "scoped": {"Authorization": f"Bearer {admin.scoped_token('acme')}"}}


@pytest.fixture
def env(module_env: dict[str, Any], stripe: FakeStripe) -> dict[str, Any]:
    return module_env


def execute(env: dict[str, Any], body: dict[str, Any], source: str | None = None) -> httpx.Response:
    r: httpx.Response = env["http"].post(f"{CONNECTORS}/{source or env['src']['id']}/execute", json=body)
    return r


def errors(r: httpx.Response, status: int) -> str:
    """Airbyte's error body; returns the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1
    err = body["errors"][0]
    assert err["message"] and err["userPresentableMessage"] == err["message"]
    return str(err["message"])


def test_lookup_by_workspace_name_and_definition(env: dict[str, Any], admin: Admin) -> None:
    r = env["http"].get(CONNECTORS, params={"workspace_name": "acme", "definition_id": STRIPE_DEF})
    assert r.status_code == 200, r.text
    [item] = r.json()["data"]
    assert item["id"] == env["src"]["id"] and item["name"] == "stripe"
    assert item["summarized_source_template"] == {"name": "Stripe"}
    assert item["created_at"].endswith("Z") and item["updated_at"].endswith("Z")
    for params in ({"customer_name": "acme", "definition_id": STRIPE_DEF},
                   {"workspace_id": env["ws"], "definition_id": "stripe"}, {"workspace_name": "acme"}):
        assert [c["id"] for c in env["http"].get(CONNECTORS, params=params).json()["data"]] == [env["src"]["id"]]
    # the generic http source is not an Airbyte connector; unknown workspaces and definitions find nothing
    for params in ({"workspace_name": "nobody"}, {"workspace_name": "acme", "definition_id": "nope"},
                   {"workspace_id": "00000000-0000-0000-0000-000000000000"}):
        assert env["http"].get(CONNECTORS, params=params).json() == {"data": []}
    # another tenant's workspace looks exactly like a missing one
    assert env["http"].get(CONNECTORS, params={"workspace_name": "globex"}).json() == {"data": []}
    assert env["http"].get(CONNECTORS, params={"workspace_id": env["other_ws"]}).json() == {"data": []}
    # the application token sees every workspace
    r = admin.get(CONNECTORS, params={"workspace_name": "globex", "definition_id": STRIPE_DEF})
    assert [c["id"] for c in r.json()["data"]] == [env["other"]["id"]]


def test_lookup_needs_a_valid_token_with_the_execute_scope(env: dict[str, Any], kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + CONNECTORS, params={"workspace_name": "acme"}, headers={"Authorization": "Bearer nope"})
    assert "token" in errors(r, 401).lower()
    errors(httpx.get(kr.url + CONNECTORS, params={"workspace_name": "acme"}), 401)
    errors(httpx.get(kr.url + CONNECTORS, params={"workspace_name": "acme"}, headers=env["query_only"]), 403)
    r = httpx.get(kr.url + CONNECTORS, params={"workspace_name": "acme"}, headers=env["scoped"])
    assert [c["id"] for c in r.json()["data"]] == [env["src"]["id"]]


def test_get_and_delete_a_connector(env: dict[str, Any], admin: Admin, kr: KeyrelayServer,
                                   stripe: FakeStripe) -> None:
    r = env["http"].get(f"{CONNECTORS}/{env['src']['id']}")
    assert r.status_code == 200 and r.json()["source_definition_id"] == STRIPE_DEF
    errors(env["http"].get(f"{CONNECTORS}/{env['other']['id']}"), 404)  # other tenant
    errors(env["http"].get(f"{CONNECTORS}/{env['http_src']['id']}"), 404)  # not a catalog connector
    doomed = admin.source(env["ws"], upstream_url="", connector="stripe", slug="doomed",
                          config={"base_url": stripe.url}, credentials={"api_key": API_KEY})
    errors(env["http"].delete(f"{CONNECTORS}/{doomed['id']}"), 403)  # API keys may not delete
    errors(httpx.delete(f"{kr.url}{CONNECTORS}/{env['other']['id']}", headers=env["scoped"]), 404)
    r = httpx.delete(f"{kr.url}{CONNECTORS}/{doomed['id']}", headers=env["scoped"])
    assert r.status_code == 202
    errors(admin.get(f"{CONNECTORS}/{doomed['id']}"), 404)


def test_execute_list_get_and_search(env: dict[str, Any], stripe: FakeStripe) -> None:
    r = execute(env, {"entity": "customers", "action": "list", "skip_truncation": True,
                      "params": {"limit": 3}, "intent": "find customers"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["id"] for c in out["result"]] == ["cus_0000", "cus_0001", "cus_0002"]
    assert out["connector_metadata"]["has_more"] is True
    assert out["execution_metadata"]["connector_instance_id"] == env["src"]["id"]
    got = execute(env, {"entity": "customers", "action": "get", "skip_truncation": True,
                        "params": {"id": "cus_0004"}}).json()
    assert got["result"]["id"] == "cus_0004" and got["result"]["description"] == "d" * 300
    found = execute(env, {"entity": "customers", "action": "api_search", "skip_truncation": True,
                          "params": {"query": "email:'user7@example.com'"}}).json()
    assert [c["id"] for c in found["result"]] == ["cus_0007"]
    assert stripe.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"


def test_execute_ignores_unknown_params_and_shapes_like_airbyte(env: dict[str, Any]) -> None:
    r = execute(env, {"entity": "balance_transactions", "action": "list", "skip_truncation": True,
                      "params": {"limit": 1, "not_a_param": True}})
    assert r.status_code == 200 and len(r.json()["result"]) == 1
    cut = execute(env, {"entity": "customers", "action": "list", "skip_truncation": False, "params": {"limit": 1},
                        "select_fields": ["id", "description"], "exclude_fields": ["id"]}).json()["result"][0]
    assert set(cut) == {"id", "description"} and cut["description"].endswith("[truncated]")
    # Airbyte's reference truncates `list` only: search and get results stay whole
    found = execute(env, {"entity": "customers", "action": "search", "skip_truncation": False,
                          "params": {"query": "email:'user1@example.com'"}}).json()["result"]
    assert found[0]["description"] == "d" * 300
    got = execute(env, {"entity": "customers", "action": "get", "skip_truncation": False,
                        "params": {"id": "cus_0001"}, "exclude_fields": ["description"]}).json()["result"]
    assert got["id"] == "cus_0001" and "description" not in got


@pytest.mark.parametrize("body,field", [
    ({"entity": "nope", "action": "list"}, "customers"),
    ({"entity": "customers", "action": "explode"}, "explode"),
    ({"entity": "customers", "action": "get", "params": {}}, "id"),
    ({"entity": "customers", "action": "list", "params": {"limit": "many"}}, "limit"),
    ({"action": "list"}, "entity"),
])
def test_invalid_requests_are_422(env: dict[str, Any], stripe: FakeStripe, body: dict[str, Any], field: str) -> None:
    assert field in errors(execute(env, body), 422)
    assert stripe.requests == []


def test_execute_auth_and_tenancy(env: dict[str, Any], kr: KeyrelayServer, stripe: FakeStripe) -> None:
    body = {"entity": "customers", "action": "list", "params": {"limit": 1}}
    url = f"{kr.url}{CONNECTORS}/{env['src']['id']}/execute"
    errors(httpx.post(url, json=body, headers={"Authorization": "Bearer expired-or-bogus"}), 401)
    errors(httpx.post(url, json=body, headers=env["query_only"]), 403)
    assert stripe.requests == []  # refused before any upstream call
    assert httpx.post(url, json=body, headers=env["scoped"]).status_code == 200
    errors(execute(env, body, source=env["other"]["id"]), 404)
    errors(execute(env, body, source="00000000-0000-0000-0000-000000000000"), 404)
    assert len(stripe.requests) == 1  # only the allowed call


def test_upstream_failures_keep_the_sdk_statuses(env: dict[str, Any], stripe: FakeStripe) -> None:
    body = {"entity": "customers", "action": "get", "params": {"id": "cus_0001"}}
    stripe.fail_next.append((401, {}, {"error": {"message": f"Invalid API Key provided: {API_KEY}"}}))
    r = execute(env, body)
    assert "refused the stored credentials" in errors(r, 403) and API_KEY not in r.text
    stripe.fail_next.append((429, {"Retry-After": "120"}, {"error": {"message": "Too many requests"}}))
    r = execute(env, body)
    assert "rate limit" in errors(r, 429) and r.headers["retry-after"] == "120"
    errors(execute(env, {**body, "params": {"id": "cus_missing"}}), 404)
    stripe.fail_next.append((500, {}, {"error": {"message": "down"}}))
    errors(execute(env, body), 502)
    errors(execute(env, {**body, "params": {"id": "cus_slow"}}), 504)  # the source's timeout is 1 s


def test_prepare_is_not_offered(env: dict[str, Any]) -> None:
    r = env["http"].post(f"{CONNECTORS}/{env['src']['id']}/execute/prepare",
                         json={"entity": "customers", "action": "list"})
    assert "not supported" in errors(r, 404)


def test_inspect_and_skill_docs_come_from_our_definition(env: dict[str, Any], kr: KeyrelayServer) -> None:
    info = env["http"].get(f"{CONNECTORS}/{env['src']['id']}/inspect").json()
    assert info["docs_skill_id"] == "connector:stripe"
    assert info["connector_id"] == env["src"]["id"] and info["workspace_id"] == env["ws"]
    assert info["source_definition_id"] == STRIPE_DEF and info["source_definition_name"] == "Stripe"
    assert any("Read-only" in w for w in info["warnings"])
    errors(env["http"].get(f"{CONNECTORS}/{env['other']['id']}/inspect"), 404)

    docs = env["http"].get("/api/v1/skills/docs", params={"id": info["docs_skill_id"]}).json()
    assert docs["id"] == "connector:stripe" and docs["metadata"]["kind"] == "connector"
    assert "entity:customers" in {s["id"] for s in docs["outline"]}
    assert {b["type"] for b in docs["content"]} >= {"heading", "paragraph", "table", "list", "code"}
    section = env["http"].get("/api/v1/skills/docs", params={"id": "connector:stripe",
                                                             "section": "entity:customers"}).json()
    assert section["section_id"] == "entity:customers"
    tables = [b for b in section["content"] if b["type"] == "table"]
    params = {row[0] for t in tables for row in t["rows"]}
    assert {"limit", "starting_after", "email", "id", "query"} <= params
    texts = " ".join(b.get("text", "") for b in section["content"])
    assert "customers.list" in texts and "connector_metadata.next_cursor as the parameter starting_after" in texts
    assert "valid sections" in errors(env["http"].get("/api/v1/skills/docs", params={
        "id": "connector:stripe", "section": "entity:nope"}), 422)
    errors(env["http"].get("/api/v1/skills/docs", params={"id": "connector:nope"}), 404)
    errors(httpx.get(f"{kr.url}/api/v1/skills/docs", params={"id": "connector:stripe"}), 401)


def test_other_routes_keep_keyrelay_error_bodies(env: dict[str, Any], admin: Admin) -> None:
    r = admin.get("/api/v1/sources/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_each_execute_is_logged_once(kr: KeyrelayServer, admin: Admin, stripe: FakeStripe) -> None:
    ws = admin.workspace("logged")
    src = _stripe_source(admin, ws, stripe.url)
    url = f"{kr.url}{CONNECTORS}/{src['id']}/execute"
    httpx.post(url, json={"entity": "customers", "action": "list", "params": {"limit": 1}}, headers=admin.headers)
    httpx.post(url, json={"entity": "nope", "action": "list"}, headers=admin.headers)
    rows = logged(admin, 2, workspace_id=ws)
    path = f"{CONNECTORS}/{src['id']}/execute"
    assert sorted((r["door"], r["status"], r["path"]) for r in rows) == [("execute", 200, path), ("execute", 422, path)]


def test_keyrelay_never_imports_the_elastic_licensed_sdk() -> None:
    """`airbyte-agent-sdk` is a test-only dependency: nothing under src/ may import or copy from it."""
    src = Path(__file__).resolve().parents[2] / "src" / "keyrelay"
    offenders = [str(p) for p in src.rglob("*.py") if "airbyte_agent_sdk" in p.read_text(encoding="utf-8")]
    assert offenders == []
