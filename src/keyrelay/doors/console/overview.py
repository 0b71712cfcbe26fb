"""The overview, `/console/`: the last hour's traffic from keyrelay's own request log (requests per minute,
error rate, p50/p95 latency, rate-limit hits, upstream failures, the busiest sources) as figures and
server-rendered SVG charts, and what needs the operator's attention (sealed vault, sources to re-authorise). Every
figure counts the workspaces the signed-in application reaches only. It needs `admin`; an application holding
`logs` but not `admin` is sent to the live logs instead."""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyrelay.doors.console import charts
from keyrelay.doors.console.session import NEEDS_ADMIN, ConsoleRoute, Signed, redirect
from keyrelay.errors import Forbidden
from keyrelay.model import Scope

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console/")
async def overview(c: Signed) -> Response:
    if not c.caller.is_admin:  # where signing in lands: the one page this application may use, else why not
        if Scope.LOGS in c.caller.scopes:
            return redirect("/console/logs")
        raise Forbidden(NEEDS_ADMIN)
    ov = await c.traffic.overview(workspace_ids=c.reach)
    workspaces = {w.id: w for w in await c.workspaces()}
    sources = {s.id: s for s in await c.svc.sources.list_sources(c.caller, None)}
    keys = [k for k in await c.svc.access.list_api_keys(None, caller=c.caller) if k.revoked_at is None]
    needs_reauth = [s for s in sources.values() if s.status == "needs_reauth"]
    return c.page("console/overview.html", nav="overview", ov=ov, workspaces=workspaces, sources=sources,
                  active_keys=len(keys), needs_reauth=needs_reauth, sealed=c.svc.vault.sealed,
                  requests_chart=charts.requests_chart(ov.minutes), latency_chart=charts.latency_chart(ov.minutes))
