"""A fake Gong API: HTTP basic with an access key and secret, `{requestId, records: {totalRecords, currentPageSize,
currentPageNumber, cursor}, <items>}` pages of `page_size` (Gong: 100) with an opaque cursor (query param for GET
lists, body field for POST lists), private calls mixed in, and Gong's `{requestId, errors: [...]}` error bodies."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

ACCESS_KEY, ACCESS_SECRET = "GONGKEY0123456789", "gong-secret-eyJhbGciOi-fake"
WORKSPACE = "623457276584334"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"requestId": "4al018gzaztcr8nbukw", "errors": [message]}, status=status)


def _is_private(i: int) -> bool:
    return i % 7 == 3


class FakeGong(FakeApi):
    users: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    folders: list[dict[str, Any]]

    def __init__(self, count: int = 23, page_size: int = 100, year: int = 2026) -> None:
        super().__init__()
        self.page_size = page_size
        self.users = [{"id": f"{234599484848423 + i}", "emailAddress": f"rep{i}@example.com", "firstName": f"Rep{i}",
                       "lastName": "Seller", "title": "AE", "active": True, "managerId": None,
                       "created": "2024-01-01T00:00:00Z"} for i in range(count)]
        self.calls = [{"id": f"{7782342274025937000 + i}", "title": f"Discovery call {i}",
                       "started": f"{year}-01-{1 + i % 28:02d}T10:00:00Z", "duration": 1800 + i,
                       "direction": "Conference",
                       "scope": "External", "primaryUserId": self.users[i % count]["id"],
                       "url": f"https://app.gong.io/call?id={7782342274025937000 + i}", "workspaceId": WORKSPACE,
                       "isPrivate": _is_private(i)} for i in range(count)]
        self.folders = [{"id": f"{3843152912968920000 + i}", "name": f"Folder {i}", "parentFolderId": None,
                         "createdBy": self.users[0]["id"], "updated": "2026-01-01T00:00:00Z"} for i in range(4)]

    @property
    def public_call_ids(self) -> list[Any]:
        return [c["id"] for c in self.calls if not c["isPrivate"]]

    def authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{ACCESS_KEY}:{ACCESS_SECRET}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Unauthorized: the access key or secret is not valid")

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/users", self.list_users)
        app.router.add_get("/v2/users/{id}", self.get_user)
        app.router.add_get("/v2/calls", self.list_calls)
        app.router.add_get("/v2/calls/{id}", self.get_call)
        app.router.add_post("/v2/calls/extensive", self.calls_extensive)
        app.router.add_post("/v2/calls/transcript", self.transcripts)
        app.router.add_get("/v2/workspaces", self.workspaces)
        app.router.add_get("/v2/library/folders", self.library_folders)

    def _page(self, key: str, rows: list[Any], cursor: str | None) -> dict[str, Any] | web.Response:
        start = 0
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("offset:"))
            except ValueError:
                return _error(400, "cursor is not valid")
        page = rows[start:start + self.page_size]
        records: dict[str, Any] = {"totalRecords": len(rows), "currentPageSize": len(page),
                                   "currentPageNumber": start // self.page_size}
        if start + self.page_size < len(rows):
            records["cursor"] = base64.b64encode(f"offset:{start + self.page_size}".encode()).decode()
        return {"requestId": "5tqxlnd2mf8yjyx3g8c", "records": records, key: page}

    @staticmethod
    def _json(body: dict[str, Any] | web.Response) -> web.Response:
        return body if isinstance(body, web.Response) else web.json_response(body)

    async def list_users(self, request: web.Request) -> web.Response:
        return self._json(self._page("users", self.users, request.query.get("cursor")))

    async def get_user(self, request: web.Request) -> web.Response:
        user = next((u for u in self.users if u["id"] == request.match_info["id"]), None)
        if user is None:
            return _error(404, f"No user found for id {request.match_info['id']}")
        return web.json_response({"requestId": "r1", "user": user})

    def _calls_between(self, since: str | None, until: str | None) -> list[dict[str, Any]]:
        return [c for c in self.calls if (not since or c["started"] >= since) and (not until or c["started"] < until)]

    async def list_calls(self, request: web.Request) -> web.Response:
        q = request.query
        rows = self._calls_between(q.get("fromDateTime"), q.get("toDateTime"))
        if not rows:
            return _error(404, "No calls found corresponding to the provided filters")
        return self._json(self._page("calls", rows, q.get("cursor")))

    async def get_call(self, request: web.Request) -> web.Response:
        call = next((c for c in self.calls if c["id"] == request.match_info["id"]), None)
        if call is None:
            return _error(404, f"No call found for id {request.match_info['id']}")
        return web.json_response({"requestId": "r2", "call": call})

    async def _filtered(self, request: web.Request) -> tuple[list[dict[str, Any]], str | None] | web.Response:
        body = await request.json()
        filt = body.get("filter")
        if not isinstance(filt, dict):
            return _error(400, "filter: must not be null")
        rows = self._calls_between(filt.get("fromDateTime"), filt.get("toDateTime"))
        if filt.get("callIds"):
            rows = [c for c in rows if c["id"] in filt["callIds"]]
        return rows, body.get("cursor")

    async def calls_extensive(self, request: web.Request) -> web.Response:
        got = await self._filtered(request)
        if isinstance(got, web.Response):
            return got
        rows, cursor = got
        extensive = [{"metaData": {k: v for k, v in c.items()}, "parties": [{"userId": c["primaryUserId"]}],
                      "content": {"brief": "Talked about pricing"}} for c in rows]
        return self._json(self._page("calls", extensive, cursor))

    async def transcripts(self, request: web.Request) -> web.Response:
        got = await self._filtered(request)
        if isinstance(got, web.Response):
            return got
        rows, cursor = got
        items = [{"callId": c["id"], "transcript": [{"speakerId": c["primaryUserId"], "topic": "Pricing",
                                                     "sentences": [{"start": 0, "end": 1200, "text": "Hello"}]}]}
                 for c in rows]
        return self._json(self._page("callTranscripts", items, cursor))

    async def workspaces(self, request: web.Request) -> web.Response:
        return web.json_response({"requestId": "r3", "workspaces": [
            {"id": WORKSPACE, "name": "Sales", "description": "The sales team"},
            {"id": "623457276584335", "name": "Success", "description": None}]})

    async def library_folders(self, request: web.Request) -> web.Response:
        if "workspaceId" not in request.query:
            return _error(400, "workspaceId: must not be null")
        return web.json_response({"requestId": "r4", "folders": self.folders})
