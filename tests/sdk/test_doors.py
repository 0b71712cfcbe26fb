"""The request API, the gateway client from `http()`, execute and the stream query, against a live keyrelay in
front of real loopback upstreams (a fake API and a fake Stripe)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyrelay_client import (
    AsyncKeyrelay,
    DestinationNotAllowed,
    ExecuteResult,
    Keyrelay,
    LookupFailed,
    MethodNotAllowed,
    RequestResult,
    UsageError,
)
from keyrelay_client.doors import gateway_url
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

UPSTREAM_SECRET = "sk-upstream-1"  # the `echo` fixture's credential


@pytest.fixture
def agent(connect: Any, server: KeyrelayServer, raw: Admin, workspace: dict[str, str]) -> Any:
    """An agent's client: an API key of the workspace with every data scope."""
    return connect(server.url, api_key=raw.api_key(workspace["id"], ["proxy", "query", "execute", "logs"]))


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def stripe_source(raw: Admin, workspace: dict[str, str], stripe: FakeStripe) -> dict[str, Any]:
    return raw.source(workspace["id"], upstream_url="", connector="stripe", slug="stripe",
                      config={"base_url": stripe.url}, credentials={"api_key": API_KEY})


# --- request API ----------------------------------------------------------------------------------------------


def test_request_returns_the_upstream_answer_with_the_credential_injected(agent: Any, echo: dict[str, Any],
                                                                          upstream: FakeUpstream) -> None:
    answer = agent.request(echo["id"], "get", upstream.url + "/echo?q=Berlin", headers={"Accept": "application/json"})
    assert isinstance(answer, RequestResult) and answer.status_code == 200
    assert answer.body["method"] == "GET" and answer.body["raw_path"] == "/echo?q=Berlin"
    assert upstream.requests[-1].header("Authorization") == f"Bearer {UPSTREAM_SECRET}"
    assert UPSTREAM_SECRET not in answer.text  # echoed back, then redacted by keyrelay


def test_request_bodies_as_json_or_text(agent: Any, echo: dict[str, Any], upstream: FakeUpstream) -> None:
    agent.request(echo["id"], "POST", upstream.url + "/echo", json={"a": [1, 2]})
    seen = upstream.requests[-1]
    assert seen.body == b'{"a":[1,2]}' and seen.header("Content-Type") == "application/json"
    agent.request(echo["id"], "PUT", upstream.url + "/echo", body="plain words", headers={"Content-Type": "text/plain"})
    assert upstream.requests[-1].body == b"plain words"
    with pytest.raises(UsageError):
        agent.request(echo["id"], "POST", upstream.url + "/echo", body="x", json={})


def test_upstream_errors_are_answers_not_exceptions(agent: Any, echo: dict[str, Any],
                                                    upstream: FakeUpstream) -> None:
    answer = agent.request(echo["id"], "GET", upstream.url + "/status/404")
    assert answer.status_code == 404 and answer.body == {"status": 404}


def test_keyrelay_refusals_are_exceptions(agent: Any, raw: Admin, workspace: dict[str, str],
                                          upstream: FakeUpstream) -> None:
    src = raw.source(workspace["id"], upstream_url=upstream.url + "/v1", slug="readonly",
                     policy={"allowed_methods": ["GET"]})
    with pytest.raises(DestinationNotAllowed):
        agent.request(src["id"], "GET", "http://127.0.0.2:1/v1/x")
    with pytest.raises(MethodNotAllowed):
        agent.request(src["id"], "DELETE", upstream.url + "/v1/x")
    assert upstream.requests == []


# --- the gateway client ---------------------------------------------------------------------------------------


