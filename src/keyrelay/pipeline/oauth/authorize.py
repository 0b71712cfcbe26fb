"""The OAuth 2 authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636 with S256) for Connect.

Authlib builds the protocol pieces: the code verifier and its S256 challenge, the authorization URL, the token
request body and the client authentication (`client_secret_post` or `client_secret_basic`), and the token it
reads from the answer. The token request itself goes through `UpstreamClient.post_form`, keyrelay's guarded
egress (SSRF rules, DNS pinning, no redirects, deadlines): Authlib never opens a connection here.

Errors are KeyrelayErrors whose messages name the provider's error code, never a token, a secret or the code.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.common.security import generate_token
from authlib.common.urls import url_decode
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oauth2.rfc6749.parameters import prepare_token_request

from keyrelay import boundedjson
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import SsrfBlocked, UpstreamAuthFailed, UpstreamTimeout, UpstreamUnreachable
from keyrelay.pipeline.oauth.grant import expires_in_seconds, token_text

TOKEN_TIMEOUT_SECONDS = 15.0
VERIFIER_CHARS = 64  # RFC 7636: 43 to 128 unreserved characters
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Authorization:
    """Where to send the browser, and what to keep until it comes back (never shown, never logged)."""

    url: str
    state: str = field(repr=False)
    verifier: str = field(repr=False)


@dataclass(frozen=True)
class Tokens:
    """A token response: the tokens, their lifetime, and the provider's other fields (Salesforce's
    `instance_url`), from which the token values themselves are removed."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: float | None
    extra: Mapping[str, Any] = field(default_factory=dict)


class TokenRefused(UpstreamAuthFailed):
    """The provider's token endpoint refused the code (its `error`, e.g. `invalid_grant`)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"The provider refused the authorization ({error})")
        self.error = error


def start(*, authorize_url: str, client_id: str, redirect_uri: str, scope: str | None,
          params: Mapping[str, str]) -> Authorization:
    """A fresh `state` and PKCE verifier, and the authorization URL carrying `state` and the S256 challenge."""
    client = OAuth2Client(None, client_id=client_id, redirect_uri=redirect_uri, scope=scope,
                          code_challenge_method="S256")
    verifier = generate_token(VERIFIER_CHARS)
    url, state = client.create_authorization_url(authorize_url, state=secrets.token_urlsafe(32),
                                                 code_verifier=verifier, **dict(params))
    return Authorization(url=str(url), state=str(state), verifier=verifier)


def token_request(*, client_id: str, client_secret: str, auth_method: str, code: str, verifier: str,
                  redirect_uri: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The token request's form fields and headers (client authentication included)."""
    body = prepare_token_request("authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=verifier)
    _, headers, body = ClientAuth(client_id, client_secret, auth_method).prepare("POST", "", {}, body)
    return dict(url_decode(body)), list(headers.items())


async def exchange(upstream: UpstreamClient, *, token_url: str, client_id: str, client_secret: str,
                   auth_method: str, code: str, verifier: str, redirect_uri: str) -> Tokens:
    """Redeem the authorization code at `token_url` through the guarded egress."""
    form, headers = token_request(client_id=client_id, client_secret=client_secret, auth_method=auth_method,
                                  code=code, verifier=verifier, redirect_uri=redirect_uri)
    try:
        status, data = await upstream.post_form(token_url, form, headers=headers,
                                                timeout_seconds=TOKEN_TIMEOUT_SECONDS, max_bytes=_MAX_ANSWER)
    except SsrfBlocked:
        raise
    except (UpstreamTimeout, UpstreamUnreachable):
        raise UpstreamAuthFailed("The provider's token endpoint could not be reached") from None
    return parse_tokens(status, data)


def parse_tokens(status: int, data: bytes) -> Tokens:
    """Read a token response; anything but a 2xx JSON object with a usable `access_token` is refused."""
    if 300 <= status < 400:
        raise UpstreamAuthFailed(f"The provider's token endpoint answered with a redirect (HTTP {status}), "
                                 "which keyrelay does not follow")
    doc = _json_object(data)
    error = doc.get("error") if doc is not None else None
    if error is not None or status >= 400:
        raise TokenRefused(error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else f"http_{status}")
    if doc is None or status >= 300:
        raise UpstreamAuthFailed(f"The provider's token endpoint sent an invalid answer (HTTP {status})")
    token = OAuth2Token.from_dict(dict(doc))
    access = token_text(token.get("access_token"))
    if access is None:
        raise UpstreamAuthFailed("The provider's token response has no usable access token")
    refresh = token_text(token.get("refresh_token"))
    extra = {k: v for k, v in doc.items() if k not in ("access_token", "refresh_token", "id_token")}
    return Tokens(access_token=access, refresh_token=refresh, expires_in=expires_in_seconds(doc.get("expires_in")),
                  extra=extra)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = boundedjson.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
