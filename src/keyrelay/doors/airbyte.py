"""Airbyte-compatible hosted execution API (docs/airbyte.md), for `airbyte-agent-sdk` in hosted mode.

A thin door: connector lookup lists catalog-API sources; execute is `ConnectorService.execute` (the same engine,
policy, request log and shaping as the native execute route); inspect and skill docs come from our definitions.
Errors on these routes use Airbyte's body `{"errors": [{"message", "userPresentableMessage"}]}`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from keyrelay.connectors import skilldocs
from keyrelay.connectors.execute import ACTION_ALIASES, ExecuteRequest
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound, Unprocessable
from keyrelay.http.bodies import ExecuteBody
from keyrelay.http.deps import caller, may_write_sources, need_scope, services
from keyrelay.http.render import dumps, iso
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.model import Caller, Scope, Source, Workspace
from keyrelay.pipeline import approval

PREFIX = "/api/v1/integrations/connectors"


def error_response(err: KeyrelayError) -> Response:
    """The statuses are keyrelay's own (401 bad token, 403 upstream refused the credentials, 404, 422, 429 with
    Retry-After, 502, 504); only the body differs from the other doors."""
    item: dict[str, Any] = {"message": err.message, "userPresentableMessage": err.message, "code": err.code}
    if err.constraint is not None:
        item["constraint"] = err.constraint
    body = {"errors": [item]}
    headers = {"cache-control": "no-store"}
    if err.retry_after is not None:
        headers["retry-after"] = str(err.retry_after)
    return Response(dumps(body), status_code=err.status, media_type="application/json", headers=headers)


def _invalid(exc: RequestValidationError) -> KeyrelayError:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return InvalidRequest("Malformed JSON body", field="body")
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return Unprocessable(f"Invalid {field}: {first.get('msg', 'invalid value')}", field=field)


class AirbyteRoute(APIRoute):
    """Renders this router's errors in Airbyte's shape, leaving every other route's error body alone."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except KeyrelayError as err:
                return error_response(err)
            except RequestValidationError as exc:
                return error_response(_invalid(exc))

        return handler


router = APIRouter(tags=["airbyte"], route_class=AirbyteRoute)
Svc = Annotated[Services, Depends(services)]


async def executor(request: Request) -> Caller:
    """Application tokens, or a workspace-scoped token / API key holding the `execute` scope."""
    who = await caller(request)
    need_scope(who, Scope.EXECUTE)
    return who


Executor = Annotated[Caller, Depends(executor)]



def connector_view(src: Source, spec: ConnectorSpec) -> dict[str, Any]:
    return {"id": src.id, "name": src.name, "workspace_id": src.workspace_id,
            "source_definition_id": spec.definition_id, "status": src.status,
            "summarized_source_template": {"name": spec.title},
            "created_at": iso(src.created_at), "updated_at": iso(src.updated_at)}


async def _connector(svc: Services, who: Caller, connector_id: str) -> tuple[Source, ConnectorSpec]:
    """A catalog-API source the caller may reach; anything else (other tenant, http/file source) is 404."""
    src = await svc.sources.get_source(who, connector_id)
    spec = svc.catalog.get(src.connector)
    if spec is None or not spec.is_catalog_api:
        raise NotFound("Connector not found")
    return src, spec


async def _workspace(svc: Services, who: Caller, name: str | None, workspace_id: str | None) -> Workspace | None:
    """The workspace named in the query (None: unknown or not the caller's; never says which)."""
    try:
        if workspace_id is not None:
            return await svc.workspaces.get(who, workspace_id)
        if name is not None:
            ws = await svc.workspaces.named(name, create=False)
            return ws if who.can_reach(ws.id) else None
        return None if who.workspace_id is None else await svc.workspaces.get(who, who.workspace_id)
    except NotFound:
        return None


