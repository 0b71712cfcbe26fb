"""Request-log events: batched writes off the hot path, a live in-process feed, and Prometheus metrics.

`emit` never blocks a request. A background flusher writes batches every `flush_seconds` and on shutdown.
If the database refuses writes for longer than `outage_seconds`, `healthy` turns False and the pipeline fails
closed (503) instead of serving unlogged traffic (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from keyrelay import ids
from keyrelay.model import LogEntry
from keyrelay.store.requestlog import SqlRequestLogStore

log = logging.getLogger("keyrelay.requestlog")
_QUEUE_MAX = 200_000
_BATCH = 2_000
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """keyrelay's Prometheus series, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("keyrelay_requests", "Requests by door, status class and source type",
                                ["door", "status_class", "source_type"], registry=r)
        self.latency = Histogram("keyrelay_request_seconds", "Full request latency", ["door"],
                                 buckets=_BUCKETS, registry=r)
        self.upstream = Histogram("keyrelay_upstream_seconds", "Upstream latency", ["door"],
                                  buckets=_BUCKETS, registry=r)
        self.rate_limited = Counter("keyrelay_rate_limited", "Requests refused by a rate limit", ["door"],
                                    registry=r)
        self.bytes_in = Counter("keyrelay_bytes_in", "Request body bytes received", ["door"], registry=r)
        self.bytes_out = Counter("keyrelay_bytes_out", "Response body bytes sent", ["door"], registry=r)
        self.would_deny = Counter("keyrelay_would_deny", "Requests a source's rule let through in observe mode "
                                  "that enforcing it would have refused", ["rule"], registry=r)
        # labelled children, looked up once (prometheus_client's labels() takes a lock and builds a tuple)
        self._doors: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._requests: dict[tuple[str, int, str | None], Any] = {}

    content_type = CONTENT_TYPE_LATEST

    def exposition(self) -> bytes:
        """Every series in Prometheus's text format (`GET /metrics`)."""
        return generate_latest(self.registry)

    def observe(self, e: LogEntry) -> None:
        per_door = self._doors.get(e.door)
        if per_door is None:
            per_door = self._doors[e.door] = (self.latency.labels(e.door), self.upstream.labels(e.door),
                                              self.bytes_in.labels(e.door), self.bytes_out.labels(e.door))
        latency, upstream, bytes_in, bytes_out = per_door
        key = (e.door, e.status // 100, e.connector)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.requests.labels(e.door, f"{e.status // 100}xx",
                                                                  e.connector or "none")
        requests.inc()
        latency.observe(e.latency_ms / 1000)
        if e.upstream_latency_ms is not None:
            upstream.observe(e.upstream_latency_ms / 1000)
        if e.error_code == "rate_limited":
            self.rate_limited.labels(e.door).inc()
        if e.would_deny is not None:
            self.would_deny.labels(e.would_deny).inc()
        if e.bytes_in:
            bytes_in.inc(e.bytes_in)
        if e.bytes_out:
            bytes_out.inc(e.bytes_out)


