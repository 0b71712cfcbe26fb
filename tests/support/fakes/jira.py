"""A fake Jira Cloud REST API v3: basic auth with an email and API token, JQL search paged by `nextPageToken`
until `isLast` (and refusing unbounded JQL), `startAt`/`maxResults`/`total` pages for projects, comments and
worklogs, bare arrays for users and fields, and Jira's `{"errorMessages": [...], "errors": {}}` bodies."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

USERNAME, API_TOKEN = "ada@example.com", "ATATT3xFfGF0-fake-jira-token"
API = "/rest/api/3"


def _error(status: int, *messages: str) -> web.Response:
    return web.json_response({"errorMessages": list(messages), "errors": {}}, status=status)


class FakeJira(FakeApi):
    issues: list[dict[str, Any]]
    projects: list[dict[str, Any]]
    users: list[dict[str, Any]]
    comments: list[dict[str, Any]]
    worklogs: list[dict[str, Any]]
    fields: list[dict[str, Any]]
    transitions: list[dict[str, Any]]

    def __init__(self, count: int = 23) -> None:
        super().__init__()
        self.issues = [{"id": str(10000 + i), "key": f"PROJ-{i + 1}", "self": f"{API}/issue/{10000 + i}",
                        "fields": {"summary": f"Task {i + 1}", "status": {"name": "To Do" if i % 2 else "Done"},
                                   "issuetype": {"name": "Task"}, "project": {"key": "PROJ"}}} for i in range(count)]
        self.projects = [{"id": str(10000 + i), "key": f"P{i:02d}", "name": f"Project {i}",
                          "projectTypeKey": "software", "style": "next-gen", "isPrivate": False} for i in range(count)]
        self.users = [{"accountId": f"5b10a2844c20165700ede{i:03d}", "accountType": "atlassian",
                       "displayName": f"Person {i}", "emailAddress": f"person{i}@example.com", "active": True}
                      for i in range(count)]
        self.comments = [{"id": str(10000 + i), "author": {"accountId": self.users[0]["accountId"]},
                          "body": {"type": "doc", "version": 1, "content": []},
                          "created": "2026-01-01T00:00:00.000+0000", "updated": "2026-01-01T00:00:00.000+0000"}
                         for i in range(count)]
        self.worklogs = [{"id": str(100028 + i), "author": {"accountId": self.users[0]["accountId"]}, "timeSpent": "1h",
                          "timeSpentSeconds": 3600, "started": "2026-01-01T09:00:00.000+0000"} for i in range(count)]
        self.fields = [{"id": f"customfield_{10000 + i}", "key": f"customfield_{10000 + i}", "name": f"Field {i}",
                        "custom": True, "schema": {"type": "string"}} for i in range(count)]
        self.transitions = [{"id": "11", "name": "To Do", "to": {"name": "To Do"}},
                            {"id": "31", "name": "Done", "to": {"name": "Done"}}]

    def authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{USERNAME}:{API_TOKEN}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    def unauthorized(self) -> web.Response:
        return web.Response(status=401, text="Client must be authenticated to access this resource.",
                            headers={"WWW-Authenticate": 'Basic realm="protected-area"'})

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{API}/search/jql", self.search)
        r.add_post(f"{API}/issue", self.create_issue)
        r.add_get(f"{API}/issue/{{key}}", self.get_issue)
        r.add_put(f"{API}/issue/{{key}}", self.update_issue)
        r.add_get(f"{API}/issue/{{key}}/comment", self.issue_comments)
        r.add_get(f"{API}/issue/{{key}}/comment/{{id}}", self.issue_comment)
        r.add_get(f"{API}/issue/{{key}}/worklog", self.issue_worklogs)
        r.add_get(f"{API}/issue/{{key}}/worklog/{{id}}", self.issue_worklog)
        r.add_get(f"{API}/issue/{{key}}/transitions", self.issue_transitions)
        r.add_get(f"{API}/project/search", self.project_search)
        r.add_get(f"{API}/project/{{key}}", self.get_project)
        r.add_get(f"{API}/users", self.list_users)
        r.add_get(f"{API}/user", self.get_user)
        r.add_get(f"{API}/user/search", self.search_users)
        r.add_get(f"{API}/field", self.list_fields)
        r.add_get(f"{API}/field/search", self.search_fields)

    @staticmethod
    def _window(request: web.Request, default: int = 50) -> tuple[int, int]:
        return int(request.query.get("startAt", "0")), int(request.query.get("maxResults", str(default)))

    def _offset_page(self, request: web.Request, key: str, rows: list[Any],
                     extra: dict[str, Any] | None = None) -> web.Response:
        start, size = self._window(request)
        page = rows[start:start + size]
        body = {"startAt": start, "maxResults": size, "total": len(rows), "isLast": start + size >= len(rows),
                key: page, **(extra or {})}
        if key == "values" and not body["isLast"]:
            body["nextPage"] = f"{self.url}{request.path}?startAt={start + size}&maxResults={size}"
        return web.json_response(body)

    def _issue(self, key: str) -> dict[str, Any] | None:
        return next((i for i in self.issues if key in (i["key"], i["id"])), None)

    async def search(self, request: web.Request) -> web.Response:
        jql = request.query.get("jql", "")
        if "project" not in jql:
            return _error(400, "Unbounded JQL queries are not allowed here. "
                               "Please add a search restriction to your query.")
        rows = self.issues
        if "status = Done" in jql:
            rows = [i for i in rows if i["fields"]["status"]["name"] == "Done"]
        token = request.query.get("nextPageToken", "")
        start = int(base64.b64decode(token).decode()) if token else 0
        size = int(request.query.get("maxResults", "50"))
        page = rows[start:start + size]
        fields = request.query.get("fields")
        if not fields:
            page = [{"id": i["id"]} for i in page]
        body: dict[str, Any] = {"issues": page, "isLast": start + size >= len(rows)}
        if not body["isLast"]:
            body["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(body)

    async def get_issue(self, request: web.Request) -> web.Response:
        issue = self._issue(request.match_info["key"])
        if issue is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        return web.json_response(issue)

    async def create_issue(self, request: web.Request) -> web.Response:
        body = await request.json()
        fields = body.get("fields") or {}
        if not fields.get("summary"):
            return web.json_response({"errorMessages": [],
                                      "errors": {"summary": "You must specify a summary of the issue."}}, status=400)
        n = len(self.issues) + 1
        self.issues.append({"id": str(20000 + n), "key": f"PROJ-{n}", "fields": fields})
        return web.json_response({"id": str(20000 + n), "key": f"PROJ-{n}", "self": f"{API}/issue/{20000 + n}"},
                                 status=201)

    async def update_issue(self, request: web.Request) -> web.Response:
        issue = self._issue(request.match_info["key"])
        if issue is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        issue["fields"].update((await request.json()).get("fields") or {})
        return web.Response(status=204)

    async def issue_comments(self, request: web.Request) -> web.Response:
        if self._issue(request.match_info["key"]) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        return self._offset_page(request, "comments", self.comments)

    async def issue_worklogs(self, request: web.Request) -> web.Response:
        if self._issue(request.match_info["key"]) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        return self._offset_page(request, "worklogs", self.worklogs)

    def _one(self, request: web.Request, rows: list[dict[str, Any]], kind: str) -> web.Response:
        if self._issue(request.match_info["key"]) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        row = next((r for r in rows if r["id"] == request.match_info["id"]), None)
        if row is None:
            return _error(404, f"Can not find a {kind} for the id: {request.match_info['id']}.")
        return web.json_response(row)

    async def issue_comment(self, request: web.Request) -> web.Response:
        return self._one(request, self.comments, "comment")

    async def issue_worklog(self, request: web.Request) -> web.Response:
        return self._one(request, self.worklogs, "worklog")

    async def issue_transitions(self, request: web.Request) -> web.Response:
        if self._issue(request.match_info["key"]) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        return web.json_response({"expand": "transitions", "transitions": self.transitions})

    async def project_search(self, request: web.Request) -> web.Response:
        rows = self.projects
        if "query" in request.query:
            rows = [p for p in rows if request.query["query"].lower() in p["name"].lower()]
        return self._offset_page(request, "values", rows, {"self": f"{self.url}{request.path_qs}"})

    async def get_project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        project = next((p for p in self.projects if key in (p["key"], p["id"])), None)
        if project is None:
            return _error(404, f"No project could be found with key '{key}'.")
        return web.json_response(project)

    async def list_users(self, request: web.Request) -> web.Response:
        start, size = self._window(request)
        return web.json_response(self.users[start:start + size])

    async def get_user(self, request: web.Request) -> web.Response:
        account = request.query.get("accountId")
        if not account:
            return _error(400, "The accountId query parameter needs to be provided.")
        user = next((u for u in self.users if u["accountId"] == account), None)
        if user is None:
            return _error(404, "Specified user does not exist or you do not have required permissions")
        return web.json_response(user)

    async def search_users(self, request: web.Request) -> web.Response:
        text = request.query.get("query", "").lower()
        rows = [u for u in self.users if text in u["displayName"].lower() or text in u["emailAddress"]]
        start, size = self._window(request)
        return web.json_response(rows[start:start + size])

    async def list_fields(self, request: web.Request) -> web.Response:
        return web.json_response(self.fields)

    async def search_fields(self, request: web.Request) -> web.Response:
        text = request.query.get("query", "").lower()
        return self._offset_page(request, "values", [f for f in self.fields if text in f["name"].lower()])
