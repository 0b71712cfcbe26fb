"""Token routes: application tokens, workspace-scoped tokens, API keys, attenuated tokens and applications
(docs/security.md: tokens, API keys and scopes; narrow tokens)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.errors import InvalidRequest
from keyrelay.http.deps import admin, application, services
from keyrelay.http.render import api_key_view, application_view, iso
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.model import Caller, Scope
from keyrelay.pipeline import constraints as cons

router = APIRouter(tags=["auth"])
tokens_router = APIRouter(tags=["tokens"])  # any valid token acts on itself: not an admin route
Svc = Annotated[Services, Depends(services)]
Admin = Annotated[Caller, Depends(admin)]
App = Annotated[Caller, Depends(application)]
NO_STORE = {"cache-control": "no-store"}


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
    constraints: dict[str, Any] | None = None


class AttenuateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    constraints: dict[str, Any] = Field(default_factory=dict)
    expires_in: int | None = Field(None, ge=1, le=10 * 365 * 86400)


Workspaces = Literal["*"] | list[Annotated[str, Field(min_length=1, max_length=200)]]


class ApplicationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    workspaces: Workspaces = Field(max_length=1000)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class ApplicationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspaces: Workspaces | None = Field(None, max_length=1000)
    scopes: list[Scope] | None = Field(None, min_length=1, max_length=len(Scope))


@router.post("/api/v1/applications/token")
@router.post("/api/v1/account/applications/token", include_in_schema=False)
async def application_token(body: TokenRequest, svc: Svc) -> Response:
    issued = await svc.access.application_token(body.client_id, body.client_secret)
    return json_response({"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in},
                         headers=NO_STORE)


@router.post("/api/v1/embedded/scoped-token")
async def scoped_token(body: ScopedTokenRequest, svc: Svc, who: App) -> Response:
    """Any application token for a workspace it reaches; a missing workspace is created only for an application
    holding `admin` over every workspace."""
    ws = await svc.workspaces.named(body.workspace_name, create=who.is_admin and who.every_workspace)
    issued = await svc.access.scoped_token(who, ws)
    return json_response({"token": issued.token, "expires_in": issued.expires_in, "workspace_id": ws.id},
                         headers=NO_STORE)


@router.post("/api/v1/api-keys", status_code=201)
async def create_api_key(body: ApiKeyRequest, svc: Svc, who: Admin) -> Response:
    expires = None
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            raise InvalidRequest("expires_at needs a time zone (e.g. 2030-01-01T00:00:00Z)", field="expires_at")
        expires = body.expires_at.timestamp()
    key, secret = await svc.access.create_api_key(workspace_id=body.workspace_id, scopes=frozenset(body.scopes),
                                                  name=body.name, expires_at=expires, constraints=body.constraints,
                                                  caller=who)
    view: dict[str, Any] = api_key_view(key) | {"key": secret}
    return json_response(view, 201, headers=NO_STORE)


@router.get("/api/v1/api-keys")
async def list_api_keys(svc: Svc, who: Admin, workspace_id: str | None = None) -> Response:
    keys = await svc.access.list_api_keys(workspace_id, caller=who)
    return json_response({"data": [api_key_view(k) for k in keys]})


@router.delete("/api/v1/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, svc: Svc, who: Admin) -> Response:
    await svc.access.revoke_api_key(key_id, caller=who)
    return Response(status_code=204)


# --- attenuated tokens: any valid token is the parent -----------------------------------------------------------

@tokens_router.post("/api/v1/tokens/attenuate", status_code=201)
async def attenuate(body: AttenuateRequest, request: Request, svc: Svc) -> Response:
    """A child of the bearer token, never wider: the parent's constraints and the body's both apply."""
    child = await svc.access.attenuate(request.headers.get("authorization"), body.constraints,
                                       expires_in=body.expires_in)
    return json_response({"token": child.token, "expires_at": iso(child.expires_at),
                          "constraints": cons.view(child.constraints)}, 201, headers=NO_STORE)


@tokens_router.post("/api/v1/tokens/revoke", status_code=204)
async def revoke_token(request: Request, svc: Svc) -> Response:
    """The bearer, an attenuated token, revokes itself and everything derived from it."""
    await svc.access.revoke_derived(request.headers.get("authorization"))
    return Response(status_code=204)


# --- applications --------------------------------------------------------------------------------------------------

@router.post("/api/v1/applications", status_code=201)
async def create_application(body: ApplicationRequest, svc: Svc, who: Admin) -> Response:
    created = await svc.access.grant_application(who, name=body.name, workspaces=body.workspaces,
                                                 scopes=frozenset(body.scopes))
    assert created.application is not None
    return json_response(application_view(created.application) | {"client_secret": created.client_secret}, 201,
                         headers=NO_STORE)


@router.get("/api/v1/applications")
async def list_applications(svc: Svc, who: Admin) -> Response:
    return json_response({"data": [application_view(a) for a in await svc.access.list_applications(caller=who)]})


@router.patch("/api/v1/applications/{application_id}")
async def update_application(application_id: str, body: ApplicationPatch, svc: Svc, who: Admin) -> Response:
    if body.workspaces is None and body.scopes is None:
        raise InvalidRequest("Nothing to change", field="body")
    app = await svc.access.update_application(
        who, application_id, workspaces=body.workspaces,
        scopes=None if body.scopes is None else frozenset(body.scopes))
    return json_response(application_view(app))


@router.delete("/api/v1/applications/{application_id}", status_code=204)
async def revoke_application(application_id: str, svc: Svc, who: Admin) -> Response:
    await svc.access.revoke_application(application_id, caller=who)
    return Response(status_code=204)


@router.post("/api/v1/applications/{application_id}/rotate-secret")
async def rotate_secret(application_id: str, svc: Svc, who: Admin) -> Response:
    secret = await svc.access.rotate_secret(application_id, caller=who)
    return json_response({"id": application_id, "client_secret": secret}, headers=NO_STORE)
