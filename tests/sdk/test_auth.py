"""Application tokens: fetched once, shared, renewed before expiry by the injected clock, re-fetched once after
keyrelay's own 401; static credentials sent as is; secrets never shown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from keyrelay_client import AsyncKeyrelay, Keyrelay, Unauthenticated, Unavailable
from keyrelay_client.auth import ApplicationAuth, BearerAuth
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, KeyrelayServer
from support.scripted import Reply, ScriptedServer, Seen

SECRET = "krs_the-client-secret-0123"
WORKSPACES = {"data": []}
UNAUTH = {"error": {"code": "unauthenticated", "message": "Invalid or expired token", "request_id": "r"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_endpoint(scripted: ScriptedServer, lifetime: int = 900) -> None:
    counter = itertools.count(1)

    def issue(seen: Seen) -> Reply:
        assert seen.json() == {"client_id": "kr_app_t", "client_secret": SECRET}
        return Reply(200, {"access_token": f"kra_token_{next(counter)}", "token_type": "Bearer",
                           "expires_in": lifetime})

    scripted.on("POST", "/api/v1/applications/token", issue)


def bearer(scripted: ScriptedServer, path: str = "/api/v1/workspaces") -> list[str | None]:
    return [r.headers.get("authorization") for r in scripted.seen("GET", path)]


def test_one_token_serves_many_calls_until_it_is_nearly_expired(connect: Any, scripted: ScriptedServer) -> None:
    token_endpoint(scripted)
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES))
    clock = Clock()
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET, clock=clock)
    kr.workspaces.list()
    clock.now += 839  # 900 s tokens are renewed 60 s before they expire
    kr.workspaces.list()
    clock.now += 1
    kr.workspaces.list()
    kr.workspaces.list()
    assert bearer(scripted) == ["Bearer kra_token_1", "Bearer kra_token_1", "Bearer kra_token_2",
                                "Bearer kra_token_2"]
    assert len(scripted.seen("POST", "/api/v1/applications/token")) == 2


def test_a_short_lived_token_is_renewed_at_half_its_life(connect: Any, scripted: ScriptedServer) -> None:
    token_endpoint(scripted, lifetime=20)
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES))
    clock = Clock()
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET, clock=clock)
    kr.workspaces.list()
    clock.now += 9.9
    kr.workspaces.list()
    clock.now += 0.1
    kr.workspaces.list()
    assert bearer(scripted) == ["Bearer kra_token_1", "Bearer kra_token_1", "Bearer kra_token_2"]


def test_keyrelays_401_drops_the_token_and_resends_once(connect: Any, scripted: ScriptedServer) -> None:
    token_endpoint(scripted)
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES), Reply(401, UNAUTH), Reply(200, WORKSPACES))
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET, clock=Clock())
    kr.workspaces.list()
    kr.workspaces.list()  # 401 (e.g. the server's tokens were reset), then fine with a fresh token
    assert bearer(scripted) == ["Bearer kra_token_1", "Bearer kra_token_1", "Bearer kra_token_2"]

    scripted.on("GET", "/api/v1/workspaces", Reply(401, UNAUTH))
    with pytest.raises(Unauthenticated):
        kr.workspaces.list()
    assert bearer(scripted)[3:] == ["Bearer kra_token_2", "Bearer kra_token_3"]  # one resend, no loop


def test_an_upstreams_401_is_not_taken_for_keyrelays(connect: Any, scripted: ScriptedServer) -> None:
    """Through the gateway an upstream's 401 passes unchanged: no new token, no second request upstream."""
    token_endpoint(scripted)
    ws = "0b6f4f8e-7f6c-4a4e-9d35-2a8f1c4f0b11"
    route = f"/api/{ws}/proxy/openai/v1/chat"
    scripted.on("POST", route, Reply(401, {"error": {"code": "invalid_api_key", "message": "Incorrect API key"}}))
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET, clock=Clock())
    gw = kr.http(ws, "openai")
    with gw:
        r = gw.post("/v1/chat", json={"model": "m"})
    assert r.status_code == 401
    assert len(scripted.seen("POST", route)) == 1
    assert len(scripted.seen("POST", "/api/v1/applications/token")) == 1


def test_bad_client_credentials_raise_at_once(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("POST", "/api/v1/applications/token",
                Reply(401, {"error": {"code": "unauthenticated", "message": "Invalid client credentials",
                                      "request_id": "t"}}))
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET)
    with pytest.raises(Unauthenticated) as err:
        kr.workspaces.create("acme")
    assert err.value.message == "Invalid client credentials" and SECRET not in str(err.value)
    assert scripted.seen("POST", "/api/v1/workspaces") == []
    assert connect.sleeps == []


