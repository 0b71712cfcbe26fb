"""The pipeline. Every door turns its protocol into an `Inbound` and hands it to `Relay`, which owns the
request's whole life: admit it, take a workspace slot, do the work, and record exactly one request-log entry.

authenticate -> authorize -> resolve source + decrypt -> policy (kind, method, size) -> rate limit
-> park (a request the source's approval rule matches waits for a human: pipeline/park.py)
-> [workspace slot] -> work: build outbound + inject -> send (guarded, no redirects, timeouts, bounded retries)
   -> response policy (headers, redaction) -> [slot released] -> record (one entry, allowed or denied)

Two entry points, one life:

* `relay(inbound)`: an HTTP passthrough (gateway, request API); the work is one upstream call.
* `handle(inbound, kinds=..., work=...)`: every other door (files, execute, query, MCP); the door's service
  supplies the work, which may call the upstream through `Exchange.send` any number of times.

Both return a `Relayed`. A whole answer is recorded before it is returned; a stream is recorded when its
`chunks()` ends (a door must iterate it, or `discard()` it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.egress.http1 import Response
from keyrelay.egress.upstream import Sent, UpstreamClient
from keyrelay.errors import (
    InternalError,
    KeyrelayError,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from keyrelay.model import BodyStream, ById, BySlug, Caller, Credentials, Inbound, Outbound, Source
from keyrelay.pipeline import approval, build, policy, response
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.authorize import authorize
from keyrelay.pipeline.guard import ConstraintGuard
from keyrelay.pipeline.oauth.tokens import OAuthSender
from keyrelay.pipeline.park import ApprovalGate, Outcome
from keyrelay.pipeline.ratelimit import RateLimiter
from keyrelay.pipeline.record import Recorder
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.resolve import Resolved, SourceResolver
from keyrelay.ports import Clock, LogSink

_PREPARED_MAX = 10_000
CLIENT_CLOSED = 499  # logged status of a request whose agent disconnected before the response began
Finish = Callable[[KeyrelayError | None], None]


@dataclass(frozen=True)
class ConnectorFacts:
    """What the pipeline needs to know of a connector definition."""

    kind: str
    default_base_url: str | None
    auth: Mapping[str, Any] = field(default_factory=dict)
    catalog_api: bool = False  # a declarative API connector: its `allow_writes` governs every door


@dataclass(frozen=True)
class Admitted:
    """A request that passed the front half of the pipeline."""

    caller: Caller
    resolved: Resolved
    recorder: Recorder
    facts: ConnectorFacts | None


@dataclass(slots=True)
class Reply:
    """What a door's work produced: a whole body, a stream of bytes, or a value the door renders itself."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    value: Any = None