def test_http_client_goes_through_the_gateway(agent: Any, client: Any, workspace: dict[str, str],
                                              echo: dict[str, Any], upstream: FakeUpstream,
                                              server: KeyrelayServer) -> None:
    for who, ref in ((agent, workspace["id"]), (client, workspace["name"])):  # only admin looks names up
        gw = who.http(ref, "echo")
        with gw:
            assert str(gw.base_url) == f"{server.url}/api/{workspace['id']}/proxy/echo/"
            r = gw.post("/echo?x=1", json={"model": "m"}, headers={"Authorization": "Bearer sdk-dummy-key"})
        assert r.status_code == 200 and r.json()["raw_path"] == "/echo?x=1"
        seen = upstream.requests[-1]
        assert seen.header("Authorization") == f"Bearer {UPSTREAM_SECRET}"  # never the SDK's or keyrelay's token
        assert seen.body == b'{"model":"m"}'


def test_http_names_an_unknown_workspace(client: Any) -> None:
    with pytest.raises(LookupFailed, match="no-such-workspace"):
        client.http("no-such-workspace", "echo")


def test_http_tells_an_agent_to_name_its_workspace_by_id(agent: Any, workspace: dict[str, str]) -> None:
    """Looking a name up is an admin read: an API key gets a `LookupFailed` that says what to pass instead."""
    with pytest.raises(LookupFailed, match="Pass the workspace id"):
        agent.http(workspace["name"], "echo")


def test_http_streams_sync(server: KeyrelayServer, raw: Admin, workspace: dict[str, str],
                           echo: dict[str, Any]) -> None:
    key = raw.api_key(workspace["id"], ["proxy"])
    with Keyrelay(server.url, api_key=key, env={}) as kr, kr.http(workspace["id"], "echo") as gw, \
            gw.stream("GET", "/stream?chunks=4&size=1000") as r:
        assert b"".join(r.iter_bytes()) == b"".join(bytes([48 + i]) * 1000 for i in range(4))


def test_http_streams_async(server: KeyrelayServer, raw: Admin, workspace: dict[str, str],
                            echo: dict[str, Any]) -> None:
    key = raw.api_key(workspace["id"], ["proxy"])

    async def main() -> bytes:
        async with AsyncKeyrelay(server.url, api_key=key, env={}) as kr:
            gw = await kr.http(workspace["id"], "echo")
            async with gw, gw.stream("GET", "/sse?events=3") as r:
                return b"".join([chunk async for chunk in r.aiter_bytes()])

    assert asyncio.run(main()) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_gateway_url_keeps_a_base_path_and_encodes_the_slug() -> None:
    url = gateway_url(httpx.URL("https://kr.example.com/base"), "ws-1", "my source")
    assert str(url) == "https://kr.example.com/base/api/ws-1/proxy/my%20source/"


# --- execute and query ----------------------------------------------------------------------------------------


def test_execute_returns_result_and_metadata(agent: Any, stripe_source: dict[str, Any], stripe: FakeStripe) -> None:
    out = agent.execute(stripe_source["id"], "customers", "list", {"limit": 2})
    assert isinstance(out, ExecuteResult)
    assert [c["id"] for c in out.result] == ["cus_0000", "cus_0001"]
    assert out.connector_metadata == {"has_more": True, "next_cursor": "cus_0001"}
    assert out.execution_metadata["connector_instance_id"] == stripe_source["id"]
    one = agent.execute(stripe_source["id"], "customers", "get", {"id": "cus_0003"}, select_fields=["id", "email"])
    assert one.result == {"id": "cus_0003", "email": "user3@example.com"}
    assert stripe.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"


def test_query_iterates_every_record_across_pages(agent: Any, stripe_source: dict[str, Any],
                                                  stripe: FakeStripe) -> None:
    ids = [r["id"] for r in agent.query(stripe_source["id"], "customers", {"limit": 10})]
    assert ids == [f"cus_{i:04d}" for i in range(25)]
    assert len(stripe.requests) == 3
    filtered = list(agent.query(stripe_source["id"], "customers", {"email": "user7@example.com"}))
    assert [r["id"] for r in filtered] == ["cus_0007"]


def test_query_pages_expose_their_position(agent: Any, stripe_source: dict[str, Any]) -> None:
    pages = list(agent.query(stripe_source["id"], "customers", {"limit": 20}).pages())
    assert [len(p.items) for p in pages] == [20, 5]
    assert isinstance(pages[0].next, str) and pages[1].next is None
