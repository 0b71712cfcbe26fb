"""The approval events' delivery (docs/approvals.md: webhook): an adapter of the `EventPublisher` port that
POSTs each event, HMAC-SHA256 signed, to the one endpoint `KEYRELAY_APPROVAL_WEBHOOK_URL` names.

Each delivery is `{"id", "type", "created_at", "data"}` with the headers

    Keyrelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Keyrelay-Event: <type>            Keyrelay-Event-Id: <id, the same on every retry>

It goes through keyrelay's guarded egress (SSRF rules, no redirects, deadlines), off the request path: `publish`
queues (bounded), `run` delivers with a few retries. Payloads carry ids, names, statuses, the request's method,
path and hash, and the single-use decision link; never a body, a header value, a query value or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from keyrelay.egress import destination
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.model import Outbound
from keyrelay.pipeline.approval import iso

log = logging.getLogger("keyrelay.approvals")
_QUEUE_MAX = 10_000
_ATTEMPTS = 4
_SEND_TIMEOUT = 10.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Keyrelay-Signature` header value."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the timestamp is within `tolerance` seconds of now and a `v1` signature matches,
    compared in constant time."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    want = sign(secret, int(stamps[0]), body).split("v1=", 1)[1]
    return any(k.strip() == "v1" and hmac.compare_digest(v, want) for k, _, v in parts)


class SignedWebhook:
    def __init__(self, *, url: str, secret: str, upstream: UpstreamClient, clock: Callable[[], float],
                 retry_seconds: float = 2.0) -> None:
        base = destination.parse_base_url(url)
        self._url = base.origin + (base.path or "/")
        self._secret, self._upstream, self._clock = secret, upstream, clock
        self._retry = retry_seconds
        self._queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(_QUEUE_MAX)

    async def publish(self, event: str, data: Mapping[str, Any]) -> int:
        event_id = "evt_" + uuid.uuid4().hex
        body = json.dumps({"id": event_id, "type": event, "created_at": iso(self._clock()), "data": dict(data)},
                          separators=(",", ":"), ensure_ascii=False).encode()
        try:
            self._queue.put_nowait((event, event_id, body))
        except asyncio.QueueFull:
            log.error("approval webhook queue full; event %s dropped", event)
            return 0
        return 1

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver queued events until `stop` (then what is queued, once)."""
        while not stop.is_set():
            get = asyncio.ensure_future(self._queue.get())
            halt = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({get, halt}, return_when=asyncio.FIRST_COMPLETED)
            halt.cancel()
            if get not in done:
                get.cancel()
                break
            await self._deliver(*get.result(), stop=stop)
        while not self._queue.empty():
            event, event_id, body = self._queue.get_nowait()
            await self._attempt(event, event_id, body)

    async def _deliver(self, event: str, event_id: str, body: bytes, *, stop: asyncio.Event) -> None:
        for attempt in range(_ATTEMPTS):
            if await self._attempt(event, event_id, body):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._retry * (2 ** attempt))
            if stop.is_set():
                return
        log.error("approval webhook: event %s not delivered after %d attempts", event_id, _ATTEMPTS)

    async def _attempt(self, event: str, event_id: str, body: bytes) -> bool:
        headers = (("Content-Type", "application/json"), ("Keyrelay-Event", event), ("Keyrelay-Event-Id", event_id),
                   ("Keyrelay-Signature", sign(self._secret, int(self._clock()), body)))
        out = Outbound(method="POST", url=self._url, headers=headers, body=body, timeout_seconds=_SEND_TIMEOUT)
        try:
            sent = await self._upstream.send(out)
        except Exception as exc:
            log.warning("approval webhook: delivery failed: %s", type(exc).__name__)
            return False
        try:
            return 200 <= sent.response.status < 300
        finally:
            sent.response.release()
