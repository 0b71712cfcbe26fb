"""Deciding approvals and running approved requests (docs/approvals.md).

Approvers hold an application token with the `approve` scope, or a single-use link from the `approval.requested`
webhook. Approving is one compare-and-set from `pending` to `executing` that also claims the execution: of any
number of approve calls, on any number of instances, exactly one wins and sends the request; the others (a
retried call included) see the approval as it is. The request runs through the pipeline as its original
caller, with the source's credentials as they are now, only to the destination it was parked for; its response
is sealed and kept for the original caller to fetch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from keyrelay import request_api
from keyrelay.connectors.execute import ConnectorService, ExecuteRequest
from keyrelay.errors import (
    ApprovalMismatch,
    ApprovalNotPending,
    Forbidden,
    InternalError,
    InvalidRequest,
    KeyrelayError,
    NotFound,
)
from keyrelay.model import (
    Approval,
    ApprovalStatus,
    Approved,
    ById,
    Caller,
    CallerKind,
    Door,
    Inbound,
    Scope,
)
from keyrelay.pipeline import approval
from keyrelay.pipeline.approval import Parked
from keyrelay.pipeline.park import ApprovalGate, Kept, Outcome
from keyrelay.pipeline.relay import Relay
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.ports import Clock

log = logging.getLogger("keyrelay.approvals")
APPROVE, DENY = "approve", "deny"
_RAN = frozenset({ApprovalStatus.EXECUTING, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED})


def answer(outcome: Outcome) -> dict[str, Any]:
    """The original caller's answer: the approval, and the kept response the one time it is handed over (a
    request-API envelope for gateway and request-API requests, the execute result for execute calls)."""
    out: dict[str, Any] = {"approval": outcome.view}
    kept = outcome.kept
    if kept is not None:
        out["response"] = kept.value if kept.value is not None else \
            request_api.envelope(kept.status, kept.headers, kept.body, kept.truncated)
    return out


def require_approver(caller: Caller) -> None:
    """Deciding and listing approvals needs an application token that holds the `approve` scope."""
    if not caller.is_admin or Scope.APPROVE not in caller.scopes:
        raise Forbidden("Deciding approvals needs an application token with the 'approve' scope")


class ApprovalService:
    def __init__(self, *, gate: ApprovalGate, relay: Relay, connectors: ConnectorService, hasher: TokenHasher,
                 clock: Clock, retention_seconds: float = 30 * 86_400.0) -> None:
        self.gate, self._relay, self._connectors, self._hasher = gate, relay, connectors, hasher
        self._clock, self._retention = clock, retention_seconds
        self._running: set[asyncio.Task[None]] = set()

    # --- reading ---------------------------------------------------------------------------------------------

    async def list_approvals(self, caller: Caller, *, workspace_id: str | None, status: str | None,
                             limit: int = 100) -> list[Approval]:
        require_approver(caller)
        if workspace_id is not None and not caller.can_reach(workspace_id):
            return []
        try:
            wanted = None if status is None else ApprovalStatus(status)
        except ValueError:
            raise InvalidRequest("status must be one of: " + ", ".join(s.value for s in ApprovalStatus),
                                 field="status") from None
        found = await self.gate.store.list_approvals(workspace_id=workspace_id, status=wanted, now=self._clock(),
                                                     limit=limit)
        return [await self.gate.due(a) for a in found if caller.can_reach(a.workspace_id)]

    async def approver_view(self, caller: Caller, approval_id: str) -> Approval:
        require_approver(caller)
        return await self.gate.due(await self._reachable(caller, approval_id))

    async def _reachable(self, caller: Caller, approval_id: str) -> Approval:
        a = await self.gate.store.get(approval_id)
        if a is None or not caller.can_reach(a.workspace_id):
            raise NotFound("Approval not found")
        return a

    async def by_link(self, token: str) -> Approval:
        a = await self.gate.store.by_link(self._hasher.digest(token))
        if a is None:
            raise NotFound("This link is not valid")
        return await self.gate.due(a)

    # --- deciding --------------------------------------------------------------------------------------------

    async def decide(self, caller: Caller, approval_id: str, decision: str, *,
                     request_hash: str | None = None) -> Approval:
        """An approver's decision through the API (`POST /api/v1/approvals/{id}/approve|deny`)."""
        require_approver(caller)
        a = await self._reachable(caller, approval_id)
        return await self._decide(a, decision, decided_by=caller.id, request_hash=request_hash,
                                  path=f"/api/v1/approvals/{a.id}/{decision}")

    async def decide_by_link(self, token: str, decision: str) -> Approval:
        """A decision through the single-use link; the link's token is never logged."""
        a = await self.gate.store.by_link(self._hasher.digest(token))
        if a is None:
            raise NotFound("This link is not valid")
        return await self._decide(a, decision, decided_by="link", request_hash=None,
                                  path=f"/approvals/link/{decision}")

    async def _decide(self, a: Approval, decision: str, *, decided_by: str, request_hash: str | None,
                      path: str) -> Approval:
        if decision not in (APPROVE, DENY):
            raise InvalidRequest("decision must be approve or deny", field="decision")
        if request_hash is not None and not hmac.compare_digest(request_hash.encode(), a.request_hash.encode()):
            raise ApprovalMismatch("request_hash is not the hash of the parked request", field="request_hash")
        a = await self.gate.due(a)
        now = self._clock()
        to = ApprovalStatus.EXECUTING if decision == APPROVE else ApprovalStatus.DENIED
        won = await self.gate.store.transition(a.id, frm=ApprovalStatus.PENDING, to=to, after=now,
                                               changes={"decided_at": now, "decided_by": decided_by[:80]})
        if not won:
            return await self._already(a.id, decision)
        self.gate.record(a, door=Door.ADMIN.value, method="POST", path=path, caller=decided_by)
        claimed = await self._get(a.id)
        if decision == DENY:
            self.gate.wake(a.id)
            return claimed
        await self._run_once(claimed)
        return await self._get(a.id)

    async def _already(self, approval_id: str, decision: str) -> Approval:
        """Someone else moved it first: the same decision again (a retried call) sees it as it is now."""
        current = await self._get(approval_id)
        if (decision == APPROVE and current.status in _RAN) or \
                (decision == DENY and current.status is ApprovalStatus.DENIED):
            return current
        raise ApprovalNotPending(f"This approval is {current.status.value}; it can no longer be decided")

    async def _get(self, approval_id: str) -> Approval:
        a = await self.gate.store.get(approval_id)
        if a is None:
            raise NotFound("Approval not found")
        return a

    # --- running the approved request once --------------------------------------------------------------------

    async def _run_once(self, a: Approval) -> None:
        """Send the request this instance claimed; it finishes even if the approver goes away meanwhile."""
        task = asyncio.ensure_future(self._execute(a))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        await asyncio.shield(task)

    async def _execute(self, a: Approval) -> None:
        try:
            parked = await self.gate.parked(a)
            caller = Caller(kind=CallerKind(a.caller_kind), id=a.caller, workspace_id=a.workspace_id,
                            scopes=a.caller_scopes)
            approved = Approved(a.id, caller, parked.destination)
            if parked.kind == approval.EXECUTE:
                value = await self._connectors.execute(self._call(a, parked, approved))
                await self.gate.keep(a, Kept(200, value=value), upstream_status=None)
                return
            relayed = await self._relay.relay(_inbound(a, parked, approved))
            body, truncated = await relayed.read(self.gate.limits.max_response_bytes)
            await self.gate.keep(a, Kept(relayed.status, relayed.headers, body, truncated=truncated),
                                 upstream_status=relayed.status)
        except KeyrelayError as err:
            await self.gate.fail(a, err)
        except Exception as exc:  # never a library's message to anyone; the details go to the server log
            log.error("approved request %s failed: %s", a.id, type(exc).__name__)
            await self.gate.fail(a, InternalError("Internal error"))

    @staticmethod
    def _call(a: Approval, parked: Parked, approved: Approved) -> ExecuteRequest:
        call: dict[str, Any] = dict(parked.call or {})
        return ExecuteRequest(
            authorization=None, source_id=a.source_id, entity=call["entity"], action=call["action"],
            params=call.get("params") or {}, select_fields=call.get("select_fields"),
            exclude_fields=call.get("exclude_fields"), skip_truncation=bool(call.get("skip_truncation", True)),
            use_cache=False, door=Door(a.door), path=a.path, ignore_unknown=bool(call.get("ignore_unknown")),
            approved=approved)

    # --- housekeeping ----------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Expire what nobody decided, settle executions that never finished, forget kept responses past their
        time and old approvals. Returns how many approvals changed state."""
        now = self._clock()
        due = await self.gate.store.due(now=now, executing_before=now - self.gate.limits.unknown_after_seconds,
                                        limit=500)
        for a in due:
            await self.gate.due(a)
        await self.gate.store.drop_results(now=now)
        await self.gate.store.purge(before=now - self._retention)
        return len(due)

    async def run(self, stop: asyncio.Event, *, every: float = 10.0,
                  on_error: Callable[[BaseException], None] | None = None) -> None:
        """Sweep every `every` seconds until `stop`; a failed sweep is logged and retried."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("approval sweep failed: %s", type(exc).__name__)
                if on_error is not None:
                    on_error(exc)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _inbound(a: Approval, parked: Parked, approved: Approved) -> Inbound:
    """The parked gateway or request-API request, as the pipeline runs it: named by source id (a slug may have
    been given to another source since), without a token."""
    return Inbound(door=Door(a.door), method=parked.method, path=a.path, authorization=None, source=ById(a.source_id),
                   scope=Scope.PROXY, target=parked.target,
                   headers=tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in parked.headers),
                   body=parked.body, content_length=None if parked.body is None else len(parked.body),
                   approved=approved)
