"""Step 8: send. One pooled aiohttp session per process, behind the SSRF-guarded connector.

Guarantees: redirects are never followed; bodies pass through undecoded (no Accept-Encoding added, no
decompression); no cookie jar; no proxy from the environment; explicit timeouts; bounded retries only for
idempotent requests whose body can be replayed, and never after a byte has reached the agent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from keyrelay.errors import KeyrelayError, SsrfBlocked, UpstreamTimeout, UpstreamUnreachable
from keyrelay.model import Outbound
from keyrelay.pipeline.ssrf import DestinationBlocked, Network, guarded_connector

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRIES = 2
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass
class Sent:
    response: aiohttp.ClientResponse
    upstream_ms: float  # time to response headers


class UpstreamClient:
    def __init__(self, *, allow: tuple[Network, ...], max_connections: int) -> None:
        self._allow = allow
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = guarded_connector(allow=self._allow, limit=self._max, limit_per_host=0, keepalive_timeout=30,
                                      enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=_SKIP_AUTO, trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False, timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, out: Outbound) -> Sent:
        """Send and return once response headers arrived; the caller must release the response."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        deadline = time.monotonic() + out.timeout_seconds
        replayable = out.body is None or isinstance(out.body, bytes)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                resp = await self._once(out, deadline)
            except UpstreamUnreachable:
                if not (out.idempotent and replayable) or attempt >= MAX_RETRIES:
                    raise
                await _backoff(attempt, deadline)
                attempt += 1
                continue
            elapsed = (time.monotonic() - started) * 1000
            delay = _retry_delay(resp, attempt, deadline) if out.idempotent and replayable else None
            if delay is None:
                return Sent(resp, elapsed)
            resp.release()
            await asyncio.sleep(delay)
            attempt += 1

    async def post_form(self, url: str, form: Mapping[str, str], *, headers: Sequence[tuple[str, str]] = (),
                        timeout_seconds: float, max_bytes: int = 64 * 1024) -> tuple[int, bytes]:
        """One form POST (an OAuth token request) through the same guarded session: no redirects, no retries
        (a refresh token may be single-use), the response body read whole up to `max_bytes`."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        out = Outbound(method="POST", url=url, body=urlencode(form).encode(), timeout_seconds=timeout_seconds,
                       headers=(("Content-Type", "application/x-www-form-urlencoded"),
                                ("Accept", "application/json"), *headers))
        deadline = time.monotonic() + timeout_seconds
        resp = await self._once(out, deadline)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                data = b""
                while chunk := await resp.content.read(65536):
                    data += chunk
                    if len(data) > max_bytes:
                        raise UpstreamUnreachable("The response was too large")
        except TimeoutError:
            raise UpstreamTimeout("Upstream did not answer in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnreachable("Upstream connection broke while sending the response") from None
        finally:
            resp.release()
        return resp.status, data

    async def _once(self, out: Outbound, deadline: float) -> aiohttp.ClientResponse:
        assert self._session is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout("Upstream did not answer in time")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, remaining), sock_read=out.timeout_seconds)
        try:
            async with asyncio.timeout(remaining):
                return await self._session.request(
                    out.method, URL(out.url, encoded=True), headers=out.headers, data=out.body,
                    allow_redirects=False, timeout=timeout, compress=None, chunked=None,
                )
        except TimeoutError:
            raise UpstreamTimeout("Upstream did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, DestinationBlocked):
                raise SsrfBlocked("Upstream address is not allowed") from None
            raise UpstreamUnreachable("Upstream connection failed") from None
        except KeyrelayError:
            raise  # e.g. PayloadTooLarge raised while streaming the request body
        except (aiohttp.ClientError, OSError, ValueError):
            # library messages may embed header values: never pass them on
            raise UpstreamUnreachable("Upstream connection failed or sent an invalid response") from None


def _retry_delay(resp: aiohttp.ClientResponse, attempt: int, deadline: float) -> float | None:
    if attempt >= MAX_RETRIES:
        return None
    remaining = deadline - time.monotonic()
    if resp.status in RETRY_STATUSES:
        delay = _jittered(attempt)
    elif resp.status == 429:
        value = resp.headers.get("Retry-After", "")
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
