"""Webhook endpoints (signing secret sealed) and their deliveries: a durable queue and the log of attempts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.webhooks import Delivery, Webhook
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.tables import webhook_deliveries, webhooks


def _webhook(r: Any) -> Webhook:
    return Webhook(id=r.id, url=r.url, events=tuple(r.events.split()),
                   secret=SealedField("secret", r.key_id, bytes(r.secret), internal_destination("webhooks")),
                   created_at=r.created_at)


def _delivery(r: Any) -> Delivery:
    return Delivery(id=r.id, webhook_id=r.webhook_id, event_id=r.event_id, event=r.event, payload=r.payload,
                    status=r.status, attempts=r.attempts, next_attempt_at=r.next_attempt_at,
                    created_at=r.created_at, last_status=r.last_status, last_error=r.last_error,
                    delivered_at=r.delivered_at)


class SqlWebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_webhook(self, hook: Webhook) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(webhooks).values(
                id=hook.id, url=hook.url, events=" ".join(hook.events), key_id=hook.secret.key_id,
                secret=hook.secret.ciphertext, created_at=hook.created_at))

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id))).first()
        return None if r is None else _webhook(r)

    async def list_webhooks(self) -> list[Webhook]:
        async with self._engine.connect() as conn:
            return [_webhook(r) for r in await conn.execute(
                sa.select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id))]

    async def delete_webhook(self, webhook_id: str) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
            res = await conn.execute(sa.delete(webhooks).where(webhooks.c.id == webhook_id))
        return bool(res.rowcount)

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(webhook_deliveries), [
                {"id": d.id, "webhook_id": d.webhook_id, "event_id": d.event_id, "event": d.event,
                 "payload": d.payload, "status": d.status, "attempts": d.attempts,
                 "next_attempt_at": d.next_attempt_at, "created_at": d.created_at} for d in deliveries])

    async def claim_due(self, *, now: float, lease_until: float, limit: int) -> list[Delivery]:
        """Pending deliveries whose time has come, each claimed by moving its next attempt to `lease_until`
        (compare-and-set: two workers never claim the same attempt)."""
        q = (sa.select(webhook_deliveries).where(webhook_deliveries.c.status == "pending",
                                                 webhook_deliveries.c.next_attempt_at <= now)
             .order_by(webhook_deliveries.c.next_attempt_at).limit(limit))
        claimed = []
        async with self._engine.begin() as conn:
            for r in list(await conn.execute(q)):
                res = await conn.execute(sa.update(webhook_deliveries).where(
                    webhook_deliveries.c.id == r.id, webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_attempt_at == r.next_attempt_at).values(next_attempt_at=lease_until))
                if res.rowcount:
                    claimed.append(_delivery(r))
        return claimed

    async def record_attempt(self, delivery_id: str, *, status: str, attempts: int, next_attempt_at: float,
                             last_status: int | None, last_error: str | None, delivered_at: float | None) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_at, last_status=last_status,
                last_error=last_error, delivered_at=delivered_at))

    async def list_deliveries(self, webhook_id: str, *, limit: int) -> list[Delivery]:
        q = (sa.select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
             .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id).limit(limit))
        async with self._engine.connect() as conn:
            return [_delivery(r) for r in await conn.execute(q)]
