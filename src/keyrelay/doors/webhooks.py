"""Webhook routes (application token; docs/connect.md): register an endpoint (its signing secret is shown once),
list, read, delete, and read its delivery log."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from keyrelay.http.deps import admin, services
from keyrelay.http.render import iso
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.manage.webhooks import Delivery, Webhook, WebhookService
from keyrelay.model import Caller

router = APIRouter(tags=["webhooks"])
Svc = Annotated[Services, Depends(services)]
Admin = Annotated[Caller, Depends(admin)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=50)


def webhooks_service(svc: Services) -> WebhookService:
    return cast(WebhookService, svc.extras["webhooks"])


def webhook_view(h: Webhook) -> dict[str, Any]:
    return {"id": h.id, "url": h.url, "events": list(h.events), "created_at": iso(h.created_at)}


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "webhook_id": d.webhook_id, "event_id": d.event_id, "event": d.event, "status": d.status,
        "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error,
        "created_at": iso(d.created_at), "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "delivered_at": iso(d.delivered_at),
    }


@router.post("/api/v1/webhooks", status_code=201)
async def create_webhook(body: WebhookCreate, svc: Svc, _: Admin) -> Response:
    hook, secret = await webhooks_service(svc).create(body.model_dump())
    return json_response({**webhook_view(hook), "secret": secret}, 201)


@router.get("/api/v1/webhooks")
async def list_webhooks(svc: Svc, _: Admin) -> Response:
    return json_response({"data": [webhook_view(h) for h in await webhooks_service(svc).list_webhooks()]})


@router.get("/api/v1/webhooks/{webhook_id}")
async def get_webhook(webhook_id: str, svc: Svc, _: Admin) -> Response:
    return json_response(webhook_view(await webhooks_service(svc).get(webhook_id)))


@router.delete("/api/v1/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, svc: Svc, _: Admin) -> Response:
    await webhooks_service(svc).delete(webhook_id)
    return Response(status_code=204)


@router.get("/api/v1/webhooks/{webhook_id}/deliveries")
async def list_deliveries(webhook_id: str, svc: Svc, _: Admin, limit: int = 100) -> Response:
    found = await webhooks_service(svc).deliveries(webhook_id, limit=max(1, min(limit, 500)))
    return json_response({"data": [delivery_view(d) for d in found]})
