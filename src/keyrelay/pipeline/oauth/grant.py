"""One OAuth2 token request (RFC 6749 sections 4.4 and 6) through the guarded upstream client.

Outcomes: `Granted` (a new access token), `Refused` (the endpoint rejected the grant or the client: 400, 401 or
403, so the credential needs attention), or `UpstreamAuthFailed` raised for a transient failure (unreachable,
timeout, 5xx, malformed answer). Messages never carry a token, a secret or the endpoint's free-text description.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from keyrelay import boundedjson
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import SsrfBlocked, UpstreamAuthFailed, UpstreamTimeout, UpstreamUnreachable
from keyrelay.pipeline.oauth.config import OAuth2Config

TOKEN_TIMEOUT_SECONDS = 15.0
_REFUSED_STATUSES = frozenset({400, 401, 403})
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_MAX_TOKEN = 8192


@dataclass(frozen=True, slots=True)
class Granted:
    access_token: str = field(repr=False)
    expires_in: float | None
    refresh_token: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class Refused:
    error: str  # the endpoint's error code (`invalid_grant`, ...) or `http_<status>`


def _form(cfg: OAuth2Config, refresh_token: str | None) -> tuple[dict[str, str], list[tuple[str, str]]]:
    form = {"grant_type": cfg.grant_type}
    if cfg.grant_type == "refresh_token":
        form["refresh_token"] = refresh_token or ""
    if cfg.scope:
        form["scope"] = cfg.scope
    if cfg.audience:
        form["audience"] = cfg.audience
    headers: list[tuple[str, str]] = []
    secret = cfg.client_secret.reveal()  # review point: into the token request only
    if cfg.auth_method == "client_secret_basic":  # RFC 6749 2.3.1: form-encode both parts first
        pair = f"{quote_plus(cfg.client_id)}:{quote_plus(secret)}".encode()
        headers.append(("Authorization", "Basic " + base64.b64encode(pair).decode("ascii")))
    else:
        form["client_id"], form["client_secret"] = cfg.client_id, secret
    return form, headers


def token_text(value: Any) -> str | None:
    """A token from a token endpoint's answer, if usable: it goes into a header, so printable ASCII without
    spaces only, at most 8 KiB (None otherwise)."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TOKEN:
        return None
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        return None
    return value


def expires_in_seconds(value: Any) -> float | None:
    """`expires_in` as a positive number of seconds (a digit string counts), else None."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 10**9:
        return float(value)
    return None


def _parse(status: int, data: bytes) -> Granted | Refused:
    try:
        doc = boundedjson.loads(data)
    except ValueError:  # not JSON, or nested too deeply
        doc = None
    if status in _REFUSED_STATUSES:
        code = doc.get("error") if isinstance(doc, dict) else None
        return Refused(code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else f"http_{status}")
    if not 200 <= status < 300:
        raise UpstreamAuthFailed(f"The OAuth token endpoint answered HTTP {status}")
    access = token_text(doc.get("access_token")) if isinstance(doc, dict) else None
    if access is None or not isinstance(doc, dict):
        raise UpstreamAuthFailed("The OAuth token endpoint sent an invalid token response")
    return Granted(access_token=access, expires_in=expires_in_seconds(doc.get("expires_in")),
                   refresh_token=token_text(doc.get("refresh_token")))


async def request_token(client: UpstreamClient, cfg: OAuth2Config, refresh_token: str | None) -> Granted | Refused:
    form, headers = _form(cfg, refresh_token)
    try:
        status, data = await client.post_form(cfg.token_url, form, headers=headers,
                                              timeout_seconds=TOKEN_TIMEOUT_SECONDS)
    except SsrfBlocked:
        raise
    except (UpstreamTimeout, UpstreamUnreachable):
        raise UpstreamAuthFailed("The OAuth token endpoint could not be reached") from None
    return _parse(status, data)
