"""The overview, `/console/`: the last hour's traffic from keyrelay's own request log (requests per minute,
error rate, p50/p95 latency, rate-limit hits, upstream failures, the busiest sources) as figures and
server-rendered SVG charts, and what needs the operator's attention (sealed vault, sources to re-authorise)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyrelay.doors.console import charts
from keyrelay.doors.console.session import ConsoleRoute, Signed

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console/")
async def overview(c: Signed) -> Response:
    ov = await c.traffic.overview()
    workspaces = {w.id: w for w in await c.svc.workspaces.list(None)}
    sources = {s.id: s for s in await c.svc.sources.list_sources(c.caller, None)}
    keys = [k for k in await c.svc.access.list_api_keys(None) if k.revoked_at is None]
    needs_reauth = [s for s in sources.values() if s.status == "needs_reauth"]
    return c.page("console/overview.html", nav="overview", ov=ov, workspaces=workspaces, sources=sources,
                  active_keys=len(keys), needs_reauth=needs_reauth, sealed=c.svc.vault.sealed,
                  requests_chart=charts.requests_chart(ov.minutes), latency_chart=charts.latency_chart(ov.minutes))