@router.get(PREFIX)
async def list_connectors(svc: Svc, who: Executor, workspace_name: str | None = None,
                          customer_name: str | None = None, workspace_id: str | None = None,
                          definition_id: str | None = None) -> Response:
    name = workspace_name if workspace_name is not None else customer_name
    if name is None and workspace_id is None and who.workspace_id is None:  # an application: all it reaches
        found = await svc.sources.list_sources(who, None)
    else:
        ws = await _workspace(svc, who, name, workspace_id)
        found = [] if ws is None else await svc.sources.list_sources(who, ws.id)
    data = []
    for src in found:
        spec = svc.catalog.get(src.connector)
        if spec is None or not spec.is_catalog_api:
            continue
        if definition_id is None or definition_id in (spec.definition_id, spec.name):
            data.append(connector_view(src, spec))
    return json_response({"data": data})


@router.get(PREFIX + "/{connector_id}")
async def get_connector(connector_id: str, svc: Svc, who: Executor) -> Response:
    return json_response(connector_view(*await _connector(svc, who, connector_id)))


@router.delete(PREFIX + "/{connector_id}", status_code=202)
async def delete_connector(connector_id: str, svc: Svc, who: Executor) -> Response:
    """Like Airbyte's create route: application or workspace-scoped tokens (their own workspace) whose application
    holds `admin`; not API keys."""
    may_write_sources(who)
    src, _ = await _connector(svc, who, connector_id)
    await svc.sources.delete_source(who, src.id)
    return Response(status_code=202)


@router.post(PREFIX + "/{connector_id}/execute")
async def execute(connector_id: str, body: ExecuteBody, request: Request, svc: Svc) -> Response:
    # Airbyte truncates long strings only in `list` results (not `search`), and only when asked to
    truncate = not body.skip_truncation and ACTION_ALIASES.get(body.action, body.action) == "list"
    out = await svc.connectors.execute(ExecuteRequest(
        authorization=request.headers.get("authorization"), source_id=connector_id, entity=body.entity,
        action=body.action, params=body.params or {}, select_fields=body.select_fields,
        exclude_fields=body.exclude_fields, skip_truncation=not truncate, path=request.url.path,
        ignore_unknown=True,  # e.g. check() sends {"limit": 1} to every connector's first list action
        wait_seconds=approval.prefer_wait(request.headers.get("prefer")),
    ))
    return json_response(out, 202 if approval.is_parked(out) else 200)  # 202: parked for approval


@router.post(PREFIX + "/{connector_id}/execute/prepare", include_in_schema=False)
async def execute_prepare(connector_id: str) -> Response:
    """Would hand the agent's host the credentials' locations: deliberately not offered."""
    raise NotFound("execute/prepare is not supported: keyrelay executes every call itself")


@router.get(PREFIX + "/{connector_id}/inspect")
async def inspect(connector_id: str, svc: Svc, who: Executor) -> Response:
    src, spec = await _connector(svc, who, connector_id)
    return json_response({
        "connector_id": src.id, "name": src.name, "workspace_id": src.workspace_id,
        "source_definition_id": spec.definition_id, "source_definition_name": spec.title, "status": src.status,
        "docs_skill_id": skilldocs.docs_id(spec), "entities": sorted(spec.entities),
        "warnings": _warnings(src),
    })


def _warnings(src: Source) -> list[str]:
    out = []
    if src.status != "active":
        out.append(f"The connector's status is '{src.status}': calls may fail until an operator fixes it.")
    if not src.policy.allow_writes:
        out.append("Read-only: this connector's policy does not allow writes (create, update, delete).")
    return out


@router.get("/api/v1/skills/docs")
async def skill_docs(svc: Svc, _: Executor, id: str, section: str | None = None) -> Response:
    spec = svc.catalog.get(skilldocs.connector_name(id) or "")
    if spec is None or not spec.is_catalog_api:
        raise NotFound("No such skill docs id")
    return json_response(skilldocs.build(spec, section))
