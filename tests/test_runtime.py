"""The wiring (runtime.py): what is built once per process, and what it owes on the way out: the admin
application on first start only, every request-log entry flushed on exit, readiness that reports a sealed vault,
and source changes that reach the pipeline's cache at once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from keyrelay.errors import NotFound, Sealed, Unavailable
from keyrelay.http.services import Services
from keyrelay.model import BySlug, Door, Inbound, Scope, Tail
from keyrelay.runtime import runtime
from keyrelay.settings import Settings
from support.keyrelay import SCALE_OUT_MASTER_KEY
from support.pipeline import ADMIN
from support.upstream import FakeUpstream


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", upstream_allow_cidrs="127.0.0.0/8", **kw)  # type: ignore[arg-type]


async def test_the_admin_application_is_made_on_first_start_only(tmp_path: Path) -> None:
    async with runtime(_settings(tmp_path)) as rt:
        first = rt.bootstrap
    async with runtime(_settings(tmp_path)) as rt:
        again = rt.bootstrap
        assert isinstance(rt.services, Services) and rt.services.catalog["http"].name == "http"
    assert first is not None and first.client_secret and again is None
    assert (tmp_path / "data" / "master.key").exists()


async def test_every_logged_request_is_flushed_on_exit(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = _settings(tmp_path, log_flush_seconds=3600)  # the timer never fires within the test
    async with runtime(settings) as rt:
        svc = rt.services
        ws = await svc.workspaces.create("w")
        await svc.sources.create_source(ADMIN, {"workspace_id": ws.id, "connector": "http", "name": "echo",
                                                "config": {"upstream_url": upstream.url}})
        _, key = await svc.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="k",
                                                 expires_at=None)
        for _ in range(3):
            out = await rt.relay.relay(Inbound(door=Door.GATEWAY, method="GET", path="/p",
                                               authorization=f"Bearer {key}", source=BySlug(ws.id, "echo"),
                                               target=Tail("echo")))
            assert out.status == 200
    with sqlite3.connect(tmp_path / "data" / "keyrelay.db") as db:
        assert db.execute("SELECT count(*), min(status), max(status) FROM gateway_logs").fetchone() == (3, 200, 200)


async def test_ready_reports_a_vault_opened_with_the_wrong_key(tmp_path: Path) -> None:
    async with runtime(_settings(tmp_path)) as rt:
        await rt.services.ready()
    async with runtime(_settings(tmp_path, master_key=SCALE_OUT_MASTER_KEY)) as rt:  # not this database's key
        assert rt.services.vault.sealed
        with pytest.raises(Sealed):
            await rt.services.ready()


async def test_a_source_change_reaches_the_pipeline_at_once(tmp_path: Path, upstream: FakeUpstream) -> None:
    async with runtime(_settings(tmp_path, source_cache_seconds=3600)) as rt:
        svc = rt.services
        ws = await svc.workspaces.create("w")
        src = await svc.sources.create_source(ADMIN, {"workspace_id": ws.id, "connector": "http", "name": "echo",
                                                      "config": {"upstream_url": upstream.url}})
        _, key = await svc.access.create_api_key(workspace_id=ws.id, scopes=frozenset({Scope.PROXY}), name="k",
                                                 expires_at=None)

        def inbound(slug: str) -> Inbound:
            return Inbound(door=Door.GATEWAY, method="GET", path="/p", authorization=f"Bearer {key}",
                           source=BySlug(ws.id, slug), target=Tail("echo"))

        assert (await rt.relay.relay(inbound("echo"))).status == 200  # now cached for an hour
        await svc.sources.update_source(ADMIN, src.id, {"slug": "moved"})
        with pytest.raises(NotFound):
            await rt.relay.relay(inbound("echo"))
        assert (await rt.relay.relay(inbound("moved"))).status == 200


async def test_a_background_loop_that_dies_while_serving_fails_readiness(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    from keyrelay.store.budgets import BudgetLeases

    async def broken(self: BudgetLeases, stop: object) -> None:
        raise RuntimeError("the loop broke")

    monkeypatch.setattr(BudgetLeases, "run", broken)  # the one way to make a real loop die on purpose
    readiness = "ready"
    with pytest.raises(RuntimeError, match="the loop broke"):  # and it is still raised when the runtime stops
        async with runtime(_settings(tmp_path)) as rt:
            for _ in range(1000):  # the task runs at the loop's next turn; bounded, no sleep
                if any(r.getMessage().startswith("background task budgets") for r in caplog.records):
                    break
                await asyncio.sleep(0)
            try:
                await rt.services.ready()
            except Unavailable as err:
                readiness = err.message
    assert readiness == "A background task stopped: budgets"
    assert any("background task budgets stopped while serving: RuntimeError" in r.getMessage()
               for r in caplog.records)
