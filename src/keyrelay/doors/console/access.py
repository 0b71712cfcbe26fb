"""API keys and applications. A new key's value and a new application's secret are shown once, on the page
that answers the form (never stored, never shown again: the lists show a key's first characters only).
Revoking a key takes effect at once on this instance (docs/cli.md: other instances within
KEYRELAY_TOKEN_CACHE_SECONDS).

API keys hold data scopes only (an agent never manages or approves), and only scopes the signed-in application
holds itself, for a workspace it reaches. Applications: list (those it could have granted) and create, with at
most its own workspaces and scopes (`AccessService.grant_application`, as `POST /api/v1/applications`). Revoking
an application and rotating its secret are the admin API's (`AccessService.revoke_application` /
`rotate_secret`); their buttons belong in the marked place of `console/applications.html`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyrelay.doors.console.session import Console, ConsoleRoute, Managing, redirect
from keyrelay.errors import InvalidRequest, KeyrelayError
from keyrelay.manage.workspaces import check_name
from keyrelay.model import DATA_SCOPES, Scope

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
SCOPES = tuple(s.value for s in Scope)  # in the model's order
SCOPE_HINTS = {"proxy": "gateway and request API", "files": "file sources", "query": "stream queries",
               "execute": "connector actions", "mcp": "the MCP server", "logs": "read its workspace's request log",
               "admin": "manage workspaces, sources, keys and applications (this console)",
               "approve": "decide approval requests"}
MAX_DAYS = 3650


def key_scopes(c: Console) -> tuple[str, ...]:
    """What a new API key may hold: data scopes (never admin or approve) that the signed-in application holds."""
    return tuple(s for s in SCOPES if Scope(s) in DATA_SCOPES and Scope(s) in c.caller.scopes)


def app_scopes(c: Console) -> tuple[str, ...]:
    """What a new application may hold: the scopes the signed-in application holds."""
    return tuple(s for s in SCOPES if Scope(s) in c.caller.scopes)


async def _keys(c: Console, *, workspace_id: str = "", status: int = 200, error: str | None = None,
                notice: str | None = None) -> Response:
    workspaces = await c.workspaces()
    if workspace_id and not c.caller.can_reach(workspace_id):
        workspace_id = ""
    keys = await c.svc.access.list_api_keys(workspace_id or None, caller=c.caller)
    keys.sort(key=lambda k: (k.revoked_at is not None, -k.created_at))
    return c.page("console/keys.html", nav="keys", status=status, keys=keys, workspaces=workspaces,
                  names={w.id: w.name for w in workspaces}, workspace_id=workspace_id, scopes=key_scopes(c),
                  scope_hints=SCOPE_HINTS, error=error, notice=notice)


@router.get("/console/keys")
async def keys_page(c: Managing, workspace_id: str | None = None, done: str | None = None) -> Response:
    notice = "The key was revoked: requests with it are refused from now on." if done == "revoked" else None
    return await _keys(c, workspace_id=workspace_id or "", notice=notice)


@router.post("/console/keys")
async def create_key(c: Managing) -> Response:
    form = await c.form("key.create")
    try:
        ws = await c.svc.workspaces.get(c.caller, form.get("workspace_id"))
        scopes = frozenset(Scope(s) for s in form.all("scopes") if s in SCOPES)  # the service judges them
        days = form.get("expires_in_days").strip()
        if days and (not days.isdigit() or not 1 <= int(days) <= MAX_DAYS):
            raise InvalidRequest(f"Expiry must be a whole number of days from 1 to {MAX_DAYS}", field="expires_in_days")
        expires = c.sessions.clock() + int(days) * 86400 if days else None
        key, secret = await c.svc.access.create_api_key(workspace_id=ws.id, scopes=scopes,
                                                        name=form.get("name").strip()[:200], expires_at=expires,
                                                        caller=c.caller)
    except KeyrelayError as err:
        return await _keys(c, workspace_id=form.get("workspace_id"), status=err.status, error=err.message)
    base = f"{c.request.url.scheme}://{c.request.url.netloc}"
    return c.page("console/key_created.html", nav="keys", status=201, key=key, secret=secret, workspace=ws,
                  base=base, sources=await c.svc.sources.list_sources(c.caller, ws.id))


@router.get("/console/keys/{key_id}/revoke")
async def confirm_revoke(c: Managing, key_id: str) -> Response:
    key = next((k for k in await c.svc.access.list_api_keys(None, caller=c.caller) if k.id == key_id), None)
    if key is None:
        return await _keys(c, status=404, error="No such API key")
    label = key.name or key.hint + "..."
    return c.page("console/confirm.html", nav="keys", title=f"Revoke API key {label}?", what=label,
                  consequences=["Every request that presents this key is refused from now on."],
                  action=f"/console/keys/{key.id}/revoke", purpose=f"key.revoke:{key.id}", button="Revoke key",
                  back="/console/keys")


@router.post("/console/keys/{key_id}/revoke")
async def revoke_key(c: Managing, key_id: str) -> Response:
    await c.form(f"key.revoke:{key_id}")
    await c.svc.access.revoke_api_key(key_id, caller=c.caller)
    return redirect("/console/keys?done=revoked")


@router.get("/console/applications")
async def applications_page(c: Managing) -> Response:
    return await _applications(c)


async def _applications(c: Console, *, status: int = 200, error: str | None = None, name: str = "",
                        picked: frozenset[str] = frozenset(), scopes: frozenset[str] | None = None) -> Response:
    apps = await c.svc.access.list_applications(caller=c.caller)
    workspaces = await c.workspaces()
    return c.page("console/applications.html", nav="applications", status=status, apps=apps, error=error,
                  name=name, workspaces=workspaces, names={w.id: w.name for w in workspaces}, picked=picked,
                  scopes=app_scopes(c), ticked=set(key_scopes(c)) if scopes is None else scopes,
                  scope_hints=SCOPE_HINTS)


@router.post("/console/applications")
async def create_application(c: Managing) -> Response:
    form = await c.form("application.create")
    refs = form.all("workspaces")
    try:
        reach: list[str] | str = "*" if "*" in refs else refs
        scopes = frozenset(Scope(s) for s in form.all("scopes") if s in SCOPES)  # the service judges them
        created = await c.svc.access.grant_application(c.caller, name=check_name(form.get("name")),
                                                       workspaces=reach, scopes=scopes)
    except KeyrelayError as err:
        return await _applications(c, status=err.status, error=err.message, name=form.get("name"),
                                   picked=frozenset(refs), scopes=frozenset(form.all("scopes")))
    assert created.application is not None
    app = created.application
    base = f"{c.request.url.scheme}://{c.request.url.netloc}"
    return c.page("console/application_created.html", nav="applications", status=201, app=app,
                  secret=created.client_secret, base=base, names={w.id: w.name for w in await c.workspaces()})
