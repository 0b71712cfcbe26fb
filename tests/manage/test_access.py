"""AccessService (manage/access.py) with an injected clock, on SQLite and PostgreSQL: token lifetimes, API key
checks, the bootstrap application, revoking applications and rotating their secret. Revocations must hold at once
here, even with a token cache far longer than the test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated
from keyrelay.manage.access import APP_TOKEN_SECONDS, OPERATOR, WORKSPACE_TOKEN_SECONDS, AccessService
from keyrelay.model import Caller, CallerKind, Constraints, Scope, Workspace
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from support.db import migrated_engine
from support.pipeline import Pipeline, assembled


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    access: AccessService
    authn: Authenticator
    workspaces: SqlWorkspaceStore
    clock: Clock


@pytest.fixture
async def env(database_url: str | None, tmp_path: Path) -> AsyncIterator[Env]:
    async with migrated_engine(database_url, tmp_path) as engine:
        yield _env(engine)


def _env(engine: AsyncEngine) -> Env:
    clock, hasher = Clock(), TokenHasher(secrets.token_bytes(32))
    store = SqlAccessStore(engine)
    authn = Authenticator(store, hasher, clock, cache_seconds=3600)  # only a cleared cache can refuse at once
    workspaces = SqlWorkspaceStore(engine)
    return Env(AccessService(auth=store, workspaces=workspaces, hasher=hasher, authenticator=authn, clock=clock),
               authn, workspaces, clock)


async def _app(env: Env) -> tuple[str, str]:
    created = await env.access.create_application(name="ops")
    assert created.client_secret is not None
    return created.client_id, created.client_secret


async def test_token_lifetimes(env: Env) -> None:
    client_id, secret = await _app(env)
    app = await env.access.application_token(client_id, secret)
    ws = await env.workspaces.create_workspace(id="w1", name="w1", now=env.clock())
    caller = await env.authn.authenticate(f"Bearer {app.token}")
    scoped = await env.access.scoped_token(caller, ws)
    assert (app.expires_in, scoped.expires_in) == (APP_TOKEN_SECONDS, WORKSPACE_TOKEN_SECONDS) == (900, 1200)
    assert (await env.authn.authenticate(f"Bearer {scoped.token}")).kind is CallerKind.WORKSPACE
    env.clock.now += APP_TOKEN_SECONDS
    with pytest.raises(Unauthenticated):
        await env.authn.authenticate(f"Bearer {app.token}")
    await env.authn.authenticate(f"Bearer {scoped.token}")
    env.clock.now += WORKSPACE_TOKEN_SECONDS - APP_TOKEN_SECONDS
    with pytest.raises(Unauthenticated):
        await env.authn.authenticate(f"Bearer {scoped.token}")


async def test_application_token_needs_the_right_secret(env: Env) -> None:
    client_id, secret = await _app(env)
    for cid, sec in ((client_id, secret + "x"), ("kr_app_unknown", secret), (client_id, "")):
        with pytest.raises(Unauthenticated):
            await env.access.application_token(cid, sec)


async def test_api_keys_are_checked_and_expire(env: Env) -> None:
    ws = await env.workspaces.create_workspace(id="w1", name="w1", now=env.clock())
    with pytest.raises(NotFound):
        await env.access.create_api_key(workspace_id="nope", scopes=frozenset({Scope.PROXY}), name="", expires_at=None)
    with pytest.raises(InvalidRequest):
        await env.access.create_api_key(workspace_id=ws.id, scopes=frozenset(), name="", expires_at=None)
    with pytest.raises(InvalidRequest):
        await env.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="",
                                        expires_at=env.clock())
    key, secret = await env.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="",
                                                  expires_at=env.clock() + 60)
    assert (await env.authn.authenticate(f"Bearer {secret}")).scopes == frozenset({Scope.PROXY})
    env.clock.now += 60
    with pytest.raises(Unauthenticated):
        await env.authn.authenticate(f"Bearer {secret}")
    assert key.hint == secret[:7]


async def test_revoking_a_key_holds_at_once(env: Env) -> None:
    ws = await env.workspaces.create_workspace(id="w1", name="w1", now=env.clock())
    key, secret = await env.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="",
                                                  expires_at=None)
    await env.authn.authenticate(f"Bearer {secret}")  # cached for an hour
    await env.access.revoke_api_key(key.id)
    with pytest.raises(Unauthenticated):
        await env.authn.authenticate(f"Bearer {secret}")
    with pytest.raises(NotFound):
        await env.access.revoke_api_key("nope")


async def test_the_bootstrap_application_is_created_once(env: Env) -> None:
    first = await env.access.ensure_bootstrap(None, None)
    assert first is not None and first.client_secret
    assert await env.access.ensure_bootstrap(None, None) is None
    assert len(await env.access.list_applications()) == 1
    supplied = await env.access.ensure_bootstrap("kr_app_ops", "operator-secret-1")
    assert supplied is not None and supplied.client_secret is None  # the operator knows it
    assert await env.access.ensure_bootstrap("kr_app_ops", "operator-secret-1") is None


async def test_revoking_an_application_refuses_its_tokens_at_once(env: Env) -> None:
    client_id, secret = await _app(env)
    other_id, other_secret = await _app(env)
    app = await env.access.application_token(client_id, secret)
    other = await env.access.application_token(other_id, other_secret)
    ws = await env.workspaces.create_workspace(id="w1", name="w1", now=env.clock())
    scoped = await env.access.scoped_token(await env.authn.authenticate(f"Bearer {app.token}"), ws)
    await env.authn.authenticate(f"Bearer {scoped.token}")
    await env.access.revoke_application(client_id)
    for token in (app.token, scoped.token):
        with pytest.raises(Unauthenticated):
            await env.authn.authenticate(f"Bearer {token}")
    with pytest.raises(Unauthenticated):
        await env.access.application_token(client_id, secret)
    await env.authn.authenticate(f"Bearer {other.token}")
    await env.access.revoke_application(client_id)  # idempotent
    with pytest.raises(NotFound):
        await env.access.revoke_application("kr_app_unknown")
    listed = {a.client_id: a for a in await env.access.list_applications()}
    assert listed[client_id].revoked_at is not None and listed[other_id].revoked_at is None


async def test_rotating_a_secret(env: Env) -> None:
    client_id, secret = await _app(env)
    kept = await env.access.application_token(client_id, secret)
    await env.authn.authenticate(f"Bearer {kept.token}")
    new = await env.access.rotate_secret(client_id, revoke_tokens=False)
    with pytest.raises(Unauthenticated):
        await env.access.application_token(client_id, secret)
    await env.authn.authenticate(f"Bearer {kept.token}")  # kept
    newer = await env.access.rotate_secret(client_id)  # the default revokes what was minted
    with pytest.raises(Unauthenticated):
        await env.authn.authenticate(f"Bearer {kept.token}")
    with pytest.raises(Unauthenticated):
        await env.access.application_token(client_id, new)
    fresh = await env.access.application_token(client_id, newer)
    await env.authn.authenticate(f"Bearer {fresh.token}")
    with pytest.raises(NotFound):
        await env.access.rotate_secret("kr_app_unknown")
    await env.access.revoke_application(client_id)
    with pytest.raises(InvalidRequest):
        await env.access.rotate_secret(client_id)


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe


async def _dump(p: Pipeline) -> str:
    """Every value of every access table, as text (to look for plaintext secrets)."""
    out = []
    async with p.engine.connect() as conn:
        for table in ("applications", "tokens", "api_keys"):
            out += [repr(tuple(r)) for r in await conn.execute(sa.text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


async def test_bootstrap_with_operator_credentials_creates_the_application_once(p: Pipeline) -> None:
    made = await p.access.ensure_bootstrap("ops-admin", "ops-secret-123")
    assert made is not None and made.client_id == "ops-admin" and made.client_secret is None  # not shown back
    assert await p.access.ensure_bootstrap("ops-admin", "ops-secret-123") is None
    token = await p.access.application_token("ops-admin", "ops-secret-123")
    caller = await p.authenticator.authenticate(f"Bearer {token.token}")
    assert caller.is_admin and caller.workspace_id is None and token.expires_in == APP_TOKEN_SECONDS


async def test_bootstrap_without_credentials_generates_a_secret_only_when_there_is_no_application(
        p: Pipeline) -> None:
    made = await p.access.ensure_bootstrap(None, None)
    assert made is not None and made.client_secret and made.client_secret.startswith("krs_")
    assert await p.access.ensure_bootstrap(None, None) is None
    assert made.client_secret not in await _dump(p)  # only its digest is stored


@pytest.mark.parametrize("client_id,secret", [("app", "wrong"), ("unknown", "s3cret-abc")])
async def test_wrong_client_credentials_are_refused_alike(p: Pipeline, client_id: str, secret: str) -> None:
    await p.access.create_application(name="a", client_id="app", client_secret="s3cret-abc")
    with pytest.raises(Unauthenticated) as err:
        await p.access.application_token(client_id, secret)
    assert err.value.message == "Invalid client credentials"


async def test_an_application_token_expires(p: Pipeline) -> None:
    await p.access.create_application(name="a", client_id="app", client_secret="s3cret-abc")
    token = (await p.access.application_token("app", "s3cret-abc")).token
    p.clock.advance(APP_TOKEN_SECONDS - 1)
    await p.authenticator.authenticate(f"Bearer {token}")
    p.clock.advance(1)
    with pytest.raises(Unauthenticated):
        await p.authenticator.authenticate(f"Bearer {token}")


async def test_a_scoped_token_reaches_one_workspace_until_it_expires(p: Pipeline) -> None:
    await p.access.create_application(name="a", client_id="app", client_secret="s3cret-abc")
    app_token = await p.access.application_token("app", "s3cret-abc")
    admin = await p.authenticator.authenticate(f"Bearer {app_token.token}")
    ws = await p.workspaces.create("tenant")
    issued = await p.access.scoped_token(admin, ws)
    assert issued.workspace_id == ws.id and issued.expires_in == WORKSPACE_TOKEN_SECONDS
    caller = await p.authenticator.authenticate(f"Bearer {issued.token}")
    assert caller.kind is CallerKind.WORKSPACE and caller.workspace_id == ws.id and not caller.is_admin
    assert caller.can_reach(ws.id) and not caller.can_reach(p.workspace_id)
    p.clock.advance(WORKSPACE_TOKEN_SECONDS)
    with pytest.raises(Unauthenticated):
        await p.authenticator.authenticate(f"Bearer {issued.token}")


async def test_an_api_key_carries_its_scopes_and_only_its_digest_is_stored(p: Pipeline) -> None:
    key, secret = await p.access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.FILES}),
                                                name="reader", expires_at=p.clock.now + 60)
    assert key.hint == secret[:7] and secret.startswith("kr_")
    caller = await p.authenticator.authenticate(f"Bearer {secret}")
    assert caller.scopes == frozenset({Scope.FILES}) and caller.workspace_id == p.workspace_id
    assert secret not in await _dump(p)
    assert [k.id for k in await p.access.list_api_keys(p.workspace_id) if k.name == "reader"] == [key.id]
    p.clock.advance(60)
    with pytest.raises(Unauthenticated):
        await p.authenticator.authenticate(f"Bearer {secret}")


@pytest.mark.parametrize("how", ["unknown workspace", "expired", "no scopes"])
async def test_an_api_key_request_that_cannot_be_honoured_is_refused(p: Pipeline, how: str) -> None:
    ws = "nope" if how == "unknown workspace" else p.workspace_id
    expires = p.clock.now if how == "expired" else None
    scopes = frozenset() if how == "no scopes" else frozenset({Scope.PROXY})
    with pytest.raises(NotFound if how == "unknown workspace" else InvalidRequest):
        await p.access.create_api_key(workspace_id=ws, scopes=scopes, name="k", expires_at=expires)


async def test_revoking_a_key_takes_effect_at_once_despite_the_token_cache(p: Pipeline) -> None:
    store = SqlAccessStore(p.engine)
    hasher = TokenHasher(b"k" * 32)
    cached = Authenticator(store, hasher, p.clock, cache_seconds=3600)
    access = AccessService(auth=store, workspaces=SqlWorkspaceStore(p.engine), hasher=hasher, authenticator=cached,
                           clock=p.clock)
    key, secret = await access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.PROXY}),
                                              name="k", expires_at=None)
    await cached.authenticate(f"Bearer {secret}")  # now cached for an hour
    await access.revoke_api_key(key.id)
    with pytest.raises(Unauthenticated):
        await cached.authenticate(f"Bearer {secret}")
    with pytest.raises(NotFound):
        await access.revoke_api_key("no-such-key")


NOW = 1_000.0

@pytest.fixture
async def access(tmp_path: Path) -> AsyncIterator[tuple[AccessService, Workspace]]:
    async with migrated_engine(None, tmp_path) as engine:
        store, workspaces = SqlAccessStore(engine), SqlWorkspaceStore(engine)
        hasher = TokenHasher(b"k" * 32)
        authn = Authenticator(store, hasher, lambda: NOW, cache_seconds=0)
        ws = await workspaces.create_workspace(id="w-1", name="acme", now=NOW)
        yield AccessService(auth=store, workspaces=workspaces, hasher=hasher, authenticator=authn,
                            clock=lambda: NOW), ws

def _caller(kind: CallerKind, **kw: object) -> Caller:
    values: dict[str, object] = {"id": "app:a1", "workspace_id": None, "scopes": frozenset(Scope)} | kw
    return Caller(kind=kind, **values)  # type: ignore[arg-type]

async def test_only_unconstrained_applications_mint_scoped_tokens(access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    narrowed = _caller(CallerKind.APPLICATION, constraints=(Constraints(methods=frozenset({"GET"})),))
    key = _caller(CallerKind.API_KEY, id="key:k1", workspace_id=ws.id)
    for who in (narrowed, key):
        with pytest.raises(Forbidden):
            await svc.scoped_token(who, ws)
    with pytest.raises(NotFound):
        await svc.scoped_token(_caller(CallerKind.APPLICATION, workspaces=frozenset({"w-2"})), ws)
    issued = await svc.scoped_token(_caller(CallerKind.APPLICATION, workspaces=frozenset({ws.id})), ws)
    assert issued.token.startswith("krw_") and issued.workspace_id == ws.id

async def test_management_needs_admin_without_constraints(access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    no_admin = _caller(CallerKind.APPLICATION, scopes=frozenset({Scope.PROXY}))
    narrowed = _caller(CallerKind.APPLICATION, constraints=(Constraints(),))
    for who in (no_admin, narrowed):
        with pytest.raises(Forbidden):
            await svc.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="", expires_at=None,
                                     caller=who)
        with pytest.raises(Forbidden):
            await svc.list_applications(caller=who)
        with pytest.raises(Forbidden):
            await svc.grant_application(who, name="x", workspaces=[ws.id], scopes=frozenset({Scope.PROXY}))
    made = await svc.grant_application(OPERATOR, name="x", workspaces=["acme"], scopes=frozenset({Scope.PROXY}))
    assert made.application is not None and made.application.workspaces == frozenset({ws.id})
    with pytest.raises(InvalidRequest):
        await svc.grant_application(OPERATOR, name="x", workspaces=[], scopes=frozenset({Scope.PROXY}))

async def test_attenuating_keeps_the_parents_chain(access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    key, secret = await svc.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="",
                                           expires_at=NOW + 100, constraints={"methods": ["GET"]})
    child = await svc.attenuate(f"Bearer {secret}", {"paths": ["/a"]}, expires_in=500)
    assert child.expires_at == NOW + 100  # no later than the parent
    grand = await svc.attenuate(f"Bearer {child.token}", {"sources": ["s"]})
    caller = await svc._authn.authenticate(f"Bearer {grand.token}")
    assert [c.methods for c in caller.constraints] == [frozenset({"GET"}), None, None]
    assert caller.constraints[1].paths == ("/a",) and caller.constraints[2].sources == frozenset({"s"})
    assert caller.id == f"key:{key.id}" and caller.workspace_id == ws.id
    assert caller.constraints[0].budget is None
    with pytest.raises(InvalidRequest):
        await svc.attenuate(f"Bearer {secret}", {}, expires_in=0)


async def test_granting_never_exceeds_the_granters_own_power(access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    await svc._workspaces.create_workspace(id="w-2", name="beta", now=NOW)
    limited = _caller(CallerKind.APPLICATION, workspaces=frozenset({ws.id}))  # every scope, one workspace
    with pytest.raises(Forbidden):  # "*" needs a granter reaching every workspace
        await svc.grant_application(limited, name="x", workspaces="*", scopes=frozenset({Scope.PROXY}))
    for ref in ("w-2", "beta"):  # a workspace the granter does not reach, by id or name, looks unknown
        with pytest.raises(NotFound):
            await svc.grant_application(limited, name="x", workspaces=[ws.id, ref], scopes=frozenset({Scope.PROXY}))
    narrow = _caller(CallerKind.APPLICATION, scopes=frozenset({Scope.ADMIN, Scope.PROXY}))
    with pytest.raises(Forbidden):  # a scope the granter does not hold
        await svc.grant_application(narrow, name="x", workspaces="*", scopes=frozenset({Scope.PROXY, Scope.LOGS}))
    assert [a.name for a in await svc.list_applications(caller=OPERATOR)] == []
    made = await svc.grant_application(limited, name="ok", workspaces=[ws.id], scopes=frozenset({Scope.PROXY}))
    assert made.application is not None and made.application.workspaces == frozenset({ws.id})


async def test_api_keys_hold_data_scopes_in_a_reachable_workspace_only(
        access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    await svc._workspaces.create_workspace(id="w-2", name="beta", now=NOW)
    for scope in (Scope.ADMIN, Scope.APPROVE):
        with pytest.raises(InvalidRequest):
            await svc.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY, scope}), name="k",
                                     expires_at=None)
    limited = _caller(CallerKind.APPLICATION, workspaces=frozenset({ws.id}))
    with pytest.raises(NotFound):
        await svc.create_api_key(workspace_id="w-2", scopes=frozenset({Scope.PROXY}), name="k", expires_at=None,
                                 caller=limited)
    assert await svc.list_api_keys(None, caller=OPERATOR) == []
    key, _ = await svc.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="k",
                                      expires_at=None, caller=limited)
    assert key.workspace_id == ws.id


async def test_an_application_spanning_an_unreached_workspace_is_hidden(
        access: tuple[AccessService, Workspace]) -> None:
    svc, ws = access
    await svc._workspaces.create_workspace(id="w-2", name="beta", now=NOW)
    both = await svc.grant_application(OPERATOR, name="both", workspaces=[ws.id, "w-2"],
                                       scopes=frozenset({Scope.PROXY}))
    assert both.application is not None
    limited = _caller(CallerKind.APPLICATION, workspaces=frozenset({ws.id}))
    assert [a.name for a in await svc.list_applications(caller=limited)] == []
    with pytest.raises(NotFound):
        await svc.revoke_application(both.client_id, caller=limited)
    with pytest.raises(NotFound):
        await svc.update_application(limited, both.application.id, scopes=frozenset({Scope.PROXY}))
    assert [a.name for a in await svc.list_applications(caller=OPERATOR)] == ["both"]
