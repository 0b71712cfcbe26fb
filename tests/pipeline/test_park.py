"""The park step (pipeline/park.py) on a real database and vault, with a clock the test moves: what is parked and
how it is sealed, the body bound, observe mode, expiry (once, with one log row), an execution whose outcome is
unknown, waiting woken by a decision, the response handed to the original caller once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalMismatch,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
)
from keyrelay.model import (
    ApprovalRule,
    ApprovalStatus,
    BySlug,
    Caller,
    CallerKind,
    Door,
    Inbound,
    LogEntry,
    LogQuery,
    Policy,
    Scope,
    Source,
    Tail,
)
from keyrelay.pipeline import approval, build
from keyrelay.pipeline.park import ApprovalGate, Kept, Limits, Links
from keyrelay.pipeline.record import Recorder
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.requestlog import Metrics, RequestLog
from keyrelay.store.approvals import SqlApprovalStore
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.requestlog import SqlRequestLogStore
from keyrelay.store.tables import approvals
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import KeyVault, new_key
from support.db import migrated_engine

BODY = b'{"amount": 4200, "note": "agent-data-3b9f"}'
AGENT = Caller(kind=CallerKind.API_KEY, id="key:agent", workspace_id=None, scopes=frozenset({Scope.PROXY}))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    engine: AsyncEngine
    gate: ApprovalGate
    clock: Clock
    log: RequestLog
    vault: KeyVault
    source: Source

    async def rows(self) -> list[LogEntry]:
        await self.log.flush()
        return await SqlRequestLogStore(self.engine).query(LogQuery(limit=100))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with migrated_engine(None, tmp_path) as engine:
        clock = Clock(1_000_000.0)
        vault = KeyVault(SqlKeyRingStore(engine), new_key(), clock=clock)
        await vault.load(may_create=True)
        log = RequestLog(SqlRequestLogStore(engine), Metrics(), clock=clock)
        ws = await SqlWorkspaceStore(engine).create_workspace(id=str(uuid.uuid4()), name="w", now=clock())
        rule = ApprovalRule(methods=frozenset({"POST"}), timeout_seconds=60.0)
        source = Source(id=str(uuid.uuid4()), workspace_id=ws.id, connector="http", name="s", slug="s",
                        config={"upstream_url": "https://api.example.com/v1"}, policy=Policy(approval=rule),
                        status="active", credential_fields=(), created_at=0, updated_at=0)
        gate = ApprovalGate(store=SqlApprovalStore(engine), cipher=vault, sink=log, clock=clock,
                            hasher=TokenHasher(b"k" * 32), limits=Limits(max_body_bytes=1024, max_pending=3,
                                                                         max_response_bytes=8, poll_seconds=0.05),
                            links=Links(base="https://kr.example"))
        yield Env(engine, gate, clock, log, vault, dataclasses.replace(source, workspace_id=ws.id))


def _inbound(body: bytes | AsyncIterator[bytes] | None = BODY, **kw: object) -> Inbound:
    values: dict[str, object] = {
        "door": Door.GATEWAY, "method": "POST", "path": "/api/w/proxy/s/charges", "authorization": None,
        "source": BySlug("w", "s"), "target": Tail("charges", "a=1"),
        "headers": ((b"content-type", b"application/json"), (b"authorization", b"Bearer kr_agent-token"),
                    (b"cookie", b"session=agent-cookie")), "body": body,
        "content_length": len(body) if isinstance(body, bytes) else None}
    values.update(kw)
    return Inbound(**values)  # type: ignore[arg-type]


async def _park(env: Env, inbound: Inbound | None = None, caller: Caller = AGENT) -> approval.Parked:
    inbound = inbound or _inbound()
    rec = Recorder(inbound, env.log, env.clock)
    prep = build.prepare(env.source, {"bearer_token": "cred-7c1d-secret"}, default_base_url=None)
    parked = await env.gate.http_request(inbound, env.source, prep, body_limit=10_000, note=rec.note)
    assert parked is not None
    outcome = await env.gate.park(parked, inbound=inbound, caller=caller, source=env.source, rec=rec)
    assert outcome.kept is None and outcome.view["status"] == "pending"
    return parked


async def _only(env: Env) -> str:
    async with env.engine.connect() as conn:
        ids = [r.id for r in await conn.execute(sa.select(approvals.c.id))]
    assert len(ids) == 1
    return ids[0]


async def test_a_parked_request_holds_what_the_agent_sent_after_the_header_policy_sealed(env: Env) -> None:
    parked = await _park(env)
    assert parked.headers == (("content-type", "application/json"),)  # no token, no cookie
    assert parked.destination == "https://api.example.com/v1/charges?a=1" and parked.body == BODY
    async with env.engine.connect() as conn:
        row = (await conn.execute(sa.select(approvals))).one()
    stored = b"".join(str(v).encode() if not isinstance(v, bytes) else v for v in row)
    for plain in (b"agent-data-3b9f", b"cred-7c1d-secret", b"kr_agent-token", b"agent-cookie", b"4200"):
        assert plain not in stored  # the body is encrypted; the token, cookie and credential never stored at all
    a = await env.gate.store.get(row.id)
    assert a is not None and a.body_bytes == len(BODY) and a.request_hash == approval.request_hash(parked)
    assert await env.gate.parked(a) == parked
    other = dataclasses.replace(a, id="apv_other")  # a record moved to another approval does not open
    with pytest.raises(ApprovalMismatch):
        await env.gate.parked(other)
    rebound = dataclasses.replace(a, request_hash="0" * 64)  # nor one whose hash was changed
    with pytest.raises(ApprovalMismatch):
        await env.gate.parked(rebound)


async def test_a_body_over_the_bound_is_refused_before_parking(env: Env) -> None:
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 200

    prep = build.prepare(env.source, {}, default_base_url=None)
    for inbound in (_inbound(b"x" * 1025), _inbound(stream(), content_length=None),
                    _inbound(None, content_length=5000)):
        with pytest.raises(PayloadTooLarge):
            await env.gate.http_request(inbound, env.source, prep, body_limit=10_000, note=lambda _r: None)
    with pytest.raises(PayloadTooLarge):  # the source's own, smaller limit counts too
        await env.gate.http_request(_inbound(b"x" * 600), env.source, prep, body_limit=500, note=lambda _r: None)
    async with env.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(approvals))).scalar_one() == 0


async def test_requests_the_rule_does_not_name_and_observed_ones_are_not_parked(env: Env) -> None:
    prep = build.prepare(env.source, {}, default_base_url=None)
    noted: list[str] = []
    assert await env.gate.http_request(_inbound(None, method="GET"), env.source, prep, body_limit=10_000,
                                       note=noted.append) is None
    assert noted == []
    observing = dataclasses.replace(env.source, policy=dataclasses.replace(env.source.policy, mode="observe"))
    assert await env.gate.http_request(_inbound(), observing, prep, body_limit=10_000, note=noted.append) is None
    assert noted == ["approval"]


async def test_a_workspace_parks_at_most_max_pending(env: Env) -> None:
    for _ in range(3):
        await _park(env)
    with pytest.raises(RateLimited):
        await _park(env)


async def test_an_undecided_approval_expires_once_with_one_log_row(env: Env) -> None:
    await _park(env)
    a = await env.gate.store.get(await _only(env))
    assert a is not None
    env.clock.now += 59
    assert (await env.gate.due(a)).status is ApprovalStatus.PENDING
    env.clock.now += 1  # expires_at: nobody may decide from now on
    ended = await asyncio.gather(*[env.gate.due(a) for _ in range(5)])
    assert {e.status for e in ended} == {ApprovalStatus.EXPIRED}
    with pytest.raises(ApprovalExpired):
        await env.gate.answer(a.id, AGENT, wait=None)
    rows = await env.rows()
    assert sorted(r.status for r in rows) == [202, 410]
    assert {r.approval_id for r in rows} == {a.id} and [r.error_code for r in rows if r.status == 410] == \
        ["approval_expired"]


async def test_an_execution_that_never_finished_ends_with_an_unknown_outcome(env: Env) -> None:
    await _park(env)
    aid = await _only(env)
    assert await env.gate.store.transition(aid, frm=ApprovalStatus.PENDING, to=ApprovalStatus.EXECUTING,
                                           changes={"decided_at": env.clock()})
    env.clock.now += env.gate.limits.unknown_after_seconds - 1
    with pytest.raises(NotFound):  # only its caller may ask
        await env.gate.answer(aid, dataclasses.replace(AGENT, id="key:other"), wait=None)
    assert (await env.gate.answer(aid, AGENT, wait=None)).view["status"] == "executing"
    env.clock.now += 2
    with pytest.raises(OutcomeUnknown):
        await env.gate.answer(aid, AGENT, wait=None)
    assert [r.error_code for r in await env.rows() if r.status == 502] == ["outcome_unknown"]


async def test_a_waiting_caller_gets_the_response_when_the_decision_is_made(env: Env) -> None:
    await _park(env)
    aid = await _only(env)

    async def decide() -> None:
        a = await env.gate.store.get(aid)
        assert a is not None
        assert await env.gate.store.transition(aid, frm=ApprovalStatus.PENDING, to=ApprovalStatus.EXECUTING,
                                               changes={"decided_at": env.clock()})
        await env.gate.keep(a, Kept(201, [(b"content-type", b"text/plain")], b"created:0123456789"),
                            upstream_status=201)

    started = time.monotonic()
    waited, _ = await asyncio.gather(env.gate.answer(aid, AGENT, wait=30), decide())
    assert time.monotonic() - started < 10  # woken by the decision, not by the end of the wait
    assert waited.kept is not None and waited.kept.status == 201
    assert waited.kept.body == b"created:" and waited.kept.truncated  # bounded at max_response_bytes (8)
    again = await env.gate.answer(aid, AGENT, wait=None)
    assert again.kept is None and again.view["status"] == "executed"  # handed over once


async def test_a_denied_approval_is_an_error_for_its_caller(env: Env) -> None:
    await _park(env)
    aid = await _only(env)
    assert await env.gate.store.transition(aid, frm=ApprovalStatus.PENDING, to=ApprovalStatus.DENIED, changes={})
    with pytest.raises(ApprovalDenied):
        await env.gate.answer(aid, AGENT, wait=5)


def test_links() -> None:
    links = Links(base="https://kr.example", page="https://console.example/approvals/{id}?tab=1")
    assert links.poll("apv_1") == "https://kr.example/api/v1/approvals/apv_1"
    assert links.decide("krl_x") == "https://kr.example/approvals/link/krl_x"
    assert links.approval_page("apv_1") == "https://console.example/approvals/apv_1?tab=1"
    assert Links().approval_page("apv_1") is None and Links().poll("a") == "/api/v1/approvals/a"


async def test_a_record_sealed_for_its_hash_but_holding_another_request_is_refused(env: Env) -> None:
    """Defence in depth: even a record that opens for the approval's hash must hold the request that hash names."""
    parked = await _park(env)
    a = await env.gate.store.get(await _only(env))
    assert a is not None
    other = dataclasses.replace(parked, body=b'{"amount": 999999}')
    forged = await env.vault.seal_record(approval.context(a.id, a.workspace_id, "request", a.request_hash),
                                         other.encode())
    with pytest.raises(ApprovalMismatch):
        await env.gate.parked(dataclasses.replace(a, request=forged))
