"""OAuth2 access tokens for sources with an `oauth2` credential: cached, refreshed single-flight, stored sealed.

`OAuthTokens.token(source, cfg)` returns a valid access token. In memory it keeps the last token per source;
when that is missing, near expiry (`refresh_at`: 60 s before `expires_in` runs out, or half way for short-lived
tokens) or was rejected by the upstream, it refreshes (docs/security.md: OAuth2):

1. one coroutine per source and process (an asyncio lock), after a lock-free look at the stored state;
2. the store's per-source lock (PostgreSQL advisory transaction lock / SQLite `BEGIN IMMEDIATE`) taken before
   the token endpoint is called; the sealed state is re-read under it, as another process may have refreshed;
3. the endpoint is called only if the state is still stale; the new access token and the (rotated) refresh
   token are sealed and written in the same transaction, which commits before the token is used;
4. `invalid_grant` re-reads the state and retries once with a refresh token that changed meanwhile; a refusal
   that stands marks the source `needs_reauth` and answers 502 `upstream_auth_failed`.

The state is bound to a fingerprint of the `oauth2` configuration: new credentials start from their own
refresh token. `OAuthSender` injects the token per request and retries once on an upstream 401.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keyrelay.egress.upstream import Sent, UpstreamClient
from keyrelay.errors import CredentialsUnusable, KeyrelayError, NotFound, UpstreamAuthFailed
from keyrelay.model import OAUTH_STATE_FIELD, OAuthRecord, Outbound, Secret, Source
from keyrelay.pipeline.oauth.config import OAuth2Config
from keyrelay.pipeline.oauth.grant import Granted, request_token
from keyrelay.pipeline.redact import Redactor
from keyrelay.ports import Clock, DestinationOf, OAuthStateStore, OAuthStateTxn, Vault

log = logging.getLogger("keyrelay.oauth")
MARGIN_SECONDS = 60.0
NEEDS_REAUTH = "The source's OAuth2 credential was refused by its token endpoint; update the source's credentials"
_CACHE_MAX = 10_000


class RefreshRefused(UpstreamAuthFailed):
    """A refresh the token endpoint refused just now: the source was marked `needs_reauth`."""


@dataclass(frozen=True, slots=True)
class TokenState:
    """What is sealed in the `oauth2_state` field."""

    fingerprint: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    refresh_at: float | None = None  # None: the endpoint gave no lifetime; refresh only when rejected
    refresh_token: str | None = field(default=None, repr=False)

    def fresh(self, now: float, rejected: str | None) -> bool:
        return (self.access_token is not None and self.access_token != rejected
                and (self.refresh_at is None or now < self.refresh_at))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _state_from(value: Any) -> TokenState | None:
    """The token state from its opened field, whose strings arrive as `Secret`s (revealed here: the state holds
    the tokens this module sends and refreshes with)."""
    if isinstance(value, dict):
        value = {k: v.reveal() if isinstance(v, Secret) else v for k, v in value.items()}
    if not isinstance(value, dict) or not isinstance(value.get("fingerprint"), str):
        return None
    text = {k: v if isinstance(v, str) else None for k in ("access_token", "refresh_token") for v in [value.get(k)]}
    num = {k: float(v) if isinstance(v, int | float) else None for k in ("expires_at", "refresh_at")
           for v in [value.get(k)]}
    return TokenState(fingerprint=value["fingerprint"], access_token=text["access_token"],
                      refresh_token=text["refresh_token"], expires_at=num["expires_at"], refresh_at=num["refresh_at"])


def refresh_at(now: float, expires_in: float | None) -> float | None:
    if expires_in is None:
        return None
    return now + max(expires_in - MARGIN_SECONDS, expires_in / 2)


class OAuthTokens:
    def __init__(self, *, store: OAuthStateStore, vault: Vault, upstream: UpstreamClient, clock: Clock,
                 destination_of: DestinationOf,
                 on_needs_reauth: Callable[[Source], None] = lambda _source: None) -> None:
        self._store, self._vault, self._upstream, self._clock = store, vault, upstream, clock
        self._destination_of = destination_of  # the token state is bound like every credential
        self.on_needs_reauth = on_needs_reauth  # told once the refusal is committed (webhooks, docs/connect.md)
        self._memo: dict[str, TokenState] = {}
        self._rejected: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, KeyrelayError] = {}  # the last failed refresh per source

    def reject(self, source_id: str, token: str) -> None:
        """The upstream answered 401 to `token`: the next `token()` refreshes unless it already changed."""
        memo = self._memo.get(source_id)
        if memo is not None and memo.access_token == token:
            self._rejected[source_id] = token

    async def token(self, source: Source, cfg: OAuth2Config) -> str:
        memo = self._usable(source.id, cfg)
        if memo is not None:
            return memo
        if source.status == "needs_reauth":
            raise UpstreamAuthFailed(NEEDS_REAUTH)
        if len(self._locks) >= _CACHE_MAX:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        lock = self._locks.setdefault(source.id, asyncio.Lock())
        failed_before = self._failed.get(source.id)
        async with lock:
            memo = self._usable(source.id, cfg)
            if memo is not None:
                return memo
            failed = self._failed.get(source.id)
            if failed is not None and failed is not failed_before:
                # the refresh this request waited for failed: share its answer instead of calling again
                raise type(failed)(failed.message)
            try:
                state = await self._fresh(source, cfg, self._rejected.get(source.id))
            except KeyrelayError as err:
                self._failed[source.id] = err
                raise
            self._failed.pop(source.id, None)
            if len(self._memo) >= _CACHE_MAX:
                self._memo.clear()
            self._memo[source.id] = state
            self._rejected.pop(source.id, None)
            assert state.access_token is not None
            return state.access_token

    def _usable(self, source_id: str, cfg: OAuth2Config) -> str | None:
        memo = self._memo.get(source_id)
        if memo is None or memo.fingerprint != cfg.fingerprint:
            return None
        return memo.access_token if memo.fresh(self._clock(), self._rejected.get(source_id)) else None

    async def _fresh(self, source: Source, cfg: OAuth2Config, rejected: str | None) -> TokenState:
        current = await self._open(source, cfg, await self._store.read(source.id))
        if current is not None and current.fresh(self._clock(), rejected):
            return current  # another process refreshed: no lock needed
        async with self._store.locked(source.id) as txn:
            outcome = await self._refresh_locked(txn, source, cfg, rejected)
        if isinstance(outcome, KeyrelayError):
            if isinstance(outcome, RefreshRefused):
                self.on_needs_reauth(source)  # this refresh was refused and marked the source
            raise outcome  # raised after the transaction committed (a needs_reauth mark must stick)
        return outcome

    async def _refresh_locked(self, txn: OAuthStateTxn, source: Source, cfg: OAuth2Config,
                              rejected: str | None) -> TokenState | KeyrelayError:
        record = await txn.read()
        if record.status is None:
            return NotFound("Source not found")
        if record.status == "needs_reauth":
            return UpstreamAuthFailed(NEEDS_REAUTH)
        state = await self._open(source, cfg, record)
        if state is not None and state.fresh(self._clock(), rejected):
            return state
        configured = None if cfg.refresh_token is None else cfg.refresh_token.reveal()  # review point: the grant
        refresh = (state.refresh_token if state is not None else None) or configured
        result = await request_token(self._upstream, cfg, refresh)
        if not isinstance(result, Granted) and result.error == "invalid_grant" and cfg.grant_type == "refresh_token":
            # a lost race (e.g. a writer that did not take the lock): re-read, and retry once if it changed
            again = await self._open(source, cfg, await txn.read())
            if again is not None and again.fresh(self._clock(), rejected):
                return again
            if again is not None and again.refresh_token and again.refresh_token != refresh:
                refresh = again.refresh_token
                result = await request_token(self._upstream, cfg, refresh)
        if not isinstance(result, Granted):
            await txn.mark_needs_reauth(now=self._clock())
            log.warning("oauth2 refresh for source %s refused (%s): marked needs_reauth", source.id, result.error)
            return RefreshRefused(f"The OAuth token endpoint refused the source's credential ({result.error}); "
                                      "update the source's credentials")
        now = self._clock()
        new = TokenState(
            fingerprint=cfg.fingerprint, access_token=result.access_token,
            expires_at=None if result.expires_in is None else now + result.expires_in,
            refresh_at=refresh_at(now, result.expires_in), refresh_token=result.refresh_token or refresh,
        )
        sealed = await self._vault.seal(workspace_id=source.workspace_id, source_id=source.id,
                                        destination=self._destination_of(source.connector, source.config),
                                        fields={OAUTH_STATE_FIELD: new.to_json()})
        await txn.write_state(sealed[0])
        log.info("oauth2 access token refreshed for source %s", source.id)
        return new

    async def _open(self, source: Source, cfg: OAuth2Config, record: OAuthRecord) -> TokenState | None:
        """The stored state if it belongs to this configuration (None when absent, foreign or unreadable)."""
        if record.state is None:
            return None
        try:
            creds = await self._vault.open(workspace_id=source.workspace_id, source_id=source.id,
                                           destination=self._destination_of(source.connector, source.config),
                                           sealed=[record.state])
        except CredentialsUnusable:
            return None  # unreadable or bound elsewhere: start again from the configured refresh token
        state = _state_from(creds.fields.get(OAUTH_STATE_FIELD))
        return state if state is not None and state.fingerprint == cfg.fingerprint else None


async def seed(store: OAuthStateStore, vault: Vault, source: Source, cfg: OAuth2Config, *, destination: str,
               access_token: str, expires_in: float | None, now: float) -> bool:
    """Store the access token a fresh authorization came with (Connect, docs/connect.md), so the first request
    needs no refresh. Under the refresh lock, and only if no state of this configuration is there yet (a refresh
    that ran meanwhile wins). True if written."""
    async with store.locked(source.id) as txn:
        record = await txn.read()
        if record.status is None:
            return False
        if record.state is not None:
            try:
                opened = await vault.open(workspace_id=source.workspace_id, source_id=source.id,
                                          destination=destination, sealed=[record.state])
                current = _state_from(opened.fields.get(OAUTH_STATE_FIELD))
            except CredentialsUnusable:
                current = None
            if current is not None and current.fingerprint == cfg.fingerprint:
                return False
        state = TokenState(fingerprint=cfg.fingerprint, access_token=access_token,
                           expires_at=None if expires_in is None else now + expires_in,
                           refresh_at=refresh_at(now, expires_in),
                           refresh_token=None if cfg.refresh_token is None else cfg.refresh_token.reveal())
        sealed = await vault.seal(workspace_id=source.workspace_id, source_id=source.id, destination=destination,
                                  fields={OAUTH_STATE_FIELD: state.to_json()})
        await txn.write_state(sealed[0])
    return True


def with_token(out: Outbound, cfg: OAuth2Config, token: str) -> Outbound:
    """`out` with the token header set (replacing any header of that name)."""
    name = cfg.header.lower()
    headers = (*(h for h in out.headers if h[0].lower() != name), (cfg.header, cfg.prefix + token))
    return dataclasses.replace(out, headers=headers, secrets=(*out.secrets, token))


class OAuthSender:
    """Sends a request with the source's current access token; on a 401, refreshes once and retries if the body
    can be sent again. Token-endpoint calls are not agent upstream requests: they are not in the request log."""

    def __init__(self, tokens: OAuthTokens, upstream: UpstreamClient) -> None:
        self._tokens, self._upstream = tokens, upstream
        self._redactors: dict[int, tuple[Redactor, str, Redactor]] = {}

    async def token(self, source: Source, cfg: OAuth2Config) -> str:
        return await self._tokens.token(source, cfg)

    async def send(self, source: Source, cfg: OAuth2Config, out: Outbound, base: Redactor, *,
                   token: str | None = None) -> tuple[Sent, Redactor]:
        """Send `out` with `token` (fetched now when None); returns the response and the redactor for it."""
        if token is None:
            token = await self._tokens.token(source, cfg)
        sent = await self._upstream.send(with_token(out, cfg, token))
        if sent.response.status == 401:
            self._tokens.reject(source.id, token)
            if out.body is None or isinstance(out.body, bytes):
                sent.response.release()
                token = await self._tokens.token(source, cfg)
                sent = await self._upstream.send(with_token(out, cfg, token))
        return sent, self._redactor(base, token)

    def _redactor(self, base: Redactor, token: str) -> Redactor:
        hit = self._redactors.get(id(base))
        if hit is not None and hit[0] is base and hit[1] == token:
            return hit[2]
        red = base.extended([token])
        if len(self._redactors) >= _CACHE_MAX:
            self._redactors.clear()
        self._redactors[id(base)] = (base, token, red)
        return red
