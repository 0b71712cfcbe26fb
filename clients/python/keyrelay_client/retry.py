"""When to retry a failed call, and how long to wait first.

Retried: `429 rate_limited`, `503 unavailable`, `502 upstream_unreachable`, `504 upstream_timeout` (and a 429, 502,
503 or 504 without a keyrelay code, e.g. from a load balancer), and network failures. A call is retried only when
retrying cannot repeat an effect: it is idempotent, or it never left this process (the connection could not be
opened, or fetching the application token failed first). `503 sealed` is not retried: it lasts until an operator
acts.

The wait honours `Retry-After` (up to `max_retry_after`; a longer one is not waited for: the error is raised), and
otherwise backs off exponentially from `base_delay` to at most `max_delay`, with "equal jitter" (half the step
fixed, half random) drawn from `rng`, so tests can seed it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from keyrelay_client.errors import (
    ClientError,
    KeyrelayError,
    NetworkError,
    RateLimited,
    ServerError,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnreachable,
)

TRANSIENT = (RateLimited, Unavailable, UpstreamUnreachable, UpstreamTimeout, NetworkError)
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try: `RetryPolicy(attempts=1)` never retries."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, error: KeyrelayError, *, retry_safe: bool, sent: bool) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up and raise `error`.

        `retry_safe`: the call is idempotent; `sent`: the request may have reached keyrelay.
        """
        if attempt >= self.attempts or not transient(error) or (sent and not retry_safe):
            return None
        if error.retry_after is not None:
            return float(error.retry_after) if error.retry_after <= self.max_retry_after else None
        step = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return step / 2 + self.rng.uniform(0, step / 2)


def transient(error: KeyrelayError) -> bool:
    if isinstance(error, TRANSIENT):
        return True
    generic = type(error) in (ClientError, ServerError, KeyrelayError)  # a code this client does not know
    return generic and error.status in TRANSIENT_STATUSES
