"""Applications, tokens and API keys (manage/access.py) on the real store and authenticator: what each token
may do, how long it lives, that only digests are stored, and that revocation takes effect at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from keyrelay.errors import InvalidRequest, NotFound, Unauthenticated
from keyrelay.manage.access import APP_TOKEN_SECONDS, WORKSPACE_TOKEN_SECONDS, AccessService
from keyrelay.model import CallerKind, Scope
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from support.pipeline import Pipeline, assembled


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
