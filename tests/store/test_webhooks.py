"""Webhook endpoints and deliveries on both backends (store/webhooks.py): racing workers claim an attempt once,
and deleting an endpoint takes its deliveries with it."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.webhooks import Delivery, Webhook
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.webhooks import SqlWebhookStore

NOW = 1_800_000_000.0


def _delivery(i: int, **kw: object) -> Delivery:
    values: dict[str, object] = {"id": f"d{i}", "webhook_id": "w1", "event_id": f"evt_{i}",
                                 "event": "connection.created", "payload": "{}", "status": "pending", "attempts": 0,
                                 "next_attempt_at": NOW + i, "created_at": NOW + i}
    values.update(kw)
    return Delivery(**values)  # type: ignore[arg-type]


async def test_racing_workers_claim_each_due_delivery_once(engine: AsyncEngine) -> None:
    store = SqlWebhookStore(engine)
    hook = Webhook(id="w1", url="https://h.example.com/k", events=("connection.created",),
                   secret=SealedField("secret", "k", b"\x00", internal_destination("webhooks")), created_at=NOW)
    await store.create_webhook(hook)
    assert await store.get_webhook("w1") == hook
    await store.add_deliveries([_delivery(i) for i in range(6)])
    claims = await asyncio.gather(*(store.claim_due(now=NOW + 3, lease_until=NOW + 60, limit=10) for _ in range(4)))
    ids = sorted(d.id for batch in claims for d in batch)
    assert ids == ["d0", "d1", "d2", "d3"]  # d4 and d5 are not due yet; nobody got one twice
    assert await store.claim_due(now=NOW + 3, lease_until=NOW + 60, limit=10) == []
    assert len(await store.claim_due(now=NOW + 60, lease_until=NOW + 120, limit=10)) == 6  # leases ran out
    await store.record_attempt("d0", status="delivered", attempts=1, next_attempt_at=NOW, last_status=204,
                               last_error=None, delivered_at=NOW + 61)
    assert [d.status for d in await store.list_deliveries("w1", limit=10)].count("delivered") == 1
    assert await store.delete_webhook("w1") and await store.list_deliveries("w1", limit=10) == []
