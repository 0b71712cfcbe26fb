"""Connect links (docs/connect.md): a connect session for an end customer to connect an account to a workspace
themselves, or to reconnect a source whose credentials the upstream refused (`needs_reauth`).

Both are `ConnectService.create` with the session's Caller, as `POST /api/v1/connect/sessions`: the service
judges the connectors, the workspace and the source. The link holds the session's token, so it is shown once, on
the page that answers the form (a POST: never in a console URL, never logged); keyrelay keeps only its digest.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from keyrelay.doors.console.session import Console, ConsoleRoute, Managing
from keyrelay.errors import KeyrelayError, NotFound
from keyrelay.manage.connect import DEFAULT_EXPIRES_IN, ConnectService, NewSession
from keyrelay.model import Workspace

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
EXPIRIES = ((900, "15 minutes"), (1800, "30 minutes"), (3600, "1 hour"))


def service(c: Console) -> ConnectService:
    found = c.svc.extras.get("connect")
    if not isinstance(found, ConnectService):
        raise NotFound("Connect is not available on this server")
    return found


def connectable(c: Console) -> frozenset[str]:
    """Connectors a connect session may offer (none when connect is not available)."""
    found = c.svc.extras.get("connect")
    return frozenset(found.connectable()) if isinstance(found, ConnectService) else frozenset()


def public_base(c: Console) -> str:
    """Where the end customer's browser reaches keyrelay: KEYRELAY_PUBLIC_URL, else the console's address."""
    return c.svc.settings.public_url or f"{c.request.url.scheme}://{c.request.url.netloc}"


async def _form(c: Console, ws: Workspace, *, status: int = 200, error: str | None = None,
                picked: frozenset[str] = frozenset(), expires_in: int = DEFAULT_EXPIRES_IN) -> Response:
    connectors = [(n, c.svc.sources.connector(n).title) for n in service(c).connectable()]
    return c.page("console/connect.html", nav="workspaces", status=status, ws=ws, connectors=connectors,
                  picked=picked, expiries=EXPIRIES, expires_in=expires_in, error=error)


@router.get("/console/workspaces/{workspace_id}/connect")
async def connect_page(c: Managing, workspace_id: str) -> Response:
    ws = await c.svc.workspaces.get(c.caller, workspace_id)
    return await _form(c, ws)


@router.post("/console/workspaces/{workspace_id}/connect")
async def create_link(c: Managing, workspace_id: str) -> Response:
    form = await c.form(f"connect.create:{workspace_id}")
    ws = await c.svc.workspaces.get(c.caller, workspace_id)
    picked = form.all("connectors")
    raw = form.get("expires_in")
    expires_in = int(raw) if raw in {str(s) for s, _ in EXPIRIES} else DEFAULT_EXPIRES_IN
    body: dict[str, Any] = {"workspace": ws.id, "expires_in": expires_in}
    if picked:
        body["connectors"] = picked  # none ticked: every connector that can be checked live (as the API)
    try:
        made = await service(c).create(c.caller, body)
    except KeyrelayError as err:
        return await _form(c, ws, status=err.status, error=err.message, picked=frozenset(picked),
                           expires_in=expires_in)
    return _created(c, made, ws)


@router.post("/console/sources/{source_id}/reconnect")
async def reconnect(c: Managing, source_id: str) -> Response:
    await c.form(f"connect.reconnect:{source_id}")
    src = await c.svc.sources.get_source(c.caller, source_id)
    ws = await c.svc.workspaces.get(c.caller, src.workspace_id)
    made = await service(c).create(c.caller, {"workspace": ws.id, "source_id": src.id})
    return _created(c, made, ws, source=src.name)


def _created(c: Console, made: NewSession, ws: Workspace, *, source: str | None = None) -> Response:
    titles = {n: c.svc.sources.connector(n).title for n in made.session.connectors}
    return c.page("console/connect_created.html", nav="sources" if source else "workspaces", status=201,
                  session=made.session, url=f"{public_base(c)}/connect/{made.token}", ws=ws, titles=titles,
                  source=source)
