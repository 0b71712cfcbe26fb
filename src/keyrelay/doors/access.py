"""Token routes: application tokens, workspace-scoped tokens and API keys (README.md shows each)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.errors import InvalidRequest
from keyrelay.http.deps import Services, admin, services
from keyrelay.http.render import api_key_view, json_response
from keyrelay.model import Caller, Scope

router = APIRouter(tags=["auth"])
Svc = Annotated[Services, Depends(services)]
Admin = Annotated[Caller, Depends(admin)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    client_id: str = Field(min_length=1, max_length=128)
    client_secret: str = Field(min_length=1, max_length=256)


class ScopedTokenRequest(BaseModel):
    workspace_name: str = Field(min_length=1, max_length=200)


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace_id: str = Field(min_length=1, max_length=64)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    name: str = Field("", max_length=200)
    expires_at: dt.datetime | None = None


@router.post("/api/v1/applications/token")
@router.post("/api/v1/account/applications/token", include_in_schema=False)
async def application_token(body: TokenRequest, svc: Svc) -> Response:
    issued = await svc.access.application_token(body.client_id, body.client_secret)
    return json_response({"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in},
                         headers={"cache-control": "no-store"})


@router.post("/api/v1/embedded/scoped-token")
async def scoped_token(body: ScopedTokenRequest, svc: Svc, who: Admin) -> Response:
    ws = await svc.workspaces.named(body.workspace_name, create=True)
    issued = await svc.access.scoped_token(who, ws)
    return json_response({"token": issued.token, "expires_in": issued.expires_in, "workspace_id": ws.id},
                         headers={"cache-control": "no-store"})


@router.post("/api/v1/api-keys", status_code=201)
async def create_api_key(body: ApiKeyRequest, svc: Svc, _: Admin) -> Response:
    expires = None
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            raise InvalidRequest("expires_at needs a time zone (e.g. 2030-01-01T00:00:00Z)", field="expires_at")
        expires = body.expires_at.timestamp()
    key, secret = await svc.access.create_api_key(workspace_id=body.workspace_id, scopes=frozenset(body.scopes),
                                                  name=body.name, expires_at=expires)
    view: dict[str, Any] = api_key_view(key) | {"key": secret}
    return json_response(view, 201, headers={"cache-control": "no-store"})


@router.get("/api/v1/api-keys")
async def list_api_keys(svc: Svc, _: Admin, workspace_id: str | None = None) -> Response:
    keys = await svc.access.list_api_keys(workspace_id)
    return json_response({"data": [api_key_view(k) for k in keys]})


@router.delete("/api/v1/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, svc: Svc, _: Admin) -> Response:
    await svc.access.revoke_api_key(key_id)
    return Response(status_code=204)
