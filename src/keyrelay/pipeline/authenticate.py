"""Step 1: turn a bearer token into a Caller. Tokens are opaque; only their HMAC-SHA256 digests are stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from keyrelay.errors import Unauthenticated
from keyrelay.model import Caller, CallerKind, TokenRecord
from keyrelay.pipeline.cache import SingleFlightCache
from keyrelay.ports import AuthStore, Clock

APP_TOKEN_PREFIX = "kra_"  # noqa: S105 - a prefix, not a secret
WORKSPACE_TOKEN_PREFIX = "krw_"  # noqa: S105
API_KEY_PREFIX = "kr_"
_TOKEN_RE = re.compile(r"kr[aw]?_[A-Za-z0-9_-]{43}")
_CACHE_MAX = 20_000


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


class Authenticator:
    """Looks tokens up by digest with a short positive cache (revocation reaches every instance within it)."""

    def __init__(self, store: AuthStore, hasher: TokenHasher, clock: Clock, *, cache_seconds: float) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._cache: SingleFlightCache[str, tuple[TokenRecord, Caller]] = SingleFlightCache(
            clock, ttl=cache_seconds, max_entries=_CACHE_MAX)

    def forget_all(self) -> None:
        """Called after a local revocation so it takes effect at once on this instance."""
        self._cache.clear()

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer(authorization)
        digest = self._hasher.digest(token)
        hit = self._cache.peek(digest)
        record, caller = hit if hit is not None else await self._cache.get(digest, lambda: self._lookup(digest))
        if record.revoked:
            raise Unauthenticated("Token has been revoked")
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthenticated("Token has expired")
        return caller

    async def _lookup(self, digest: str) -> tuple[TokenRecord, Caller]:
        found = await self._store.lookup(digest)
        if found is None:
            raise Unauthenticated("Unknown token")
        return found, Caller(kind=found.kind, id=_caller_id(found), workspace_id=found.workspace_id,
                             scopes=found.scopes)


def _caller_id(record: TokenRecord) -> str:
    prefix = {CallerKind.APPLICATION: "app", CallerKind.WORKSPACE: "wst", CallerKind.API_KEY: "key"}[record.kind]
    suffix = f":{record.workspace_id}" if record.kind is CallerKind.WORKSPACE else ""
    return f"{prefix}:{record.subject_id}{suffix}"
