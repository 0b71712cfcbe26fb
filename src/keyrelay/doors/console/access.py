"""API keys and applications. A new key's value and a new application's secret are shown once, on the page
that answers the form (never stored, never shown again: the lists show a key's first characters only).
Revoking a key takes effect at once on this instance (docs/cli.md: other instances within
KEYRELAY_TOKEN_CACHE_SECONDS).

Applications: list and create. Revoking an application and rotating its secret are the admin API's
(`AccessService.revoke_application` / `rotate_secret`); their buttons belong in the marked place of
`console/applications.html`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyrelay.doors.console.session import ConsoleRoute, Signed, redirect
from keyrelay.errors import InvalidRequest, KeyrelayError
from keyrelay.manage.workspaces import check_name
from keyrelay.model import Scope

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
SCOPES = tuple(s.value for s in Scope)
SCOPE_HINTS = {"proxy": "gateway and request API", "files": "file sources", "query": "stream queries",
               "execute": "connector actions", "mcp": "the MCP server", "logs": "read its workspace's request log"}
MAX_DAYS = 3650


async def _keys(c: Signed, *, workspace_id: str = "", status: int = 200, error: str | None = None,
                notice: str | None = None) -> Response:
    workspaces = await c.svc.workspaces.list(None)
    keys = await c.svc.access.list_api_keys(workspace_id or None)
    keys.sort(key=lambda k: (k.revoked_at is not None, -k.created_at))
    return c.page("console/keys.html", nav="keys", status=status, keys=keys, workspaces=workspaces,
                  names={w.id: w.name for w in workspaces}, workspace_id=workspace_id, scopes=SCOPES,
                  scope_hints=SCOPE_HINTS, error=error, notice=notice)


@router.get("/console/keys")
async def keys_page(c: Signed, workspace_id: str | None = None, done: str | None = None) -> Response:
    notice = "The key was revoked: requests with it are refused from now on." if done == "revoked" else None
    return await _keys(c, workspace_id=workspace_id or "", notice=notice)


@router.post("/console/keys")
async def create_key(c: Signed) -> Response:
    form = await c.form("key.create")
    try:
        ws = await c.svc.workspaces.get(c.caller, form.get("workspace_id"))
        scopes = frozenset(Scope(s) for s in form.all("scopes") if s in SCOPES)
        days = form.get("expires_in_days").strip()
        if days and (not days.isdigit() or not 1 <= int(days) <= MAX_DAYS):
            raise InvalidRequest(f"Expiry must be a whole number of days from 1 to {MAX_DAYS}", field="expires_in_days")
        expires = c.sessions.clock() + int(days) * 86400 if days else None
        key, secret = await c.svc.access.create_api_key(workspace_id=ws.id, scopes=scopes,
                                                        name=form.get("name").strip()[:200], expires_at=expires)
    except KeyrelayError as err:
        return await _keys(c, workspace_id=form.get("workspace_id"), status=err.status, error=err.message)
    base = f"{c.request.url.scheme}://{c.request.url.netloc}"
    return c.page("console/key_created.html", nav="keys", status=201, key=key, secret=secret, workspace=ws,
                  base=base, sources=await c.svc.sources.list_sources(c.caller, ws.id))


@router.get("/console/keys/{key_id}/revoke")
async def confirm_revoke(c: Signed, key_id: str) -> Response:
    key = next((k for k in await c.svc.access.list_api_keys(None) if k.id == key_id), None)
    if key is None:
        return await _keys(c, status=404, error="No such API key")
    label = key.name or key.hint + "..."
    return c.page("console/confirm.html", nav="keys", title=f"Revoke API key {label}?", what=label,
                  consequences=["Every request that presents this key is refused from now on."],
                  action=f"/console/keys/{key.id}/revoke", purpose=f"key.revoke:{key.id}", button="Revoke key",
                  back="/console/keys")


@router.post("/console/keys/{key_id}/revoke")
async def revoke_key(c: Signed, key_id: str) -> Response:
    await c.form(f"key.revoke:{key_id}")
    await c.svc.access.revoke_api_key(key_id)
    return redirect("/console/keys?done=revoked")


@router.get("/console/applications")
async def applications_page(c: Signed) -> Response:
    return await _applications(c)


async def _applications(c: Signed, *, status: int = 200, error: str | None = None, name: str = "") -> Response:
    apps = await c.svc.access.list_applications(caller=c.caller)
    return c.page("console/applications.html", nav="applications", status=status, apps=apps, error=error,
                  name=name)


@router.post("/console/applications")
async def create_application(c: Signed) -> Response:
    form = await c.form("application.create")
    try:
        app = await c.svc.access.create_application(name=check_name(form.get("name")))
    except KeyrelayError as err:
        return await _applications(c, status=err.status, error=err.message, name=form.get("name"))
    base = f"{c.request.url.scheme}://{c.request.url.netloc}"
    return c.page("console/application_created.html", nav="applications", status=201, app=app, base=base)
