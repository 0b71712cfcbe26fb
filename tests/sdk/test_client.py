"""The two client classes: configuration from the environment, options reaching every call, closing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import keyrelay_client
from keyrelay_client import (
    AsyncConnector,
    AsyncKeyrelay,
    ConfigurationError,
    Connector,
    Keyrelay,
    RequestTimeout,
    RetryPolicy,
)
from support.keyrelay import Admin, KeyrelayServer
from support.scripted import Reply, ScriptedServer
from support.upstream import FakeUpstream


def test_everything_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: KeyrelayServer, raw: Admin,
                                               echo: dict[str, Any], upstream: FakeUpstream) -> None:
    for name in ("KEYRELAY_CLIENT_ID", "KEYRELAY_CLIENT_SECRET", "KEYRELAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEYRELAY_URL", server.url)
    monkeypatch.setenv("KEYRELAY_API_KEY", raw.api_key(echo["workspace_id"], ["proxy"]))
    url = upstream.url + "/echo"
    with Keyrelay() as kr:
        assert kr.request(echo["id"], "GET", url).status_code == 200

    async def main() -> int:
        async with AsyncKeyrelay() as akr:
            return (await akr.request(echo["id"], "GET", url)).status_code

    assert asyncio.run(main()) == 200


def test_missing_configuration_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYRELAY_URL", raising=False)
    with pytest.raises(ConfigurationError):
        Keyrelay(api_key="kr_x")
    with pytest.raises(ConfigurationError):
        AsyncKeyrelay("http://127.0.0.1:1", env={})


def test_every_call_names_the_client_and_honours_the_timeout(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", "/api/v1/workspaces", Reply(200, {"data": []}))
    scripted.on("GET", "/api/v1/connectors", Reply(hang=True))
    kr = connect(scripted.url, token="krw_t", timeout=0.3, retry=RetryPolicy(attempts=1))
    kr.workspaces.list()
    assert scripted.requests[0].headers["user-agent"] == f"keyrelay-client/{keyrelay_client.__version__}"
    with pytest.raises(RequestTimeout):
        kr.connectors.list()


def test_http_client_takes_httpx_options(connect: Any, scripted: ScriptedServer) -> None:
    ws = "4f7d2a8e-0000-4000-8000-000000000001"
    scripted.on("GET", f"/api/{ws}/proxy/svc/ping", Reply(200, {"pong": True}))
    kr = connect(scripted.url, token="krw_t")
    gw = kr.http(ws, "svc", headers={"X-Trace": "t1"}, timeout=5)
    with gw:
        assert gw.get("ping").json() == {"pong": True}
    seen = scripted.requests[-1]
    assert seen.headers["x-trace"] == "t1" and seen.headers["authorization"] == "Bearer krw_t"
    with pytest.raises(TypeError):
        kr.http(ws, "svc", base_url="http://elsewhere")


def test_a_closed_client_sends_nothing(scripted: ScriptedServer) -> None:
    kr = Keyrelay(scripted.url, token="krw_t", env={})
    kr.close()
    with pytest.raises(RuntimeError):
        kr.workspaces.list()
    assert scripted.requests == []


def test_connector_facades_have_the_clients_flavour(server: KeyrelayServer, raw: Admin,
                                                    workspace: dict[str, str]) -> None:
    raw.source(workspace["id"], upstream_url="", connector="stripe", slug="stripe",
               config={"base_url": "http://127.0.0.1:9"}, credentials={"api_key": "sk_test_1"})
    key = raw.api_key(workspace["id"], ["execute"])
    with Keyrelay(server.url, api_key=key, env={}) as kr:
        assert isinstance(kr.connector("stripe", workspace=workspace["name"]), Connector)

    async def main() -> Any:
        async with AsyncKeyrelay(server.url, api_key=key, env={}) as akr:
            return await akr.connector("stripe", workspace=workspace["id"])

    assert isinstance(asyncio.run(main()), AsyncConnector)


def test_a_custom_transport_is_used(server: KeyrelayServer, raw: Admin, workspace: dict[str, str]) -> None:
    seen: list[str] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return super().handle_request(request)

    with Keyrelay(server.url, api_key=raw.api_key(workspace["id"], ["logs"]), transport=Recording(), env={}) as kr:
        kr.logs.list()
    assert seen == ["/api/v1/logs"]


COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-test",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Hello through keyrelay"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


@pytest.fixture
def openai_source(server: KeyrelayServer, raw: Admin, workspace: dict[str, str], scripted: ScriptedServer) -> str:
    """An `openai` source whose upstream is a scripted OpenAI-compatible API; returns an API key for it."""
    scripted.on("POST", "/v1/chat/completions", Reply(200, COMPLETION))
    raw.source(workspace["id"], upstream_url=scripted.url + "/v1", slug="openai",
               credentials={"bearer_token": "sk-openai-stored-secret"})
    return raw.api_key(workspace["id"], ["proxy"])


def assert_upstream_saw_the_stored_key(scripted: ScriptedServer) -> None:
    seen = scripted.seen("POST", "/v1/chat/completions")
    assert len(seen) == 1 and seen[0].headers["authorization"] == "Bearer sk-openai-stored-secret"
    assert seen[0].json()["messages"] == [{"role": "user", "content": "Hi"}]


def test_an_httpx_based_sdk_works_through_the_gateway(server: KeyrelayServer, workspace: dict[str, str],
                                                      openai_source: str, scripted: ScriptedServer) -> None:
    """The OpenAI SDK on `http()`: keyrelay injects the stored key; the SDK's placeholder never leaves."""
    import openai

    with Keyrelay(server.url, api_key=openai_source, env={}) as kr, kr.http(workspace["id"], "openai") as gw:
        ai = openai.OpenAI(base_url=str(gw.base_url), api_key="unused", http_client=gw, max_retries=0)
        answer = ai.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "Hello through keyrelay"
    assert_upstream_saw_the_stored_key(scripted)


def test_an_async_httpx_based_sdk_works_through_the_gateway(server: KeyrelayServer, workspace: dict[str, str],
                                                            openai_source: str, scripted: ScriptedServer) -> None:
    import openai

    async def main() -> Any:
        async with AsyncKeyrelay(server.url, api_key=openai_source, env={}) as kr:
            gw = await kr.http(workspace["id"], "openai")
            async with gw:
                ai = openai.AsyncOpenAI(base_url=str(gw.base_url), api_key="unused", http_client=gw, max_retries=0)
                return await ai.chat.completions.create(model="gpt-test",
                                                        messages=[{"role": "user", "content": "Hi"}])

    assert asyncio.run(main()).choices[0].message.content == "Hello through keyrelay"
    assert_upstream_saw_the_stored_key(scripted)