class Relayed:
    """A response on its way to the agent. `streaming` False: `body` (or `value`) is whole and the request is
    already recorded. `streaming` True: iterate `chunks()` exactly once (or call `discard()`); the request is
    recorded, and its upstream connection and workspace slot given back, when the stream ends."""

    __slots__ = ("_finish", "_recorder", "_stream", "_timeout", "approval", "body", "deadline", "headers", "redactor",
                 "status", "streaming", "value")

    def __init__(self, *, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                 stream: AsyncIterator[bytes] | None = None, value: Any = None, recorder: Recorder | None = None,
                 finish: Finish | None = None, deadline: float | None = None, redactor: Redactor | None = None,
                 approval: dict[str, Any] | None = None) -> None:
        self.status, self.headers, self.body, self.value = status, headers, body, value
        self.redactor = redactor  # for a door that parses the body: `Redactor.redact_json` on what it hands on
        self.approval = approval  # parked: the approval as the agent sees it (the body says the same)
        self.streaming = stream is not None
        self._stream, self._recorder, self._finish = stream, recorder, finish
        self.deadline = deadline  # monotonic: when a buffered reader (`read`) must have the whole body
        self._timeout: asyncio.Timeout | None = None  # `read`'s deadline, once it reads

    async def read(self, max_bytes: int) -> tuple[bytes, bool]:
        """The body for a door that answers with it whole: (at most `max_bytes` bytes, whether it was cut).
        The whole read ends by `deadline` (UpstreamTimeout); the request is recorded either way."""
        if not self.streaming:
            return self.body[:max_bytes], len(self.body) > max_bytes
        body, truncated = bytearray(), False  # one buffer, bounded by bytes (not one object per piece)
        chunks = self.chunks()
        try:
            async with asyncio.timeout_at(None if self.deadline is None else _loop_time(self.deadline)) as timeout:
                self._timeout = timeout  # the stream's own ending tells a deadline from any other cancellation
                async for chunk in chunks:
                    if len(body) + len(chunk) > max_bytes:
                        body += chunk[: max_bytes - len(body)]
                        truncated = True
                        break
                    body += chunk
        except TimeoutError:
            err = UpstreamTimeout("Upstream did not send the whole response in time")
            self.discard(err)  # recorded as a timeout before closing the stream records it as ended
            raise err from None
        finally:
            await chunks.aclose()
        return bytes(body), truncated

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        error: KeyrelayError | None = None
        try:
            if self._stream is None:
                if self.body:
                    yield self.body
                return
            rec = self._recorder
            async for chunk in self._stream:
                if rec is not None:
                    rec.bytes_out += len(chunk)
                yield chunk
        except KeyrelayError as err:
            error = err
            raise
        except asyncio.CancelledError:
            if self._timeout is not None and self._timeout.expired():  # `read`'s deadline, not a client gone
                error = UpstreamTimeout("Upstream did not send the whole response in time")
            raise
        finally:
            self.discard(error)

    def discard(self, error: KeyrelayError | None = None) -> None:
        """End the response without (further) reading it; records it. Safe to call more than once."""
        finish, self._finish = self._finish, None
        if finish is not None:
            finish(error)


@dataclass(slots=True)
class Passed:
    """An upstream response after the response policy, not yet recorded: `body` is whole (the connection is
    already given back) or `stream` must be read to its end or closed with `close()`."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    stream: AsyncIterator[bytes] | None
    close: Callable[[], None]
    redactor: Redactor  # for work that parses the body: `redact_json` on what it hands on

    async def read(self, max_bytes: int) -> bytes:
        """The whole body; UpstreamUnreachable past `max_bytes`. Gives the connection back either way."""
        if self.body is not None:
            return self.body
        assert self.stream is not None
        body = bytearray()  # one buffer, bounded by bytes (not one object per piece)
        try:
            async for chunk in self.stream:
                if len(body) + len(chunk) > max_bytes:
                    raise UpstreamUnreachable("Upstream response is too large to process")
                body += chunk
        finally:
            self.close()
        return bytes(body)


class Exchange:
    """An admitted request while a door's work runs: who calls, which source, and upstream calls that count
    toward this request's one log entry."""

    __slots__ = ("_relay", "admitted", "bytes_out", "deadline", "upstream_status")

    def __init__(self, relay: Relay, admitted: Admitted, deadline: float | None) -> None:
        self._relay, self.admitted, self.deadline = relay, admitted, deadline
        self.upstream_status: int | None = None  # the last upstream answer's status
        self.bytes_out = 0  # set by work whose answer the door renders (`Reply.value`)

    @property
    def caller(self) -> Caller:
        return self.admitted.caller

    @property
    def source(self) -> Source:
        return self.admitted.resolved.source

    @property
    def credentials(self) -> Credentials:
        return self.admitted.resolved.credentials

    @property
    def facts(self) -> ConnectorFacts | None:
        return self.admitted.facts

    async def send(self, inbound: Inbound) -> Passed:
        """One upstream call (`inbound.target` says where); the workspace slot is already held."""
        relay, rec = self._relay, self.admitted.recorder
        resolved = self.admitted.resolved
        prep = relay.prepared(resolved, self.admitted.facts)
        if self.caller.constraints:  # each upstream call of a narrowed token (pipeline/guard.py)
            relay.guard.upstream(self.caller, inbound, prep.base, rec)
        out = relay.outbound(inbound, resolved.source, prep, rec)
        token = await relay.oauth_token(resolved.source, prep)
        sent, redactor = await relay.send(resolved.source, prep, out, token)
        rec.upstream_ms = sent.upstream_ms if rec.upstream_ms is None else rec.upstream_ms + sent.upstream_ms
        self.upstream_status = sent.response.status
        return await relay.passed(inbound.method, sent.response, redactor)

    def check_action(self, entity: str, action: str) -> None:
        """Refuse an execute action or a stream (`entity.list`) that the caller's token constraints do not allow,
        before anything is sent (pipeline/guard.py)."""
        if self.caller.constraints:
            self._relay.guard.action(self.caller, f"{entity}.{action}", self.admitted.recorder)


