"""Webhooks (docs/connect.md): operator endpoints that receive keyrelay's events, signed with HMAC-SHA256.

A reusable service. `publish(event, data)` queues one delivery per subscribed endpoint in the database (durable);
`emit(event, data)` is the same for code that cannot wait (it is queued by the worker). The worker (`run`)
delivers due deliveries off the request path through the guarded egress (SSRF rules, no redirects, deadlines),
retries failures with exponential backoff, and records every attempt on the delivery row.

Each delivery is a POST of `{"id", "type", "created_at", "data"}` with the headers

    Keyrelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Keyrelay-Event: <type>            Keyrelay-Event-Id: <id, the same on every retry>

Payloads never carry a credential, a token or a secret: only ids, names and statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyrelay.egress import destination, ssrf
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound, SsrfBlocked, UpstreamUnreachable
from keyrelay.model import Outbound, SealedField, internal_destination
from keyrelay.ports import Clock, Vault

log = logging.getLogger("keyrelay.webhooks")

CONNECT_EVENTS = ("connection.created", "connection.updated", "connection.deleted", "connection.needs_reauth",
                  "connect_session.expired")
TABLE = "webhooks"  # the vault context of a signing secret: (table, webhook id, column), see store/tables.py
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SEND_TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60.0  # a claimed delivery is retried by another worker if this one has not finished by then
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 3600.0
MAX_WEBHOOKS = 50
_MAX_PENDING_EMITS = 10_000


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    events: tuple[str, ...]
    secret: SealedField = field(repr=False)
    created_at: float


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    event_id: str
    event: str
    payload: str
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: float
    created_at: float
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


class WebhookStore(Protocol):
    async def create_webhook(self, hook: Webhook) -> None: ...
    async def get_webhook(self, webhook_id: str) -> Webhook | None: ...
    async def list_webhooks(self) -> list[Webhook]: ...
    async def delete_webhook(self, webhook_id: str) -> bool: ...
    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None: ...
    async def claim_due(self, *, now: float, lease_until: float, limit: int) -> list[Delivery]: ...
    async def record_attempt(self, delivery_id: str, *, status: str, attempts: int, next_attempt_at: float,
                             last_status: int | None, last_error: str | None, delivered_at: float | None) -> None: ...
    async def list_deliveries(self, webhook_id: str, *, limit: int) -> list[Delivery]: ...


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Keyrelay-Signature` header value for one attempt."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does (docs/connect.md): the timestamp is within `tolerance` seconds of now and one `v1`
    signature matches, compared in constant time."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    want = sign(secret, int(stamps[0]), body).split("v1=", 1)[1]
    return any(k.strip() == "v1" and hmac.compare_digest(v, want) for k, _, v in parts)


def check_url(url: Any) -> str:
    """An endpoint URL: http(s) base URL rules (no userinfo, no fragment, unambiguous host), query allowed."""
    if not isinstance(url, str) or len(url) > 2048 or "#" in url:
        raise InvalidRequest("url must be an http or https URL without a fragment", field="url")
    head, sep, query = url.partition("?")
    try:
        base = destination.parse_base_url(head)
    except InvalidRequest as err:
        raise InvalidRequest(f"Invalid url: {err.message}", field="url") from None
    if sep and (not query or any(not 0x21 <= ord(c) <= 0x7E for c in query)):
        raise InvalidRequest("Invalid url: the query must be printable ASCII", field="url")
    return base.origin + (base.path or "/") + (f"?{query}" if sep else "")


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts + 1`: doubling from `base`, jittered by up to +/-20 %, at most an hour."""
    delay = min(base * (2 ** max(0, attempts - 1)), MAX_BACKOFF_SECONDS)
    return float(delay * (0.8 + 0.4 * random.random()))  # noqa: S311 - jitter, not crypto


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


