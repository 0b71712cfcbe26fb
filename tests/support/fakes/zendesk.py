"""A fake Zendesk Support API v2: basic auth as `<email>/token:<api_token>`, offset pages
`{<items>, next_page, previous_page, count}` where next_page is a full URL, `/search.json` with `result_type`,
ticket writes (comments go in `ticket.comment`), and Zendesk's `{"error", "description"}` bodies."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

EMAIL, API_TOKEN = "agent@example.com", "zd-fake-token-0123456789abcdef"


def _error(status: int, error: str, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if description:
        body["description"] = description
    return web.json_response(body, status=status)


class FakeZendesk(FakeApi):
    comments: list[dict[str, Any]]

    def __init__(self, count: int = 23) -> None:
        super().__init__()
        base = "/api/v2"
        self.base = base
        self.tables: dict[str, list[dict[str, Any]]] = {
            "tickets": [{"id": 35436 + i, "url": f"https://acme.zendesk.com{base}/tickets/{35436 + i}.json",
                         "subject": f"Help {i}", "description": "My printer is on fire!",
                         "status": "open" if i % 2 else "new",
                         "priority": "high", "type": "incident", "requester_id": 20978392 + i % 5,
                         "assignee_id": None, "group_id": 98738, "organization_id": None, "tags": ["printer"],
                         "external_id": f"ext-{i}", "created_at": "2026-01-01T00:00:00Z",
                         "updated_at": "2026-01-02T00:00:00Z"} for i in range(count)],
            "users": [{"id": 20978392 + i, "url": "", "name": f"User {i}", "email": f"user{i}@example.com",
                       "role": "agent" if i % 3 == 0 else "end-user", "active": True, "organization_id": None,
                       "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
                      for i in range(count)],
            "organizations": [{"id": 4112492 + i, "url": "", "name": f"Org {i}",
                               "domain_names": [f"org{i}.example.com"],
                               "tags": [], "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
                              for i in range(count)],
            "groups": [{"id": 98738 + i, "url": "", "name": f"Group {i}", "description": "", "default": i == 0,
                        "deleted": False, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
                       for i in range(count)],
            "ticket_fields": [{"id": 34 + i, "url": "", "type": "text", "title": f"Field {i}", "active": True,
                               "required": False, "created_at": "2026-01-01T00:00:00Z",
                               "updated_at": "2026-01-01T00:00:00Z"} for i in range(count)],
        }
        self.comments = [{"id": 1274 + i, "type": "Comment", "body": f"Comment {i}", "html_body": f"<p>Comment {i}</p>",
                          "public": i % 2 == 0, "author_id": 20978392, "attachments": [],
                          "created_at": "2026-01-01T00:00:00Z"} for i in range(count)]

    def authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Couldn't authenticate you")

    def routes(self, app: web.Application) -> None:
        b = self.base
        app.router.add_get(f"{b}/search.json", self.search)
        app.router.add_get(f"{b}/tickets/{{id}}/comments.json", self.ticket_comments)
        app.router.add_post(f"{b}/tickets.json", self.create_ticket)
        app.router.add_put(f"{b}/tickets/{{id}}.json", self.update_ticket)
        app.router.add_get(f"{b}/{{table}}.json", self.list)
        app.router.add_get(f"{b}/{{table}}/{{id}}.json", self.get)

    def _page(self, request: web.Request, key: str, rows: list[dict[str, Any]]) -> web.Response:
        q = request.query
        try:
            page, per_page = int(q.get("page", "1")), int(q.get("per_page", "100"))
        except ValueError:
            return _error(400, "InvalidPaginationParameter", "page and per_page must be integers")
        if page < 1 or not 1 <= per_page <= 100:
            return _error(400, "InvalidPaginationParameter", "per_page must be between 1 and 100")
        start = (page - 1) * per_page
        keep = "&".join(f"{k}={v}" for k, v in q.items() if k not in ("page", "per_page"))
        link = f"{self.url}{request.path}?{keep + '&' if keep else ''}page={{}}&per_page={per_page}"
        return web.json_response({
            key: rows[start:start + per_page],
            "next_page": link.format(page + 1) if start + per_page < len(rows) else None,
            "previous_page": link.format(page - 1) if page > 1 else None,
            "count": len(rows)})

    async def list(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        rows = self.tables.get(table)
        if rows is None:
            return _error(404, "InvalidEndpoint", "Not found")
        if "role" in request.query:
            rows = [r for r in rows if r.get("role") == request.query["role"]]
        if "external_id" in request.query:
            rows = [r for r in rows if r.get("external_id") == request.query["external_id"]]
        if request.query.get("sort_order") == "desc":
            rows = rows[::-1]
        return self._page(request, table, rows)

    async def get(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        singular = {"tickets": "ticket", "users": "user", "organizations": "organization", "groups": "group",
                    "ticket_fields": "ticket_field"}.get(table)
        if singular is None or not request.match_info["id"].isdigit():
            return _error(404, "InvalidEndpoint", "Not found")
        row = next((r for r in self.tables[table] if r["id"] == int(request.match_info["id"])), None)
        if row is None:
            return _error(404, "RecordNotFound", "Not found")
        return web.json_response({singular: row})

    async def ticket_comments(self, request: web.Request) -> web.Response:
        if int(request.match_info["id"]) != self.tables["tickets"][0]["id"]:
            return _error(404, "RecordNotFound", "Not found")
        return self._page(request, "comments", self.comments)

    async def search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        if not query:
            return _error(400, "InvalidSearchQuery", "The query parameter is required")
        words = query.split()
        kinds = {w.split(":", 1)[1] for w in words if w.startswith("type:")} or {"ticket", "user"}
        status = next((w.split(":", 1)[1] for w in words if w.startswith("status:")), None)
        rows: list[dict[str, Any]] = []
        if "ticket" in kinds:
            rows += [{**t, "result_type": "ticket"} for t in self.tables["tickets"] if status in (None, t["status"])]
        if "user" in kinds:
            rows += [{**u, "result_type": "user"} for u in self.tables["users"]]
        return self._page(request, "results", rows)

    async def create_ticket(self, request: web.Request) -> web.Response:
        body = await request.json()
        ticket = body.get("ticket")
        if not isinstance(ticket, dict) or not ticket.get("comment"):
            return web.json_response({"error": "RecordInvalid", "description": "Record validation errors",
                                      "details": {"base": [{"description": "Description: cannot be blank"}]}},
                                     status=422)
        new = {"id": 99000 + len(self.tables["tickets"]), "status": "new", **ticket}
        self.tables["tickets"].append(new)
        return web.json_response({"ticket": new, "audit": {"events": []}}, status=201)

    async def update_ticket(self, request: web.Request) -> web.Response:
        body = await request.json()
        row = next((r for r in self.tables["tickets"] if r["id"] == int(request.match_info["id"])), None)
        if row is None:
            return _error(404, "RecordNotFound", "Not found")
        change = dict(body.get("ticket") or {})
        comment = change.pop("comment", None)
        row.update(change)
        if comment:
            self.comments.append({"id": 5000 + len(self.comments), "type": "Comment", **comment})
        return web.json_response({"ticket": row, "audit": {"events": [{"type": "Comment"}] if comment else []}})