Work = Callable[[Exchange], Awaitable[Reply]]
Describe = Callable[[Admitted], Awaitable[approval.Parked | None]]  # a door's request in its parked form, if parked


class WorkspaceGate:
    """Caps concurrent upstream requests per workspace; excess requests are refused at once."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._busy: dict[str, int] = {}

    def enter(self, workspace_id: str) -> Callable[[], None]:
        n = self._busy.get(workspace_id, 0)
        if n >= self._cap:
            raise RateLimited("Too many concurrent upstream requests for this workspace", retry_after=1)
        self._busy[workspace_id] = n + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._busy[workspace_id] - 1
                if left:
                    self._busy[workspace_id] = left
                else:
                    del self._busy[workspace_id]

        return release


class Relay:
    def __init__(self, *, authenticator: Authenticator, resolver: SourceResolver, limiter: RateLimiter,
                 upstream: UpstreamClient, log: LogSink, clock: Clock, connectors: Mapping[str, ConnectorFacts],
                 max_body_bytes: int, workspace_cap: int, oauth: OAuthSender | None = None,
                 guard: ConstraintGuard | None = None, approvals: ApprovalGate | None = None) -> None:
        self._authn, self._resolver, self._limiter = authenticator, resolver, limiter
        self._upstream, self._log, self._clock = upstream, log, clock
        self._connectors = connectors
        self._max_body = max_body_bytes
        self._gate = WorkspaceGate(workspace_cap)
        self._prepared: dict[int, tuple[Resolved, build.Prepared]] = {}
        self._oauth = oauth
        self.guard = guard or ConstraintGuard(None, clock)  # without a budget store, budgeted tokens answer 503
        self._approvals = approvals

    # --- the two entry points ----------------------------------------------------------------------------

    async def relay(self, inbound: Inbound) -> Relayed:
        """The whole pipeline for an HTTP passthrough (gateway, request API)."""
        admitted = await self._admit(inbound, policy.API_CONNECTOR_KINDS, enforce_methods=True)
        if admitted.resolved.source.policy.approval is not None:
            parked = await self._park(inbound, admitted, self._describe_http(inbound))
            if parked is not None:
                return parked
        rec = admitted.recorder
        deadline = time.monotonic() + admitted.resolved.source.policy.timeout_seconds
        try:
            passed, release = await self._pass(inbound, admitted)
        except KeyrelayError as err:
            final = self._body_error(err, rec, admitted.resolved.source)
            rec.done(final.status, final)
            if final is err:
                raise
            raise final from None
        except BaseException:
            rec.done(CLIENT_CLOSED)  # the agent went away (or the task was cancelled)
            raise
        return self._finished(passed, rec, release, deadline)

    async def _pass(self, inbound: Inbound, admitted: Admitted) -> tuple[Passed, Callable[[], None]]:
        resolved, rec = admitted.resolved, admitted.recorder
        source = resolved.source
        prep = self.prepared(resolved, admitted.facts)
        out = self.outbound(inbound, source, prep, rec)
        token = await self.oauth_token(source, prep)  # waiting for a refresh takes no workspace slot
        release = self._gate.enter(source.workspace_id)
        try:
            sent, redactor = await self.send(source, prep, out, token)
            rec.upstream_ms = sent.upstream_ms
            return await self.passed(inbound.method, sent.response, redactor), release
        except BaseException:
            release()
            raise

    async def handle(self, inbound: Inbound, *, kinds: frozenset[str], work: Work, bounded: bool = True,
                     park: Describe | None = None) -> Relayed:
        """Admit, hold a workspace slot while `work` runs, and record once. With `bounded`, the work as a whole
        must end within the source's `timeout_seconds` (buffered answers); a stream it returns is not bounded.
        `park` describes the request for the park step (doors whose requests may need approval)."""
        admitted = await self._admit(inbound, kinds, enforce_methods=False)
        parked = None if park is None else await self._park(inbound, admitted, park)
        if parked is not None:
            return parked
        rec = admitted.recorder
        source = admitted.resolved.source
        try:
            release = self._gate.enter(source.workspace_id)
        except KeyrelayError as err:
            rec.done(err.status, err)
            raise
        limit = source.policy.timeout_seconds if bounded else None
        ex = Exchange(self, admitted, None if limit is None else time.monotonic() + limit)
        try:
            async with asyncio.timeout(limit):
                reply = await work(ex)
        except TimeoutError:
            release()
            timeout = UpstreamTimeout("Upstream did not answer in time")
            rec.upstream_status = ex.upstream_status
            rec.done(timeout.status, timeout)
            raise timeout from None
        except KeyrelayError as err:
            release()
            rec.upstream_status = ex.upstream_status
            rec.done(err.status, err)
            raise
        except BaseException:
            release()
            rec.done(CLIENT_CLOSED)
            raise
        rec.upstream_status = ex.upstream_status
        if reply.stream is None:
            release()
            rec.bytes_out = len(reply.body) or ex.bytes_out
            rec.done(reply.status)
            return Relayed(status=reply.status, headers=reply.headers, body=reply.body, value=reply.value)

        def finish(error: KeyrelayError | None) -> None:
            release()
            rec.done(reply.status, error)

        return Relayed(status=reply.status, headers=reply.headers, stream=reply.stream, recorder=rec, finish=finish)

    async def probe(self, inbound: Inbound, caller: Caller, resolved: Resolved, facts: ConnectorFacts,
                    work: Work) -> Any:
        """Run `work` against credentials that are not stored yet (Connect checks them before saving anything,
        docs/connect.md). There is no token to authenticate, and no stored source to rate-limit; the rest is the
        same: a workspace slot, the source's timeout, the guarded upstream, redaction, one log entry. Returns
        the reply's value."""
        rec = Recorder(inbound, self._log, self._clock)
        rec.caller, rec.workspace_id, rec.connector = caller.id, resolved.source.workspace_id, resolved.source.connector
        if isinstance(inbound.source, ById):  # logged under its id only if a stored source gets new credentials
            rec.source_id = inbound.source.source_id or None
        try:
            if not self._log.healthy:
                raise Unavailable("The request log cannot be written; refusing to serve unlogged traffic")
            release = self._gate.enter(resolved.source.workspace_id)
        except KeyrelayError as err:
            rec.done(err.status, err)
            raise
        limit = resolved.source.policy.timeout_seconds
        ex = Exchange(self, Admitted(caller=caller, resolved=resolved, recorder=rec, facts=facts),
                      time.monotonic() + limit)
        try:
            async with asyncio.timeout(limit):
                reply = await work(ex)
        except TimeoutError:
            timeout = UpstreamTimeout("Upstream did not answer in time")
            rec.upstream_status = ex.upstream_status
            rec.done(timeout.status, timeout)
            raise timeout from None
        except KeyrelayError as err:
            rec.upstream_status = ex.upstream_status
            rec.done(err.status, err)
            raise
        except BaseException:
            rec.done(CLIENT_CLOSED)
            raise
        finally:
            release()
            self._prepared.pop(id(resolved), None)  # unsaved credentials leave no trace in the cache
        rec.upstream_status = ex.upstream_status
        rec.done(reply.status)
        return reply.value

    # --- the front half ----------------------------------------------------------------------------------

    async def _admit(self, inbound: Inbound, kinds: frozenset[str], *, enforce_methods: bool) -> Admitted:
        """Authenticate, authorize, resolve + decrypt, policy, rate limit. A refusal is recorded and raised."""
        rec = Recorder(inbound, self._log, self._clock)
        try:
            if not self._log.healthy:
                raise Unavailable("The request log cannot be written; refusing to serve unlogged traffic")
            approved = inbound.approved  # an approved request runs as its original caller: it has no token
            caller = approved.caller if approved is not None else await self._authn.authenticate(inbound.authorization)
            rec.caller = caller.id
            ref = inbound.source
            if isinstance(ref, BySlug):
                authorize(caller, workspace_id=ref.workspace_id, scope=inbound.scope)
                resolved = self._resolver.cached_slug(ref.workspace_id, ref.slug) or \
                    await self._resolver.by_slug(ref.workspace_id, ref.slug)
            else:
                resolved = await self._resolver.by_id(ref.source_id)
            source = resolved.source
            authorize(caller, workspace_id=source.workspace_id, scope=inbound.scope)
            rec.source(source)
            facts = self._connectors.get(source.connector)
            policy.check_kind(source, None if facts is None else facts.kind, kinds)
            if enforce_methods:  # raw passthrough; declarative actions are checked against `allow_writes` too
                read_only = facts is not None and facts.catalog_api and not source.policy.allow_writes
                policy.check_method(source.policy, inbound.method, read_only=read_only, note=rec.note)
                policy.check_safe_method_body(source.policy, inbound.method, inbound.body, inbound.content_length)
            policy.check_declared_length(inbound.content_length, policy.body_limit(source.policy, self._max_body))
            if approved is not None:  # counted by the rate limits when it was parked
                approval.check_destination(inbound, approved.destination, source, self.prepared(resolved, facts),
                                           None if facts is None else facts.default_base_url)
                return Admitted(caller=caller, resolved=resolved, recorder=rec, facts=facts)
            limiter, observe = self._limiter, rec.note if source.policy.observing else None
            if not limiter.check_local(source_id=source.id, source_limit=source.policy.rate_limit_per_minute,
                                       caller_id=caller.id, observe=observe):
                await limiter.check(source_id=source.id, source_limit=source.policy.rate_limit_per_minute,
                                    caller_id=caller.id, observe=observe)
            if caller.constraints:  # a narrowed token: its constraints, then its budgets (pipeline/guard.py)
                budgets = self.guard.admit(caller, inbound, source, lambda: self.prepared(resolved, facts).base, rec)
                if budgets is not None:
                    await budgets
        except KeyrelayError as err:
            rec.done(err.status, err)
            raise
        return Admitted(caller=caller, resolved=resolved, recorder=rec, facts=facts)

    # --- the park step (pipeline/park.py) ------------------------------------------------------------------

    async def _park(self, inbound: Inbound, admitted: Admitted, describe: Describe) -> Relayed | None:
        """Park a request the source's approval rule matches (None: it goes on). The park is recorded (202); a
        refusal here is recorded as itself."""
        gate, rec, source = self._approvals, admitted.recorder, admitted.resolved.source
        if gate is None or inbound.approved is not None or source.policy.approval is None:
            return None
        try:
            parked = await describe(admitted)
            if parked is None or not gate.wants(source, method=parked.method, path=parked.path, action=parked.action,
                                                note=rec.note):
                return None
            outcome = await gate.park(parked, inbound=inbound, caller=admitted.caller, source=source, rec=rec)
        except KeyrelayError as err:
            rec.done(err.status, err)
            raise
        except BaseException:
            rec.done(CLIENT_CLOSED)
            raise
        return _from_outcome(outcome)

    def _describe_http(self, inbound: Inbound) -> Describe:
        async def describe(admitted: Admitted) -> approval.Parked | None:
            assert self._approvals is not None
            source = admitted.resolved.source
            return await self._approvals.http_request(
                inbound, source, self.prepared(admitted.resolved, admitted.facts), note=admitted.recorder.note,
                body_limit=policy.body_limit(source.policy, self._max_body))

        return describe

    # --- the back half, shared by `relay` and `Exchange.send` --------------------------------------------

    def prepared(self, resolved: Resolved, facts: ConnectorFacts | None) -> build.Prepared:
        """Base URL, injection and redactor of a resolved source, computed once per cached resolution."""
        hit = self._prepared.get(id(resolved))
        if hit is not None and hit[0] is resolved:
            return hit[1]
        prep = build.prepare(resolved.source, resolved.credentials.fields,
                             default_base_url=None if facts is None else facts.default_base_url,
                             auth=None if facts is None else facts.auth)
        if len(self._prepared) >= _PREPARED_MAX:
            self._prepared.clear()
        self._prepared[id(resolved)] = (resolved, prep)
        return prep

    def outbound(self, inbound: Inbound, source: Source, prep: build.Prepared, rec: Recorder) -> Outbound:
        body = _limited(inbound.body, policy.body_limit(source.policy, self._max_body), rec)
        return build.build(inbound, source, prep, body=body)

    async def oauth_token(self, source: Source, prep: build.Prepared) -> str | None:
        """oauth2: the access token changes over time, so it is added per request (pipeline/oauth/tokens.py)."""
        cfg = prep.injection.oauth2
        if cfg is None:
            return None
        if self._oauth is None:
            raise InternalError("OAuth2 credentials are not available in this process")
        return await self._oauth.token(source, cfg)

    async def send(self, source: Source, prep: build.Prepared, out: Outbound,
                   token: str | None) -> tuple[Sent, Redactor]:
        cfg = prep.injection.oauth2
        if cfg is None or token is None or self._oauth is None:
            return await self._upstream.send(out), prep.redactor
        return await self._oauth.send(source, cfg, out, prep.redactor, token=token)

    async def passed(self, method: str, resp: Response, redactor: Redactor) -> Passed:
        """The response policy: headers, redaction; small bodies read whole (one write, exact length)."""
        status = resp.status
        try:
            if response.has_no_body(method, status):
                headers = response.headers_for(resp, redactor, exact_length=True)
                resp.release()
                return Passed(status, headers, b"", None, _nothing, redactor)
            response.check_coding(resp, redactor)
            if response.wants_buffer(resp):
                data = await response.read_whole(resp, redactor)
                headers = response.headers_for(resp, redactor, exact_length=False)
                if redactor.active:
                    headers.append((b"content-length", str(len(data)).encode()))
                resp.release()
                return Passed(status, headers, data, None, _nothing, redactor)
        except BaseException:
            resp.release()
            raise
        return Passed(status, response.headers_for(resp, redactor, exact_length=False), None,
                      response.stream_body(resp, redactor), resp.release, redactor)

    def _finished(self, passed: Passed, rec: Recorder, release: Callable[[], None], deadline: float) -> Relayed:
        if passed.body is not None:
            release()
            rec.bytes_out = len(passed.body)
            rec.done(passed.status)
            return Relayed(status=passed.status, headers=passed.headers, body=passed.body, redactor=passed.redactor)
        status, close = passed.status, passed.close

        def finish(error: KeyrelayError | None) -> None:
            close()
            release()
            rec.done(status, error)

        return Relayed(status=status, headers=passed.headers, stream=passed.stream, recorder=rec, finish=finish,
                       deadline=deadline, redactor=passed.redactor)

    def _body_error(self, err: KeyrelayError, rec: Recorder, source: Source) -> KeyrelayError:
        """The client library may wrap the error raised by the body counter: report the size as such."""
        limit = policy.body_limit(source.policy, self._max_body)
        if rec.bytes_in > limit and not isinstance(err, PayloadTooLarge):
            return PayloadTooLarge(f"Request body is larger than {limit} bytes")
        return err


