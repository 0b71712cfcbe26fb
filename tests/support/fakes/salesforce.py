"""A fake Salesforce org: an OAuth2 token endpoint (refresh-token grant, no `expires_in`, as at Salesforce),
bearer access tokens, REST API v59.0 SOQL queries paged with `nextRecordsUrl` paths, sObject get/create/update/
delete, SOSL search, the sObject list, and Salesforce's `[{"message", "errorCode"}]` error bodies."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

CLIENT_ID, CLIENT_SECRET = "3MVG9fake.client.id", "fake-consumer-secret-0123456789"
REFRESH_TOKEN = "5Aep861fake.refresh.token"
API = "/services/data/v59.0"
PREFIX = {"Account": "001", "Contact": "003", "Lead": "00Q", "Opportunity": "006", "Case": "500"}
NAME = {"Account": "Acme {i}", "Contact": "Jane Doe{i}", "Lead": "Lee Lead{i}", "Opportunity": "Deal {i}",
        "Case": "Case {i}"}


def _errors(status: int, message: str, code: str) -> web.Response:
    return web.json_response([{"message": message, "errorCode": code}], status=status)


class FakeSalesforce(FakeApi):
    def __init__(self, count: int = 23, page_size: int = 2000) -> None:
        super().__init__()
        self.page_size = page_size
        self.tokens_issued = 0
        self.access_token = ""
        self.records: dict[str, list[dict[str, Any]]] = {}
        for obj, prefix in PREFIX.items():
            self.records[obj] = [
                {"attributes": {"type": obj, "url": f"{API}/sobjects/{obj}/{prefix}{i:012d}AAA"},
                 "Id": f"{prefix}{i:012d}AAA", "Name": NAME[obj].format(i=i), "OwnerId": "005000000000001AAA",
                 "CreatedDate": "2026-01-01T00:00:00.000+0000", "LastModifiedDate": "2026-01-02T00:00:00.000+0000",
                 **({"CaseNumber": f"{1000 + i:08d}", "Status": "New"} if obj == "Case" else {}),
                 **({"StageName": "Prospecting", "IsWon": False} if obj == "Opportunity" else {})}
                for i in range(count)]

    def authorized(self, request: web.Request) -> bool:
        if request.path == "/services/oauth2/token":
            return True
        return bool(self.access_token) and request.headers.get("Authorization") == f"Bearer {self.access_token}"

    def unauthorized(self) -> web.Response:
        return _errors(401, "Session expired or invalid", "INVALID_SESSION_ID")

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/services/oauth2/token", self.token)
        r.add_get(f"{API}/query", self.query)
        r.add_get(f"{API}/query/{{locator}}", self.query_more)
        r.add_get(f"{API}/search", self.search)
        r.add_get(f"{API}/sobjects", self.sobjects)
        r.add_post(f"{API}/sobjects/{{type}}", self.create)
        r.add_get(f"{API}/sobjects/{{type}}/{{id}}", self.get)
        r.add_patch(f"{API}/sobjects/{{type}}/{{id}}", self.update)
        r.add_delete(f"{API}/sobjects/{{type}}/{{id}}", self.delete)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type",
                                      "error_description": "grant type not supported"}, status=400)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client", "error_description": "invalid client credentials"},
                                     status=400)
        if form.get("refresh_token") != REFRESH_TOKEN:
            return web.json_response({"error": "invalid_grant", "error_description": "expired access/refresh token"},
                                     status=400)
        self.tokens_issued += 1
        self.access_token = f"00Dfake!AQ4AQ.access.{self.tokens_issued}"
        return web.json_response({"access_token": self.access_token, "instance_url": self.url,
                                  "id": "https://login.salesforce.com/id/00Dfake/005fake", "token_type": "Bearer",
                                  "issued_at": "1767225600000", "signature": "ZmFrZQ==", "scope": "api refresh_token"})

    def _page(self, rows: list[dict[str, Any]], start: int, locator: str) -> dict[str, Any]:
        page = rows[start:start + self.page_size]
        done = start + self.page_size >= len(rows)
        out: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            out["nextRecordsUrl"] = f"{API}/query/{locator}-{start + self.page_size}"
        return out

    def _select(self, soql: str) -> list[dict[str, Any]] | None:
        match = re.search(r"\bFROM\s+(\w+)", soql, re.IGNORECASE)
        if not match or match.group(1) not in self.records:
            return None
        rows = self.records[match.group(1)]
        where = re.search(r"\bWHERE\s+Name\s*=\s*'([^']*)'", soql, re.IGNORECASE)
        return [r for r in rows if r["Name"] == where.group(1)] if where else rows

    async def query(self, request: web.Request) -> web.Response:
        soql = request.query.get("q", "")
        rows = self._select(soql)
        if rows is None:
            return _errors(400, "sObject type is not supported or the query is malformed", "INVALID_TYPE")
        obj = re.search(r"\bFROM\s+(\w+)", soql, re.IGNORECASE).group(1)  # type: ignore[union-attr]
        return web.json_response(self._page(rows, 0, f"01gFAKE{obj}"))

    async def query_more(self, request: web.Request) -> web.Response:
        locator, _, start = request.match_info["locator"].rpartition("-")
        obj = locator.removeprefix("01gFAKE")
        if obj not in self.records or not start.isdigit():
            return _errors(400, "invalid query locator", "INVALID_QUERY_LOCATOR")
        return web.json_response(self._page(self.records[obj], int(start), locator))

    async def search(self, request: web.Request) -> web.Response:
        match = re.match(r"FIND\s*\{([^}]*)\}", request.query.get("q", ""), re.IGNORECASE)
        if not match:
            return _errors(400, "MALFORMED_SEARCH: No search term found.", "MALFORMED_SEARCH")
        term = match.group(1).lower()
        found = [{"attributes": r["attributes"], "Id": r["Id"], "Name": r["Name"]}
                 for rows in self.records.values() for r in rows if term in r["Name"].lower()]
        return web.json_response({"searchRecords": found})

    async def sobjects(self, request: web.Request) -> web.Response:
        return web.json_response({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
            {"name": obj, "label": obj, "custom": False, "queryable": True, "keyPrefix": prefix,
             "urls": {"sobject": f"{API}/sobjects/{obj}"}} for obj, prefix in PREFIX.items()]})

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        rows = self.records.get(request.match_info["type"], [])
        return next((r for r in rows if r["Id"] == request.match_info["id"]), None)

    async def get(self, request: web.Request) -> web.Response:
        row = self._find(request)
        if row is None:
            return _errors(404, "The requested resource does not exist", "NOT_FOUND")
        return web.json_response(row)

    async def create(self, request: web.Request) -> web.Response:
        obj = request.match_info["type"]
        if obj not in self.records:
            return _errors(404, f"The requested resource does not exist: {obj}", "NOT_FOUND")
        fields = await request.json()
        if obj == "Contact" and not fields.get("LastName"):
            return _errors(400, "Required fields are missing: [LastName]", "REQUIRED_FIELD_MISSING")
        new_id = f"{PREFIX[obj]}{900 + len(self.records[obj]):012d}AAA"
        self.records[obj].append({"attributes": {"type": obj}, "Id": new_id, "Name": fields.get("Name", ""), **fields})
        return web.json_response({"id": new_id, "success": True, "errors": []}, status=201)

    async def update(self, request: web.Request) -> web.Response:
        row = self._find(request)
        if row is None:
            return _errors(404, "The requested resource does not exist", "NOT_FOUND")
        row.update(await request.json())
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        row = self._find(request)
        if row is None:
            return _errors(404, "The requested resource does not exist", "NOT_FOUND")
        self.records[request.match_info["type"]].remove(row)
        return web.Response(status=204)
