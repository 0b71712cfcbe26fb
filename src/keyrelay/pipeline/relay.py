"""The pipeline, in order. Every door turns its protocol into an `Inbound` and calls `Relay.relay`.

authenticate -> authorize -> resolve source + decrypt -> policy (kind, method, size) -> rate limit
-> build outbound + inject -> send (guarded, no redirects, timeouts, bounded retries)
-> response policy (headers, redaction) -> record (one event per request, allowed or denied)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.egress.http1 import Response
from keyrelay.egress.upstream import Sent, UpstreamClient
from keyrelay.errors import InternalError, KeyrelayError, PayloadTooLarge, RateLimited, Unavailable
from keyrelay.model import BodyStream, Caller, Inbound, Outbound, Source
from keyrelay.pipeline import build, policy, response
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.authorize import authorize
from keyrelay.pipeline.oauth.tokens import OAuthSender
from keyrelay.pipeline.ratelimit import RateLimiter
from keyrelay.pipeline.record import Recorder
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.resolve import Resolved, SourceResolver
from keyrelay.ports import Clock, LogSink

_PREPARED_MAX = 10_000
CLIENT_CLOSED = 499  # logged status of a request whose agent disconnected before the response began


@dataclass(frozen=True)
class ConnectorFacts:
    """What the pipeline needs to know of a connector definition."""

    kind: str
    default_base_url: str | None
    auth: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Admitted:
    """A request that passed the shared front half of the pipeline."""

    caller: Caller
    resolved: Resolved
    recorder: Recorder
    facts: ConnectorFacts | None


class Relayed:
    """An upstream response on its way to the agent. A whole body (`streaming` False) is in `body`: send it and
    call `finish()`; otherwise iterate `chunks()` exactly once. Either way the event is recorded once.
    `redactor`: for a door that parses the body (`Redactor.redact_json` on what it hands on)."""

    __slots__ = ("_recorder", "_release", "_resp", "_stream", "body", "headers", "redactor", "status", "streaming")

    def __init__(self, *, status: int, headers: list[tuple[bytes, bytes]], body: bytes | None,
                 stream: AsyncIterator[bytes] | None, resp: Response, recorder: Recorder,
                 release: Callable[[], None], redactor: Redactor) -> None:
        self.status, self.headers, self.redactor = status, headers, redactor
        self.body = body or b""
        self.streaming = stream is not None
        self._stream, self._resp = stream, resp
        self._recorder, self._release = recorder, release
        if stream is None:
            recorder.bytes_out = len(self.body)

    def finish(self, error: KeyrelayError | None = None) -> None:
        """Release the upstream connection and the workspace slot, and record the event (idempotent)."""
        self._resp.release()
        self._release()
        self._recorder.done(self.status, error)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        error: KeyrelayError | None = None
        try:
            if self._stream is None:
                if self.body:
                    yield self.body
            else:
                async for chunk in self._stream:
                    self._recorder.bytes_out += len(chunk)
                    yield chunk
        except KeyrelayError as err:
            error = err
            raise
        finally:
            self.finish(error)


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
                 upstream: UpstreamClient, events: LogSink, clock: Clock, connectors: Mapping[str, ConnectorFacts],
                 max_body_bytes: int, workspace_cap: int, oauth: OAuthSender | None = None) -> None:
        self._authn, self._resolver, self._limiter = authenticator, resolver, limiter
        self._upstream, self._events, self._clock = upstream, events, clock
        self._connectors = connectors
        self._max_body = max_body_bytes
        self._gate = WorkspaceGate(workspace_cap)
        self._prepared: dict[int, tuple[Resolved, build.Prepared]] = {}
        self._oauth = oauth

    async def relay(self, inbound: Inbound) -> Relayed:
        """The whole pipeline for an HTTP passthrough (gateway, request API)."""
        admitted = await self.admit(inbound, kinds=policy.API_CONNECTOR_KINDS)
        return await self.forward(inbound, admitted)

    async def admit(self, inbound: Inbound, *, kinds: frozenset[str], enforce_methods: bool = True) -> Admitted:
        """The front half every door shares: authenticate, authorize, resolve + decrypt, policy, rate limit.

        On refusal the request is recorded and the error raised. On success the caller owns the recorder and
        must call `recorder.done(...)` exactly once.
        """
        rec = Recorder(inbound, self._events, self._clock)
        try:
            if not self._events.healthy:
                raise Unavailable("The request log cannot be written; refusing to serve unlogged traffic")
            caller = await self._authn.authenticate(inbound.authorization)
            rec.caller = caller.id
            if inbound.workspace_id is not None:
                authorize(caller, workspace_id=inbound.workspace_id, scope=inbound.scope)
            resolved = self._cached(inbound) or await self._resolve(inbound)
            source = resolved.source
            authorize(caller, workspace_id=source.workspace_id, scope=inbound.scope)
            rec.source(source)
            facts = self._connectors.get(source.connector)
            policy.check_kind(source, None if facts is None else facts.kind, kinds)
            if enforce_methods:  # raw passthrough; declarative actions are governed by `allow_writes`
                policy.check_method(source.policy, inbound.method)
            policy.check_declared_length(inbound.content_length, policy.body_limit(source.policy, self._max_body))
            limiter = self._limiter
            if not limiter.check_local(source_id=source.id, source_limit=source.policy.rate_limit_per_minute,
                                       caller_id=caller.id):
                await limiter.check(source_id=source.id, source_limit=source.policy.rate_limit_per_minute,
                                    caller_id=caller.id)
        except KeyrelayError as err:
            rec.done(err.status, err)
            raise
        return Admitted(caller=caller, resolved=resolved, recorder=rec, facts=facts)

    def enter_workspace(self, workspace_id: str) -> Callable[[], None]:
        """Take one of the workspace's concurrent-request slots; call the result to give it back."""
        return self._gate.enter(workspace_id)

    async def forward(self, inbound: Inbound, admitted: Admitted) -> Relayed:
        """The back half: build, inject, send, response policy. A refusal here is recorded too."""
        try:
            return await self._forward(inbound, admitted)
        except KeyrelayError as err:
            admitted.recorder.done(err.status, err)
            raise
        except BaseException:
            admitted.recorder.done(CLIENT_CLOSED)  # the agent went away (or the task was cancelled)
            raise

    async def _forward(self, inbound: Inbound, admitted: Admitted) -> Relayed:
        source, rec = admitted.resolved.source, admitted.recorder
        limit = policy.body_limit(source.policy, self._max_body)
        prep = self._prepare(admitted.resolved, admitted.facts)
        body = _limited(inbound.body, limit, rec)
        out = build.build(inbound, source, prep, body=body, sonar=inbound.target.url is not None)
        token = await self._oauth_token(source, prep)  # waiting for a refresh takes no workspace slot
        release = self._gate.enter(source.workspace_id)
        try:
            sent, redactor = await self._send(source, prep, out, token)
            rec.upstream_ms = sent.upstream_ms
            return await self._relayed(inbound, sent.response, redactor, rec, release)
        except KeyrelayError:
            release()
            if rec.bytes_in > limit:  # the client library may wrap the error raised by the body counter
                raise PayloadTooLarge(f"Request body is larger than {limit} bytes") from None
            raise
        except BaseException:
            release()
            raise

    # oauth2: the access token changes over time, so it is added per request (pipeline/oauth.py)
    async def _oauth_token(self, source: Source, prep: build.Prepared) -> str | None:
        cfg = prep.injection.oauth2
        if cfg is None:
            return None
        if self._oauth is None:
            raise InternalError("OAuth2 credentials are not available in this process")
        return await self._oauth.token(source, cfg)

    async def _send(self, source: Source, prep: build.Prepared, out: Outbound,
                    token: str | None) -> tuple[Sent, Redactor]:
        cfg = prep.injection.oauth2
        if cfg is None or token is None or self._oauth is None:
            return await self._upstream.send(out), prep.redactor
        return await self._oauth.send(source, cfg, out, prep.redactor, token=token)

    def _cached(self, inbound: Inbound) -> Resolved | None:
        if inbound.slug is not None and inbound.workspace_id is not None:
            return self._resolver.cached_slug(inbound.workspace_id, inbound.slug)
        return None

    async def _resolve(self, inbound: Inbound) -> Resolved:
        if inbound.slug is not None and inbound.workspace_id is not None:
            return await self._resolver.by_slug(inbound.workspace_id, inbound.slug)
        return await self._resolver.by_id(inbound.source_id or "")

    def _prepare(self, resolved: Resolved, facts: ConnectorFacts | None) -> build.Prepared:
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

    async def _relayed(self, inbound: Inbound, resp: Response, redactor: Redactor,
                       rec: Recorder, release: Callable[[], None]) -> Relayed:
        status = resp.status
        try:
            if response.has_no_body(inbound.method, status):
                headers = response.headers_for(resp, redactor, exact_length=True)
                return Relayed(status=status, headers=headers, body=None, stream=None, resp=resp, recorder=rec,
                               release=release, redactor=redactor)
            response.check_coding(resp, redactor)
            if response.wants_buffer(resp):
                data = await response.read_whole(resp, redactor)
                headers = response.headers_for(resp, redactor, exact_length=False)
                if redactor.active:
                    headers.append((b"content-length", str(len(data)).encode()))
                return Relayed(status=status, headers=headers, body=data, stream=None, resp=resp, recorder=rec,
                               release=release, redactor=redactor)
        except BaseException:
            resp.release()
            raise
        return Relayed(status=status, headers=response.headers_for(resp, redactor, exact_length=False),
                       body=None, stream=response.stream_body(resp, redactor), resp=resp, recorder=rec,
                       release=release, redactor=redactor)


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


__all__ = ["Admitted", "ConnectorFacts", "Relay", "Relayed", "Source"]
