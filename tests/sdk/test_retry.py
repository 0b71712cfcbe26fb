"""The retry decision: what is transient, what may be repeated, how long to wait (seeded jitter, Retry-After)."""

from __future__ import annotations

import random

import pytest

from keyrelay_client import (
    ClientError,
    Conflict,
    ConnectionFailed,
    InternalError,
    KeyrelayError,
    RateLimited,
    RequestTimeout,
    Sealed,
    ServerError,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from keyrelay_client.retry import RetryPolicy, transient


@pytest.mark.parametrize(("error", "expected"), [
    (RateLimited("m"), True), (Unavailable("m"), True), (UpstreamUnreachable("m"), True),
    (UpstreamTimeout("m"), True), (ConnectionFailed("m"), True), (RequestTimeout("m"), True),
    (ServerError("m", status=503, code="overloaded"), True), (ClientError("m", status=429, code="x"), True),
    (Sealed("m"), False), (InternalError("m"), False), (Conflict("m"), False),
    (ServerError("m", status=500, code="x"), False), (ClientError("m", status=400, code="x"), False),
])
def test_which_errors_are_transient(error: KeyrelayError, expected: bool) -> None:
    assert transient(error) is expected


def test_backoff_is_exponential_jittered_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=5.0, rng=random.Random(1))
    delays = [policy.delay(n, Unavailable("m"), retry_safe=True, sent=True) for n in range(1, 6)]
    steps = [1.0, 2.0, 4.0, 5.0, 5.0]
    for delay, step in zip(delays, steps, strict=True):
        assert delay is not None and step / 2 <= delay <= step
    same = RetryPolicy(attempts=10, base_delay=1.0, max_delay=5.0, rng=random.Random(1))
    assert [same.delay(n, Unavailable("m"), retry_safe=True, sent=True) for n in range(1, 6)] == delays


def test_attempts_bound_the_retries() -> None:
    policy = RetryPolicy(attempts=3, rng=random.Random(0))
    assert policy.delay(2, Unavailable("m"), retry_safe=True, sent=True) is not None
    assert policy.delay(3, Unavailable("m"), retry_safe=True, sent=True) is None
    assert RetryPolicy(attempts=1).delay(1, Unavailable("m"), retry_safe=True, sent=True) is None


def test_retry_after_is_honoured_up_to_the_limit() -> None:
    policy = RetryPolicy(max_retry_after=30)
    assert policy.delay(1, RateLimited("m", retry_after=12), retry_safe=True, sent=True) == 12.0
    assert policy.delay(1, RateLimited("m", retry_after=31), retry_safe=True, sent=True) is None


def test_a_sent_non_idempotent_call_is_not_retried_but_an_unsent_one_is() -> None:
    policy = RetryPolicy(rng=random.Random(0))
    assert policy.delay(1, UpstreamTimeout("m"), retry_safe=False, sent=True) is None
    assert policy.delay(1, ConnectionFailed("m"), retry_safe=False, sent=False) is not None


def test_a_policy_must_allow_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)
