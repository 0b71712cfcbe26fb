"""A fake Shopify Admin API (version 2026-07): the `X-Shopify-Access-Token` header, REST `.json` resources with
integer ids under plural/singular keys, cursor pages through `Link: <...page_info=...>; rel="next"` (a page_info
URL admits no other filters, as at Shopify), a GraphQL endpoint for customer mutations, and Shopify's
`{"errors": ...}` bodies."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

TOKEN = "shpat_00000000fake11112222333344445555"
BASE_PATH = "/admin/api/2026-07"


def _errors(status: int, errors: Any) -> web.Response:
    return web.json_response({"errors": errors}, status=status)


class FakeShopify(FakeApi):
    customers: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    products: list[dict[str, Any]]
    variants: list[dict[str, Any]]
    locations: list[dict[str, Any]]

    def __init__(self, count: int = 23) -> None:
        super().__init__()
        self.customers = [{"id": 207119551 + i, "email": f"bob{i}@example.com", "first_name": f"Bob{i}",
                           "last_name": "Norman", "phone": None, "state": "enabled", "orders_count": i,
                           "total_spent": f"{i * 10}.00", "tags": "", "created_at": "2026-01-01T00:00:00-05:00",
                           "updated_at": "2026-01-02T00:00:00-05:00"} for i in range(count)]
        self.orders = [{"id": 450789469 + i, "name": f"#{1001 + i}", "email": f"bob{i}@example.com",
                        "created_at": "2026-02-01T00:00:00-05:00", "financial_status": "paid",
                        "fulfillment_status": None, "currency": "USD", "total_price": "199.00",
                        "cancelled_at": None, "closed_at": "2026-02-02T00:00:00-05:00" if i % 4 == 0 else None,
                        "customer": {"id": 207119551 + i}, "line_items": []} for i in range(count)]
        self.products = [{"id": 632910392 + i, "title": f"IPod Nano {i}", "handle": f"ipod-nano-{i}", "vendor": "Apple",
                          "product_type": "Cult Products", "status": "active", "tags": "",
                          "created_at": "2026-01-01T00:00:00-05:00", "updated_at": "2026-01-01T00:00:00-05:00",
                          "variants": [{"id": 808950810 + i, "product_id": 632910392 + i, "title": "Pink",
                                        "sku": f"IPOD-{i}", "price": "199.00", "inventory_item_id": 39072856 + i}]}
                         for i in range(count)]
        self.variants = [{"id": 808950810 + i, "product_id": 632910392, "title": f"Colour {i}", "sku": f"IPOD-C{i}",
                          "price": "199.00", "inventory_item_id": 39072856 + i} for i in range(count)]
        self.locations = [{"id": 487838322 + i, "name": f"Warehouse {i}", "active": True, "city": "Ottawa",
                           "country_code": "CA"} for i in range(3)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-Shopify-Access-Token") == TOKEN

    def unauthorized(self) -> web.Response:
        return _errors(401, "[API] Invalid API key or access token (unrecognized login or wrong password)")

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{BASE_PATH}/shop.json", self.shop)
        r.add_get(f"{BASE_PATH}/customers/search.json", self.search_customers)
        r.add_get(f"{BASE_PATH}/products/{{product_id}}/variants.json", self.product_variants)
        r.add_get(f"{BASE_PATH}/{{resource}}.json", self.list)
        r.add_get(f"{BASE_PATH}/{{resource}}/{{id}}.json", self.get)
        r.add_post(f"{BASE_PATH}/graphql.json", self.graphql)

    def _table(self, resource: str) -> list[dict[str, Any]] | None:
        tables: dict[str, list[dict[str, Any]]] = {
            "customers": self.customers, "orders": self.orders, "products": self.products, "variants": self.variants,
            "locations": self.locations}
        return tables.get(resource)

    def _paged(self, request: web.Request, key: str, rows: list[dict[str, Any]],
               scope: dict[str, str] | None = None) -> web.Response:
        """One page after `since_id` / `page_info`; `scope` (the filters of the first page) rides in page_info."""
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            return _errors(400, {"limit": ["must be an integer"]})
        if not 1 <= limit <= 250:
            return _errors(400, {"limit": ["must be between 1 and 250"]})
        after = int(q.get("since_id", "0"))
        if "page_info" in q:
            extra = set(q) - {"page_info", "limit", "fields"}
            if extra:
                return _errors(400, {"page_info": [f"page_info cannot be combined with {sorted(extra)[0]}"]})
            after = int(self._page_info(q["page_info"])["after"])
        rows = [r for r in rows if r["id"] > after]
        page = rows[:limit]
        headers = {}
        if len(rows) > limit:
            state = {"after": page[-1]["id"], "scope": scope or {}}
            info = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            headers["Link"] = f'<{self.url}{request.path}?limit={limit}&page_info={info}>; rel="next"'
        return web.json_response({key: page}, headers=headers)

    @staticmethod
    def _page_info(value: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(base64.urlsafe_b64decode(value))
        except ValueError:
            return {"after": 0, "scope": {}}
        return state

    async def list(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        rows = self._table(resource)
        if rows is None:
            return _errors(404, "Not Found")
        q = request.query
        scope = self._page_info(q["page_info"])["scope"] if "page_info" in q else {
            k: q[k] for k in ("status", "vendor") if k in q}
        if resource == "orders":
            status = scope.get("status", "open")
            if status == "open":
                rows = [r for r in rows if r["closed_at"] is None and r["cancelled_at"] is None]
            elif status == "closed":
                rows = [r for r in rows if r["closed_at"] is not None]
        if "vendor" in scope:
            rows = [r for r in rows if r.get("vendor") == scope["vendor"]]
        return self._paged(request, resource, rows, scope)

    async def product_variants(self, request: web.Request) -> web.Response:
        if int(request.match_info["product_id"]) != 632910392:
            return _errors(404, "Not Found")
        return self._paged(request, "variants", self.variants)

    async def get(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        rows = self._table(resource) or []
        try:
            wanted = int(request.match_info["id"])
        except ValueError:
            return _errors(404, "Not Found")
        row = next((r for r in rows if r["id"] == wanted), None)
        if row is None:
            return _errors(404, "Not Found")
        singular = {"customers": "customer", "orders": "order", "products": "product", "variants": "variant",
                    "locations": "location"}[resource]
        return web.json_response({singular: row})

    async def search_customers(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        field, _, value = query.partition(":")
        rows = [c for c in self.customers if str(c.get(field)) == value] if value else self.customers
        return self._paged(request, "customers", rows)

    async def shop(self, request: web.Request) -> web.Response:
        return web.json_response({"shop": {"id": 690933842, "name": "Apple Computers", "domain": "shop.apple.com",
                                           "myshopify_domain": "apple.myshopify.com", "currency": "USD",
                                           "iana_timezone": "America/New_York", "plan_name": "enterprise"}})

    async def graphql(self, request: web.Request) -> web.Response:
        doc = await request.json()
        query, variables = doc.get("query", ""), doc.get("variables") or {}
        customer_input = variables.get("input")
        if not isinstance(customer_input, dict):
            return web.json_response({"errors": [{"message": "Variable $input of type CustomerInput! was provided "
                                                             "invalid value"}]})
        if "customerCreate(" in query:
            if not customer_input.get("email") and not customer_input.get("phone"):
                return web.json_response({"data": {"customerCreate": {"customer": None, "userErrors": [
                    {"field": ["email"], "message": "Email can't be blank"}]}}})
            new = {"id": f"gid://shopify/Customer/{900000 + len(self.customers)}", **customer_input}
            return web.json_response({"data": {"customerCreate": {"customer": new, "userErrors": []}}})
        if "customerUpdate(" in query:
            return web.json_response({"data": {"customerUpdate": {"customer": customer_input, "userErrors": []}}})
        return web.json_response({"errors": [{"message": "Field doesn't exist on type 'Mutation'"}]})
