"""Admin routes: workspaces, the connector catalog, sources (and the seed-shaped source aliases).

Every route here, reads included, needs an application token: a source's config, upstream URL, policy and
credential names are the operator's business, not an agent's (docs/security.md: tokens, API keys and scopes).
Agents learn what they need from MCP `list_sources`/`describe_source` and the Airbyte-compatible lookups. The
one exception is the Airbyte-style `POST /v1/integrations/sources` (docs/airbyte.md), which a workspace-scoped
token may call for its
own workspace.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.connectors import describe
from keyrelay.errors import Forbidden, InvalidRequest, NotFound
from keyrelay.http.deps import admin, caller, may_write_sources, services
from keyrelay.http.render import source_view, workspace_view
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.model import Caller

router = APIRouter(tags=["admin"])
Svc = Annotated[Services, Depends(services)]
Admin = Annotated[Caller, Depends(admin)]
AnyCaller = Annotated[Caller, Depends(caller)]


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workspace_id: str = Field(min_length=1, max_length=64)
    connector: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(None, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] | None = None


class SourcePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, max_length=64)
    config: dict[str, Any] | None = None
    credentials: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    status: str | None = None


class SeedSource(BaseModel):
    """The Airbyte-style `POST /v1/sources` (sourceDefinitionId names the connector)."""

    workspaceId: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    sourceDefinitionId: str = Field(min_length=1, max_length=64)
    configuration: dict[str, Any] = Field(default_factory=dict)


class IntegrationSource(BaseModel):
    """The Airbyte-style `POST /v1/integrations/sources` (docs/airbyte.md)."""

    source_template_id: str = Field(min_length=1, max_length=64)
    workspace_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    auth_config: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


@router.post("/api/v1/workspaces", status_code=201)
async def create_workspace(body: WorkspaceCreate, svc: Svc, who: Admin) -> Response:
    if not who.every_workspace:  # a new workspace would lie outside a limited application's reach
        raise Forbidden("Creating workspaces needs an application that reaches every workspace")
    return json_response(workspace_view(await svc.workspaces.create(body.name)), 201)


@router.get("/api/v1/workspaces")
async def list_workspaces(svc: Svc, who: Admin, name_contains: str | None = None) -> Response:
    found = await svc.workspaces.list(name_contains)
    return json_response({"data": [workspace_view(w) for w in found if who.can_reach(w.id)]})


@router.get("/api/v1/workspaces/{workspace_id}")
async def get_workspace(workspace_id: str, svc: Svc, who: Admin) -> Response:
    return json_response(workspace_view(await svc.workspaces.get(who, workspace_id)))


@router.delete("/api/v1/workspaces/{workspace_id}", status_code=204)
async def delete_workspace(workspace_id: str, svc: Svc, who: Admin) -> Response:
    await svc.workspaces.delete(who, workspace_id)
    return Response(status_code=204)


@router.get("/api/v1/connectors")
async def list_connectors(svc: Svc, _: Admin) -> Response:
    return json_response({"data": [spec.public() for spec in svc.catalog.values()]})


@router.get("/api/v1/connectors/{name}/entities")
async def connector_entities(name: str, svc: Svc, _: AnyCaller) -> Response:
    """The entities, actions and params of one connector (what execute accepts, and how its lists page)."""
    spec = svc.catalog.get(name)
    if spec is None:
        raise NotFound("Connector not found")
    return json_response({"connector": spec.name, "data": describe.entities(spec)})


@router.post("/api/v1/sources", status_code=201)
async def create_source(body: SourceCreate, svc: Svc, who: Admin) -> Response:
    src = await svc.sources.create_source(who, body.model_dump())
    return json_response(source_view(src), 201)


@router.get("/api/v1/sources")
async def list_sources(svc: Svc, who: Admin, workspace_id: str | None = None) -> Response:
    found = await svc.sources.list_sources(who, workspace_id)
    return json_response({"data": [source_view(s) for s in found]})


@router.get("/api/v1/sources/{source_id}")
async def get_source(source_id: str, svc: Svc, who: Admin) -> Response:
    return json_response(source_view(await svc.sources.get_source(who, source_id)))


@router.patch("/api/v1/sources/{source_id}")
async def patch_source(source_id: str, body: SourcePatch, svc: Svc, who: Admin) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise InvalidRequest("Nothing to change", field="body")
    return json_response(source_view(await svc.sources.update_source(who, source_id, changes)))


@router.delete("/api/v1/sources/{source_id}", status_code=204)
async def delete_source(source_id: str, svc: Svc, who: Admin) -> Response:
    await svc.sources.delete_source(who, source_id)
    return Response(status_code=204)


@router.post("/v1/sources", status_code=201)
async def seed_create_source(body: SeedSource, svc: Svc, who: Admin) -> Response:
    spec = svc.sources.connector_by_any(body.sourceDefinitionId)
    config = dict(body.configuration)
    creds = config.pop("credentials", {})
    src = await svc.sources.create_source(who, {"workspace_id": body.workspaceId, "connector": spec.name,
                                                "name": body.name, "config": config, "credentials": creds})
    view = source_view(src)
    return json_response(view | {"sourceId": src.id, "workspaceId": src.workspace_id,
                                 "sourceType": src.connector}, 201)


@router.post("/v1/integrations/sources", status_code=201)
async def seed_integration_source(body: IntegrationSource, svc: Svc, who: AnyCaller) -> Response:
    """Airbyte's SDK creates connectors with a workspace-scoped token: allowed for its own workspace only."""
    may_write_sources(who)
    spec = svc.sources.connector_by_any(body.source_template_id)
    src = await svc.sources.create_source(who, {"workspace_id": body.workspace_id, "connector": spec.name,
                                                "name": body.name, "config": body.config,
                                                "credentials": body.auth_config})
    return json_response(source_view(src), 201)
