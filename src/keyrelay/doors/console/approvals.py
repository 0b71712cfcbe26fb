"""The approvals queue (docs/approvals.md): parked requests, pending first, with Approve and Deny buttons.

Deciding is `ApprovalService.decide` with the session's Caller as the approver, exactly as
`POST /api/v1/approvals/{id}/approve|deny`: it needs an application holding `approve`, reaches only the
approvals of the application's workspaces, and sends an approved request once however often it is pressed.
The page shows what an approver sees (the API's approver view): never a parked request's body, headers or query
values, nor any credential.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from keyrelay.doors.console.session import Console, ConsoleRoute, redirect, signed_in
from keyrelay.errors import Forbidden, KeyrelayError, NotFound
from keyrelay.manage.approvals import APPROVE, DENY, ApprovalService
from keyrelay.model import Approval, ApprovalStatus, Scope

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = tuple(s.value for s in ApprovalStatus)
NEEDS_APPROVE = ("This page needs an application holding the `approve` scope (as the approvals API does); the "
                 "application you signed in as does not hold it.")
NOTICES = {"approved": "Approved: the request was sent once, as its original caller.",
           "denied": "Denied: the original caller is told so; nothing was sent."}


def can_approve(c: Console) -> bool:
    caller = c.caller
    return caller.is_admin and Scope.APPROVE in caller.scopes


async def approving(request: Request) -> Console:
    """A live session whose application may decide approvals (what the approvals API needs)."""
    c = await signed_in(request)
    if not can_approve(c):
        raise Forbidden(NEEDS_APPROVE)
    return c


Approving = Annotated[Console, Depends(approving)]


def service(c: Console) -> ApprovalService:
    found = c.svc.extras.get("approvals")
    if not isinstance(found, ApprovalService):
        raise NotFound("Approvals are not available on this server")
    return found


def _order(a: Approval) -> tuple[bool, float]:
    return a.status is not ApprovalStatus.PENDING, -a.created_at


async def _queue(c: Console, *, status: str = "", status_code: int = 200, error: str | None = None,
                 notice: str | None = None) -> Response:
    wanted = status if status in STATUSES else ""
    found = await service(c).list_approvals(c.caller, workspace_id=None, status=wanted or None, limit=200)
    found.sort(key=_order)
    workspaces = await c.workspaces()
    sources = await c.svc.sources.list_sources(c.caller, None)
    return c.page("console/approvals.html", nav="approvals", status=status_code, approvals=found,
                  statuses=STATUSES, picked=wanted, names={w.id: w.name for w in workspaces},
                  source_names={s.id: s.name for s in sources}, error=error, notice=notice)


@router.get("/console/approvals")
async def approvals_page(c: Approving, status: str | None = None, done: str | None = None) -> Response:
    return await _queue(c, status=status or "", notice=NOTICES.get(done or ""))


async def _decide(c: Console, approval_id: str, decision: str) -> Response:
    await c.form(f"approval.{decision}:{approval_id}")
    try:
        await service(c).decide(c.caller, approval_id, decision)
    except KeyrelayError as err:
        return await _queue(c, status_code=err.status, error=err.message)
    return redirect(f"/console/approvals?done={'approved' if decision == APPROVE else 'denied'}")


@router.post("/console/approvals/{approval_id}/approve")
async def approve(c: Approving, approval_id: str) -> Response:
    return await _decide(c, approval_id, APPROVE)


@router.post("/console/approvals/{approval_id}/deny")
async def deny(c: Approving, approval_id: str) -> Response:
    return await _decide(c, approval_id, DENY)
