"""SqlApprovalStore on both backends: every status change is a compare-and-set that one caller wins, however
many race (on SQLite and PostgreSQL alike); the kept response is taken once; lists, due work and retention."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import Approval, ApprovalStatus, CallerKind, Scope, SealedRecord
from keyrelay.store.approvals import SqlApprovalStore
from keyrelay.store.engine import make_engine
from keyrelay.store.workspaces import SqlWorkspaceStore
from support.db import url_for

P, X, D, F, E, EXP = (ApprovalStatus.PENDING, ApprovalStatus.EXECUTING, ApprovalStatus.DENIED,
                      ApprovalStatus.FAILED, ApprovalStatus.EXECUTED, ApprovalStatus.EXPIRED)


async def _approval(engine: AsyncEngine, *, expires_at: float = 100.0, workspace_id: str | None = None,
                    link: str | None = None) -> Approval:
    if workspace_id is None:
        ws = await SqlWorkspaceStore(engine).create_workspace(id=str(uuid.uuid4()), name=uuid.uuid4().hex, now=1.0)
        workspace_id = ws.id
    a = Approval(id="apv_" + uuid.uuid4().hex, workspace_id=workspace_id, source_id=str(uuid.uuid4()),
                 door="gateway", caller="key:k1", caller_kind=CallerKind.API_KEY.value,
                 caller_scopes=frozenset({Scope.PROXY, Scope.MCP}), method="POST", path="/api/w/proxy/s/x",
                 action=None, request_hash="ab" * 32, request=SealedRecord("key-1", b"\x00sealed\xff"), body_bytes=7,
                 status=P, created_at=10.0, expires_at=expires_at, link_digest=link)
    await SqlApprovalStore(engine).add(a)
    return a


async def test_an_approval_round_trips(engine: AsyncEngine) -> None:
    store = SqlApprovalStore(engine)
    a = await _approval(engine, link="d" * 64)
    assert await store.get(a.id) == a
    assert await store.by_link("d" * 64) == a
    assert await store.get("apv_missing") is None and await store.by_link("e" * 64) is None


async def test_of_many_racing_decisions_exactly_one_wins(database_url: str | None, engine: AsyncEngine,
                                                         tmp_path: Path) -> None:
    """Each contender has its own engine (its own connections), as separate instances would."""
    a = await _approval(engine)
    engines = [make_engine(url_for(database_url, tmp_path)) for _ in range(6)]
    try:
        results = await asyncio.gather(*[
            SqlApprovalStore(eng).transition(a.id, frm=P, to=X if i % 2 else D, after=50.0,
                                             changes={"decided_by": f"app:{i}", "decided_at": 20.0})
            for i, eng in enumerate(engines) for _ in range(3)])
    finally:
        for eng in engines:
            await eng.dispose()
    assert sum(results) == 1
    after = await SqlApprovalStore(engine).get(a.id)
    assert after is not None and after.status in (X, D) and after.decided_by is not None


async def test_a_transition_honours_the_state_and_the_expiry(engine: AsyncEngine) -> None:
    store = SqlApprovalStore(engine)
    a = await _approval(engine, expires_at=100.0)
    assert not await store.transition(a.id, frm=P, to=X, changes={}, after=100.0)  # expired at 100
    assert not await store.transition(a.id, frm=P, to=EXP, changes={}, before=99.0)  # not yet expired at 99
    assert not await store.transition(a.id, frm=X, to=E, changes={})  # not executing
    assert await store.transition(a.id, frm=P, to=EXP, changes={}, before=100.0)
    assert not await store.transition(a.id, frm=P, to=X, changes={}, after=0.0)  # no longer pending


async def test_the_kept_response_is_taken_once(database_url: str | None, engine: AsyncEngine, tmp_path: Path) -> None:
    store = SqlApprovalStore(engine)
    a = await _approval(engine)
    assert await store.transition(a.id, frm=P, to=X, changes={})
    kept = SealedRecord("key-2", b"response-blob")
    assert await store.transition(a.id, frm=X, to=E, changes={"result": kept, "result_expires_at": 500.0,
                                                                "upstream_status": 201})
    engines = [make_engine(url_for(database_url, tmp_path)) for _ in range(4)]
    try:
        got = await asyncio.gather(*[SqlApprovalStore(eng).take_result(a.id, now=100.0)
                                     for eng in engines for _ in range(3)])
    finally:
        for eng in engines:
            await eng.dispose()
    assert [g for g in got if g is not None] == [kept]
    after = await store.get(a.id)
    assert after is not None and after.result is None and after.fetched_at == 100.0 and after.upstream_status == 201


async def test_a_kept_response_past_its_time_is_not_given_and_is_dropped(engine: AsyncEngine) -> None:
    store = SqlApprovalStore(engine)
    a = await _approval(engine)
    await store.transition(a.id, frm=P, to=X, changes={})
    await store.transition(a.id, frm=X, to=E, changes={"result": SealedRecord("k", b"r"), "result_expires_at": 50.0})
    assert await store.take_result(a.id, now=50.0) is None
    assert await store.drop_results(now=49.0) == 0
    assert await store.drop_results(now=50.0) == 1
    after = await store.get(a.id)
    assert after is not None and after.result is None and after.fetched_at is None


async def test_lists_filter_by_workspace_and_status_and_count_pending(engine: AsyncEngine) -> None:
    store = SqlApprovalStore(engine)
    one = await _approval(engine, expires_at=100.0)
    stale = await _approval(engine, expires_at=30.0, workspace_id=one.workspace_id)
    other = await _approval(engine, expires_at=100.0)
    pending = await store.list_approvals(workspace_id=one.workspace_id, status=P, now=50.0, limit=10)
    assert [a.id for a in pending] == [one.id]  # the one past its expiry counts as expired, swept or not
    expired = await store.list_approvals(workspace_id=None, status=EXP, now=50.0, limit=10)
    assert [a.id for a in expired] == [stale.id]
    assert {a.id for a in await store.list_approvals(workspace_id=None, status=None, now=50.0, limit=10)} >= \
        {one.id, stale.id, other.id}
    assert await store.count_pending(one.workspace_id, now=50.0) == 1


async def test_due_finds_expired_and_stuck_and_purge_keeps_what_is_live(engine: AsyncEngine) -> None:
    store = SqlApprovalStore(engine)
    late = await _approval(engine, expires_at=30.0)
    stuck = await _approval(engine)
    await store.transition(stuck.id, frm=P, to=X, changes={"decided_at": 20.0})
    fresh = await _approval(engine)
    due = {a.id for a in await store.due(now=50.0, executing_before=25.0, limit=10)}
    assert late.id in due and stuck.id in due and fresh.id not in due
    assert await store.transition(late.id, frm=P, to=EXP, changes={}, before=50.0)
    assert await store.purge(before=11.0) == 1  # only the ended one; the pending and the executing stay
    assert await store.get(late.id) is None and await store.get(fresh.id) is not None


async def test_only_known_columns_change(engine: AsyncEngine) -> None:
    a = await _approval(engine)
    with pytest.raises(ValueError, match="cannot change"):
        await SqlApprovalStore(engine).transition(a.id, frm=P, to=X, changes={"request_hash": "0" * 64})