def test_a_failed_token_fetch_is_retried_even_before_a_post(connect: Any, scripted: ScriptedServer) -> None:
    """The POST was never sent, so retrying cannot repeat it."""
    unavailable = {"error": {"code": "unavailable", "message": "Starting", "request_id": "t"}}
    scripted.on("POST", "/api/v1/applications/token", Reply(503, unavailable),
                Reply(200, {"access_token": "kra_ok", "token_type": "Bearer", "expires_in": 900}))
    scripted.on("POST", "/api/v1/workspaces", Reply(201, {"id": "w1", "name": "acme", "created_at": None}))
    kr = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET)
    assert kr.workspaces.create("acme").id == "w1"
    assert len(connect.sleeps) == 1
    assert [r.headers["authorization"] for r in scripted.seen("POST", "/api/v1/workspaces")] == ["Bearer kra_ok"]

    scripted.on("POST", "/api/v1/applications/token", Reply(503, unavailable))
    fresh = connect(scripted.url, client_id="kr_app_t", client_secret=SECRET)
    with pytest.raises(Unavailable):
        fresh.workspaces.create("other")


def test_concurrent_threads_share_one_token_fetch(scripted: ScriptedServer) -> None:
    token_endpoint(scripted)
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES))
    with Keyrelay(scripted.url, client_id="kr_app_t", client_secret=SECRET, env={}) as kr, \
            ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: kr.workspaces.list(), range(16)))
    assert len(scripted.seen("POST", "/api/v1/applications/token")) == 1
    assert set(bearer(scripted)) == {"Bearer kra_token_1"}


def test_concurrent_tasks_share_one_token_fetch(scripted: ScriptedServer) -> None:
    token_endpoint(scripted)
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES))

    async def main() -> None:
        async with AsyncKeyrelay(scripted.url, client_id="kr_app_t", client_secret=SECRET, env={}) as kr:
            await asyncio.gather(*(kr.workspaces.list() for _ in range(16)))

    asyncio.run(main())
    assert len(scripted.seen("POST", "/api/v1/applications/token")) == 1
    assert set(bearer(scripted)) == {"Bearer kra_token_1"}


@pytest.mark.parametrize(("kwargs", "expected"), [({"api_key": "kr_the_key_123"}, "Bearer kr_the_key_123"),
                                                  ({"token": "krw_scoped_456"}, "Bearer krw_scoped_456")])
def test_static_credentials_are_sent_as_bearer(connect: Any, scripted: ScriptedServer, kwargs: dict[str, str],
                                               expected: str) -> None:
    scripted.on("GET", "/api/v1/workspaces", Reply(200, WORKSPACES))
    connect(scripted.url, **kwargs).workspaces.list()
    assert bearer(scripted) == [expected]
    assert scripted.seen("POST", "/api/v1/applications/token") == []


def test_reprs_never_show_a_secret() -> None:
    auth = ApplicationAuth(httpx.URL("http://127.0.0.1:1"), "kr_app_t", SECRET, clock=Clock())
    assert SECRET not in repr(auth) and "kr_app_t" in repr(auth)
    assert "kr_secret_key" not in repr(BearerAuth("kr_secret_key"))
    kr = Keyrelay("http://127.0.0.1:1", client_id="kr_app_t", client_secret=SECRET, env={})
    akr = AsyncKeyrelay("http://127.0.0.1:1", api_key="kr_secret_key", env={})
    try:
        assert repr(kr) == "Keyrelay('http://127.0.0.1:1', client_id='kr_app_t')"
        assert repr(akr) == "AsyncKeyrelay('http://127.0.0.1:1', api_key=<hidden>)"
        assert SECRET not in repr(vars(kr)) and "kr_secret_key" not in repr(vars(akr))
    finally:
        kr.close()
        asyncio.run(akr.aclose())


def test_logs_at_debug_level_never_show_a_secret(scripted: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    """Retries, token fetches and renewals, with every logger (the SDK's, httpx's, httpcore's) at DEBUG."""
    token_endpoint(scripted)
    unavailable = {"error": {"code": "unavailable", "message": "Starting", "request_id": "r"}}
    scripted.on("GET", "/api/v1/workspaces", Reply(503, unavailable), Reply(401, UNAUTH), Reply(200, WORKSPACES))
    caplog.set_level(logging.DEBUG)
    with Keyrelay(scripted.url, client_id="kr_app_t", client_secret=SECRET, sleep=lambda _: None, env={}) as kr:
        kr.workspaces.list()
    assert "retrying GET /api/v1/workspaces after unavailable" in caplog.text
    assert "kra_token_1" in scripted.seen("GET", "/api/v1/workspaces")[0].headers["authorization"]
    for secret in (SECRET, "kra_token_1", "kra_token_2"):
        assert secret not in caplog.text


# --- against a live keyrelay --------------------------------------------------------------------------------


class Counting(httpx.HTTPTransport):
    """A real transport that counts token requests."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/applications/token":
            with self.lock:
                self.tokens += 1
        return super().handle_request(request)


def test_live_tokens_are_renewed_and_accepted(server: KeyrelayServer) -> None:
    clock, transport = Clock(), Counting()
    with Keyrelay(server.url, client_id=ADMIN_ID, client_secret=ADMIN_SECRET, clock=clock, transport=transport,
                  env={}) as kr:
        kr.connectors.list()
        kr.connectors.list()
        clock.now += 841
        assert {c.name for c in kr.connectors.list()} >= {"http", "stripe"}
    assert transport.tokens == 2
