"""Parity (docs/security.md): a request made through an MCP tool gets the same decision and error code as the
same request over HTTP, every MCP call writes exactly one request-log row with door "mcp", and no credential
reaches an MCP client in any encoding."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.mcp import log_rows, mcp_client, payload
from support.pipeline import ManualClock
from support.upstream import FakeUpstream

KEY = "sk_live_parity_canary_Zq81"


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def kr_clock() -> ManualClock:
    """The server's clock: the `limited` source allows two requests a minute, and a pinned clock keeps every
    test inside one window."""
    return ManualClock()


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, stripe: FakeStripe) -> dict[str, Any]:
    a, b = admin.workspace("a"), admin.workspace("b")
    creds = {"api_key": {"value": KEY, "header": "X-Api-Key"}}
    return {
        "kr": kr.url, "base": upstream.url,
        "api": admin.source(a, upstream_url=upstream.url, slug="api", credentials=creds)["id"],
        "limited": admin.source(a, upstream_url=upstream.url, slug="limited", credentials=creds,
                                policy={"rate_limit_per_minute": 2})["id"],
        "foreign": admin.source(b, upstream_url=upstream.url, slug="theirs", credentials=creds)["id"],
        "stripe": admin.source(a, upstream_url="", connector="stripe", slug="stripe",
                               config={"base_url": stripe.url}, credentials={"api_key": API_KEY})["id"],
        "a": admin.scoped_token("a"), "mcp_only": admin.api_key(a, ["mcp"]),
    }


def http_request(env: dict[str, Any], token: str, source: str, url: str) -> tuple[int, str | None]:
    r = httpx.post(f"{env['kr']}/api/v1/sonar/apis/{source}/request", json={"method": "GET", "url": url},
                   headers={"Authorization": f"Bearer {token}"}, timeout=20)
    return r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None


async def mcp_call(env: dict[str, Any], token: str, tool: str, args: dict[str, Any]) -> str | None:
    async with mcp_client(env["kr"] + "/mcp", token) as c:
        res = await c.call_tool(tool, args)
    out = payload(res)
    return out["error"]["code"] if res.is_error else None


async def test_request_api_decisions_match(env: dict[str, Any], admin: Admin) -> None:
    echo = env["base"] + "/echo"
    cases = [  # (token, source, url, expected code)
        ("a", "api", echo, None),
        ("a", "api", "https://evil.example/steal", "destination_not_allowed"),
        ("a", "api", env["base"] + ":1/echo", "invalid_request"),
        ("a", "foreign", echo, "not_found"),
        ("a", "nope", echo, "not_found"),
        ("mcp_only", "api", echo, "forbidden"),
    ]
    calls = 0
    for token, source, url, expected in cases:
        status, via_http = http_request(env, env[token], env.get(source, source), url)
        via_mcp = await mcp_call(env, env[token], "apis_make_request",
                                 {"source_id": env.get(source, source), "url": url})
        calls += 1
        assert via_http == via_mcp == expected, (token, source, url, status)
    # the source's limit (2 a minute) is shared by every door: one HTTP and one MCP call use it up
    limited = {"source_id": env["limited"], "url": echo}
    assert http_request(env, env["a"], env["limited"], echo) == (200, None)
    assert await mcp_call(env, env["a"], "apis_make_request", limited) is None
    assert http_request(env, env["a"], env["limited"], echo) == (429, "rate_limited")
    assert await mcp_call(env, env["a"], "apis_make_request", limited) == "rate_limited"
    calls += 2
    rows = log_rows(admin, calls + 1, door="mcp", timeout=1.0)  # give a duplicate row time to show up
    sonar = [r for r in log_rows(admin, 0) if r["door"] == "sonar"]
    assert len(rows) == calls
    http_twins = Counter((r["status"], r["error_code"]) for r in sonar)
    assert Counter((r["status"], r["error_code"]) for r in rows) <= http_twins
    assert {r["path"] for r in rows} == {"/mcp/apis_make_request"}


async def test_execute_and_query_decisions_match(env: dict[str, Any], admin: Admin) -> None:
    for token, body_path, tool, args, expected in [
        ("a", "connectors/instances/{}/execute", "execute", {"entity": "customers", "action": "list"}, None),
        ("mcp_only", "connectors/instances/{}/execute", "execute", {"entity": "customers", "action": "list"},
         "forbidden"),
        ("a", "connectors/instances/{}/execute", "execute", {"entity": "nope", "action": "list"}, "unprocessable"),
        ("mcp_only", "query", "query_stream", {"stream": "customers"}, "forbidden"),
        ("a", "query", "query_stream", {"stream": "nope"}, "unprocessable"),
    ]:
        url = (f"{env['kr']}/v1/proxy/sources/{env['stripe']}/query" if body_path == "query"
               else f"{env['kr']}/api/v1/{body_path.format(env['stripe'])}")
        r = httpx.post(url, json=args, headers={"Authorization": f"Bearer {env[token]}"}, timeout=20)
        via_http = r.json()["error"]["code"] if r.status_code != 200 else None
        via_mcp = await mcp_call(env, env[token], tool, {"source_id": env["stripe"], **args})
        assert via_http == via_mcp == expected, (tool, args)
    rows = log_rows(admin, 6, door="mcp", timeout=1.0)
    assert len(rows) == 5 and all(r["source_id"] == env["stripe"] for r in rows)


async def test_no_credential_reaches_an_mcp_client(env: dict[str, Any], upstream: FakeUpstream,
                                                   admin: Admin) -> None:
    forms = [KEY, base64.b64encode(KEY.encode()).decode(), quote(KEY), KEY.encode().hex(), API_KEY]
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "apis_make_request", "arguments": {
        "source_id": env["api"], "url": env["base"] + "/echo?x=1"}}}
    raw = httpx.post(env["kr"] + "/mcp", json=call, timeout=20, headers={
        "Authorization": f"Bearer {env['a']}", "Accept": "application/json, text/event-stream"})
    assert raw.status_code == 200 and json.loads(raw.text)["result"]["structuredContent"]["status_code"] == 200
    assert upstream.requests[-1].header("X-Api-Key") == KEY  # positive control: the upstream did get it
    async with mcp_client(env["kr"] + "/mcp", env["a"]) as c:
        results = [await c.call_tool(t, a) for t, a in [
            ("list_sources", {}), ("describe_source", {"source_id": env["stripe"]}),
            ("execute", {"source_id": env["stripe"], "entity": "customers", "action": "get", "params": {"id": "x"}}),
            ("apis_make_request", {"source_id": env["api"], "url": env["base"] + "/headers"}),
        ]]
    seen = raw.text + "".join(r.model_dump_json() for r in results)
    seen += json.dumps(log_rows(admin, 2, door="mcp"))
    assert not [f for f in forms if f in seen]
