"""OAuth2 credentials: configuration parsing, token requests, and the refresh logic against the fake token
endpoint with a real sealed store (SQLite) and the guarded upstream client."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.connectors.spec import load_catalog
from keyrelay.egress.ssrf import parse_cidrs
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import SsrfBlocked, UpstreamAuthFailed
from keyrelay.manage.destinations import Destinations
from keyrelay.model import OAUTH_STATE_FIELD, NewSource, OAuthRecord, Outbound, SealedField, Secret, Source
from keyrelay.pipeline.oauth.config import OAuth2Config, parse
from keyrelay.pipeline.oauth.tokens import OAuthSender, OAuthTokens, refresh_at, seed
from keyrelay.pipeline.redact import Redactor
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.oauth_state import SqlOAuthStateStore, SqlOAuthStateTxn
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, new_key
from support.db import migrated_engine
from support.upstream import ISSUED_TOKEN, FakeUpstream

SECRET = "client-secret-5d1e0c"
DESTINATIONS = Destinations(load_catalog())


def _config(upstream: FakeUpstream, **kw: Any) -> dict[str, Any]:
    value = {"token_url": upstream.url + "/oauth/token", "client_id": "cid", "client_secret": SECRET,
             "grant_type": "client_credentials"}
    value.update(kw)
    return value


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    engine: AsyncEngine
    vault: KeyVault
    client: UpstreamClient
    store: SqlOAuthStateStore
    clock: Clock
    upstream: FakeUpstream
    sources: list[Source] = field(default_factory=list)

    def tokens(self, store: Any = None) -> OAuthTokens:
        """A fresh provider: an empty memory, as after a restart or in another process."""
        return OAuthTokens(store=store or self.store, vault=self.vault, upstream=self.client, clock=self.clock,
                           destination_of=DESTINATIONS)

    async def source(self, oauth2: dict[str, Any]) -> tuple[Source, OAuth2Config]:
        ws = await SqlWorkspaceStore(self.engine).create_workspace(id=str(uuid.uuid4()), name=uuid.uuid4().hex,
                                                                   now=1.0)
        sid = str(uuid.uuid4())
        config = {"upstream_url": self.upstream.url}
        sealed = await self.vault.seal(workspace_id=ws.id, source_id=sid, destination=DESTINATIONS("http", config),
                                       fields={"oauth2": oauth2})
        src = await SqlSourceStore(self.engine).create_source(NewSource(
            id=sid, workspace_id=ws.id, connector="http", name="s", slug="s", config=config, policy={}), sealed,
            now=1.0)
        return src, parse(oauth2)

    async def state(self, src: Source) -> dict[str, Any]:
        record = await self.store.read(src.id)
        assert record.state is not None
        creds = await self.vault.open(workspace_id=src.workspace_id, source_id=src.id,
                                      destination=DESTINATIONS(src.connector, src.config), sealed=[record.state])
        state = creds.fields[OAUTH_STATE_FIELD]  # opened fields carry their strings as Secrets
        return {k: v.reveal() if isinstance(v, Secret) else v for k, v in state.items()}


@pytest.fixture
async def env(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Env]:
    async with migrated_engine(None, tmp_path) as engine:
        vault = KeyVault(SqlKeyRingStore(engine), new_key(), clock=time.time)
        await vault.load(may_create=True)
        client = UpstreamClient(allow=parse_cidrs("127.0.0.0/8"), max_connections=200)
        try:
            yield Env(engine, vault, client, SqlOAuthStateStore(engine), Clock(), upstream)
        finally:
            await client.close()


def _form(upstream: FakeUpstream) -> dict[str, str]:
    last = [r for r in upstream.requests if r.raw_path == "/oauth/token"][-1]
    return {k: v[0] for k, v in parse_qs(last.body.decode()).items()}


def test_refresh_happens_a_minute_early_or_half_way_for_short_lived_tokens() -> None:
    assert refresh_at(100.0, 3600) == 100.0 + 3540
    assert refresh_at(100.0, 60) == 130.0
    assert refresh_at(100.0, None) is None


# --- token requests ----------------------------------------------------------------------------------------

async def test_client_credentials_are_fetched_once_then_cached(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, scope="read write", audience="api"))
    tokens = env.tokens()
    first = await tokens.token(src, cfg)
    assert await tokens.token(src, cfg) == first
    assert env.upstream.token_calls == 1
    assert _form(env.upstream) == {"grant_type": "client_credentials", "client_id": "cid", "client_secret": SECRET,
                                   "scope": "read write", "audience": "api"}
    assert await env.tokens().token(src, cfg) == first  # a new process reuses the stored token
    assert env.upstream.token_calls == 1


async def test_client_secret_basic_sends_the_secret_in_the_authorization_header(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, auth_method="client_secret_basic", client_id="c i+d"))
    await env.tokens().token(src, cfg)
    sent = [r for r in env.upstream.requests if r.raw_path == "/oauth/token"][-1]
    assert sent.header("Authorization") == "Basic " + base64.b64encode(f"c+i%2Bd:{SECRET}".encode()).decode()
    assert _form(env.upstream) == {"grant_type": "client_credentials"}


async def test_expiry_triggers_a_refresh(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream))
    tokens = env.tokens()
    first = await tokens.token(src, cfg)
    env.clock.now += 3600 - 61
    assert await tokens.token(src, cfg) == first
    env.clock.now += 2  # inside the 60 s margin
    assert await tokens.token(src, cfg) != first
    assert env.upstream.token_calls == 2


async def test_rotated_refresh_token_is_sealed_before_use_and_survives_a_restart(env: Env) -> None:
    rt0 = env.upstream.issue_refresh_token()
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt0))
    access = await env.tokens().token(src, cfg)
    state = await env.state(src)
    assert state["access_token"] == access and state["refresh_token"] not in (None, rt0)
    assert env.upstream.refresh_token_valid(state["refresh_token"]) and not env.upstream.refresh_token_valid(rt0)
    sealed = (await env.store.read(src.id)).state
    assert sealed is not None
    for plain in (access, state["refresh_token"], SECRET):
        assert plain.encode() not in sealed.ciphertext
    env.clock.now += 3600  # expired; a restarted keyrelay (empty memory) refreshes with the rotated token
    assert await env.tokens().token(src, cfg) not in (None, access)
    assert (env.upstream.token_calls, env.upstream.invalid_grants) == (2, 0)


async def test_a_rejected_token_is_refreshed_once(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream))
    tokens = env.tokens()
    old = await tokens.token(src, cfg)
    tokens.reject(src.id, old)
    new = await tokens.token(src, cfg)
    tokens.reject(src.id, old)  # a late 401 for the old token: already replaced
    assert new != old and await tokens.token(src, cfg) == new
    assert env.upstream.token_calls == 2
    other = env.tokens()  # another process that saw the same 401 finds the new token stored
    assert await other.token(src, cfg) == new
    other.reject(src.id, new)
    assert await other.token(src, cfg) != new and env.upstream.token_calls == 3


async def test_concurrent_requests_share_one_refresh_within_and_across_processes(env: Env) -> None:
    rt0 = env.upstream.issue_refresh_token()
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt0))
    a, b = env.tokens(), env.tokens()
    await a.token(src, cfg)
    env.clock.now += 3600  # expired everywhere
    env.upstream.token_delay = 0.3  # every caller arrives while the refresh is in flight
    got = await asyncio.gather(*(p.token(src, cfg) for p in [a, b] * 50))
    assert len(set(got)) == 1
    assert (env.upstream.token_calls, env.upstream.invalid_grants) == (2, 0)


async def test_a_refused_refresh_marks_the_source_needs_reauth(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token="rt-revoked"))
    tokens = env.tokens()
    with pytest.raises(UpstreamAuthFailed) as info:
        await tokens.token(src, cfg)
    assert "invalid_grant" in info.value.message and "rt-revoked" not in info.value.message
    assert (await env.store.read(src.id)).status == "needs_reauth"
    with pytest.raises(UpstreamAuthFailed):  # a stale view of the source: the lock-side check stops it
        await tokens.token(src, cfg)
    with pytest.raises(UpstreamAuthFailed):
        await tokens.token(_with_status(src, "needs_reauth"), cfg)
    assert env.upstream.token_calls == 1


async def test_invalid_client_marks_needs_reauth_too(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, token_url=env.upstream.url + "/status/401"))
    with pytest.raises(UpstreamAuthFailed):
        await env.tokens().token(src, cfg)
    assert (await env.store.read(src.id)).status == "needs_reauth"


async def test_a_transient_token_endpoint_failure_leaves_the_status_alone(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, token_url=env.upstream.url + "/status/503"))
    with pytest.raises(UpstreamAuthFailed) as info:
        await env.tokens().token(src, cfg)
    assert "503" in info.value.message
    assert (await env.store.read(src.id)).status == "active"


async def test_requests_waiting_for_a_failed_refresh_share_its_error(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, token_url=env.upstream.url + "/status/503"))
    tokens = env.tokens()
    results = await asyncio.gather(*(tokens.token(src, cfg) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, UpstreamAuthFailed) for r in results)
    assert len([r for r in env.upstream.requests if r.raw_path == "/status/503"]) == 1
    with pytest.raises(UpstreamAuthFailed):  # a later request tries again
        await tokens.token(src, cfg)
    assert len([r for r in env.upstream.requests if r.raw_path == "/status/503"]) == 2


async def test_the_token_endpoint_is_dialled_through_the_ssrf_guard(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream))
    closed = UpstreamClient(allow=(), max_connections=10)
    try:
        with pytest.raises(SsrfBlocked):
            await OAuthTokens(store=env.store, vault=env.vault, upstream=closed, clock=env.clock,
                              destination_of=DESTINATIONS).token(src, cfg)
    finally:
        await closed.close()
    assert env.upstream.token_calls == 0


async def test_invalid_grant_after_a_race_rereads_and_retries_once(env: Env) -> None:
    rt0 = env.upstream.issue_refresh_token()
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt0))
    await env.tokens().token(src, cfg)
    stale = await env.store.read(src.id)  # holds rt1
    env.clock.now += 3600
    await env.tokens().token(src, cfg)  # rotates rt1 -> rt2
    env.clock.now += 3600
    racing = StaleFirstRead(env.store, stale)  # the first read under the lock misses the rotation
    token = await env.tokens(racing).token(src, cfg)
    assert token == (await env.state(src))["access_token"]
    assert (env.upstream.token_calls, env.upstream.invalid_grants) == (4, 1)
    assert (await env.store.read(src.id)).status == "active"


async def test_state_of_an_earlier_configuration_is_ignored(env: Env) -> None:
    rt_a, rt_b = env.upstream.issue_refresh_token(), env.upstream.issue_refresh_token()
    src, cfg_a = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt_a))
    first = await env.tokens().token(src, cfg_a)
    cfg_b = parse(_config(env.upstream, grant_type="refresh_token", refresh_token=rt_b))
    assert await env.tokens().token(src, cfg_b) != first
    assert _form(env.upstream)["refresh_token"] == rt_b


async def test_the_token_state_is_sealed_for_the_sources_destination(env: Env) -> None:
    """The stored access token is bound like every credential: read for another destination (the source's
    config edited in the database), it is never used; the configured credential is asked again instead."""
    src, cfg = await env.source(_config(env.upstream))
    first = await env.tokens().token(src, cfg)
    record = await env.store.read(src.id)
    assert record.state is not None and record.state.destination == DESTINATIONS("http", src.config)
    moved = dataclasses.replace(src, config={"upstream_url": "https://elsewhere.example"})
    calls = env.upstream.token_calls
    assert await env.tokens().token(moved, cfg) != first  # a fresh process: the stored state does not open
    assert env.upstream.token_calls == calls + 1
    again = (await env.store.read(src.id)).state
    assert again is not None and again.destination == DESTINATIONS("http", moved.config)


# --- per-request injection ---------------------------------------------------------------------------------

async def test_sender_injects_the_token_and_retries_once_after_a_401(env: Env) -> None:
    env.upstream.require_auth = ISSUED_TOKEN
    src, cfg = await env.source(_config(env.upstream))
    sender = OAuthSender(env.tokens(), env.client)
    out = Outbound(method="POST", url=env.upstream.url + "/echo", headers=(("authorization", "agent"),),
                   body=b"payload")
    sent, redactor = await sender.send(src, cfg, out, Redactor([SECRET]))
    body = await sent.response.read()
    sent.response.release()
    token = (await env.state(src))["access_token"]
    assert sent.response.status == 200 and token.encode() in body
    assert token.encode() not in redactor.redact_bytes(body) and redactor.redact_bytes(SECRET.encode()) == b"[REDACTED]"
    assert [v for k, v in env.upstream.requests[-1].headers if k.lower() == "authorization"] == [f"Bearer {token}"]
    env.upstream.revoke_access_tokens()
    sent, _ = await sender.send(src, cfg, out, Redactor([]))
    sent.response.release()
    assert sent.response.status == 200 and env.upstream.token_calls == 2
    assert env.upstream.requests[-1].body == b"payload"


async def test_a_streamed_body_is_not_replayed_but_the_next_request_gets_a_new_token(env: Env) -> None:
    env.upstream.require_auth = ISSUED_TOKEN
    src, cfg = await env.source(_config(env.upstream))
    sender = OAuthSender(env.tokens(), env.client)
    await sender.send(src, cfg, Outbound(method="GET", url=env.upstream.url + "/echo", headers=()), Redactor([]))
    env.upstream.revoke_access_tokens()

    async def stream() -> AsyncIterator[bytes]:
        yield b"once"

    sent, _ = await sender.send(src, cfg, Outbound(method="POST", url=env.upstream.url + "/echo", headers=(),
                                                   body=stream()), Redactor([]))
    sent.response.release()
    assert sent.response.status == 401 and env.upstream.token_calls == 1
    sent, _ = await sender.send(src, cfg, Outbound(method="GET", url=env.upstream.url + "/echo", headers=()),
                                Redactor([]))
    sent.response.release()
    assert sent.response.status == 200 and env.upstream.token_calls == 2


# --- helpers -----------------------------------------------------------------------------------------------

def _with_status(src: Source, status: str) -> Source:
    return dataclasses.replace(src, status=status)


class StaleFirstRead:
    """A store whose first read under the lock returns an old record (a writer that skipped the lock)."""

    def __init__(self, real: SqlOAuthStateStore, stale: OAuthRecord) -> None:
        self._real, self._stale = real, stale

    async def read(self, source_id: str) -> OAuthRecord:
        return await self._real.read(source_id)

    def locked(self, source_id: str) -> AbstractAsyncContextManager[Any]:
        return self._locked(source_id)

    @asynccontextmanager
    async def _locked(self, source_id: str) -> AsyncIterator[Any]:
        async with self._real.locked(source_id) as txn:
            yield _StaleTxn(txn, self._stale)


class _StaleTxn:
    def __init__(self, txn: SqlOAuthStateTxn, stale: OAuthRecord) -> None:
        self._txn, self._stale = txn, stale
        self.read: Callable[[], Any] = self._first

    async def _first(self) -> OAuthRecord:
        self.read = self._txn.read
        return self._stale

    async def write_state(self, sealed: SealedField) -> None:
        await self._txn.write_state(sealed)

    async def mark_needs_reauth(self, *, now: float) -> None:
        await self._txn.mark_needs_reauth(now=now)


# --- Connect: a fresh authorization's token, and telling who cares about a refused refresh --------------------

async def test_a_seeded_access_token_is_used_without_a_refresh(env: Env) -> None:
    rt = env.upstream.issue_refresh_token()
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt))
    assert await seed(env.store, env.vault, src, cfg, destination=DESTINATIONS(src.connector, src.config),
                      access_token="at-from-the-code", expires_in=3600,
                      now=env.clock.now)
    assert await env.tokens().token(src, cfg) == "at-from-the-code"
    assert env.upstream.token_calls == 0
    assert (await env.state(src))["refresh_token"] == rt
    env.clock.now += 3600  # expired: the authorization's refresh token takes over
    assert await env.tokens().token(src, cfg) not in (None, "at-from-the-code")
    assert env.upstream.token_calls == 1


async def test_a_seed_never_overwrites_a_state_a_refresh_already_wrote(env: Env) -> None:
    rt = env.upstream.issue_refresh_token()
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token=rt))
    refreshed = await env.tokens().token(src, cfg)  # a request raced ahead of the seed and refreshed
    assert not await seed(env.store, env.vault, src, cfg, destination=DESTINATIONS(src.connector, src.config),
                      access_token="at-stale", expires_in=3600,
                          now=env.clock.now)
    assert (await env.state(src))["access_token"] == refreshed


async def test_a_refused_refresh_is_told_to_the_listener_once(env: Env) -> None:
    src, cfg = await env.source(_config(env.upstream, grant_type="refresh_token", refresh_token="rt-revoked"))
    told: list[str] = []
    tokens = OAuthTokens(store=env.store, vault=env.vault, upstream=env.client, clock=env.clock,
                         destination_of=DESTINATIONS, on_needs_reauth=lambda s: told.append(s.id))
    for _ in range(3):
        with pytest.raises(UpstreamAuthFailed):
            await tokens.token(src, cfg)
    assert told == [src.id]
    other = OAuthTokens(store=env.store, vault=env.vault, upstream=env.client, clock=env.clock,
                        destination_of=DESTINATIONS, on_needs_reauth=lambda s: told.append(s.id))
    with pytest.raises(UpstreamAuthFailed):  # already marked: not a new refusal
        await other.token(src, cfg)
    assert told == [src.id]
