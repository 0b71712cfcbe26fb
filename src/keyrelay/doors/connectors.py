"""Declarative connector doors: stream query, execute and instance lookup, streams list (docs/connectors.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.connectors.execute import ExecuteRequest
from keyrelay.errors import NotFound
from keyrelay.http.bodies import ExecuteBody
from keyrelay.http.deps import caller, need_scope, services
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.model import Caller, Scope
from keyrelay.pipeline import approval

router = APIRouter(tags=["connectors"])
Svc = Annotated[Services, Depends(services)]
AnyCaller = Annotated[Caller, Depends(caller)]


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stream: str = Field(min_length=1, max_length=128)
    filters: dict[str, Any] | None = None
    page_token: str | None = Field(None, max_length=4096)



@router.post("/v1/proxy/sources/{source_id}/query")
async def query(source_id: str, body: QueryBody, request: Request, svc: Svc) -> Response:
    out = await svc.connectors.query(authorization=request.headers.get("authorization"), source_id=source_id,
                                     stream=body.stream, filters=body.filters, page_token=body.page_token,
                                     path=request.url.path)
    return json_response(out)


@router.get("/api/v1/sources/{source_id}/streams")
async def streams(source_id: str, svc: Svc, who: AnyCaller) -> Response:
    """The stream query's companion: needs the `query` scope; shows the connector's streams, nothing of the
    source's config or credentials."""
    need_scope(who, Scope.QUERY)
    src = await svc.sources.get_source(who, source_id)
    spec = svc.catalog[src.connector]
    return json_response({"data": svc.connectors.streams(spec)})


def execute_request(source_id: str, body: ExecuteBody, request: Request) -> ExecuteRequest:
    return ExecuteRequest(
        authorization=request.headers.get("authorization"), source_id=source_id, entity=body.entity,
        action=body.action, params=body.params or {}, select_fields=body.select_fields,
        exclude_fields=body.exclude_fields, skip_truncation=body.skip_truncation, use_cache=not body.no_cache,
        path=request.url.path, wait_seconds=approval.prefer_wait(request.headers.get("prefer")),
    )


@router.post("/api/v1/connectors/instances/{source_id}/execute")
async def execute(source_id: str, body: ExecuteBody, request: Request, svc: Svc) -> Response:
    """Execute one action; a call parked for approval answers 202 `{"approval": {...}}` (docs/approvals.md)."""
    out = await svc.connectors.execute(execute_request(source_id, body, request))
    if approval.is_parked(out):
        return json_response(out, 202, headers={"location": out["approval"]["poll_url"]})
    return json_response(out)


@router.get("/api/v1/connectors/instances_for_user")
async def instances_for_user(svc: Svc, who: AnyCaller, external_user_id: str,
                             definition_id: str | None = None) -> Response:
    """The instance lookup of Airbyte-style clients: any token, its own workspace only, and only each source's id
    and name (docs/security.md: tokens, API keys and scopes)."""
    try:
        ws = await svc.workspaces.named(external_user_id, create=False)
    except NotFound:
        return json_response({"instances": []})
    if not who.can_reach(ws.id):
        return json_response({"instances": []})
    found = await svc.sources.list_sources(who, ws.id)
    names = {n for n, spec in svc.catalog.items() if definition_id in (None, spec.definition_id, spec.name)}
    return json_response({"instances": [{"id": s.id, "name": s.name} for s in found if s.connector in names]})