class RequestLog:
    def __init__(self, store: SqlRequestLogStore, metrics: Metrics, *, clock: Callable[[], float],
                 flush_seconds: float = 0.5, outage_seconds: float = 10.0, retention_days: int = 30,
                 purge_every_seconds: float = 3600.0) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._outage_seconds = outage_seconds
        # rows as plain tuples: thousands wait here between flushes, and the cyclic GC stops tracking tuples of
        # plain values, so they cost its collections nothing (LogEntry objects would be scanned on every pass)
        self._queue: deque[tuple[Any, ...]] = deque()
        self._subscribers: set[asyncio.Queue[LogEntry]] = set()
        self._failing_since: float | None = None
        self._retention = retention_days * 86400.0
        self._purge_every = purge_every_seconds
        self._next_purge = 0.0
        self.dropped = 0
        self.outbox: asyncio.Queue[LogEntry] | None = None  # set by RedisFeed when instances share live logs

    @property
    def healthy(self) -> bool:
        if self._failing_since is not None and self._clock() - self._failing_since > self._outage_seconds:
            return False
        return len(self._queue) < _QUEUE_MAX

    def emit(self, event: LogEntry) -> None:
        if len(self._queue) >= _QUEUE_MAX:
            self.dropped += 1
            log.error("request log queue full; an event was dropped")
        else:
            self._queue.append(self._store.row(event))
        self._metrics.observe(event)
        self.deliver(event)
        if self.outbox is not None and self.outbox.qsize() < _QUEUE_MAX:
            self.outbox.put_nowait(event)

    def deliver(self, event: LogEntry) -> None:
        """Hand an event to this instance's live subscribers (its own, or one another instance published)."""
        for q in self._subscribers:
            if q.qsize() < 1000:
                q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[LogEntry]]:
        q: asyncio.Queue[LogEntry] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    async def flush(self) -> None:
        """Write what was queued when the flush began, in batches (events arriving meanwhile wait for the next
        tick, so a busy server writes a few large transactions, not a stream of small ones). Events stay queued
        if the write fails."""
        remaining = len(self._queue)
        while remaining > 0:
            batch: Sequence[tuple[Any, ...]] = [self._queue[i] for i in range(min(_BATCH, remaining))]
            remaining -= len(batch)
            try:
                await self._store.insert_rows(batch)
            except Exception:
                if self._failing_since is None:
                    self._failing_since = self._clock()
                log.exception("could not write request log batch")
                return
            self._failing_since = None
            for _ in batch:
                self._queue.popleft()

    async def purge_if_due(self) -> None:
        """Delete events older than the retention period, at most once per `purge_every_seconds`."""
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_every
        try:
            await self._store.purge(before=now - self._retention)
        except Exception:
            log.exception("could not purge old request log rows")

    async def run(self, stop: asyncio.Event) -> None:
        """The flusher loop; returns after a final flush once `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_seconds)
            await self.flush()
            await self.purge_if_due()
        await self.flush()


class TableFeed:
    """Live logs across the workers of one server on the embedded database (`keyrelay serve --workers N` without
    Redis): each worker reads the rows the others wrote, by row number, and delivers them to its own listeners.
    A row reaches another worker's listeners within one flush (`KEYRELAY_LOG_FLUSH_SECONDS`) and one poll."""

    def __init__(self, events: RequestLog, store: SqlRequestLogStore, *, every: float = 0.25) -> None:
        self._events = events
        self._store = store
        self._every = every

    async def run(self, stop: asyncio.Event) -> None:
        after: int | None = None
        while not stop.is_set():
            try:
                after, entries = await self._store.tail(after)
                for entry in entries:
                    if not ids.from_this_process(entry.id):
                        self._events.deliver(entry)
            except Exception as exc:  # the database is busy or gone: live logs pause, requests go on
                log.warning("live log feed: reading the request log failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)


class RedisFeed:
    """Live logs across instances: each instance publishes its events and delivers the others' (pub/sub)."""

    CHANNEL = "keyrelay:events"

    def __init__(self, events: RequestLog, redis_url: str) -> None:
        import redis.asyncio as aioredis

        self._events = events
        self._redis = aioredis.from_url(redis_url)
        self._me = uuid.uuid4().hex
        events.outbox = asyncio.Queue()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish and subscribe until `stop`; a lost Redis connection is retried, never fatal."""
        while not stop.is_set():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    await self._pump(pubsub, stop)
            except Exception:
                log.warning("live log feed: Redis unavailable, retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        await self._redis.aclose()

    async def _pump(self, pubsub: object, stop: asyncio.Event) -> None:
        outbox = self._events.outbox
        assert outbox is not None
        while not stop.is_set():
            while not outbox.empty():
                event = outbox.get_nowait()
                await self._redis.publish(self.CHANNEL, json.dumps({"from": self._me, "event": asdict(event)}))
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)  # type: ignore[attr-defined]
            if message is None or message.get("type") != "message":
                continue
            data = json.loads(message["data"])
            if data.get("from") != self._me:
                self._events.deliver(LogEntry(**data["event"]))