def _nothing() -> None:
    return None


def _from_outcome(outcome: Outcome) -> Relayed:
    """A parked request's answer: 202 and the approval, or (after `Prefer: wait`) the kept response itself."""
    kept = outcome.kept
    if kept is None:
        view = outcome.view
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                   (b"location", str(view["poll_url"]).encode())]
        return Relayed(status=202, headers=headers, body=outcome.body(), value={"approval": view}, approval=view)
    headers = [*kept.headers, (b"x-keyrelay-approval-id", outcome.approval.id.encode())]
    return Relayed(status=kept.status, headers=headers, body=kept.body, value=kept.value)


def _loop_time(deadline: float) -> float:
    """A `time.monotonic()` deadline on the running loop's clock (uvloop's is not monotonic()'s)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _limited(body: BodyStream | bytes | None, limit: int, rec: Recorder) -> BodyStream | bytes | None:
    """Count request body bytes and stop at the limit without reading far past it."""
    if body is None or isinstance(body, bytes):
        if body is not None:
            if len(body) > limit:
                raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
            rec.bytes_in = len(body)
        return body or None
    return _count(body, limit, rec)


async def _count(body: BodyStream, limit: int, rec: Recorder) -> AsyncIterator[bytes]:
    async for chunk in body:
        rec.bytes_in += len(chunk)
        if rec.bytes_in > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        yield chunk


__all__ = ["Admitted", "ConnectorFacts", "Describe", "Exchange", "Passed", "Relay", "Relayed", "Reply", "Work"]
