"""The last step: exactly one request-log entry per request, allowed or denied (never query values or secrets).

Only the pipeline (`pipeline/relay.py`) creates and finishes a `Recorder`."""

from __future__ import annotations

from keyrelay.errors import KeyrelayError
from keyrelay.ids import new_id
from keyrelay.model import BySlug, Inbound, LogEntry, Source
from keyrelay.ports import Clock, LogSink

_MESSAGE_MAX = 300


class Recorder:
    """Collects what is known about one request as it moves through the pipeline; emits once."""

    __slots__ = ("_clock", "_done", "_inbound", "_sink", "_started", "approval_id", "bytes_in", "bytes_out",
                 "caller", "connector", "source_id", "upstream_ms", "upstream_status", "workspace_id", "would_deny")

    def __init__(self, inbound: Inbound, sink: LogSink, clock: Clock) -> None:
        self._inbound = inbound
        self._sink = sink
        self._clock = clock
        self._started = clock()
        self._done = False
        self.caller: str | None = None
        ref = inbound.source
        self.workspace_id: str | None = ref.workspace_id if isinstance(ref, BySlug) else None
        self.source_id: str | None = None if isinstance(ref, BySlug) else ref.source_id
        self.connector: str | None = None
        self.upstream_ms: float | None = None
        self.upstream_status: int | None = None
        self.would_deny: str | None = None  # an observe-mode rule that would have refused this request
        self.bytes_in = 0
        self.bytes_out = 0
        self.approval_id: str | None = None if inbound.approved is None else inbound.approved.approval_id

    def note(self, rule: str) -> None:
        """Observe mode: `rule` would have refused this request (the first such rule is kept)."""
        if self.would_deny is None:
            self.would_deny = rule

    def source(self, source: Source) -> None:
        self.source_id, self.workspace_id, self.connector = source.id, source.workspace_id, source.connector

    def done(self, status: int, error: KeyrelayError | None = None) -> None:
        if self._done:
            return
        self._done = True
        now = self._clock()
        self._sink.emit(LogEntry(
            id=new_id(), ts=self._started, workspace_id=self.workspace_id, source_id=self.source_id,
            door=self._inbound.door.value, method=self._inbound.method[:16], path=self._inbound.path[:2048],
            status=status, latency_ms=(now - self._started) * 1000, upstream_latency_ms=self.upstream_ms,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, error_code=None if error is None else error.code,
            error_message=None if error is None else error.message[:_MESSAGE_MAX], caller=self.caller,
            connector=self.connector, upstream_status=self.upstream_status, would_deny=self.would_deny,
            approval_id=self.approval_id,
        ))
