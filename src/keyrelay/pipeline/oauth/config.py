"""`oauth2`: an access token obtained from a token endpoint (refresh-token or client-credentials grant).

Unlike the static kinds, the header value changes over time, so the injection only carries the parsed
configuration; `pipeline/oauth/tokens.py` supplies the current access token for every request. The client
secret and refresh token stay `Secret`s until `grant.py` puts them into a token request. The client secret and
the configured refresh token are still redacted from responses like any other injected secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.egress import destination
from keyrelay.errors import InvalidRequest
from keyrelay.model import Secret

GRANTS = ("refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_post", "client_secret_basic")
_FIELDS = ("token_url", "client_id", "client_secret", "grant_type", "refresh_token", "scope", "audience",
           "auth_method", "header", "prefix")


@dataclass(frozen=True, slots=True)
class OAuth2Config:
    token_url: str  # rebuilt from validated parts
    client_id: str
    client_secret: Secret
    grant_type: str
    refresh_token: Secret | None = None
    scope: str | None = None
    audience: str | None = None
    auth_method: str = "client_secret_post"
    header: str = "Authorization"
    prefix: str = "Bearer "
    fingerprint: str = field(default="", repr=False)  # identifies this configuration in the stored token state

    @property
    def secrets(self) -> list[Secret]:
        return [s for s in (self.client_secret, self.refresh_token) if s is not None]


def _text(value: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    v = value.get(name)
    if isinstance(v, Secret):
        v = v.reveal()  # review point: the setting is checked here and the secrets among them wrapped again
    if v is None or v == "":
        if required:
            raise InvalidRequest(f"The source's oauth2 credential has no {name}")
        return None
    if not isinstance(v, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise InvalidRequest(f"The source's oauth2 credential has an invalid {name}")
    return v


def _revealed(value: Any) -> Any:
    """The stored value as it was written (the fingerprint of a configuration must not change across versions)."""
    return value.reveal() if isinstance(value, Secret) else value


def parse(value: Any) -> OAuth2Config:
    """Check a decrypted `oauth2` credential (already schema-checked when written; catalog templates may not be)."""
    if not isinstance(value, Mapping):
        raise InvalidRequest("The source's oauth2 credential must be an object")
    grant = _text(value, "grant_type", required=True)
    if grant not in GRANTS:
        raise InvalidRequest("The source's oauth2 grant_type must be refresh_token or client_credentials")
    method = _text(value, "auth_method") or "client_secret_post"
    if method not in AUTH_METHODS:
        raise InvalidRequest("The source's oauth2 auth_method must be client_secret_post or client_secret_basic")
    base = destination.parse_base_url(_text(value, "token_url", required=True) or "")
    canonical = json.dumps({k: _revealed(value.get(k)) for k in _FIELDS}, sort_keys=True)
    prefix = value.get("prefix")
    refresh = _text(value, "refresh_token", required=grant == "refresh_token")
    return OAuth2Config(
        token_url=base.origin + base.path, client_id=_text(value, "client_id", required=True) or "",
        client_secret=Secret(_text(value, "client_secret", required=True) or ""), grant_type=grant,
        refresh_token=None if refresh is None else Secret(refresh),
        scope=_text(value, "scope"), audience=_text(value, "audience"), auth_method=method,
        header=_text(value, "header") or "Authorization",
        prefix="Bearer " if prefix is None else (_text(value, "prefix") or ""),
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def inject(value: Any) -> dict[str, Any]:
    cfg = parse(value)
    return {"secrets": cfg.secrets, "oauth2": cfg}
