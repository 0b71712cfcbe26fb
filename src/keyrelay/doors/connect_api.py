"""Connect's admin routes (application token; docs/connect.md): connect sessions and the operator's OAuth clients.

A session's token is in the create answer only (inside `token` and `url`); reads never show it. An OAuth client's
secret is write-only: reads say only that it is set.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.http.deps import admin, services
from keyrelay.http.render import iso
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.manage.connect import ConnectService, ConnectSession
from keyrelay.manage.oauth_clients import OAuthClient, OAuthClientService
from keyrelay.model import Caller

router = APIRouter(tags=["connect"])
Svc = Annotated[Services, Depends(services)]
Admin = Annotated[Caller, Depends(admin)]
CALLBACK_PATH = "/connect/oauth/callback"


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace: str = Field(min_length=1, max_length=200, description="workspace id or name (created if missing)")
    connectors: list[str] | None = Field(None, max_length=50)
    source_id: str | None = Field(None, max_length=64, description="reconnect: replace this source's credentials")
    redirect_url: str | None = Field(None, max_length=2048)
    allowed_origins: list[str] | None = Field(None, max_length=20)
    config: dict[str, dict[str, Any]] | None = None
    expires_in: int | None = None


class OAuthClientPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str = Field(min_length=1, max_length=1024)
    client_secret: str = Field(min_length=1, max_length=4096)
    scopes: list[str] | None = Field(None, max_length=50)
    authorize_url: str | None = Field(None, max_length=2048)
    token_url: str | None = Field(None, max_length=2048)


def base_url(request: Request, svc: Services) -> str:
    """Where browsers reach keyrelay: KEYRELAY_PUBLIC_URL, else the address this request came to."""
    return svc.settings.public_url or f"{request.url.scheme}://{request.url.netloc}"


def connect_service(svc: Services) -> ConnectService:
    return cast(ConnectService, svc.extras["connect"])


def clients_service(svc: Services) -> OAuthClientService:
    return cast(OAuthClientService, svc.extras["oauth_clients"])


def session_view(s: ConnectSession) -> dict[str, Any]:
    return {
        "id": s.id, "workspace_id": s.workspace_id, "connectors": list(s.connectors), "source_id": s.source_id,
        "redirect_url": s.redirect_url, "allowed_origins": list(s.allowed_origins), "config": dict(s.config),
        "status": s.status, "connected_source_id": s.connected_source_id, "created_at": iso(s.created_at),
        "expires_at": iso(s.expires_at), "used_at": iso(s.used_at),
    }


def client_view(c: OAuthClient, *, redirect_uri: str) -> dict[str, Any]:
    return {
        "connector": c.connector, "client_id": c.client_id, "client_secret": "set",
        "scopes": None if c.scopes is None else list(c.scopes), "authorize_url": c.authorize_url,
        "token_url": c.token_url, "redirect_uri": redirect_uri, "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
    }


@router.post("/api/v1/connect/sessions", status_code=201)
async def create_session(body: SessionCreate, request: Request, svc: Svc, who: Admin) -> Response:
    made = await connect_service(svc).create(who, body.model_dump(exclude_none=True))
    view = session_view(made.session)
    return json_response({**view, "token": made.token, "url": f"{base_url(request, svc)}/connect/{made.token}"}, 201)


@router.get("/api/v1/connect/sessions")
async def list_sessions(svc: Svc, who: Admin, workspace_id: str | None = None, status: str | None = None) -> Response:
    found = await connect_service(svc).list_sessions(who, workspace_id=workspace_id, status=status)
    return json_response({"data": [session_view(s) for s in found]})


@router.get("/api/v1/connect/sessions/{session_id}")
async def get_session(session_id: str, svc: Svc, who: Admin) -> Response:
    return json_response(session_view(await connect_service(svc).get(who, session_id)))


@router.delete("/api/v1/connect/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, svc: Svc, who: Admin) -> Response:
    await connect_service(svc).delete(who, session_id)
    return Response(status_code=204)


@router.put("/api/v1/oauth-clients/{connector}")
async def put_client(connector: str, body: OAuthClientPut, request: Request, svc: Svc, _: Admin) -> Response:
    client = await clients_service(svc).put(connector, body.model_dump(exclude_none=True))
    return json_response(client_view(client, redirect_uri=base_url(request, svc) + CALLBACK_PATH))


@router.get("/api/v1/oauth-clients")
async def list_clients(request: Request, svc: Svc, _: Admin) -> Response:
    callback = base_url(request, svc) + CALLBACK_PATH
    found = await clients_service(svc).list_clients()
    return json_response({"data": [client_view(c, redirect_uri=callback) for c in found]})


@router.get("/api/v1/oauth-clients/{connector}")
async def get_client(connector: str, request: Request, svc: Svc, _: Admin) -> Response:
    client = await clients_service(svc).get(connector)
    return json_response(client_view(client, redirect_uri=base_url(request, svc) + CALLBACK_PATH))


@router.delete("/api/v1/oauth-clients/{connector}", status_code=204)
async def delete_client(connector: str, svc: Svc, _: Admin) -> Response:
    await clients_service(svc).delete(connector)
    return Response(status_code=204)
