"""A fake Stripe API: bearer keys, `{object: list, data, has_more}` lists with starting_after cursors,
search with `next_page`, form-encoded writes, Stripe-shaped error bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

API_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"
PREFIX = {"customers": "cus", "invoices": "in", "charges": "ch", "subscriptions": "sub", "products": "prod",
          "prices": "price", "payment_intents": "pi", "balance_transactions": "txn", "refunds": "re", "disputes": "dp",
          "payouts": "po"}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


class FakeStripe(FakeApi):
    def __init__(self, count: int = 25) -> None:
        super().__init__()
        self.echo_key = False  # `get` echoes the Authorization header, escaped
        self.objects: dict[str, list[dict[str, Any]]] = {}
        for name, prefix in PREFIX.items():
            self.objects[name] = [
                {"id": f"{prefix}_{i:04d}", "object": name[:-1], "created": 1_700_000_000 - i,
                 "email": f"user{i}@example.com", "customer": f"cus_{i % 3:04d}", "description": "d" * 300}
                for i in range(count)
            ]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Invalid API Key provided: sk_test_****")

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/balance", self.balance)
        app.router.add_get("/v1/{entity}", self.list)
        app.router.add_get("/v1/{entity}/search", self.search)
        app.router.add_get("/v1/{entity}/{id}", self.get)
        app.router.add_post("/v1/{entity}", self.create)
        app.router.add_post("/v1/{entity}/{id}", self.update)

    async def balance(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "balance", "livemode": False,
                                  "available": [{"amount": 12345, "currency": "usd"}],
                                  "pending": [{"amount": 100, "currency": "usd"}]})

    def _rows(self, request: web.Request) -> list[dict[str, Any]] | None:
        return self.objects.get(request.match_info["entity"])

    async def list(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        if rows is None:
            return _error(404, "Unrecognized request URL")
        q = request.query
        limit = int(q.get("limit", "10"))
        if not 1 <= limit <= 100:
            return _error(400, "Invalid integer: limit")
        if "email" in q:
            rows = [r for r in rows if r["email"] == q["email"]]
        if "customer" in q:
            rows = [r for r in rows if r["customer"] == q["customer"]]
        if "created[gte]" in q:
            rows = [r for r in rows if r["created"] >= int(q["created[gte]"])]
        start = 0
        if "starting_after" in q:
            ids = [r["id"] for r in rows]
            if q["starting_after"] not in ids:
                return _error(400, "No such object: starting_after")
            start = ids.index(q["starting_after"]) + 1
        page = rows[start:start + limit]
        return web.json_response({"object": "list", "data": page, "has_more": start + limit < len(rows),
                                  "url": request.path})

    async def search(self, request: web.Request) -> web.Response:
        rows = self._rows(request) or []
        query = request.query.get("query", "")
        if not query:
            return _error(400, "Missing required param: query.")
        if query.startswith("email:"):
            wanted = query.split(":", 1)[1].strip("'\"")
            rows = [r for r in rows if r["email"] == wanted]
        limit = int(request.query.get("limit", "10"))
        start = int(request.query.get("page", "0") or 0)
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        return web.json_response({"object": "search_result", "data": page, "has_more": more,
                                  "next_page": str(start + limit) if more else None})

    async def get(self, request: web.Request) -> web.Response:
        for row in self._rows(request) or []:
            if row["id"] == request.match_info["id"]:
                if not self.echo_key:
                    return web.json_response(row)
                # a careless API that echoes the caller's key in a debug field, every character \u-escaped
                escaped = "".join(f"\\u{ord(c):04x}" for c in request.headers.get("Authorization", ""))
                text = json.dumps(row)[:-1] + ', "debug": "' + escaped + '"}'
                return web.Response(text=text, content_type="application/json")
        return _error(404, f"No such object: '{request.match_info['id']}'")

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        rows = self._rows(request)
        if rows is None:
            return _error(404, "Unrecognized request URL")
        row = {"id": f"{PREFIX[request.match_info['entity']]}_new{len(rows)}", "object": "customer", **form}
        rows.insert(0, row)
        return web.json_response(row)

    async def update(self, request: web.Request) -> web.Response:
        form = await request.post()
        for row in self._rows(request) or []:
            if row["id"] == request.match_info["id"]:
                row.update(form)
                return web.json_response(row)
        return _error(404, "No such object")
