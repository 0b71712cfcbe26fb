"""The approval service (manage/approvals.py) inside a running keyrelay, with a clock the test moves: who may
decide, many decisions racing in one process, the sweep (expiry, unknown outcomes, kept responses past their
time), and failures recorded without a library's words."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.errors import ApprovalNotPending, Forbidden, NotFound
from keyrelay.manage.approvals import APPROVE, DENY, ApprovalService, require_approver
from keyrelay.model import ALL_SCOPES, DATA_SCOPES, ApprovalStatus, Caller, CallerKind, Scope
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.upstream import FakeUpstream

APPROVER = Caller(kind=CallerKind.APPLICATION, id="app:approver", workspace_id=None, scopes=ALL_SCOPES)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("caller", "allowed"), [
    (APPROVER, True),
    (Caller(kind=CallerKind.APPLICATION, id="app:x", workspace_id=None, scopes=ALL_SCOPES - {Scope.APPROVE}), False),
    (Caller(kind=CallerKind.API_KEY, id="key:x", workspace_id="w", scopes=ALL_SCOPES), False),
    (Caller(kind=CallerKind.WORKSPACE, id="wst:x", workspace_id="w", scopes=DATA_SCOPES), False),
])
def test_only_application_tokens_with_the_approve_scope_decide(caller: Caller, allowed: bool) -> None:
    if allowed:
        require_approver(caller)
    else:
        with pytest.raises(Forbidden):
            require_approver(caller)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[KeyrelayServer]:
    settings = make_settings(data_dir=tmp_path / "d", approval_result_ttl_seconds=120)
    with KeyrelayServer(settings, clock=clock) as kr:
        yield kr


def _service(kr: KeyrelayServer) -> ApprovalService:
    assert kr.app.runtime is not None
    return kr.app.runtime.approvals


def _parked(kr: KeyrelayServer, upstream_url: str, *, n: int = 1) -> tuple[list[str], dict[str, str]]:
    admin = Admin(kr.url)
    ws = admin.workspace("w")
    admin.source(ws, upstream_url=upstream_url, policy={"approval": {"methods": ["POST"], "timeout_seconds": 60}})
    auth = {"Authorization": f"Bearer {admin.api_key(ws, ['proxy'])}"}
    ids = []
    for _ in range(n):
        r = httpx.post(f"{kr.url}/api/{ws}/proxy/echo/echo", content=b"x", headers=auth)
        assert r.status_code == 202
        ids.append(r.json()["approval"]["id"])
    admin.close()
    return ids, auth


def test_many_decisions_racing_in_one_process_run_it_once(server: KeyrelayServer, upstream: FakeUpstream) -> None:
    (aid,), _ = _parked(server, upstream.url)
    svc = _service(server)

    async def race() -> list[Any]:
        return await asyncio.gather(*[svc.decide(APPROVER, aid, APPROVE) for _ in range(20)],
                                    return_exceptions=True)

    results = server.run(race())
    assert {r.status for r in results} <= {ApprovalStatus.EXECUTING, ApprovalStatus.EXECUTED}
    with pytest.raises(ApprovalNotPending):
        server.run(svc.decide(APPROVER, aid, DENY))
    assert len(upstream.requests) == 1


def test_the_sweep_expires_undecided_approvals_and_forgets_kept_responses(server: KeyrelayServer, clock: Clock,
                                                                         upstream: FakeUpstream) -> None:
    (kept, undecided), auth = _parked(server, upstream.url, n=2)
    svc = _service(server)
    server.run(svc.decide(APPROVER, kept, APPROVE))
    clock.now += 61
    assert server.run(svc.sweep()) == 1
    assert server.run(svc.approver_view(APPROVER, undecided)).status is ApprovalStatus.EXPIRED
    with pytest.raises(ApprovalNotPending):
        server.run(svc.decide(APPROVER, undecided, APPROVE))
    clock.now += 60  # the kept response (120 s) is gone: its caller sees the approval without it
    server.run(svc.sweep())
    r = httpx.get(f"{server.url}/api/v1/approvals/{kept}", headers=auth)
    assert r.status_code == 200 and "response" not in r.json() and r.json()["approval"]["status"] == "executed"
    assert server.run(svc.sweep()) == 0  # nothing left to do, and nothing done twice
    assert len(upstream.requests) == 1


def test_nobody_decides_an_approval_past_its_expiry(server: KeyrelayServer, clock: Clock,
                                                   upstream: FakeUpstream) -> None:
    """Even before anything (a poll, the sweep) has marked it expired."""
    (aid,), _ = _parked(server, upstream.url)
    clock.now += 60
    with pytest.raises(ApprovalNotPending):
        server.run(_service(server).decide(APPROVER, aid, APPROVE))
    assert server.run(_service(server).approver_view(APPROVER, aid)).status is ApprovalStatus.EXPIRED
    assert upstream.requests == []


def test_an_unreachable_upstream_fails_the_approval_without_a_library_message(server: KeyrelayServer) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (aid,), auth = _parked(server, f"http://127.0.0.1:{port}")
    done = server.run(_service(server).decide(APPROVER, aid, APPROVE))
    assert done.status is ApprovalStatus.FAILED and done.error_code == "upstream_unreachable"
    r = httpx.get(f"{server.url}/api/v1/approvals/{aid}", headers=auth)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    assert "Errno" not in r.text and "refused" not in (done.error_message or "").lower()


def test_an_unknown_link_decides_nothing(server: KeyrelayServer, upstream: FakeUpstream) -> None:
    _parked(server, upstream.url)
    with pytest.raises(NotFound):
        server.run(_service(server).decide_by_link("krl_" + "a" * 43, APPROVE))
    assert upstream.requests == []
