"""The authorization code grant with PKCE (pipeline/oauth/authorize.py) against a strict fake provider, through
the real guarded upstream client: the URL carries an S256 challenge of a fresh verifier, the code is redeemed
once with that verifier, and every way a token endpoint can fail ends in a clean error with nothing followed."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import SsrfBlocked, UpstreamAuthFailed
from keyrelay.pipeline.oauth.authorize import TokenRefused, exchange, parse_tokens, start, token_request
from support.oauth import FakeOAuthProvider
from support.upstream import FakeUpstream

REDIRECT = "https://kr.example.com/connect/oauth/callback"


@pytest.fixture
def idp() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider(redirect_uri=REDIRECT) as provider:
        yield provider


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(allow=parse_cidrs("127.0.0.0/8"), max_connections=10)
    yield client
    await client.close()


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_authorization_url_carries_state_and_an_s256_challenge_of_a_fresh_verifier() -> None:
    a = start(authorize_url="https://idp.example.com/authorize", client_id="cid", redirect_uri=REDIRECT,
              scope="repo read:org", params={"audience": "api.example.com"})
    q = _query(a.url)
    assert a.url.startswith("https://idp.example.com/authorize?")
    assert q == {"response_type": "code", "client_id": "cid", "redirect_uri": REDIRECT, "scope": "repo read:org",
                 "state": a.state, "audience": "api.example.com", "code_challenge": _s256(a.verifier),
                 "code_challenge_method": "S256"}
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", a.verifier)
    assert len(a.state) >= 43 and a.verifier not in a.url
    b = start(authorize_url="https://idp.example.com/authorize", client_id="cid", redirect_uri=REDIRECT, scope=None,
              params={})
    assert (b.state, b.verifier) != (a.state, a.verifier) and "scope" not in _query(b.url)
    assert a.verifier not in repr(a)  # the verifier never leaves keyrelay before the token request


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_the_token_request_authenticates_the_client_as_configured(method: str) -> None:
    form, headers = token_request(client_id="cid", client_secret="s3cret", auth_method=method, code="c0de",
                                  verifier="v" * 43, redirect_uri=REDIRECT)
    assert form["grant_type"] == "authorization_code" and form["code"] == "c0de"
    assert form["code_verifier"] == "v" * 43 and form["redirect_uri"] == REDIRECT
    if method == "client_secret_post":
        assert (form["client_id"], form["client_secret"], headers) == ("cid", "s3cret", [])
    else:
        assert "client_secret" not in form
        assert headers == [("Authorization", "Basic " + base64.b64encode(b"cid:s3cret").decode())]


async def _redeem(idp: FakeOAuthProvider, upstream: UpstreamClient, **kw: Any) -> Any:
    a = start(authorize_url=idp.authorize_url, client_id=idp.client_id, redirect_uri=REDIRECT, scope=None, params={})
    code = idp.grant_code(challenge=_query(a.url)["code_challenge"])
    args: dict[str, Any] = {"token_url": idp.token_url, "client_id": idp.client_id,
                            "client_secret": idp.client_secret, "auth_method": "client_secret_post", "code": code,
                            "verifier": a.verifier, "redirect_uri": REDIRECT}
    args.update(kw)
    return await exchange(upstream, **args), code, a


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_a_code_is_redeemed_with_its_verifier(idp: FakeOAuthProvider, upstream: UpstreamClient,
                                                    method: str) -> None:
    idp.knobs.extra = {"instance_url": "https://acme.my.salesforce.com", "id_token": "eyJ.not.kept"}
    tokens, _, a = await _redeem(idp, upstream, auth_method=method)
    assert tokens.access_token in idp.access_tokens and tokens.refresh_token in idp.refresh_tokens
    assert tokens.expires_in == 3600.0
    assert tokens.extra == {"token_type": "bearer", "expires_in": 3600, "instance_url": "https://acme.my.salesforce.com"}
    [call] = idp.token_calls
    assert call.status == 200 and call.form["code_verifier"] == a.verifier
    assert tokens.access_token not in repr(tokens) and str(tokens.refresh_token) not in repr(tokens)


async def test_a_wrong_verifier_is_refused_by_the_provider(idp: FakeOAuthProvider, upstream: UpstreamClient) -> None:
    other = start(authorize_url=idp.authorize_url, client_id="x", redirect_uri=REDIRECT, scope=None, params={})
    with pytest.raises(TokenRefused) as err:
        await _redeem(idp, upstream, verifier=other.verifier)
    assert err.value.error == "invalid_grant" and err.value.status == 502
    assert other.verifier not in err.value.message


async def test_a_code_works_once(idp: FakeOAuthProvider, upstream: UpstreamClient) -> None:
    _, code, a = await _redeem(idp, upstream)
    with pytest.raises(TokenRefused, match="invalid_grant"):
        await exchange(upstream, token_url=idp.token_url, client_id=idp.client_id, client_secret=idp.client_secret,
                       auth_method="client_secret_post", code=code, verifier=a.verifier, redirect_uri=REDIRECT)


async def test_a_token_endpoint_that_redirects_is_not_followed(idp: FakeOAuthProvider, upstream: UpstreamClient,
                                                               ) -> None:
    with FakeUpstream() as elsewhere:
        idp.knobs.redirect_token_to = elsewhere.url + "/token"
        with pytest.raises(UpstreamAuthFailed, match="redirect"):
            await _redeem(idp, upstream)
        assert elsewhere.requests == []


async def test_a_token_endpoint_at_a_forbidden_address_is_never_called(idp: FakeOAuthProvider) -> None:
    strict = UpstreamClient(allow=(), max_connections=2)  # no loopback exemption: the provider is "internal"
    try:
        with pytest.raises(SsrfBlocked):
            await _redeem(idp, strict)
    finally:
        await strict.close()
    assert idp.token_calls == []


@pytest.mark.parametrize("status,body,error", [
    (400, b'{"error": "invalid_grant", "error_description": "nope"}', "invalid_grant"),
    (401, b'{"error": "<script>alert(1)</script>"}', "http_401"),
    (200, b'{"error": "bad_verification_code"}', "bad_verification_code"),  # GitHub answers 200 with an error
    (500, b"<html>oops</html>", "http_500"),
])
def test_refusals_name_a_clean_error_code(status: int, body: bytes, error: str) -> None:
    with pytest.raises(TokenRefused) as err:
        parse_tokens(status, body)
    assert err.value.error == error and "<" not in err.value.message


@pytest.mark.parametrize("status,body", [
    (200, b"access_token=abc&token_type=bearer"),  # form-encoded: not what keyrelay asked for
    (200, b'{"token_type": "bearer"}'),
    (200, b'{"access_token": "has space"}'),
    (200, b'{"access_token": "line\\r\\nbreak"}'),
    (200, b'{"access_token": ""}'),
    (200, b"[1, 2]"),
    (302, b""),
])
def test_a_token_response_without_a_usable_access_token_is_refused(status: int, body: bytes) -> None:
    with pytest.raises(UpstreamAuthFailed):
        parse_tokens(status, body)


def test_a_token_response_without_refresh_token_or_lifetime_says_so() -> None:
    tokens = parse_tokens(200, b'{"access_token": "gho_abc", "scope": "repo", "token_type": "bearer"}')
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_in) == ("gho_abc", None, None)
    assert parse_tokens(200, b'{"access_token": "a", "expires_in": "60"}').expires_in == 60.0
