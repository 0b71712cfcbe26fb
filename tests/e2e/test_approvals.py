"""Approvals as journeys (docs/approvals.md): an approval survives a restart and runs once; two instances on
PostgreSQL and Redis racing to approve and to fetch run it once and hand its response over once; an approval
expires by an injected clock; `Prefer: wait` on the gateway; MCP's pending result, `get_approval` and URL-mode
elicitation. Real keyrelay servers, real loopback upstreams; no fixed sleeps."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from support.keyrelay import Admin, KeyrelayServer, make_settings, scaled_out_pair
from support.mcp import mcp_client, payload
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream

SECRET = "cred-e2e-approvals-91c4"
POLICY = {"approval": {"methods": ["POST", "DELETE"], "timeout_seconds": 600}}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _setup(admin: Admin, upstream: FakeUpstream, name: str = "acme") -> tuple[str, str, dict[str, str]]:
    ws = admin.workspace(name)
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET}, policy=POLICY)
    key = admin.api_key(ws, ["proxy", "mcp"])
    return ws, src["id"], {"Authorization": f"Bearer {key}"}


def _park(base: str, ws: str, auth: dict[str, str], body: bytes = b'{"n": 1}') -> str:
    r = httpx.post(f"{base}/api/{ws}/proxy/echo/echo", content=body, headers=auth)
    assert r.status_code == 202, r.text
    return str(r.json()["approval"]["id"])


def _until(check: Callable[[], Any], seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (got := check()):
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)
    return got


def test_a_pending_approval_survives_a_restart_and_runs_once(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    with KeyrelayServer(settings) as kr:
        admin = Admin(kr.url)
        ws, _, auth = _setup(admin, upstream)
        aid = _park(kr.url, ws, auth, b'{"parked": "before restart"}')
        admin.close()
    with KeyrelayServer(settings) as kr:  # a new process on the same data directory
        admin = Admin(kr.url)
        assert [a["id"] for a in admin.get("/api/v1/approvals", params={"status": "pending"}).json()["data"]] == [aid]
        assert admin.post(f"/api/v1/approvals/{aid}/approve", {}).json()["approval"]["status"] == "executed"
        assert admin.post(f"/api/v1/approvals/{aid}/approve", {}).status_code == 200
        fetched = httpx.get(f"{kr.url}/api/v1/approvals/{aid}", headers=auth).json()
        admin.close()
    assert [r.body for r in upstream.requests] == [b'{"parked": "before restart"}']
    assert upstream.requests[0].header("authorization") == f"Bearer {SECRET}"
    assert fetched["response"]["body"]["body"] == '{"parked": "before restart"}'


def _race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls in threads released together; their answers."""
    barrier, answers = threading.Barrier(len(calls)), []

    def run(call: Callable[[], httpx.Response]) -> None:
        barrier.wait(10)
        answers.append(call())

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == len(calls)
    return answers


def test_two_instances_racing_run_it_once_and_hand_it_over_once(tmp_path: Path, postgres: PostgresServer,
                                                               redis_server: RedisServer,
                                                               upstream: FakeUpstream) -> None:
    with scaled_out_pair(tmp_path, postgres, redis_server.url) as (one, two):
        admins = [Admin(one.url), Admin(two.url)]
        ws, _, auth = _setup(admins[0], upstream)
        for _ in range(3):  # three approvals, each raced by twelve approve calls and eight fetches over both
            aid = _park(one.url, ws, auth)
            approvals = _race([functools.partial(a.http.post, f"/api/v1/approvals/{aid}/approve", headers=a.headers)
                               for a in admins * 6])
            assert [r.status_code for r in approvals] == [200] * 12
            assert {r.json()["approval"]["status"] for r in approvals} <= {"executing", "executed"}
            fetches = _race([functools.partial(httpx.get, f"{base}/api/v1/approvals/{aid}", timeout=30,
                                               headers={**auth, "Prefer": "wait=20"})
                             for base in (one.url, two.url) * 4])
            assert sum("response" in f.json() for f in fetches) == 1
        for a in admins:
            a.close()
    assert len(upstream.requests) == 3


def test_an_undecided_approval_expires_by_the_clock(tmp_path: Path, upstream: FakeUpstream) -> None:
    clock = Clock()
    with KeyrelayServer(make_settings(data_dir=tmp_path / "d"), clock=clock) as kr:
        admin = Admin(kr.url)
        ws, _, auth = _setup(admin, upstream)
        aid = _park(kr.url, ws, auth)
        clock.now += 599
        assert httpx.get(f"{kr.url}/api/v1/approvals/{aid}", headers=auth).status_code == 202
        clock.now += 1
        for _ in range(3):
            r = httpx.get(f"{kr.url}/api/v1/approvals/{aid}", headers=auth)
            assert r.status_code == 410 and r.json()["error"]["code"] == "approval_expired"
        late = admin.post(f"/api/v1/approvals/{aid}/approve", {})
        assert late.status_code == 409 and late.json()["error"]["code"] == "approval_not_pending"
        assert admin.get("/api/v1/approvals", params={"status": "expired"}).json()["data"][0]["id"] == aid
        rows = _until(lambda: (lambda d: d if len(d) >= 2 else None)(
            admin.get("/api/v1/logs", params={"approval_id": aid}).json()["data"]))
        assert sorted(r["status"] for r in rows) == [202, 410]
        admin.close()
    assert upstream.requests == []


