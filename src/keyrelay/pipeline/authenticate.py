"""Step 1: turn a bearer token into a Caller. Tokens are opaque; only their HMAC-SHA256 digests are stored."""

from __future__ import annotations

from keyrelay.errors import Unauthenticated
from keyrelay.model import Caller, CallerKind, TokenRecord
from keyrelay.pipeline.cache import SingleFlightCache
from keyrelay.pipeline.tokens import DERIVED_PREFIX, TokenHasher, bearer
from keyrelay.ports import AccessStore, Clock

_CACHE_MAX = 20_000


class Authenticator:
    """Looks tokens up by digest with a short positive cache (revocation reaches every instance within it)."""

    def __init__(self, store: AccessStore, hasher: TokenHasher, clock: Clock, *, cache_seconds: float) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._cache: SingleFlightCache[str, tuple[TokenRecord, Caller]] = SingleFlightCache(
            clock, ttl=cache_seconds, max_entries=_CACHE_MAX)

    def forget_all(self) -> None:
        """Called after a local revocation so it takes effect at once on this instance."""
        self._cache.clear()

    async def authenticate(self, authorization: str | None) -> Caller:
        return (await self.resolve(authorization))[2]

    async def resolve(self, authorization: str | None) -> tuple[str, TokenRecord, Caller]:
        """The token's digest, its record and its caller (for attenuation, which derives from the record)."""
        token = bearer(authorization)
        digest = self._hasher.digest(token)
        hit = self._cache.peek(digest)
        if hit is None:
            derived = token.startswith(DERIVED_PREFIX)
            hit = await self._cache.get(digest, lambda: self._lookup(digest, derived=derived))
        record, caller = hit
        if record.revoked:
            raise Unauthenticated("Token has been revoked")
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthenticated("Token has expired")
        return digest, record, caller

    async def _lookup(self, digest: str, *, derived: bool) -> tuple[TokenRecord, Caller]:
        found = await (self._store.lookup_derived(digest) if derived else self._store.lookup(digest))
        if found is None:
            raise Unauthenticated("Unknown token")
        return found, Caller(kind=found.kind, id=_caller_id(found), workspace_id=found.workspace_id,
                             scopes=found.scopes, workspaces=found.workspaces, constraints=found.constraints)


def _caller_id(record: TokenRecord) -> str:
    prefix = {CallerKind.APPLICATION: "app", CallerKind.WORKSPACE: "wst", CallerKind.API_KEY: "key"}[record.kind]
    suffix = f":{record.workspace_id}" if record.kind is CallerKind.WORKSPACE else ""
    return f"{prefix}:{record.subject_id}{suffix}"
