"""Rate limits: sliding window counter per source and per caller, in memory or shared through Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from keyrelay.errors import RateLimited, Unavailable
from keyrelay.pipeline import ratelimit
from keyrelay.pipeline.ratelimit import LocalWindows, RateLimiter, make_storage
from support.keyrelay import Admin, scaled_out_pair
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
