"""The last step (pipeline/record.py): one entry per request, emitted once, with no query values or secrets; and
only the pipeline creates or finishes a Recorder."""

from __future__ import annotations

import re
from pathlib import Path

from keyrelay.errors import RateLimited
from keyrelay.model import ById, BySlug, Door, Inbound, Policy, Source
from keyrelay.pipeline.record import Recorder
from support.pipeline import ManualClock, MemoryLog

# a Recorder's construction, or `.done(status, ...)` (asyncio's `Future.done()` takes no argument)
RECORDING = re.compile(r"\bRecorder\(|\.done\((?!\))")
SRC = Path(__file__).resolve().parents[2] / "src" / "keyrelay"


def _inbound(**kw: object) -> Inbound:
    values: dict[str, object] = {"door": Door.GATEWAY, "method": "GET", "path": "/api/ws/proxy/s/x",
                                 "authorization": "Bearer secret-token", "source": BySlug("ws", "s")}
    values.update(kw)
    return Inbound(**values)  # type: ignore[arg-type]


def _source() -> Source:
    return Source(id="src-1", workspace_id="ws-1", connector="http", name="n", slug="s", config={},
                  policy=Policy(), status="active", credential_fields=(), created_at=0, updated_at=0)


def test_done_emits_one_entry_with_what_was_collected() -> None:
    clock, log = ManualClock(100.0), MemoryLog()
    rec = Recorder(_inbound(), log, clock)
    rec.caller, rec.bytes_in, rec.bytes_out, rec.upstream_ms, rec.upstream_status = "key:k", 3, 7, 1.5, 401
    rec.source(_source())
    clock.advance(0.25)
    rec.done(403)
    [e] = log.entries
    assert (e.ts, e.status, e.latency_ms, e.upstream_latency_ms) == (100.0, 403, 250.0, 1.5)
    assert (e.workspace_id, e.source_id, e.connector, e.caller) == ("ws-1", "src-1", "http", "key:k")
    assert (e.bytes_in, e.bytes_out, e.upstream_status, e.error_code) == (3, 7, 401, None)
    assert (e.door, e.method, e.path) == ("gateway", "GET", "/api/ws/proxy/s/x")
    assert "secret-token" not in repr(e)


def test_a_second_done_emits_nothing() -> None:
    log = MemoryLog()
    rec = Recorder(_inbound(), log, ManualClock())
    rec.done(200)
    rec.done(499, RateLimited("late"))
    assert [e.status for e in log.entries] == [200]


def test_before_the_source_is_resolved_the_entry_names_what_the_agent_named() -> None:
    log = MemoryLog()
    Recorder(_inbound(), log, ManualClock()).done(401)
    Recorder(_inbound(source=ById("src-9")), log, ManualClock()).done(401)
    assert [(e.workspace_id, e.source_id) for e in log.entries] == [("ws", None), (None, "src-9")]


def test_errors_are_logged_by_code_with_a_bounded_message_and_bounded_fields() -> None:
    log = MemoryLog()
    Recorder(_inbound(method="X" * 40, path="/" + "p" * 5000), log, ManualClock()).done(
        429, RateLimited("m" * 1000, retry_after=3))
    [e] = log.entries
    assert e.error_code == "rate_limited" and e.error_message == "m" * 300
    assert len(e.method) == 16 and len(e.path) == 2048


def test_only_the_pipeline_creates_or_finishes_a_recorder() -> None:
    """Every request is recorded exactly once because one place records: `pipeline/`. A door or service that
    made its own Recorder, or called `.done(` on one, could log a request twice or not at all."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "pipeline":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if RECORDING.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_the_recorder_check_sees_a_recorder_outside_the_pipeline() -> None:
    """The pattern above is not vacuous: it matches the calls it must refuse."""
    pattern = RECORDING
    assert pattern.search("rec = Recorder(inbound, sink, clock)") and pattern.search("    rec.done(200)")
    assert not pattern.search("class Recorded:") and not pattern.search("self.undone(1)")
    assert not pattern.search("if not waiter.done():")  # an asyncio future's done() takes no status
