"""The operator console at `/console/` (docs/console.md): server-rendered pages over the same services the
admin API calls, with the signed-in application's Caller.

    auth.py        sign-in (client id and secret, or a one-time link), sign-out
    overview.py    the last hour's traffic from the request log, and what needs attention
    workspaces.py  workspaces: list, create, delete
    sources.py     sources: list, create and edit with forms generated from the connector schemas
    access.py      API keys and applications: create (secrets shown once), revoke keys
    approvals.py   the approvals queue: parked requests, approved or denied with a button
    connect.py     connect links: a connect session's URL for an end customer, and reconnecting a source
    logs.py        live logs (a cookie-authenticated event stream) with filters and a detail view
    vault.py       the key ring, sealed or not, rotation
    session.py     the session dependency, CSRF checks, forms and page responses every route uses
"""

from __future__ import annotations

from fastapi import APIRouter

from keyrelay.doors.console import access, approvals, auth, connect, logs, overview, sources, vault, workspaces

PARTS = (auth, overview, workspaces, sources, access, approvals, connect, logs, vault)
router = APIRouter(include_in_schema=False)
for _part in PARTS:
    router.include_router(_part.router)
