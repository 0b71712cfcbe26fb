"""Rate limits: sliding window counter per source and per caller, in memory or shared through Redis."""

from __future__ import annotations

import multiprocessing
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.errors import RateLimited, Unavailable
from keyrelay.pipeline import ratelimit
from keyrelay.pipeline.ratelimit import LocalWindows, RateLimiter, make_storage
from support.keyrelay import Admin, scaled_out_pair
from support.pipeline import ManualClock, hammer_shared_windows
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream


async def test_an_observed_source_limit_notes_each_request_it_would_refuse_and_counts_as_enforcing_would() -> None:
    observed, enforced = (RateLimiter(make_storage(None, clock=Clock(6000.0 + 30)), caller_limit=None)
                         for _ in range(2))
    noted: list[str] = []
    for _ in range(5):
        await observed.check(source_id="s", source_limit=2, caller_id="a", observe=noted.append)
    assert noted == ["rate_limit_per_minute"] * 3
    outcomes = []
    for _ in range(5):
        try:
            await enforced.check(source_id="s", source_limit=2, caller_id="a")
            outcomes.append("ok")
        except RateLimited:
            outcomes.append("refused")
    assert outcomes == ["ok", "ok", "refused", "refused", "refused"]  # the same requests as were noted


async def test_the_per_caller_limit_is_enforced_even_when_the_source_observes() -> None:
    limiter = RateLimiter(make_storage(None, clock=Clock(6000.0 + 30)), caller_limit=2)
    noted: list[str] = []
    for _ in range(2):
        await limiter.check(source_id="s", source_limit=1, caller_id="a", observe=noted.append)
    with pytest.raises(RateLimited):
        await limiter.check(source_id="s", source_limit=1, caller_id="a", observe=noted.append)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_source_limit_refuses_with_retry_after_in_range() -> None:
    limiter = RateLimiter(make_storage(None, clock=Clock(6000.0 + 30)), caller_limit=None)  # mid-window
    for _ in range(3):
        await limiter.check(source_id="s", source_limit=3, caller_id="a")
    with pytest.raises(RateLimited) as err:
        await limiter.check(source_id="s", source_limit=3, caller_id="b")  # other callers share the source limit
    assert err.value.retry_after == 30  # only the next window, 30 s away, makes room
    await limiter.check(source_id="other", source_limit=3, caller_id="a")


def test_local_window_weights_the_previous_minute() -> None:
    clock = Clock(6000.0)  # the start of a window (6000 = 100 * 60)
    windows = LocalWindows(clock)
    assert [windows.hit("k", 10) for _ in range(10)] == [0] * 10
    assert windows.hit("k", 10) == 60  # full, and only the next window can make room
    clock.now = 6000.0 + 60 + 30  # half way into the next minute: the previous 10 count as 5
    assert [windows.hit("k", 10) for _ in range(5)] == [0] * 5
    retry = windows.hit("k", 10)
    assert 1 <= retry <= 6  # the previous window's weight falls by 10/60 per second: one more fits in 6 s
    clock.now += retry
    assert windows.hit("k", 10) == 0
    clock.now = 6000.0 + 180  # two windows later nothing is left
    assert [windows.hit("k", 10) for _ in range(10)] == [0] * 10
    assert windows.hit("other", 1) == 0 and windows.hit("other", 1) > 0  # keys are independent


def test_local_windows_stay_bounded_under_a_key_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_KEYS_MAX", 100)
    clock = Clock(6000.0)
    windows = LocalWindows(clock)
    for i in range(100):
        windows.hit(f"old{i}", 5)
    clock.now += 120  # those are two windows old now
    for i in range(250):
        windows.hit(f"new{i}", 5)
        assert len(windows._counts) <= 100


async def test_caller_limit_is_per_caller() -> None:
    limiter = RateLimiter(make_storage(None, clock=Clock(6000.0)), caller_limit=2)
    for _ in range(2):
        await limiter.check(source_id="s", source_limit=None, caller_id="a")
    with pytest.raises(RateLimited):
        await limiter.check(source_id="s", source_limit=None, caller_id="a")
    await limiter.check(source_id="s", source_limit=None, caller_id="b")


