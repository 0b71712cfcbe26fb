"""AccessService on a real SQLite database: what the service itself refuses, whichever door calls it (the routes
check some of it too, in doors/deps.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyrelay.errors import Forbidden, InvalidRequest, NotFound
from keyrelay.manage.access import OPERATOR, AccessService
from keyrelay.model import Caller, CallerKind, Constraints, Scope, Workspace
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from keyrelay.store.workspaces import SqlWorkspaceStore
from support.db import migrated_engine

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
