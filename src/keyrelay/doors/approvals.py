"""Approval routes (docs/approvals.md): the original caller polls and fetches its response once; approvers (an
application token with the `approve` scope) list and decide; the single-use link from the `approval.requested`
webhook shows the request and decides it with a button (a GET never decides: link scanners follow links).
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.errors import KeyrelayError, NotFound
from keyrelay.http.deps import caller, services
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.manage.approvals import APPROVE, DENY, ApprovalService, answer
from keyrelay.model import Approval, ApprovalStatus, Caller, Scope
from keyrelay.pipeline import approval

router = APIRouter(tags=["approvals"])
Svc = Annotated[Services, Depends(services)]
AnyCaller = Annotated[Caller, Depends(caller)]
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "referrer-policy": "no-referrer", "cache-control": "no-store", "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_hash: str | None = Field(None, min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")


def _svc(svc: Services) -> ApprovalService:
    found: ApprovalService | None = svc.extras.get("approvals")
    if found is None:
        raise NotFound("No such route")
    return found


@router.get("/api/v1/approvals")
async def list_approvals(svc: Svc, who: AnyCaller, workspace_id: str | None = None, status: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    found = await _svc(svc).list_approvals(who, workspace_id=workspace_id, status=status, limit=limit)
    return json_response({"data": [approval.approver_view(a) for a in found]})


@router.get("/api/v1/approvals/{approval_id}")
async def get_approval(approval_id: str, request: Request, svc: Svc, who: AnyCaller) -> Response:
    """The original caller: its view, or the response once (honours `Prefer: wait=N`). An approver: the
    approver's view. Anyone else: 404."""
    service = _svc(svc)
    wait = approval.prefer_wait(request.headers.get("prefer"))
    try:
        outcome = await service.gate.answer(approval_id, who, wait=wait)
    except NotFound:
        if who.is_admin and Scope.APPROVE in who.scopes:
            return json_response({"approval": approval.approver_view(await service.approver_view(who, approval_id))})
        raise
    status = 202 if outcome.kept is None and outcome.approval.status is not ApprovalStatus.EXECUTED else 200
    return json_response(answer(outcome), status, headers={"cache-control": "no-store"})


@router.post("/api/v1/approvals/{approval_id}/approve")
async def approve(approval_id: str, svc: Svc, who: AnyCaller, body: Decision | None = None) -> Response:
    """Approve and send (once, however often it is called); `request_hash` (optional) must be the parked one's."""
    digest = None if body is None else body.request_hash
    decided = await _svc(svc).decide(who, approval_id, APPROVE, request_hash=digest)
    return json_response({"approval": approval.approver_view(decided)})


@router.post("/api/v1/approvals/{approval_id}/deny")
async def deny(approval_id: str, svc: Svc, who: AnyCaller, body: Decision | None = None) -> Response:
    digest = None if body is None else body.request_hash
    decided = await _svc(svc).decide(who, approval_id, DENY, request_hash=digest)
    return json_response({"approval": approval.approver_view(decided)})


# --- the single-use link ------------------------------------------------------------------------------------

@router.get("/approvals/link/{token}", include_in_schema=False)
async def link_page(token: str, svc: Svc) -> Response:
    try:
        a = await _svc(svc).by_link(token)
    except NotFound:
        return _page("Unknown link", "<p>This approval link is not valid.</p>", 404)
    return _page("Approval requested", _summary(a) + (_buttons(token) if a.status is ApprovalStatus.PENDING else
                                                      f"<p>This request is <b>{a.status.value}</b>.</p>"))


@router.post("/approvals/link/{token}/{decision}", include_in_schema=False)
async def link_decide(token: str, decision: str, svc: Svc) -> Response:
    if decision not in (APPROVE, DENY):
        raise NotFound("No such route")
    try:
        a = await _svc(svc).decide_by_link(token, decision)
    except NotFound:
        return _page("Unknown link", "<p>This approval link is not valid.</p>", 404)
    except KeyrelayError as err:
        return _page("Not decided", f"<p>{html.escape(err.message)}</p>", err.status)
    return _page("Decided", _summary(a) + f"<p>This request is now <b>{a.status.value}</b>.</p>")


def _summary(a: Approval) -> str:
    rows = [("Workspace", a.workspace_id), ("Source", a.source_id), ("Door", a.door), ("Method", a.method),
            ("Path", a.path), ("Action", a.action or ""), ("Caller", a.caller), ("Body", f"{a.body_bytes} bytes"),
            ("Request hash", a.request_hash), ("Expires", approval.iso(a.expires_at) or "")]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _buttons(token: str) -> str:
    base = f"/approvals/link/{html.escape(token)}"
    return (f'<form method="post" action="{base}/approve"><button type="submit">Approve and send</button></form>'
            f'<form method="post" action="{base}/deny"><button type="submit">Deny</button></form>')


def _page(title: str, content: str, status: int = 200) -> Response:
    text = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)} - keyrelay</title>"
            "<style>body{font-family:sans-serif;max-width:48em;margin:2em auto}th{text-align:left;padding-right:1em}"
            "form{display:inline-block;margin:1em 1em 0 0}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{content}</body></html>")
    return Response(text, status_code=status, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)
