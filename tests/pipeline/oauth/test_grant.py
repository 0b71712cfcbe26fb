"""One OAuth2 token request (pipeline/oauth/grant.py) against a real token endpoint on 127.0.0.1: what is sent for
each grant and client authentication method, and how each kind of answer is classified (Granted, Refused, or a
transient UpstreamAuthFailed), never echoing a token or the endpoint's free text."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import SsrfBlocked, UpstreamAuthFailed
from keyrelay.pipeline.oauth.config import parse
from keyrelay.pipeline.oauth.grant import Granted, Refused, request_token
from support.fakes.base import FakeApi
from support.pipeline import LOOPBACK
from support.upstream import FakeUpstream

SECRET = "cl!ent:secret 5d1e"


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(allow=LOOPBACK, max_connections=4)
    yield c
    await c.close()


def _cfg(url: str, **kw: Any) -> Any:
    value = {"token_url": url, "client_id": "my client", "client_secret": SECRET, "grant_type": "client_credentials"}
    value.update(kw)
    return parse(value)


class TokenEndpoint(FakeApi):
    """A token endpoint that answers whatever the test sets in `answer` (status, body)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: tuple[int, bytes] = (200, b"{}")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self.token)

    async def token(self, request: web.Request) -> web.Response:
        status, body = self.answer
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as e:
        yield e


async def test_client_credentials_are_granted_with_the_secret_in_the_form(client: UpstreamClient,
                                                                         upstream: FakeUpstream) -> None:
    got = await request_token(client, _cfg(upstream.url + "/oauth/token", scope="read", audience="api"), None)
    assert isinstance(got, Granted) and got.access_token.startswith("at-")
    assert got.expires_in == 3600 and got.refresh_token is None
    [seen] = upstream.requests
    form = parse_qs(seen.body.decode())
    assert form == {"grant_type": ["client_credentials"], "scope": ["read"], "audience": ["api"],
                    "client_id": ["my client"], "client_secret": [SECRET]}
    assert seen.header("Authorization") is None
    assert got.access_token not in repr(got)


async def test_client_secret_basic_form_encodes_both_parts_into_the_header(client: UpstreamClient,
                                                                          upstream: FakeUpstream) -> None:
    cfg = _cfg(upstream.url + "/oauth/token", auth_method="client_secret_basic")
    assert isinstance(await request_token(client, cfg, None), Granted)
    [seen] = upstream.requests
    assert "client_secret" not in parse_qs(seen.body.decode())
    pair = base64.b64decode((seen.header("Authorization") or "").removeprefix("Basic ")).decode()
    assert pair == "my+client:cl%21ent%3Asecret+5d1e"  # RFC 6749 2.3.1


async def test_a_refresh_grant_sends_the_refresh_token_and_gets_a_new_one(client: UpstreamClient,
                                                                         upstream: FakeUpstream) -> None:
    old = upstream.issue_refresh_token()
    cfg = _cfg(upstream.url + "/oauth/token", grant_type="refresh_token", refresh_token=old)
    got = await request_token(client, cfg, old)
    assert isinstance(got, Granted) and got.refresh_token and got.refresh_token != old
    assert parse_qs(upstream.requests[0].body.decode())["refresh_token"] == [old]
    again = await request_token(client, cfg, old)  # the endpoint rotated it: reuse is refused
    assert again == Refused("invalid_grant")


@pytest.mark.parametrize("status,body,expected", [
    (400, b'{"error": "invalid_grant", "error_description": "token abc123 revoked"}', "invalid_grant"),
    (401, b'{"error": "invalid_client"}', "invalid_client"),
    (403, b"<html>no</html>", "http_403"),
    (400, b'{"error": "Not A Code <script>"}', "http_400"),  # free text never becomes the error code
])
async def test_a_refusal_names_only_a_well_formed_error_code(client: UpstreamClient, endpoint: TokenEndpoint,
                                                            status: int, body: bytes, expected: str) -> None:
    endpoint.answer = (status, body)
    got = await request_token(client, _cfg(endpoint.url + "/token"), None)
    assert got == Refused(expected)


@pytest.mark.parametrize("status,body", [
    (500, b'{"error": "server_error"}'),
    (200, b"not json"),
    (200, b'{"token_type": "Bearer"}'),
    (200, b'{"access_token": ""}'),
    (200, b'{"access_token": "a\\r\\nX-Injected: 1"}'),  # would break the header it goes into
    (200, b'{"access_token": 12345}'),
])
async def test_a_failed_or_malformed_answer_is_a_transient_failure(client: UpstreamClient, endpoint: TokenEndpoint,
                                                                  status: int, body: bytes) -> None:
    endpoint.answer = (status, body)
    with pytest.raises(UpstreamAuthFailed) as err:
        await request_token(client, _cfg(endpoint.url + "/token"), None)
    assert "X-Injected" not in err.value.message


@pytest.mark.parametrize("expires_in,expected", [
    (120, 120.0), ("300", 300.0), (0, None), (-5, None), (True, None), ("soon", None), (10**10, None),
])
async def test_expires_in_is_taken_only_when_it_is_a_sane_number(client: UpstreamClient, endpoint: TokenEndpoint,
                                                                 expires_in: object, expected: float | None) -> None:
    endpoint.answer = (200, json.dumps({"access_token": "tok", "expires_in": expires_in}).encode())
    got = await request_token(client, _cfg(endpoint.url + "/token"), None)
    assert isinstance(got, Granted) and got.expires_in == expected


async def test_an_unreachable_endpoint_is_a_transient_failure(client: UpstreamClient) -> None:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/token"
        with pytest.raises(UpstreamAuthFailed):
            await request_token(client, _cfg(url), None)


async def test_a_forbidden_endpoint_is_refused_by_the_ssrf_guard_not_retried(upstream: FakeUpstream) -> None:
    guarded = UpstreamClient(allow=(), max_connections=1)  # loopback is not allowed here
    try:
        with pytest.raises(SsrfBlocked):
            await request_token(guarded, _cfg(upstream.url + "/oauth/token"), None)
    finally:
        await guarded.close()
    assert upstream.requests == []
