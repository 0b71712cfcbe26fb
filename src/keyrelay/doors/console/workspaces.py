"""Workspaces (one per end customer): the list with each one's sources, keys and last hour's requests, a
workspace's own page, create, and delete behind a confirmation page. A limited application sees the workspaces
it reaches only; creating one needs an application that reaches every workspace (as the admin API)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Response

from keyrelay.doors.console.session import Console, ConsoleRoute, Managing, redirect
from keyrelay.errors import KeyrelayError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
NOTICES = {"deleted": "The workspace, its sources and its API keys were deleted."}


async def _list(c: Console, *, status: int = 200, error: str | None = None, name: str = "",
                notice: str | None = None) -> Response:
    workspaces = await c.workspaces()
    sources = await c.svc.sources.list_sources(c.caller, None)
    keys = [k for k in await c.svc.access.list_api_keys(None, caller=c.caller) if k.revoked_at is None]
    traffic = await c.traffic.sources(workspace_ids=c.reach)
    requests: Counter[str] = Counter()
    for s in sources:
        if s.id in traffic:
            requests[s.workspace_id] += traffic[s.id].tally.requests
    return c.page("console/workspaces.html", nav="workspaces", status=status, workspaces=workspaces,
                  source_counts=Counter(s.workspace_id for s in sources),
                  key_counts=Counter(k.workspace_id for k in keys),
                  requests=requests, error=error, name=name, notice=notice)


@router.get("/console/workspaces")
async def workspaces_page(c: Managing, done: str | None = None) -> Response:
    return await _list(c, notice=NOTICES.get(done or ""))


@router.post("/console/workspaces")
async def create_workspace(c: Managing) -> Response:
    form = await c.form("workspace.create")
    try:
        c.need_every_workspace("Creating a workspace")  # it would lie outside a limited application's reach
        ws = await c.svc.workspaces.create(form.get("name"))
    except KeyrelayError as err:
        return await _list(c, status=err.status, error=err.message, name=form.get("name"))
    return redirect(f"/console/workspaces/{ws.id}?done=created")


@router.get("/console/workspaces/{workspace_id}")
async def workspace_page(c: Managing, workspace_id: str, done: str | None = None) -> Response:
    ws = await c.svc.workspaces.get(c.caller, workspace_id)
    sources = await c.svc.sources.list_sources(c.caller, ws.id)
    keys = await c.svc.access.list_api_keys(ws.id, caller=c.caller)
    traffic = await c.traffic.sources(source_ids=[s.id for s in sources])
    notice = "Workspace created. Add a source for it, then an API key for its agent." if done == "created" else None
    return c.page("console/workspace.html", nav="workspaces", ws=ws, sources=sources, keys=keys, traffic=traffic,
                  notice=notice)


@router.get("/console/workspaces/{workspace_id}/delete")
async def confirm_delete(c: Managing, workspace_id: str) -> Response:
    ws = await c.svc.workspaces.get(c.caller, workspace_id)
    sources = await c.svc.sources.list_sources(c.caller, ws.id)
    keys = [k for k in await c.svc.access.list_api_keys(ws.id, caller=c.caller) if k.revoked_at is None]
    consequences = [f"Its {len(sources)} source(s) and their stored credentials are deleted.",
                    f"Its {len(keys)} active API key(s) stop working: agents using them are refused at once."]
    return c.page("console/confirm.html", nav="workspaces", title=f"Delete workspace {ws.name}?",
                  what=ws.name, consequences=consequences, action=f"/console/workspaces/{ws.id}/delete",
                  purpose=f"workspace.delete:{ws.id}", button="Delete workspace", back=f"/console/workspaces/{ws.id}")


@router.post("/console/workspaces/{workspace_id}/delete")
async def delete_workspace(c: Managing, workspace_id: str) -> Response:
    await c.form(f"workspace.delete:{workspace_id}")
    await c.svc.workspaces.delete(c.caller, workspace_id)
    return redirect("/console/workspaces?done=deleted")
