"""The MCP door at /mcp, driven by the mcp SDK's own client (and raw JSON-RPC for the auth wrapper) against a
live keyrelay: tool listing, every tool on a loopback upstream, the fake Stripe API and a local file source."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.doors.mcp import files as mcp_files
from keyrelay.doors.mcp import origin_allowed
from keyrelay.doors.mcp.server import transport_security
from keyrelay.doors.mcp.tools import TOOLS as DEFINED
from keyrelay.model import Scope
from keyrelay.runtime import runtime
from keyrelay.settings import Settings
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.mcp import inspector, log_rows, mcp_client, payload
from support.upstream import FakeUpstream

KEY = "sk_live_mcp_canary_7Qx2"
TOOLS = ["list_sources", "describe_source", "apis_make_request", "query_stream", "execute", "get_approval",
         "files_list", "files_get"]
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def kr_settings(kr_settings: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "files" / "notes").mkdir(parents=True)
    (tmp_path / "files" / "notes" / "a.txt").write_text("héllo world\n" * 100)
    (tmp_path / "files" / "notes" / "empty.txt").write_bytes(b"")
    (tmp_path / "files" / "blob.bin").write_bytes(bytes(range(256)))
    return {**kr_settings, "local_roots": str(tmp_path / "files"),
            "mcp_allowed_origins": "https://agent.example,http://localhost:*"}


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, stripe: FakeStripe,
        tmp_path: Path) -> dict[str, Any]:
    ws = admin.workspace("acme")
    api = admin.source(ws, upstream_url=upstream.url, slug="api",
                       credentials={"api_key": {"value": KEY, "header": "X-Api-Key"}})
    pay = admin.source(ws, upstream_url="", connector="stripe", slug="stripe", config={"base_url": stripe.url},
                       credentials={"api_key": API_KEY})
    files = admin.source(ws, upstream_url="", connector="local", slug="docs",
                         config={"root": str(tmp_path / "files")})
    return {"ws": ws, "api": api["id"], "stripe": pay["id"], "files": files["id"], "url": kr.url + "/mcp",
            "token": admin.scoped_token("acme"), "base": upstream.url}


async def test_tools_are_listed_with_schemas_and_descriptions(env: dict[str, Any]) -> None:
    async with mcp_client(env["url"], env["token"]) as c:
        tools = (await c.list_tools()).tools
    assert [t.name for t in tools] == TOOLS == [d.name for d in DEFINED]
    for listed, defined in zip(tools, DEFINED, strict=True):  # what agents see is what the door validates against
        assert listed.input_schema == defined.schema and listed.description == defined.description
    for t in tools:
        assert t.description and len(t.description) > 80 and t.input_schema["type"] == "object"
    by_name = {t.name: t for t in tools}
    assert by_name["apis_make_request"].input_schema["required"] == ["source_id", "url"]
    assert by_name["list_sources"].annotations is not None and by_name["list_sources"].annotations.read_only_hint


async def test_apis_make_request_gives_the_request_api_envelope(env: dict[str, Any], upstream: FakeUpstream,
                                                                kr: KeyrelayServer) -> None:
    args = {"source_id": env["api"], "method": "POST", "url": env["base"] + "/echo?a=1",
            "headers": {"X-Trace": "t1"}, "body": {"n": 1}}
    async with mcp_client(env["url"], env["token"]) as c:
        res = await c.call_tool("apis_make_request", args)
    out = payload(res)
    assert not res.is_error and out["status_code"] == 200 and out["body"]["raw_path"] == "/echo?a=1"
    seen = upstream.requests[-1]
    assert seen.header("X-Api-Key") == KEY and seen.header("X-Trace") == "t1" and seen.body == b'{"n":1}'
    http = httpx.post(f"{kr.url}/api/v1/sonar/apis/{env['api']}/request", json=args,
                      headers={"Authorization": f"Bearer {env['token']}"}).json()
    assert set(http) == set(out) and http["body"]["raw_path"] == out["body"]["raw_path"]
    assert KEY not in json.dumps(out) and KEY not in res.content[0].text  # type: ignore[union-attr]


async def test_list_and_describe_sources(env: dict[str, Any]) -> None:
    async with mcp_client(env["url"], env["token"]) as c:
        listed = payload(await c.call_tool("list_sources", {}))["sources"]
        pay = payload(await c.call_tool("describe_source", {"source_id": env["stripe"]}))
        api = payload(await c.call_tool("describe_source", {"source_id": env["api"]}))
    kinds = {s["slug"]: (s["kind"], s["tools"]) for s in listed}
    assert kinds == {"api": ("api", ["apis_make_request"]),
                     "stripe": ("api", ["apis_make_request", "query_stream", "execute"]),
                     "docs": ("files", ["files_list", "files_get"])}
    assert next(s for s in listed if s["slug"] == "api")["base_url"] == env["base"]
    assert "customers" in {s["name"] for s in pay["streams"]}
    customers = next(e for e in pay["entities"] if e["name"] == "customers")
    actions = {a["name"]: a for a in customers["actions"]}
    assert {"list", "get"} <= set(actions) and actions["get"]["params"][0]["required"] is True
    assert "streams" not in api and api["connector"]["name"] == "http"


async def test_list_and_describe_show_an_agent_no_config_and_no_credential_names(env: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    """An agent needs a source's id, kind, base_url and tools, not its config (a file root, a bucket) or the names
    of the credential fields behind it (docs/mcp.md)."""
    async with mcp_client(env["url"], env["token"]) as c:
        texts = [json.dumps(payload(await c.call_tool("list_sources", {})))]
        for sid in (env["api"], env["stripe"], env["files"]):
            texts.append(json.dumps(payload(await c.call_tool("describe_source", {"source_id": sid}))))
    for text in texts:
        for hidden in (KEY, API_KEY, '"api_key"', "X-Api-Key", '"credentials"', '"config"', str(tmp_path),
                       '"policy"', "forward_headers"):
            assert hidden not in text, hidden


async def test_execute_and_query_stream_on_stripe(env: dict[str, Any], stripe: FakeStripe, admin: Admin) -> None:
    async with mcp_client(env["url"], env["token"]) as c:
        ex = payload(await c.call_tool("execute", {"source_id": env["stripe"], "entity": "customers",
                                                   "action": "list", "params": {"limit": 3},
                                                   "select_fields": ["id", "email"]}))
        page1 = payload(await c.call_tool("query_stream", {"source_id": env["stripe"], "stream": "invoices",
                                                           "filters": {"limit": 2}}))
        page2 = payload(await c.call_tool("query_stream", {"source_id": env["stripe"], "stream": "invoices",
                                                           "filters": {"limit": 2},
                                                           "page_token": page1["next_page_token"]}))
    assert ex["status"] == "success" and ex["result"][0] == {"id": "cus_0000", "email": "user0@example.com"}
    assert [r["id"] for r in page1["records"] + page2["records"]] == [f"in_{i:04d}" for i in range(4)]
    assert stripe.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in json.dumps([ex, page1, page2])
    rows = log_rows(admin, 4, door="mcp", workspace_id=env["ws"], timeout=1.0)  # exactly one row per call
    assert sorted(r["path"] for r in rows) == ["/mcp/execute", "/mcp/query_stream", "/mcp/query_stream"]


ERRORS = [  # (tool, arguments, code, field)
    ("apis_make_request", {"source_id": "nope", "url": "https://x.example/"}, "not_found", None),
    ("apis_make_request", {"source_id": "x"}, "invalid_request", "arguments"),
    ("apis_make_request", {"source_id": "x", "url": "u", "bogus": 1}, "invalid_request", "arguments"),
    ("execute", {"source_id": "$stripe", "entity": "nope", "action": "list"}, "unprocessable", "entity"),
    ("query_stream", {"source_id": "$stripe", "stream": "customers", "filters": {"limit": 0}}, "invalid_request",
     "filters.limit"),
    ("no_such_tool", {}, "invalid_request", "name"),
]


async def test_keyrelay_errors_become_tool_errors(env: dict[str, Any], stripe: FakeStripe) -> None:
    async with mcp_client(env["url"], env["token"]) as c:
        for tool, args, code, field in ERRORS:
            res = await c.call_tool(tool, {k: env["stripe"] if v == "$stripe" else v for k, v in args.items()})
            err = payload(res)["error"]
            assert res.is_error and err["code"] == code and err.get("field") == field and err["request_id"], tool
    assert stripe.requests == []


async def test_files_list_and_get(env: dict[str, Any]) -> None:
    src = env["files"]
    async with mcp_client(env["url"], env["token"]) as c:
        root = payload(await c.call_tool("files_list", {"source_id": src}))
        notes = payload(await c.call_tool("files_list", {"source_id": src, "prefix": "notes/", "limit": 1}))
        text = payload(await c.call_tool("files_get", {"source_id": src, "path": "notes/a.txt", "max_bytes": 15}))
        rest = payload(await c.call_tool("files_get", {"source_id": src, "path": "notes/a.txt",
                                                       "range": text["next_range"]}))
        blob = payload(await c.call_tool("files_get", {"source_id": src, "path": "blob.bin", "range": "bytes=-4"}))
        empty = payload(await c.call_tool("files_get", {"source_id": src, "path": "notes/empty.txt"}))
        bad = await c.call_tool("files_get", {"source_id": src, "path": "../etc/passwd"})
        too_much = await c.call_tool("files_get", {"source_id": src, "path": "blob.bin",
                                                   "max_bytes": mcp_files.GET_MAX + 1})
    assert [f["path"] for f in root["files"]] == ["blob.bin", "notes/a.txt", "notes/empty.txt"]
    assert len(notes["files"]) == 1 and notes["next_page_token"]
    # 15 bytes end inside the 'é' of the second line: the text stops before it and says where to continue
    assert text["encoding"] == "text" and text["content"] == "héllo world\nh" and text["truncated"]
    assert text["next_range"] == "bytes=14-" and text["size"] == 1300
    assert rest["range"] == {"start": 14, "end": 1299} and not rest["truncated"]
    assert blob["encoding"] == "base64" and blob["content"] == "/P3+/w==" and blob["range"]["start"] == 252
    assert empty["content"] == "" and empty["size"] == 0 and not empty["truncated"]
    assert bad.is_error and payload(bad)["error"]["code"] == "invalid_request"
    assert too_much.is_error  # the schema caps one read at GET_MAX bytes


def test_auth_wrapper_answers_before_the_sdk(env: dict[str, Any], admin: Admin) -> None:
    def post(token: str | None, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(env["url"], json=PING, headers={**ACCEPT, **auth, **headers}, timeout=10)

    r = post(None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["x-request-id"]
    no_mcp = admin.api_key(env["ws"], ["proxy"])
    r = post(no_mcp)
    assert r.status_code == 403 and r.json()["error"] == {"code": "forbidden", "message": "Token lacks the 'mcp' scope",
                                                          "request_id": r.headers["x-request-id"]}
    r = httpx.get(env["url"], headers={**ACCEPT, "Authorization": f"Bearer {env['token']}"}, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"  # stateless: no SSE stream is held open
    r = post(env["token"], Origin="https://evil.example")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    for origin in ("https://agent.example", "http://localhost:5173", None):
        r = post(env["token"], **({"Origin": origin} if origin else {}))
        assert r.status_code == 200 and r.json()["result"] == {}, (origin, r.text)
    r = httpx.post(env["url"], json=PING, headers={**ACCEPT, "Authorization": f"Bearer {env['token']}",
                                                    "Host": "rebind.example"})
    assert r.status_code == 421  # the SDK's DNS-rebinding check: keyrelay is bound to 127.0.0.1


async def test_tools_need_their_capability_scope(env: dict[str, Any], admin: Admin, upstream: FakeUpstream,
                                                 stripe: FakeStripe) -> None:
    key = admin.api_key(env["ws"], ["mcp"])
    async with mcp_client(env["url"], key) as c:
        listed = payload(await c.call_tool("list_sources", {}))
        denied = [payload(await c.call_tool(tool, args))["error"]["code"] for tool, args in [
            ("apis_make_request", {"source_id": env["api"], "url": env["base"] + "/echo"}),
            ("execute", {"source_id": env["stripe"], "entity": "customers", "action": "list"}),
            ("query_stream", {"source_id": env["stripe"], "stream": "customers"}),
            ("files_list", {"source_id": env["files"]}),
        ]]
    assert len(listed["sources"]) == 3 and denied == ["forbidden"] * 4
    assert upstream.requests == [] and stripe.requests == []  # refused before any upstream call


def test_the_official_inspector_cli_lists_and_calls_tools(env: dict[str, Any], upstream: FakeUpstream,
                                                          tmp_path: Path) -> None:
    listed = inspector(env["url"], env["token"], "--method", "tools/list", home=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [t["name"] for t in json.loads(listed.stdout)["tools"]] == TOOLS
    called = inspector(env["url"], env["token"], "--method", "tools/call", "--tool-name", "apis_make_request",
                       "--tool-arg", f"source_id={env['api']}", f"url={env['base']}/echo?via=inspector",
                       home=tmp_path)
    assert called.returncode == 0, called.stderr[-2000:]
    out = json.loads(called.stdout)
    assert not out.get("isError") and out["structuredContent"]["body"]["raw_path"] == "/echo?via=inspector"
    assert upstream.requests[-1].header("X-Api-Key") == KEY and KEY not in called.stdout


def test_origin_and_host_allowlists() -> None:
    allowed = ("https://agent.example", "http://localhost:*")
    assert origin_allowed("https://agent.example", allowed) and origin_allowed("http://localhost:5173", allowed)
    for bad in ("https://agent.example.evil", "http://localhost:5173.evil.example", "http://localhost", "null"):
        assert not origin_allowed(bad, allowed), bad
    local = transport_security(Settings(host="127.0.0.1"))
    assert local.enable_dns_rebinding_protection and "localhost:*" in local.allowed_hosts
    assert "kr.example:*" not in local.allowed_hosts
    assert not transport_security(Settings(host="0.0.0.0")).enable_dns_rebinding_protection
    named = transport_security(Settings(host="10.1.2.3", mcp_allowed_hosts="kr.example, kr.example:8443"))
    assert {"10.1.2.3:*", "kr.example", "kr.example:*", "kr.example:8443", "[::1]:*"} <= set(named.allowed_hosts)
    assert not transport_security(Settings(mcp_allowed_hosts="*")).enable_dns_rebinding_protection


def test_a_process_that_serves_no_mcp_never_imports_the_sdk() -> None:
    code = ("import sys, keyrelay.cli, keyrelay.app, keyrelay.runtime; "
            "print(sorted(m for m in ('mcp', 'mcp_types', 'keyrelay.doors.mcp.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


async def _post(door: Any, headers: list[tuple[bytes, bytes]], *, body: bytes = b"", length: bool = True,
                out: list[bytes] | None = None) -> int:
    body = body or json.dumps(PING).encode()
    head = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"), *headers]
    if length:
        head.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "state": {},
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "headers": head}
    sent: list[dict[str, Any]] = []
    pieces = [body[i:i + 8192] for i in range(0, len(body), 8192)]

    async def receive() -> dict[str, Any]:
        if not pieces:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if out is not None and message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await door(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


async def test_the_sdk_starts_with_the_first_request_that_passes_the_checks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", upstream_allow_cidrs="127.0.0.0/8")  # type: ignore[call-arg]
    async with runtime(settings) as rt:
        door = rt.mcp
        ws = await rt.services.workspaces.create("w")
        _, key = await rt.services.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.MCP}),
                                                         name="k", expires_at=None)
        assert not door.loaded
        assert await _post(door, []) == 401  # refused before the SDK: still not loaded
        assert not door.loaded
        auth = [(b"authorization", f"Bearer {key}".encode())]
        assert await _post(door, auth) == 200
        assert door.loaded
        assert await _post(door, auth) == 200  # the same server
    assert door._task is not None and door._task.done()  # stopped with the runtime


async def test_the_sdk_limits_a_body_without_a_length_and_hides_library_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunked body (no Content-Length for the door to check) is bounded by the SDK's own limit; a tool that
    fails with a non-keyrelay exception answers "Internal error", never the exception's text."""
    from keyrelay.doors.mcp import tools

    async def broken(*_: Any) -> dict[str, Any]:
        raise RuntimeError("library detail sk_live_never_shown")

    monkeypatch.setattr(tools, "TOOLS", tuple(dataclasses.replace(t, handler=broken) if t.name == "list_sources"
                                              else t for t in tools.TOOLS))
    monkeypatch.setattr("keyrelay.doors.mcp.server.TOOLS", tools.TOOLS)
    settings = Settings(data_dir=tmp_path / "data", upstream_allow_cidrs="127.0.0.0/8",  # type: ignore[call-arg]
                        max_body_bytes=1024)
    async with runtime(settings) as rt:
        ws = await rt.services.workspaces.create("w")
        _, key = await rt.services.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.MCP}),
                                                         name="k", expires_at=None)
        auth = [(b"authorization", f"Bearer {key}".encode())]
        big = json.dumps({**PING, "params": {"pad": "x" * 70_000}}).encode()
        assert await _post(rt.mcp, auth, body=big, length=False) == 413
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_sources", "arguments": {}}}
        answer: list[bytes] = []
        assert await _post(rt.mcp, auth, body=json.dumps(call).encode(), out=answer) == 200
        text = b"".join(answer).decode()
        assert "Internal error" in text and "library detail" not in text and "sk_live_never_shown" not in text
