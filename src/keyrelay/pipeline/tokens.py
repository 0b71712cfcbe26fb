"""The token format: opaque random tokens with a kind prefix, their HMAC-SHA256 digests (the only form ever
stored), and the `Authorization: Bearer` header that carries them."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from keyrelay.errors import Unauthenticated

APP_TOKEN_PREFIX = "kra_"  # noqa: S105 - a prefix, not a secret
WORKSPACE_TOKEN_PREFIX = "krw_"  # noqa: S105
API_KEY_PREFIX = "kr_"
DERIVED_PREFIX = "krc_"  # an attenuated (child) token of any kind
_TOKEN_RE = re.compile(r"kr[acw]?_[A-Za-z0-9_-]{43}")


def new_token(prefix: str) -> str:
    """An opaque token: prefix + 256 random bits, URL-safe."""
    return prefix + secrets.token_urlsafe(32)


class TokenHasher:
    """HMAC-SHA256 digests of tokens and client secrets (the key lives in the database's meta table)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per token: no key setup, no digest lookup

    def digest(self, token: str) -> str:
        h = self._keyed.copy()
        h.update(token.encode())
        return h.hexdigest()

    def matches(self, token: str, digest: str) -> bool:
        return hmac.compare_digest(self.digest(token), digest)


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header, or Unauthenticated."""
    if not header:
        raise Unauthenticated("Missing bearer token")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN_RE.fullmatch(token):
        raise Unauthenticated("Malformed bearer token")
    return token