class WebhookService:
    def __init__(self, *, store: WebhookStore, vault: Vault, upstream: UpstreamClient, clock: Clock,
                 allow: tuple[ssrf.Network, ...], events: Sequence[str] = CONNECT_EVENTS,
                 retry_base_seconds: float = 30.0, poll_seconds: float = 5.0, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._store, self._vault, self._upstream, self._clock = store, vault, upstream, clock
        self._allow = allow
        self.events = tuple(events)  # another feature adds its events here (e.g. approval.requested)
        self._retry_base, self._poll, self._max_attempts = retry_base_seconds, poll_seconds, max_attempts
        self._emitted: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()

    # --- endpoints ---------------------------------------------------------------------------------------------
    async def create(self, body: Mapping[str, Any]) -> tuple[Webhook, str]:
        """A new endpoint and its signing secret (shown once)."""
        unknown = set(body) - {"url", "events"}
        if unknown:
            raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        url = check_url(body.get("url"))
        events = body.get("events")
        if not isinstance(events, list) or not events or not all(e in self.events for e in events):
            raise InvalidRequest("events must be a non-empty list of: " + ", ".join(self.events), field="events")
        if len(await self._store.list_webhooks()) >= MAX_WEBHOOKS:
            raise InvalidRequest(f"At most {MAX_WEBHOOKS} webhooks can be registered", field="url")
        await self._check_destination(url)
        hook_id, secret = str(uuid.uuid4()), SECRET_PREFIX + secrets.token_urlsafe(32)
        sealed = await self._vault.seal(workspace_id=TABLE, source_id=hook_id, destination=internal_destination(TABLE),
                                        fields={"secret": secret})
        hook = Webhook(id=hook_id, url=url, events=tuple(dict.fromkeys(events)), secret=sealed[0],
                       created_at=self._clock())
        await self._store.create_webhook(hook)
        return hook, secret

    async def _check_destination(self, url: str) -> None:
        base = destination.parse_base_url(url.partition("?")[0])
        try:
            await ssrf.resolve_checked(base.host, base.port, allow=self._allow)
        except SsrfBlocked as err:
            raise SsrfBlocked(err.message, field="url") from None
        except UpstreamUnreachable:
            pass  # not resolvable yet: the dialer checks every delivery

    async def get(self, webhook_id: str) -> Webhook:
        found = await self._store.get_webhook(webhook_id)
        if found is None:
            raise NotFound("Webhook not found")
        return found

    async def list_webhooks(self) -> list[Webhook]:
        return await self._store.list_webhooks()

    async def delete(self, webhook_id: str) -> None:
        if not await self._store.delete_webhook(webhook_id):
            raise NotFound("Webhook not found")

    async def deliveries(self, webhook_id: str, *, limit: int = 100) -> list[Delivery]:
        await self.get(webhook_id)
        return await self._store.list_deliveries(webhook_id, limit=limit)

    # --- events ------------------------------------------------------------------------------------------------
    async def publish(self, event: str, data: Mapping[str, Any]) -> int:
        """Queue `event` for every endpoint subscribed to it; returns how many deliveries were queued."""
        if event not in self.events:
            raise ValueError(f"unknown webhook event {event!r}")
        now = self._clock()
        event_id = "evt_" + uuid.uuid4().hex
        payload = json.dumps({"id": event_id, "type": event, "created_at": iso(now), "data": dict(data)},
                             separators=(",", ":"), ensure_ascii=False)
        rows = [Delivery(id=str(uuid.uuid4()), webhook_id=h.id, event_id=event_id, event=event, payload=payload,
                         status="pending", attempts=0, next_attempt_at=now, created_at=now)
                for h in await self._store.list_webhooks() if event in h.events]
        if rows:
            await self._store.add_deliveries(rows)
            self._wake.set()
        return len(rows)

    def emit(self, event: str, data: Mapping[str, Any]) -> None:
        """`publish` for code that cannot wait: the worker queues it on its next turn."""
        if event not in self.events:
            raise ValueError(f"unknown webhook event {event!r}")
        if len(self._emitted) < _MAX_PENDING_EMITS:
            self._emitted.append((event, dict(data)))
        else:
            log.error("webhook event %s dropped: too many events waiting", event)
        self._wake.set()

    # --- delivery ----------------------------------------------------------------------------------------------
    async def flush_emitted(self) -> None:
        pending, self._emitted = self._emitted, []
        for event, data in pending:
            await self.publish(event, data)

    async def deliver_due(self, *, limit: int = 50) -> int:
        """Send every due delivery once (concurrently); returns how many were attempted."""
        now = self._clock()
        due = await self._store.claim_due(now=now, lease_until=now + LEASE_SECONDS, limit=limit)
        await asyncio.gather(*(self._attempt(d) for d in due))
        return len(due)

    async def _attempt(self, d: Delivery) -> None:
        hook = await self._store.get_webhook(d.webhook_id)
        if hook is None:
            return  # deleted meanwhile (its deliveries went with it)
        status, error = await self._send(hook, d)
        attempts, now = d.attempts + 1, self._clock()
        if status is not None and 200 <= status < 300:
            outcome, next_at, delivered = "delivered", now, now
        elif attempts >= self._max_attempts:
            outcome, next_at, delivered = "failed", now, None
        else:
            outcome, next_at, delivered = "pending", now + backoff(attempts, self._retry_base), None
        await self._store.record_attempt(d.id, status=outcome, attempts=attempts, next_attempt_at=next_at,
                                         last_status=status, last_error=error, delivered_at=delivered)
        log.info("webhook delivery %s (%s) to %s: attempt %d -> %s", d.id, d.event, hook.id, attempts,
                 outcome if status is None else f"{outcome} (HTTP {status})")

    async def _send(self, hook: Webhook, d: Delivery) -> tuple[int | None, str | None]:
        try:
            opened = await self._vault.open(workspace_id=TABLE, source_id=hook.id,
                                            destination=internal_destination(TABLE), sealed=[hook.secret])
            body = d.payload.encode()
            headers = (("Content-Type", "application/json"), ("User-Agent", "keyrelay-webhooks"),
                       ("Keyrelay-Signature", sign(opened.fields["secret"].reveal(), int(self._clock()), body)),
                       ("Keyrelay-Event", d.event), ("Keyrelay-Event-Id", d.event_id),
                       ("Keyrelay-Delivery", d.id))
            sent = await self._upstream.send(Outbound(method="POST", url=hook.url, headers=headers, body=body,
                                                      timeout_seconds=SEND_TIMEOUT_SECONDS))
        except KeyrelayError as err:
            return None, err.message[:300]
        sent.response.release()
        return sent.response.status, None if 200 <= sent.response.status < 300 else "not a 2xx answer"

    async def run(self, stop: asyncio.Event, *, tick: Callable[[], Awaitable[Any]] | None = None) -> None:
        """The worker: queue emitted events, deliver what is due, then wait for a wake-up or the poll interval.
        `tick` (if given) is awaited on each turn first, e.g. to expire connect sessions."""
        while not stop.is_set():
            self._wake.clear()  # a wake-up during the turn starts the next one at once
            try:
                if tick is not None:
                    await tick()
                await self.flush_emitted()
                await self.deliver_due()
            except Exception as exc:  # the worker must outlive a database hiccup
                log.error("webhook worker turn failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await _first(stop, self._wake)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
