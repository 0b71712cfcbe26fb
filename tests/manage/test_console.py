"""ConsoleService on real stores (SQLite), a real vault and an injected clock: who may sign in, how a session
ends (sign-out, idle time, lifetime, a revoked application), one-time links, sign-in rate limits, and that only
digests are stored."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyrelay.errors import InvalidRequest, NotFound, RateLimited, Unauthenticated
from keyrelay.manage.access import AccessService
from keyrelay.manage.console import LINK_FAILED, SIGN_IN_FAILED, ConsoleService, SignInLimiter
from keyrelay.model import Scope
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.ratelimit import LocalWindows
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.console import SqlConsoleStore
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, new_key
from support.db import migrated_engine

IDLE, LIFETIME, LINK, PER_MINUTE = 600.0, 3600.0, 300.0, 5


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    console: ConsoleService
    access: AccessService
    store: SqlAccessStore
    authn: Authenticator
    clock: Clock
    db: Path
    client_id: str
    secret: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = Clock()
    async with migrated_engine(None, tmp_path) as engine:
        store, hasher = SqlAccessStore(engine), TokenHasher(b"k" * 32)
        authn = Authenticator(store, hasher, clock, cache_seconds=0)
        access = AccessService(auth=store, workspaces=SqlWorkspaceStore(engine), hasher=hasher, authenticator=authn,
                               clock=clock)
        app = await access.create_application(name="ops")
        assert app.client_secret is not None
        vault = KeyVault(SqlKeyRingStore(engine), new_key(), clock=clock)
        await vault.load(may_create=True)
        console = ConsoleService(store=SqlConsoleStore(engine), access=store, hasher=hasher, vault=vault, clock=clock,
                                 limiter=SignInLimiter(LocalWindows(clock)), idle_seconds=IDLE,
                                 lifetime_seconds=LIFETIME, link_seconds=LINK, sign_in_per_minute=PER_MINUTE)
        yield World(console, access, store, authn, clock, tmp_path / "keyrelay.db", app.client_id, app.client_secret)


def _addr() -> str:
    return f"10.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def test_an_application_signs_in_and_acts_as_its_own_caller(world: World) -> None:
    new = await world.console.sign_in(world.client_id, world.secret, remote="127.0.0.1")
    session = await world.console.session(new.token)
    assert session is not None and session.id == new.session.id and session.method == "secret"
    assert session.application.client_id == world.client_id
    token = await world.access.application_token(world.client_id, world.secret)
    assert world.console.caller(session) == await world.authn.authenticate(f"Bearer {token.token}")


@pytest.mark.parametrize("case", ["wrong secret", "unknown client id", "empty", "overlong", "revoked"])
async def test_a_failed_sign_in_never_says_which_part_was_wrong(world: World, case: str) -> None:
    client_id, secret = {"wrong secret": (world.client_id, "krs_wrong"), "unknown client id": ("kr_app_x", "krs_y"),
                         "empty": ("", ""), "overlong": (world.client_id, world.secret + "x" * 300),
                         "revoked": (world.client_id, world.secret)}[case]
    if case == "revoked":
        await world.store.revoke_application(world.client_id, now=world.clock())
    with pytest.raises(Unauthenticated) as info:
        await world.console.sign_in(client_id, secret, remote=_addr())
    assert info.value.message == SIGN_IN_FAILED
    with sqlite3.connect(world.db) as db:
        assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (0,)  # not even a dead one


async def test_api_keys_and_tokens_do_not_sign_in(world: World) -> None:
    ws = await SqlWorkspaceStore(world.store._engine).create_workspace(id="w", name="acme", now=world.clock())
    _, key = await world.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="",
                                               expires_at=None)
    app_token = (await world.access.application_token(world.client_id, world.secret)).token
    for client_id, secret in ((world.client_id, key), (world.client_id, app_token), (key, key)):
        with pytest.raises(Unauthenticated):
            await world.console.sign_in(client_id, secret, remote=_addr())
    assert await world.console.session(key) is None
    assert await world.console.session(app_token) is None


async def test_a_session_ends_after_idle_time_and_activity_keeps_it(world: World) -> None:
    token = (await world.console.sign_in(world.client_id, world.secret, remote="a")).token
    for _ in range(3):  # each visit within the idle time keeps it alive
        world.clock.now += IDLE - 1
        assert await world.console.session(token) is not None
    world.clock.now += IDLE - 1
    assert await world.console.session(token, touch=False) is not None  # looking without touching ...
    world.clock.now += 1
    assert await world.console.session(token) is None  # ... did not count as activity


async def test_a_session_ends_at_its_lifetime_however_active(world: World) -> None:
    token = (await world.console.sign_in(world.client_id, world.secret, remote="a")).token
    start = world.clock.now
    while world.clock.now + IDLE / 2 < start + LIFETIME:
        world.clock.now += IDLE / 2
        assert await world.console.session(token) is not None
    world.clock.now = start + LIFETIME
    assert await world.console.session(token) is None


async def test_sign_out_and_a_revoked_application_end_the_session(world: World) -> None:
    first = await world.console.sign_in(world.client_id, world.secret, remote="a")
    second = await world.console.sign_in(world.client_id, world.secret, remote="a")
    await world.console.sign_out(first.session)
    assert await world.console.session(first.token) is None
    assert await world.console.session(second.token) is not None  # one session's end is not another's
    await world.store.revoke_application(world.client_id, now=world.clock())
    assert await world.console.session(second.token) is None


async def test_sign_ins_are_limited_per_client_id(world: World) -> None:
    for _ in range(PER_MINUTE):
        with pytest.raises(Unauthenticated):
            await world.console.sign_in(world.client_id, "krs_guess", remote=_addr())
    with pytest.raises(RateLimited) as info:  # even the right secret waits: the attempt is counted first
        await world.console.sign_in(world.client_id, world.secret, remote=_addr())
    assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
    world.clock.now += 120
    assert await world.console.sign_in(world.client_id, world.secret, remote=_addr())


async def test_sign_ins_are_limited_per_remote_address(world: World) -> None:
    for i in range(PER_MINUTE):
        with pytest.raises(Unauthenticated):
            await world.console.sign_in(f"kr_app_{i}", "krs_guess", remote="192.0.2.7")
    with pytest.raises(RateLimited):
        await world.console.sign_in(world.client_id, world.secret, remote="192.0.2.7")
    with pytest.raises(RateLimited):
        await world.console.sign_in_with_link("krl_whatever", remote="192.0.2.7")
    assert await world.console.sign_in(world.client_id, world.secret, remote="192.0.2.8")


async def test_a_link_signs_in_once_as_the_oldest_active_application(world: World) -> None:
    world.clock.now += 1
    await world.access.create_application(name="newer")
    link = await world.console.create_link()
    assert link.application.client_id == world.client_id and link.expires_at == world.clock() + LINK
    new = await world.console.sign_in_with_link(link.token, remote="a")
    assert new.session.method == "link" and new.session.application.client_id == world.client_id
    with pytest.raises(Unauthenticated) as info:
        await world.console.sign_in_with_link(link.token, remote="a")
    assert info.value.message == LINK_FAILED


async def test_a_link_expires_and_names_an_active_application(world: World) -> None:
    other = await world.access.create_application(name="other")
    link = await world.console.create_link(other.client_id)
    assert link.application.name == "other"
    world.clock.now += LINK
    with pytest.raises(Unauthenticated):
        await world.console.sign_in_with_link(link.token, remote="a")
    with pytest.raises(NotFound):
        await world.console.create_link("kr_app_unknown")
    revoked_link = await world.console.create_link(other.client_id)
    await world.store.revoke_application(other.client_id, now=world.clock())
    with pytest.raises(Unauthenticated):  # spent, but it opens nothing
        await world.console.sign_in_with_link(revoked_link.token, remote="a")
    with pytest.raises(NotFound):
        await world.console.create_link(other.client_id)
    await world.store.revoke_application(world.client_id, now=world.clock())
    with pytest.raises(InvalidRequest):
        await world.console.create_link()


async def test_only_digests_of_session_values_and_links_are_stored(world: World) -> None:
    session = (await world.console.sign_in(world.client_id, world.secret, remote="a")).token
    link = (await world.console.create_link()).token
    raw = b"".join(p.read_bytes() for p in world.db.parent.glob("keyrelay.db*"))
    for value in (session, link, session.removeprefix("krc_"), link.removeprefix("krl_")):
        assert value.encode() not in raw


async def test_the_vault_status_lists_the_key_ring_and_rotation_adds_a_key(world: World) -> None:
    before = await world.console.vault_status()
    assert not before.sealed and before.reason is None
    assert [k.status for k in before.keys] == ["active"]
    assert await world.console.rotate_vault() == 0  # no credential stored yet
    after = await world.console.vault_status()
    assert [k.status for k in after.keys] == ["retired", "active"]
    assert after.keys[0].id == before.keys[0].id