async def test_two_limiters_on_one_redis_share_the_budget(redis_server: RedisServer) -> None:
    key = "src-" + uuid.uuid4().hex
    a = RateLimiter(make_storage(redis_server.url), caller_limit=None)
    b = RateLimiter(make_storage(redis_server.url), caller_limit=None)
    accepted = 0
    for i in range(10):
        try:
            await (a if i % 2 else b).check(source_id=key, source_limit=5, caller_id="x")
            accepted += 1
        except RateLimited:
            pass
    assert accepted == 5


async def test_an_unreachable_redis_fails_closed() -> None:
    limiter = RateLimiter(make_storage("redis://127.0.0.1:1/0"), caller_limit=None)
    with pytest.raises(Unavailable):
        await limiter.check(source_id="s", source_limit=5, caller_id="x")


def test_two_instances_on_postgres_and_redis_enforce_one_limit(tmp_path: Path, postgres: PostgresServer,
                                                               redis_server: RedisServer,
                                                               upstream: FakeUpstream) -> None:
    with scaled_out_pair(tmp_path, postgres, redis_server.url) as (one, two):
        admin = Admin(one.url)
        ws = admin.workspace("shared")
        admin.source(ws, upstream_url=upstream.url, policy={"rate_limit_per_minute": 4})
        key = admin.api_key(ws, ["proxy"])
        codes = []
        for i in range(8):
            base = (one if i % 2 else two).url
            r = httpx.get(f"{base}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}",
                                                                      "X-Forwarded-For": f"10.1.1.{i}"})
            codes.append(r.status_code)
        admin.close()
    assert codes.count(200) == 4 and codes.count(429) == 4
    assert len(upstream.requests) == 4


# --- the workers' shared table (keyrelay serve --workers N) ------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["source/a", "source/b", "caller/k"]),
                          st.floats(0, 5, allow_nan=False)), min_size=1, max_size=120))
def test_workers_sharing_the_table_answer_as_one_process_would(steps: list[tuple[int, str, float]]) -> None:
    """Three workers (three maps of one file) against one in-process counter, fed the same hits and clock."""
    clock = ManualClock(1_800_000_000.0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "windows"
        ratelimit.SharedWindows.reset(path)
        workers = [ratelimit.SharedWindows(path, clock) for _ in range(3)]
        one = LocalWindows(clock)
        try:
            for who, key, dt in steps:
                clock.advance(dt)
                assert workers[who].hit(key, 4) == one.hit(key, 4)
        finally:
            for w in workers:
                w.close()


def test_worker_processes_never_count_past_the_limit_together(tmp_path: Path) -> None:
    """Four processes hit one key 20,000 times each, all at once: exactly the limit passes (no lost update)."""
    path = tmp_path / "windows"
    ratelimit.SharedWindows.reset(path)
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=hammer_shared_windows, args=(str(path), 20_000, 50_000, start, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(out.get(timeout=10) for _ in procs) == 50_000


def test_a_full_run_of_slots_gives_way_to_the_oldest_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "SHARED_SLOTS", 4)  # a tiny table: every key's run is the whole table
    path = tmp_path / "windows"
    ratelimit.SharedWindows.reset(path)
    clock = ManualClock(1_800_000_000.0)
    windows = ratelimit.SharedWindows(path, clock)
    try:
        for k in range(4):
            assert windows.hit(f"k{k}", 1) == 0
            clock.advance(1)
        assert windows.hit("k0", 1) > 0  # still counted
        assert windows.hit("k4", 1) == 0  # no free slot: k0's (the oldest) is taken
        assert windows.hit("k1", 1) > 0  # the others keep their counts
        clock.advance(120)  # every window is over: slots are reused, no key gives way
        assert all(windows.hit(f"k{k}", 1) == 0 for k in range(5, 9))
    finally:
        windows.close()


def test_make_storage_picks_the_workers_table_without_redis(tmp_path: Path) -> None:
    ratelimit.SharedWindows.reset(tmp_path / "w")
    assert isinstance(make_storage(None, shared=tmp_path / "w"), ratelimit.SharedWindows)
    assert type(make_storage(None)) is LocalWindows
