"""Step 8: send. One connection pool per process (egress/http1.py), dialing only validated addresses.

Guarantees: redirects are never followed; bodies pass through undecoded (no Accept-Encoding added, no
decompression); no cookie jar; no proxy from the environment; explicit timeouts; bounded retries only for
idempotent requests whose body can be replayed, and never after a byte has reached the agent.

Connections are shared only by requests with the same `Outbound.pool_key` (the pipeline sets the source id, so a
connection never carries two credentials); an Outbound without one, and every OAuth token request, gets a
connection of its own, closed after it. `Sent.deadline` is the request's deadline (monotonic): the response
head arrives by it, `response.read()` ends by it, and `response.chunks(idle_timeout=..., deadline=...)` takes
it for a whole streamed body.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from keyrelay.egress.http1 import OnDial, Pool, Response
from keyrelay.egress.ssrf import GetAddrInfo, Network
from keyrelay.errors import UpstreamTimeout, UpstreamUnreachable
from keyrelay.model import Outbound

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRIES = 2
CONNECT_TIMEOUT = 10.0
KEEPALIVE_SECONDS = 30.0


@dataclass(slots=True)
class Sent:
    response: Response
    upstream_ms: float  # time to response headers
    deadline: float  # monotonic: the request's `timeout_seconds` from when it was sent (retries included)


class UpstreamClient:
    def __init__(self, *, allow: tuple[Network, ...], max_connections: int,
                 ssl_context: ssl.SSLContext | None = None, getaddrinfo: GetAddrInfo | None = None,
                 on_dial: OnDial | None = None) -> None:
        self._pool = Pool(allow=allow, max_connections=max_connections, keepalive_seconds=KEEPALIVE_SECONDS,
                          ssl_context=ssl_context, getaddrinfo=getaddrinfo, on_dial=on_dial)

    async def close(self) -> None:
        await self._pool.close()

    async def send(self, out: Outbound) -> Sent:
        """Send and return once response headers arrived; the caller must release the response."""
        deadline = time.monotonic() + out.timeout_seconds
        replayable = out.body is None or isinstance(out.body, bytes)
        attempt = 0  # a retry starts after a backoff that never passes the deadline
        while True:
            started = time.monotonic()
            try:
                resp = await self._request(out, deadline)
            except UpstreamUnreachable:
                if not (out.idempotent and replayable) or attempt >= MAX_RETRIES:
                    raise
                await _backoff(attempt, deadline)
                attempt += 1
                continue
            elapsed = (time.monotonic() - started) * 1000
            delay = _retry_delay(resp, attempt, deadline) if out.idempotent and replayable else None
            if delay is None:
                return Sent(resp, elapsed, deadline)
            resp.release()
            await asyncio.sleep(delay)
            attempt += 1

    async def post_form(self, url: str, form: Mapping[str, str], *, headers: Sequence[tuple[str, str]] = (),
                        timeout_seconds: float, max_bytes: int = 64 * 1024) -> tuple[int, bytes]:
        """One form POST (an OAuth token request) through the same guarded pool, on a connection of its own
        closed after it: no redirects, no retries (a refresh token may be single-use), the response body read
        whole up to `max_bytes` and by the deadline."""
        out = Outbound(method="POST", url=url, body=urlencode(form).encode(), timeout_seconds=timeout_seconds,
                       headers=(("Content-Type", "application/x-www-form-urlencoded"),
                                ("Accept", "application/json"), *headers))
        deadline = time.monotonic() + timeout_seconds
        resp = await self._request(out, deadline)  # no pool key: a connection of its own, closed after it
        try:
            data = await resp.read(max_bytes, deadline=deadline)
        finally:
            resp.release()
        return resp.status, data

    def _request(self, out: Outbound, deadline: float) -> Awaitable[Response]:
        """The pool's coroutine itself (no wrapper coroutine per request); a passed deadline is UpstreamTimeout."""
        return self._pool.request(out.method, out.url, out.headers, out.body, deadline=deadline,
                                  read_timeout=out.timeout_seconds, connect_timeout=CONNECT_TIMEOUT,
                                  pool_key=out.pool_key)


def _retry_delay(resp: Response, attempt: int, deadline: float) -> float | None:
    if attempt >= MAX_RETRIES:
        return None
    remaining = deadline - time.monotonic()
    if resp.status in RETRY_STATUSES:
        delay = _jittered(attempt)
    elif resp.status == 429:
        value = (resp.header(b"retry-after") or b"").strip()
        if not value.isdigit():
            return None
        delay = float(value)
    else:
        return None
    return delay if delay < remaining else None


def _jittered(attempt: int) -> float:
    return float(0.1 * (2**attempt) * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto


async def _backoff(attempt: int, deadline: float) -> None:
    delay = _jittered(attempt)
    if time.monotonic() + delay >= deadline:
        raise UpstreamTimeout("Upstream did not answer in time")
    await asyncio.sleep(delay)
