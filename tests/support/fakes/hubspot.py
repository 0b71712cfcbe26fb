"""A fake HubSpot CRM v3: private-app bearer tokens, `{results, paging: {next: {after, link}}}` pages, POST search
with filterGroups / query / after in the body and a `total`, writes that answer the object, and HubSpot's
`{status: "error", message, correlationId, category}` error bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

TOKEN = "pat-na1-00000000-fake-4c1e-9a11-7c0ffee00000"
TYPES = ("contacts", "companies", "deals", "tickets", "notes", "tasks")
_DEFAULT_PROPS: dict[str, Callable[[int], dict[str, str]]] = {
    "contacts": lambda i: {"firstname": f"Ada{i}", "lastname": "Lovelace", "email": f"ada{i}@example.com"},
    "companies": lambda i: {"name": f"Company {i}", "domain": f"company{i}.example.com"},
    "deals": lambda i: {"dealname": f"Deal {i}", "amount": str(1000 * i), "dealstage": "appointmentscheduled"},
    "tickets": lambda i: {"subject": f"Ticket {i}", "hs_pipeline_stage": "1"},
    "notes": lambda i: {"hs_note_body": f"Note {i}", "hs_timestamp": "2026-01-01T00:00:00Z"},
    "tasks": lambda i: {"hs_task_subject": f"Task {i}", "hs_task_status": "NOT_STARTED"},
}


def _error(status: int, message: str, category: str) -> web.Response:
    return web.json_response({"status": "error", "message": message,
                              "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf", "category": category},
                             status=status)


class FakeHubSpot(FakeApi):
    def __init__(self, count: int = 23) -> None:
        super().__init__()
        self.objects: dict[str, list[dict[str, Any]]] = {}
        for t, n in enumerate(TYPES):
            props = _DEFAULT_PROPS[n]
            self.objects[n] = [
                {"id": str(1000 * (t + 1) + i), "properties": {**props(i), "hs_object_id": str(1000 * (t + 1) + i),
                                                               "createdate": "2026-01-01T00:00:00.000Z"},
                 "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-02T00:00:00.000Z", "archived": False}
                for i in range(count)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                      "INVALID_AUTHENTICATION")

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/crm/v3/objects/{type}", self.list)
        app.router.add_post("/crm/v3/objects/{type}/search", self.search)
        app.router.add_get("/crm/v3/objects/{type}/{id}", self.get)
        app.router.add_post("/crm/v3/objects/{type}", self.create)
        app.router.add_patch("/crm/v3/objects/{type}/{id}", self.update)
        app.router.add_delete("/crm/v3/objects/{type}/{id}", self.delete)

    def _rows(self, request: web.Request) -> list[dict[str, Any]] | None:
        return self.objects.get(request.match_info["type"])

    @staticmethod
    def _page(rows: list[dict[str, Any]], limit: int, after: str | None, link: str | None) -> dict[str, Any]:
        start = int(after or 0)
        page = rows[start:start + limit]
        out: dict[str, Any] = {"results": page}
        if start + limit < len(rows):
            nxt: dict[str, Any] = {"after": str(start + limit)}
            if link:
                nxt["link"] = f"{link}?after={start + limit}"
            out["paging"] = {"next": nxt}
        return out

    async def list(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        if rows is None:
            return _error(400, "Unable to infer object type from: " + request.match_info["type"], "VALIDATION_ERROR")
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            return _error(400, "limit must be an integer", "VALIDATION_ERROR")
        if not 1 <= limit <= 100:
            return _error(400, "limit must be between 1 and 100", "VALIDATION_ERROR")
        link = f"https://api.hubapi.com/crm/v3/objects/{request.match_info['type']}"
        return web.json_response(self._page(rows, limit, request.query.get("after"), link))

    async def search(self, request: web.Request) -> web.Response:
        rows = self._rows(request) or []
        body = await request.json()
        for group in body.get("filterGroups") or []:
            for f in group.get("filters", []):
                if f.get("operator") == "EQ":
                    rows = [r for r in rows if r["properties"].get(f["propertyName"]) == f.get("value")]
        if body.get("query"):
            text = str(body["query"]).lower()
            rows = [r for r in rows if any(text in str(v).lower() for v in r["properties"].values())]
        limit = int(body.get("limit", 10))
        if not 1 <= limit <= 200:
            return _error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        out = self._page(rows, limit, body.get("after"), None)
        return web.json_response({"total": len(rows), **out})

    async def get(self, request: web.Request) -> web.Response:
        for row in self._rows(request) or []:
            if row["id"] == request.match_info["id"]:
                return web.json_response(row)
        return _error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")

    async def create(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        body = await request.json()
        if rows is None or not isinstance(body.get("properties"), dict):
            return _error(400, "Invalid input JSON: properties is required", "VALIDATION_ERROR")
        row = {"id": str(90000 + len(rows)), "properties": body["properties"], "createdAt": "2026-05-01T00:00:00.000Z",
               "updatedAt": "2026-05-01T00:00:00.000Z", "archived": False}
        rows.append(row)
        return web.json_response(row, status=201)

    async def update(self, request: web.Request) -> web.Response:
        body = await request.json()
        for row in self._rows(request) or []:
            if row["id"] == request.match_info["id"]:
                row["properties"].update(body.get("properties") or {})
                return web.json_response(row)
        return _error(404, "Object not found.", "OBJECT_NOT_FOUND")

    async def delete(self, request: web.Request) -> web.Response:
        rows = self._rows(request) or []
        for row in rows:
            if row["id"] == request.match_info["id"]:
                rows.remove(row)
                return web.Response(status=204)
        return _error(404, "Object not found.", "OBJECT_NOT_FOUND")
