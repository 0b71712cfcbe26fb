"""The park step (docs/approvals.md): a request that a source's `policy.approval` matches is parked instead of
sent. Parking happens after admission (authentication, authorization, policy, rate limit) and before anything
is injected: the parked record holds no credential and no token, and it is sealed (AES-GCM under the vault's
data keys, bound to the approval, its workspace and the request's hash) before it is stored.

The gate also waits for decisions (`Prefer: wait=N`, polling the database and woken at once by decisions made
in this process; no workspace slot or upstream connection is held), hands the kept response to the original
caller once, and writes the request-log rows of decisions and expiries (parks and executions are logged by the
pipeline itself, linked by `approval_id`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keyrelay.errors import (
    ERRORS_BY_CODE,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalMismatch,
    KeyrelayError,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
)
from keyrelay.ids import new_id
from keyrelay.model import Approval, ApprovalStatus, BodyStream, Caller, Inbound, LogEntry, SealedRecord, Source
from keyrelay.pipeline import approval, build
from keyrelay.pipeline.approval import TERMINAL, Parked
from keyrelay.pipeline.policy import RULE_APPROVAL, Note
from keyrelay.pipeline.record import Recorder
from keyrelay.pipeline.tokens import TokenHasher, new_token
from keyrelay.ports import ApprovalStore, Clock, EventPublisher, LogSink, RecordCipher

log = logging.getLogger("keyrelay.approvals")
LINK_PREFIX = "krl_"  # single-use decision links (not a bearer token: the token parser refuses it)
APPROVAL_ID_PREFIX = "apv_"
REQUESTED = "approval.requested"


@dataclass(frozen=True)
class Limits:
    """Bounds of parking (docs/settings.md: approvals)."""

    max_body_bytes: int = 1024 * 1024
    max_response_bytes: int = 1024 * 1024
    max_wait_seconds: float = 60.0
    max_pending: int = 1000  # per workspace
    result_ttl_seconds: float = 900.0
    poll_seconds: float = 0.5  # how often a waiting request looks for a decision made on another instance
    unknown_after_seconds: float = 330.0  # an execution not finished by then (longest timeout + 30 s) is unknown


@dataclass(frozen=True)
class Links:
    """Where approvals are polled and decided: `base` is keyrelay's public URL (no trailing `/`); `page` an optional
    template with `{id}` of the page where approvers decide (an operator's console)."""

    base: str = ""
    page: str | None = None

    def poll(self, approval_id: str) -> str:
        return f"{self.base}/api/v1/approvals/{approval_id}"

    def decide(self, token: str) -> str:
        return f"{self.base}/approvals/link/{token}"

    def approval_page(self, approval_id: str) -> str | None:
        return None if self.page is None else self.page.replace("{id}", approval_id)


@dataclass(frozen=True)
class Kept:
    """A kept response: an upstream's (status, headers, body) or an execute result (`value`)."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    value: Any = None
    truncated: bool = False

    def encode(self) -> bytes:
        return json.dumps({"status": self.status, "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                                                              for k, v in self.headers],
                           "body": base64.b64encode(self.body).decode(), "value": self.value,
                           "truncated": self.truncated}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Kept:
        d = json.loads(raw)
        return cls(status=d["status"], headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in d["headers"]],
                   body=base64.b64decode(d["body"]), value=d["value"], truncated=d["truncated"])


@dataclass(frozen=True)
class Outcome:
    """What a parked request's caller gets now: the approval as the agent sees it, and the kept response if this
    call is the one that fetched it."""

    approval: Approval
    view: dict[str, Any]
    kept: Kept | None = None

    def body(self) -> bytes:
        return json.dumps({"approval": self.view}, separators=(",", ":")).encode()


class Wakeups:
    """Waiting requests of this process, woken at once by a decision made here."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, key: str, seconds: float) -> None:
        event = self._events.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, seconds))

    def wake(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


class ApprovalGate:
    def __init__(self, *, store: ApprovalStore, cipher: RecordCipher, sink: LogSink, clock: Clock,
                 hasher: TokenHasher, events: EventPublisher | None = None, limits: Limits = Limits(),
                 links: Links = Links()) -> None:
        self.store, self._cipher, self._sink, self._clock = store, cipher, sink, clock
        self._hasher, self._events, self.limits, self.links = hasher, events, limits, links
        self._wakeups = Wakeups()

    # --- parking ---------------------------------------------------------------------------------------------

    async def http_request(self, inbound: Inbound, source: Source, prep: build.Prepared, *, body_limit: int,
                           note: Note) -> Parked | None:
        """The parked form of a gateway or request-API request that needs approval (None: it does not, or the
        policy only observes). Its body is read here, bounded: a larger one is refused before parking."""
        url = build.destination_url(inbound, prep)
        path = approval.upstream_path(url)
        if not self.wants(source, method=inbound.method, path=path, action=None, note=note):
            return None
        body = await _read(inbound.body, inbound.content_length, min(body_limit, self.limits.max_body_bytes))
        return Parked(kind=approval.HTTP, method=inbound.method, path=path, destination=url, target=inbound.target,
                      headers=tuple(build.forwarded_headers(inbound, source.policy, prep)), body=body)

    def wants(self, source: Source, *, method: str, path: str, action: str | None, note: Note) -> bool:
        """Whether the source's approval rule parks this request; in observe mode it is noted and let through."""
        rule = source.policy.approval
        if rule is None or not approval.matches(rule, method=method, path=path, action=action):
            return False
        if source.policy.observing:
            note(RULE_APPROVAL)
            return False
        return True

    async def park(self, parked: Parked, *, inbound: Inbound, caller: Caller, source: Source,
                   rec: Recorder) -> Outcome:
        """Seal and store the request, record its one log row (202), tell the approvers; then, if asked, wait for
        the decision."""
        rule = source.policy.approval
        assert rule is not None
        now = self._clock()
        if await self.store.count_pending(source.workspace_id, now=now) >= self.limits.max_pending:
            raise RateLimited(f"This workspace already has {self.limits.max_pending} requests waiting for "
                              "approval", retry_after=60)
        approval_id = APPROVAL_ID_PREFIX + secrets.token_hex(16)
        digest = approval.request_hash(parked)
        sealed = await self._cipher.seal_record(approval.context(approval_id, source.workspace_id, "request", digest),
                                                parked.encode())
        link = new_token(LINK_PREFIX) if self._events is not None else None
        a = Approval(id=approval_id, workspace_id=source.workspace_id, source_id=source.id,
                     door=inbound.door.value, caller=caller.id, caller_kind=caller.kind.value,
                     caller_scopes=caller.scopes, method=parked.method, path=inbound.path[:2048],
                     action=parked.action, request_hash=digest, request=sealed, body_bytes=parked.body_bytes,
                     status=ApprovalStatus.PENDING, created_at=now,
                     expires_at=now + rule.timeout_seconds,
                     link_digest=None if link is None else self._hasher.digest(link))
        await self.store.add(a)
        rec.approval_id, rec.bytes_in = a.id, parked.body_bytes
        rec.done(202)
        await self._announce(a, source, link)
        if inbound.wait_seconds:
            return await self.answer_for(a, caller, wait=inbound.wait_seconds)
        return Outcome(a, self.agent_view(a))

    async def _announce(self, a: Approval, source: Source, link: str | None) -> None:
        """`approval.requested` to the operator's webhooks: what approvers need to decide, and the single-use
        link; never the body, a header value or a query value."""
        if self._events is None or link is None:
            return
        data = {"approval": approval.approver_view(a),
                "source": {"id": source.id, "name": source.name, "slug": source.slug, "connector": source.connector},
                "decide_url": self.links.decide(link)}
        try:
            await self._events.publish(REQUESTED, data)
        except Exception as exc:  # the approval stands: approvers still see it in GET /api/v1/approvals
            log.error("could not publish %s for %s: %s", REQUESTED, a.id, type(exc).__name__)

    # --- the agent's side: waiting and fetching once ---------------------------------------------------------

    def agent_view(self, a: Approval) -> dict[str, Any]:
        return approval.agent_view(a, poll_url=self.links.poll(a.id), approval_url=self.links.approval_page(a.id))

    async def answer(self, approval_id: str, caller: Caller, *, wait: float | None) -> Outcome:
        """The approval as its original caller sees it (anyone else: 404), after waiting up to `wait` seconds for
        it to end. Denied, expired and failed approvals are errors; an executed one gives its kept response to
        the first call that asks."""
        a = await self.store.get(approval_id)
        if a is None or a.caller != caller.id or not caller.can_reach(a.workspace_id):
            raise NotFound("Approval not found")
        return await self.answer_for(a, caller, wait=wait)

    async def answer_for(self, a: Approval, caller: Caller, *, wait: float | None) -> Outcome:
        a = await self.settle(a, wait)
        if a.status is ApprovalStatus.DENIED:
            raise ApprovalDenied("An approver denied this request; nothing was sent")
        if a.status is ApprovalStatus.EXPIRED:
            raise ApprovalExpired("Nobody approved this request in time; nothing was sent")
        if a.status is ApprovalStatus.FAILED:
            err = ERRORS_BY_CODE.get(a.error_code or "", OutcomeUnknown)
            raise err(a.error_message or "The approved request failed")
        if a.status is not ApprovalStatus.EXECUTED:
            return Outcome(a, self.agent_view(a))
        sealed = await self.store.take_result(a.id, now=self._clock())
        if sealed is None:
            return Outcome(a, self.agent_view(a))
        raw = await self._open(approval.context(a.id, a.workspace_id, "response"), sealed, "kept response")
        return Outcome(a, self.agent_view(a), Kept.decode(raw))

    async def _open(self, context: Sequence[str], sealed: SealedRecord, what: str) -> bytes:
        """A sealed record of this approval; one that was altered, moved or rebound is refused."""
        try:
            return await self._cipher.open_record(context, sealed)
        except KeyrelayError:
            raise
        except Exception:  # the cipher's own error: never its words
            log.error("the %s of an approval does not open: altered or moved", what)
            raise ApprovalMismatch(f"The {what} does not open for this approval (it was altered or moved); "
                                   "nothing was sent") from None

    async def settle(self, a: Approval, wait: float | None) -> Approval:
        """`a` once it has ended, or as it is after `wait` seconds (bounded by `max_wait_seconds`)."""
        deadline = time.monotonic() + min(max(wait or 0.0, 0.0), self.limits.max_wait_seconds)
        while True:
            a = await self.due(a)
            left = deadline - time.monotonic()
            if a.status in TERMINAL or left <= 0:
                return a
            await self._wakeups.wait(a.id, min(left, self.limits.poll_seconds))
            found = await self.store.get(a.id)
            if found is None:
                raise NotFound("Approval not found")
            a = found

    async def due(self, a: Approval) -> Approval:
        """Apply what time decides: a pending approval past its expiry expires; an execution unfinished long
        after its start has an unknown outcome (it is never sent again). Each happens once, with one log row."""
        now = self._clock()
        if a.status is ApprovalStatus.PENDING and a.expires_at <= now:
            if await self.store.transition(a.id, frm=ApprovalStatus.PENDING, to=ApprovalStatus.EXPIRED, changes={},
                                           before=now):
                self.record(a, door=a.door, method=a.method, path=a.path, caller=None,
                            error=ApprovalExpired("Nobody approved this request in time; nothing was sent"))
                self.wake(a.id)
        elif a.status is ApprovalStatus.EXECUTING and (a.decided_at or now) + self.limits.unknown_after_seconds < now:
            err = OutcomeUnknown("keyrelay stopped while sending this approved request: it may or may not have "
                                 "reached the upstream, and it is never sent again")
            if await self.store.transition(a.id, frm=ApprovalStatus.EXECUTING, to=ApprovalStatus.FAILED,
                                           changes={"error_code": err.code, "error_message": err.message}):
                self.record(a, door=a.door, method=a.method, path=a.path, caller=None, error=err)
                self.wake(a.id)
        else:
            return a
        return await self.store.get(a.id) or a

    def wake(self, approval_id: str) -> None:
        self._wakeups.wake(approval_id)

    # --- the approver's side: replay, keep -------------------------------------------------------------------

    async def parked(self, a: Approval) -> Parked:
        """The parked request, decrypted and checked against the hash its approval is bound to."""
        raw = await self._open(approval.context(a.id, a.workspace_id, "request", a.request_hash), a.request,
                               "parked request")
        parked = Parked.decode(raw)
        approval.check_hash(parked, a.request_hash)
        return parked

    async def keep(self, a: Approval, kept: Kept, *, upstream_status: int | None) -> None:
        """Store the response of the one execution (sealed, bounded, until fetched or `result_ttl_seconds`)."""
        if len(kept.body) > self.limits.max_response_bytes:
            kept = Kept(kept.status, kept.headers, kept.body[: self.limits.max_response_bytes], kept.value, True)
        now = self._clock()
        sealed = await self._cipher.seal_record(approval.context(a.id, a.workspace_id, "response"), kept.encode())
        await self.store.transition(a.id, frm=ApprovalStatus.EXECUTING, to=ApprovalStatus.EXECUTED, changes={
            "executed_at": now, "upstream_status": upstream_status, "result": sealed,
            "result_expires_at": now + self.limits.result_ttl_seconds})
        self.wake(a.id)

    async def fail(self, a: Approval, err: KeyrelayError) -> None:
        await self.store.transition(a.id, frm=ApprovalStatus.EXECUTING, to=ApprovalStatus.FAILED, changes={
            "executed_at": self._clock(), "error_code": err.code, "error_message": err.message[:300]})
        self.wake(a.id)

    def record(self, a: Approval, *, door: str, method: str, path: str, caller: str | None, status: int = 200,
               error: KeyrelayError | None = None) -> None:
        """One request-log row for a decision or an expiry, linked by `approval_id`."""
        now = self._clock()
        self._sink.emit(LogEntry(
            id=new_id(), ts=now, workspace_id=a.workspace_id, source_id=a.source_id, door=door, method=method,
            path=path, status=error.status if error is not None else status, latency_ms=0.0,
            error_code=None if error is None else error.code,
            error_message=None if error is None else error.message[:300], caller=caller, approval_id=a.id))


async def _read(body: BodyStream | bytes | None, declared: int | None, limit: int) -> bytes | None:
    """The whole body of a request to park, refused (413) past `limit` without reading far beyond it."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"A request waiting for approval may carry at most {limit} bytes")
    if body is None or isinstance(body, bytes):
        if body is not None and len(body) > limit:
            raise PayloadTooLarge(f"A request waiting for approval may carry at most {limit} bytes")
        return body or None
    parts, size = [], 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"A request waiting for approval may carry at most {limit} bytes")
        parts.append(chunk)
    return b"".join(parts) or None

