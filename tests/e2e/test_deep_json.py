"""JSON nested 10,000 deep, from the agent or from the upstream, never costs a 500 (docs/security.md: bounded
everything). Every JSON entry point: admin and token routes, the request API body, execute params and query
filters (native and Airbyte-compatible), MCP arguments, a files page token; the request API envelope, execute and
query answers and an OAuth token endpoint's answer. Real keyrelay, real loopback upstreams.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from keyrelay.boundedjson import MAX_DEPTH, TooDeep, loads, within
from support.adversarial import leaks
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

DEEP = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
JUST_OVER = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class DeepUpstream(FakeUpstream):
    """Answers every `/v1/...` and `/deep` request (and the token endpoint) with JSON nested `depth` deep."""

    depth = 10_000

    def _make_app(self) -> web.Application:
        app = super()._make_app()
        app.router.add_route("*", "/deep", self._deep)
        app.router.add_route("*", "/v1/{tail:.*}", self._deep)
        app.router.add_route("*", "/deep-token", self._deep)
        return app

    async def _deep(self, request: web.Request) -> web.Response:
        body = '{"data":' + "[" * self.depth + "]" * self.depth + "}"
        return web.Response(text=body, content_type="application/json")


@pytest.fixture
def deep_upstream() -> Iterator[DeepUpstream]:
    with DeepUpstream() as up:
        yield up


@pytest.fixture
def kr_settings(kr_settings: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "files").mkdir()
    return {**kr_settings, "local_roots": str(tmp_path / "files")}


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, deep_upstream: DeepUpstream,
        tmp_path: Path) -> dict[str, Any]:
    ws = admin.workspace("deep")
    api = admin.source(ws, upstream_url=upstream.url, slug="api")
    deep_api = admin.source(ws, upstream_url=deep_upstream.url, slug="deepapi")
    stripe = admin.source(ws, upstream_url="", connector="stripe", slug="stripe",
                          config={"base_url": deep_upstream.url}, credentials={"api_key": "sk_test_deep_0001"})
    files = admin.source(ws, upstream_url="", connector="local", slug="docs", config={"root": str(tmp_path / "files")})
    oauth = admin.source(ws, upstream_url=deep_upstream.url, slug="oauth", credentials={"oauth2": {
        "token_url": deep_upstream.url + "/deep-token", "client_id": "c", "client_secret": "client-secret-deep",
        "grant_type": "client_credentials"}})
    token = admin.scoped_token("deep")
    return {"ws": ws, "api": api["id"], "deep_api": deep_api["id"], "stripe": stripe["id"], "files": files["id"],
            "oauth": oauth["id"], "auth": {"Authorization": f"Bearer {token}"}, "up": upstream.url,
            "deep_up": deep_upstream.url}


def fill(template: str, *parts: str) -> str:
    """`template` with each `§` replaced by the next part (JSON text built around a raw deep value)."""
    for part in parts:
        template = template.replace("§", part, 1)
    return template


def _clean(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert not leaks(r.status_code, r.content), r.text[:300]
    if code is not None:
        body = r.json()
        err = body["error"] if "error" in body else body["errors"][0]
        assert err["code"] == code, body


# --- the bound itself ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [DEEP, DEEP_OBJECT, JUST_OVER, '{"a": ' + JUST_OVER + "}"])
def test_loads_refuses_deep_json_as_a_value_error(text: str) -> None:
    with pytest.raises(TooDeep):
        loads(text)
    assert issubclass(TooDeep, ValueError)


def test_loads_accepts_the_bound_and_within_is_iterative() -> None:
    at = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(at) is not None and within(loads(at))
    nested: Any = []
    for _ in range(50_000):  # far past the recursion limit: no RecursionError
        nested = [nested]
    assert not within(nested) and within({"a": [1, {"b": 2}]}, 3) and not within({"a": [1, {"b": []}]}, 3)


# --- from the agent -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("deep", [DEEP, JUST_OVER])
def test_admin_and_token_routes(kr: KeyrelayServer, admin: Admin, env: dict[str, Any], deep: str) -> None:
    h = {**admin.headers, "Content-Type": "application/json"}
    calls = [
        ("POST", "/api/v1/sources", fill('{"workspace_id":"§","connector":"http","name":"x","config":{"upstream_url":'
                                    '"http://127.0.0.1:9","x":§}}', env["ws"], deep)),
        ("PATCH", f"/api/v1/sources/{env['api']}", fill('{"policy":§}', deep)),
        ("POST", "/api/v1/workspaces", fill('{"name":§}', deep)),
        ("POST", "/api/v1/api-keys", fill('{"workspace_id":"§","scopes":§}', env["ws"], deep)),
        ("POST", "/api/v1/embedded/scoped-token", fill('{"workspace_name":§}', deep)),
        ("POST", "/api/v1/applications/token", fill('{"client_id":§,"client_secret":"x"}', deep)),
        ("POST", "/v1/sources", fill('{"workspaceId":"§","name":"x","sourceDefinitionId":"http","configuration":§}',
                                     env["ws"], deep)),
    ]
    for method, path, body in calls:
        _clean(httpx.request(method, kr.url + path, content=body, headers=h), 400, "invalid_request")


@pytest.mark.parametrize("deep", [DEEP, JUST_OVER])
def test_execute_params_and_query_filters(kr: KeyrelayServer, env: dict[str, Any], deep: str) -> None:
    h = {**env["auth"], "Content-Type": "application/json"}
    execute = fill('{"entity":"customers","action":"list","params":{"x":§}}', deep)
    _clean(httpx.post(f"{kr.url}/api/v1/connectors/instances/{env['stripe']}/execute", content=execute, headers=h),
           400, "invalid_request")
    airbyte = httpx.post(f"{kr.url}/api/v1/integrations/connectors/{env['stripe']}/execute", content=execute,
                         headers=h)
    _clean(airbyte, 400, "invalid_request")
    assert "errors" in airbyte.json()  # Airbyte's error shape on Airbyte's routes
    query = fill('{"stream":"customers","filters":{"a":§}}', deep)
    _clean(httpx.post(f"{kr.url}/v1/proxy/sources/{env['stripe']}/query", content=query, headers=h), 400,
           "invalid_request")


@pytest.mark.parametrize("deep", [DEEP, DEEP_OBJECT, JUST_OVER])
def test_request_api_body(kr: KeyrelayServer, upstream: FakeUpstream, env: dict[str, Any], deep: str) -> None:
    body = fill('{"method":"POST","url":"§/echo","body":§}', env["up"], deep)
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/{env['api']}/request", content=body, headers=env["auth"])
    _clean(r, 400, "invalid_request")
    assert r.json()["error"]["field"] == "body" and upstream.requests == []


@pytest.mark.parametrize("deep", [DEEP, JUST_OVER])
def test_mcp_arguments(kr: KeyrelayServer, upstream: FakeUpstream, env: dict[str, Any], deep: str) -> None:
    request = fill('{"source_id":"§","url":"§/echo","method":"POST","body":§}', env["api"], env["up"], deep)
    execute = fill('{"source_id":"§","entity":"customers","action":"list","params":{"x":§}}', env["stripe"], deep)
    for tool, args in (("apis_make_request", request), ("execute", execute)):
        call = fill('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"§","arguments":§}}', tool, args)
        r = httpx.post(kr.url + "/mcp", content=call, headers={**env["auth"], **MCP_HEADERS})
        assert r.status_code in (200, 400) and not leaks(r.status_code, r.content), r.text[:300]
        if r.status_code == 200:  # parsed by the SDK: keyrelay refuses it as a tool error
            result = r.json()["result"]
            assert result["isError"] and result["structuredContent"]["error"]["code"] == "invalid_request"
        else:  # too deep for the SDK's JSON-RPC parser itself
            assert r.json()["error"]["code"] == -32700
    assert upstream.requests == []


def test_files_page_token(kr: KeyrelayServer, env: dict[str, Any]) -> None:
    token = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    r = httpx.get(f"{kr.url}/api/v1/sonar/files/{env['files']}/list/", params={"page_token": token},
                  headers=env["auth"])
    _clean(r, 400, "invalid_request")


# --- from the upstream --------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [10_000, 900, MAX_DEPTH + 1])
def test_request_api_envelope_keeps_the_text_of_deep_json(kr: KeyrelayServer, env: dict[str, Any],
                                                          deep_upstream: DeepUpstream, depth: int) -> None:
    deep_upstream.depth = depth
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/{env['deep_api']}/request", headers=env["auth"],
                   json={"method": "GET", "url": env["deep_up"] + "/deep"})
    _clean(r, 200)
    out = r.json()
    assert out["status_code"] == 200 and out["body"] is None and out["response_body"].count("[") == depth


@pytest.mark.parametrize("depth", [10_000, 900, MAX_DEPTH + 1])
def test_mcp_request_tool_with_a_deep_answer(kr: KeyrelayServer, env: dict[str, Any], deep_upstream: DeepUpstream,
                                            depth: int) -> None:
    deep_upstream.depth = depth
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "apis_make_request", "arguments": {"source_id": env["deep_api"], "url": env["deep_up"] + "/deep"}}}
    r = httpx.post(kr.url + "/mcp", json=call, headers={**env["auth"], **MCP_HEADERS})
    _clean(r, 200)
    assert r.json()["result"]["structuredContent"]["body"] is None


@pytest.mark.parametrize("depth", [10_000, 900, MAX_DEPTH + 1])
def test_execute_and_query_answers(kr: KeyrelayServer, env: dict[str, Any], deep_upstream: DeepUpstream,
                                   depth: int) -> None:
    deep_upstream.depth = depth
    h = env["auth"]
    _clean(httpx.post(f"{kr.url}/api/v1/connectors/instances/{env['stripe']}/execute", headers=h,
                      json={"entity": "customers", "action": "list"}), 502, "upstream_unreachable")
    _clean(httpx.post(f"{kr.url}/v1/proxy/sources/{env['stripe']}/query", headers=h, json={"stream": "customers"}),
           502, "upstream_unreachable")


def test_an_oauth_token_endpoint_answering_deep_json(kr: KeyrelayServer, env: dict[str, Any]) -> None:
    r = httpx.get(f"{kr.url}/api/{env['ws']}/proxy/oauth/echo", headers=env["auth"])
    _clean(r, 502, "upstream_auth_failed")