def test_prefer_wait_on_the_gateway_answers_with_the_upstream_response(kr: KeyrelayServer, admin: Admin,
                                                                       upstream: FakeUpstream) -> None:
    ws, _, auth = _setup(admin, upstream)
    got: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: got.append(httpx.post(
        f"{kr.url}/api/{ws}/proxy/echo/echo?z=9", content=b"payload-1", timeout=60,
        headers={**auth, "Prefer": "wait=30", "Content-Type": "text/plain"})))
    waiter.start()
    pending = _until(lambda: admin.get("/api/v1/approvals", params={"status": "pending"}).json()["data"])
    admin.post(f"/api/v1/approvals/{pending[0]['id']}/approve", {})
    waiter.join(30)
    assert got[0].status_code == 200 and got[0].headers["x-keyrelay-approval-id"] == pending[0]["id"]
    assert got[0].json()["raw_path"] == "/echo?z=9" and got[0].json()["body"] == "payload-1"
    started = time.monotonic()
    undecided = httpx.post(f"{kr.url}/api/{ws}/proxy/echo/echo", content=b"x", timeout=30,
                           headers={**auth, "Prefer": "wait=1"})
    assert undecided.status_code == 202 and time.monotonic() - started >= 1.0
    assert len(upstream.requests) == 1


async def test_mcp_returns_the_pending_approval_and_get_approval_follows_it(kr: KeyrelayServer, admin: Admin,
                                                                          upstream: FakeUpstream) -> None:
    ws, src, auth = _setup(admin, upstream)
    token = auth["Authorization"].removeprefix("Bearer ")
    async with mcp_client(kr.url + "/mcp", token) as c:
        parked = await c.call_tool("apis_make_request", {"source_id": src, "method": "POST",
                                                         "url": upstream.url + "/echo", "body": {"n": 7}})
        assert not parked.is_error
        view = payload(parked)["approval"]
        assert view["status"] == "pending" and upstream.requests == []
        still = payload(await c.call_tool("get_approval", {"approval_id": view["id"]}))
        assert still["approval"]["status"] == "pending" and "response" not in still
        assert admin.post(f"/api/v1/approvals/{view['id']}/approve", {}).json()["approval"]["status"] == "executed"
        done = payload(await c.call_tool("get_approval", {"approval_id": view["id"], "wait_seconds": 5}))
        assert done["response"]["status_code"] == 200 and done["response"]["body"]["body"] == '{"n":7}'
        assert "response" not in payload(await c.call_tool("get_approval", {"approval_id": view["id"]}))
        denied = payload(await c.call_tool("apis_make_request", {"source_id": src, "method": "DELETE",
                                                                 "url": upstream.url + "/echo"}))["approval"]
        admin.post(f"/api/v1/approvals/{denied['id']}/deny", {})
        refused = await c.call_tool("get_approval", {"approval_id": denied["id"]})
        assert refused.is_error and payload(refused)["error"]["code"] == "approval_denied"
    other = admin.api_key(ws, ["mcp", "proxy"])
    async with mcp_client(kr.url + "/mcp", other) as c:
        foreign = await c.call_tool("get_approval", {"approval_id": view["id"]})
        assert foreign.is_error and payload(foreign)["error"]["code"] == "not_found"
    assert len(upstream.requests) == 1


async def test_mcp_clients_with_url_elicitation_are_sent_to_the_approver_page(tmp_path: Path,
                                                                            upstream: FakeUpstream) -> None:
    page = "https://console.example/approvals/{id}"
    with KeyrelayServer(make_settings(data_dir=tmp_path / "d", approval_page_url=page)) as kr:
        admin = Admin(kr.url)
        _, src, auth = _setup(admin, upstream)
        asked: list[types.ElicitRequestParams] = []

        async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params)
            return types.ElicitResult(action="accept")

        async with create_mcp_http_client(headers=auth) as http, \
                Client(streamable_http_client(kr.url + "/mcp", http_client=http), cache=None,
                       elicitation_callback=elicit) as c:
            result = await c.call_tool("apis_make_request", {"source_id": src, "method": "POST",
                                                             "url": upstream.url + "/echo"})
        view = payload(result)["approval"]
        assert [(p.mode, p.url) for p in asked] == [("url", page.replace("{id}", view["id"]))]  # type: ignore[union-attr]
        assert view["status"] == "pending" and view["approval_url"] == page.replace("{id}", view["id"])
        assert len(admin.get("/api/v1/approvals").json()["data"]) == 1  # the retry did not park it again
        async with mcp_client(kr.url + "/mcp", auth["Authorization"].removeprefix("Bearer ")) as plain:
            again = payload(await plain.call_tool("apis_make_request", {"source_id": src, "method": "POST",
                                                                         "url": upstream.url + "/echo"}))
        assert again["approval"]["approval_url"].startswith("https://console.example/approvals/apv_")
        admin.close()
    assert upstream.requests == []
