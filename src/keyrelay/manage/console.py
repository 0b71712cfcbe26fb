"""The operator console's sign-in and sessions (docs/console.md).

Only an application signs in: with its client id and secret, or with a one-time link that `keyrelay
console-link` prints on the server. Either way the browser gets a random session value in a cookie and the
database keeps its HMAC digest. A session ends at sign-out, after `idle_seconds` without activity,
`lifetime_seconds` after sign-in, or as soon as its application is revoked. A signed-in session acts as its
application: `caller()` is the same Caller an application token of it would be.

Sign-in attempts are counted per client id and per remote address (the TCP peer) before anything is checked,
and a refusal never says which part was wrong.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyrelay.errors import InvalidRequest, NotFound, RateLimited, Unauthenticated, Unavailable
from keyrelay.model import Application, Caller, CallerKind, ConsoleSession, VaultKey
from keyrelay.pipeline.ratelimit import LocalWindows, shared_limiter
from keyrelay.pipeline.tokens import TokenHasher, new_token
from keyrelay.ports import AccessStore, Clock, ConsoleStore, VaultAdmin

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

SESSION_PREFIX = "krc_"
LINK_PREFIX = "krl_"
SIGN_IN_FAILED = "Sign-in failed: this client id and secret do not match an active application."
LINK_FAILED = ("This sign-in link does not work: it was already used, it expired, or it was copied incompletely. "
               "Run `keyrelay console-link` on the server for a new one.")
_DUMMY_DIGEST = "0" * 64
_MAX_INPUT = 256


@dataclass(frozen=True)
class NewSession:
    token: str  # goes into the cookie, nowhere else
    session: ConsoleSession


@dataclass(frozen=True)
class NewLink:
    token: str
    application: Application
    expires_at: float


@dataclass(frozen=True)
class VaultStatus:
    sealed: bool
    reason: str | None
    keys: list[VaultKey]


class SignInLimiter:
    """Sliding-window counts of sign-in attempts: in process, or in Redis when instances share it."""

    def __init__(self, storage: LocalWindows | RedisStorage) -> None:
        self._local = storage if isinstance(storage, LocalWindows) else None
        self._shared = shared_limiter(storage)

    async def hit(self, key: str, limit: int) -> int:
        """Count one attempt; 0 if allowed, else the seconds (1-60) to wait."""
        if self._local is not None:
            return self._local.hit(key, limit)
        assert self._shared is not None
        from limits import RateLimitItemPerMinute  # loaded with the Redis storage

        item = RateLimitItemPerMinute(limit)
        try:
            if await self._shared.hit(item, "console-sign-in", key):
                return 0
            stats = await self._shared.get_window_stats(item, "console-sign-in", key)
        except Exception:
            raise Unavailable("Sign-in is unavailable: the rate limit store is unreachable") from None
        return min(60, max(1, math.ceil(stats.reset_time - time.time())))


class ConsoleService:
    def __init__(self, *, store: ConsoleStore, access: AccessStore, hasher: TokenHasher, limiter: SignInLimiter,
                 vault: VaultAdmin, clock: Clock, idle_seconds: float, lifetime_seconds: float,
                 link_seconds: float, sign_in_per_minute: int) -> None:
        self._store = store
        self._access = access
        self._hasher = hasher
        self._limiter = limiter
        self._vault = vault
        self.clock: Callable[[], float] = clock  # public so that a test can move time forward
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.link_seconds = link_seconds
        self._per_minute = sign_in_per_minute

    # signing in ---------------------------------------------------------------------------------------
    async def sign_in(self, client_id: str, client_secret: str, *, remote: str) -> NewSession:
        await self._count(f"addr/{remote}")
        await self._count(f"client/{client_id[:_MAX_INPUT]}")
        found = None
        if client_id and len(client_id) <= _MAX_INPUT and len(client_secret) <= _MAX_INPUT:
            found = await self._access.application_by_client_id(client_id)
        ok = self._hasher.matches(client_secret, found[1] if found else _DUMMY_DIGEST)  # always one comparison
        if found is None or not ok or found[0].revoked_at is not None:
            raise Unauthenticated(SIGN_IN_FAILED)
        return await self._open(found[0].id, "secret")

    async def sign_in_with_link(self, token: str, *, remote: str) -> NewSession:
        await self._count(f"addr/{remote}")
        if not token.startswith(LINK_PREFIX) or len(token) > _MAX_INPUT:
            raise Unauthenticated(LINK_FAILED)
        app_id = await self._store.use_link(self._hasher.digest(token), now=self.clock())
        if app_id is None:
            raise Unauthenticated(LINK_FAILED)
        return await self._open(app_id, "link")

    async def _count(self, key: str) -> None:
        wait = await self._limiter.hit(key, self._per_minute)
        if wait:
            raise RateLimited(f"Too many sign-in attempts. Try again in {wait} seconds.", retry_after=wait)

    async def _open(self, application_id: str, method: str) -> NewSession:
        now = self.clock()
        await self._store.purge(before=now - self.idle_seconds)
        token = new_token(SESSION_PREFIX)
        await self._store.create_session(id=str(uuid.uuid4()), digest=self._hasher.digest(token),
                                         application_id=application_id, method=method, now=now,
                                         expires_at=now + self.lifetime_seconds)
        session = await self.session(token, touch=False)
        if session is None:  # its application was revoked in between
            raise Unauthenticated(SIGN_IN_FAILED if method == "secret" else LINK_FAILED)
        return NewSession(token, session)

    # sessions -----------------------------------------------------------------------------------------
    async def session(self, token: str | None, *, touch: bool = True) -> ConsoleSession | None:
        """The live session this cookie value belongs to, or None. `touch` counts this as activity."""
        if not token or not token.startswith(SESSION_PREFIX) or len(token) > _MAX_INPUT:
            return None
        found = await self._store.session(self._hasher.digest(token))
        now = self.clock()
        if found is None or not self._alive(found, now):
            return None
        if touch:
            await self._store.touch(found.id, now=now)
        return found

    def _alive(self, s: ConsoleSession, now: float) -> bool:
        return (s.ended_at is None and s.application.revoked_at is None and now < s.expires_at
                and now - s.last_seen_at < self.idle_seconds)

    async def sign_out(self, session: ConsoleSession) -> None:
        await self._store.end_session(session.id, now=self.clock())

    @staticmethod
    def caller(session: ConsoleSession) -> Caller:
        """The signed-in application, exactly as an application token of it authenticates (http/deps.py): its
        workspaces and scopes, so a limited application's console reaches what its tokens reach and no more."""
        app = session.application
        return Caller(kind=CallerKind.APPLICATION, id=f"app:{app.id}", workspace_id=None, scopes=app.scopes,
                      workspaces=app.workspaces)

    # one-time links -----------------------------------------------------------------------------------
    async def create_link(self, client_id: str | None = None) -> NewLink:
        """A single-use sign-in link for the application `client_id` (default: the oldest active one)."""
        apps = [a for a in await self._access.list_applications() if a.revoked_at is None]
        if client_id is not None:
            apps = [a for a in apps if a.client_id == client_id]
        if not apps:
            if client_id is not None:
                raise NotFound("No active application has this client id")
            raise InvalidRequest("There is no active application to sign in as")
        app = apps[0]
        token = new_token(LINK_PREFIX)
        now = self.clock()
        expires = now + self.link_seconds
        await self._store.add_link(digest=self._hasher.digest(token), application_id=app.id, now=now,
                                   expires_at=expires)
        return NewLink(token, app, expires)

    # the vault ----------------------------------------------------------------------------------------
    async def vault_status(self) -> VaultStatus:
        return VaultStatus(self._vault.sealed, self._vault.sealed_reason, await self._store.vault_keys())

    async def rotate_vault(self) -> int:
        """Re-encrypt every credential under a new data key (as `keyrelay vault rotate`)."""
        return (await self._vault.rotate()).reencrypted
