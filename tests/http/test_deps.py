"""The FastAPI dependencies that authenticate admin routes (http/deps.py), with the real authenticator: any
valid token is a caller, only an application token is an admin, and a scope check names the scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from keyrelay.errors import Forbidden
from keyrelay.http.deps import admin, caller, need_scope
from keyrelay.http.responses import install_error_handlers
from keyrelay.model import Caller, CallerKind, Scope
from support.pipeline import Pipeline, assembled


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe


@pytest.fixture
async def http(p: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    api = FastAPI()
    install_error_handlers(api)
    api.state.services = SimpleNamespace(authenticator=p.authenticator)  # what `services()` reads from app state

    @api.get("/any")
    async def any_route(who: Caller = Depends(caller)) -> dict[str, Any]:
        return {"id": who.id}

    @api.get("/admin")
    async def admin_route(who: Caller = Depends(admin)) -> dict[str, Any]:
        return {"id": who.id}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
        yield client


async def test_any_valid_token_is_a_caller(p: Pipeline, http: httpx.AsyncClient) -> None:
    r = await http.get("/any", headers={"Authorization": p.auth})
    assert r.status_code == 200 and r.json()["id"].startswith("key:")
    for value in (None, "Bearer kr_" + "x" * 43, "Basic abc"):
        r = await http.get("/any", headers={} if value is None else {"Authorization": value})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


async def test_only_an_application_token_passes_the_admin_dependency(p: Pipeline, http: httpx.AsyncClient) -> None:
    r = await http.get("/admin", headers={"Authorization": p.auth})  # an API key with every scope
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    await p.access.create_application(name="a", client_id="app", client_secret="s3cret-abc")
    token = (await p.access.application_token("app", "s3cret-abc")).token
    r = await http.get("/admin", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["id"].startswith("app:")


def test_need_scope_names_the_missing_scope() -> None:
    who = Caller(kind=CallerKind.API_KEY, id="key:k", workspace_id="w", scopes=frozenset({Scope.FILES}))
    need_scope(who, Scope.FILES)
    with pytest.raises(Forbidden, match="'logs'"):
        need_scope(who, Scope.LOGS)
