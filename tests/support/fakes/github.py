"""A fake GitHub: a small GraphQL endpoint (`POST /graphql`) that recognises the root field a query asks for and
its variables (it is not a GraphQL engine), REST writes under `/repos/...`, GitHub's token schemes
(`Authorization: bearer|token <t>`), Relay-style connections with base64 cursors, and GitHub's error shapes
(200 with `errors` for GraphQL, `{"message", "documentation_url"}` for REST); like GitHub, it refuses requests
without a `User-Agent` and an `X-GitHub-Api-Version` it does not know."""

from __future__ import annotations

import base64
import re
from typing import Any

from aiohttp import web

from support.fakes.base import FakeApi

TOKEN = "ghp_fake0123456789abcdefghijklmnopqrstuv"
OWNER, REPO = "octo-org", "hello"
API_VERSIONS = ("2022-11-28", "2026-03-10")
_DOCS = "https://docs.github.com/graphql"


def _cursor(i: int) -> str:
    return base64.b64encode(f"cursor:{i}".encode()).decode()


def _index(cursor: str | None) -> int:
    if not cursor:
        return 0
    return int(base64.b64decode(cursor).decode().split(":", 1)[1])


def _connection(rows: list[dict[str, Any]], variables: dict[str, Any], default: int = 30) -> dict[str, Any]:
    first = int(variables.get("first") or default)
    start = _index(variables.get("after"))
    page = rows[start:start + first]
    end = start + len(page)
    return {"pageInfo": {"hasNextPage": end < len(rows), "endCursor": _cursor(end) if page else None},
            "nodes": page}


def _not_found(kind: str, what: str, path: str) -> dict[str, Any]:
    return {"data": {path: None}, "errors": [{"type": "NOT_FOUND", "path": [path],
                                              "message": f"Could not resolve to a {kind} with the name '{what}'."}]}


class FakeGitHub(FakeApi):
    repos: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    pulls: list[dict[str, Any]]
    comments: list[dict[str, Any]]
    users: list[dict[str, Any]]
    commits: list[dict[str, Any]]

    def __init__(self, count: int = 23) -> None:
        super().__init__()
        self.count = count
        self.repos = [{"id": f"R_kgDO{i:04d}", "name": f"repo-{i:02d}", "nameWithOwner": f"{OWNER}/repo-{i:02d}",
                       "description": f"Repository number {i}", "url": f"https://github.com/{OWNER}/repo-{i:02d}",
                       "isPrivate": i % 2 == 0, "isArchived": False, "stargazerCount": i * 3, "forkCount": i,
                       "pushedAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-02T00:00:00Z",
                       "primaryLanguage": {"name": "Go" if i % 3 else "Rust"}} for i in range(count)]
        self.issues = [{"id": f"I_kwDO{i:04d}", "databaseId": 1000 + i, "number": i + 1, "title": f"Bug {i + 1}",
                        "body": "It breaks" if i % 2 else "Crash on start", "state": "OPEN" if i % 3 else "CLOSED",
                        "createdAt": "2026-02-01T00:00:00Z", "updatedAt": "2026-02-02T00:00:00Z", "closedAt": None,
                        "url": f"https://github.com/{OWNER}/{REPO}/issues/{i + 1}", "author": {"login": "octocat"},
                        "labels": {"nodes": [{"name": "bug", "color": "d73a4a"}]}} for i in range(count)]
        self.pulls = [{"id": f"PR_kwDO{i:04d}", "number": 100 + i, "title": f"Fix {i}", "state": "OPEN",
                       "isDraft": False, "merged": False, "baseRefName": "main", "headRefName": f"fix-{i}",
                       "createdAt": "2026-03-01T00:00:00Z", "updatedAt": "2026-03-01T00:00:00Z",
                       "url": f"https://github.com/{OWNER}/{REPO}/pull/{100 + i}", "author": {"login": "hubot"}}
                      for i in range(count)]
        self.comments = [{"id": f"IC_kwDO{i:04d}", "databaseId": 5000 + i, "body": f"Comment {i}",
                          "author": {"login": "octocat"}, "createdAt": "2026-02-03T00:00:00Z",
                          "url": f"https://github.com/{OWNER}/{REPO}/issues/1#issuecomment-{5000 + i}"}
                         for i in range(count)]
        self.users = [{"id": f"U_kgDO{i:04d}", "login": f"member{i:02d}", "name": f"Member {i}", "email": None,
                       "company": "Octo", "url": f"https://github.com/member{i:02d}",
                       "createdAt": "2020-01-01T00:00:00Z"} for i in range(count)]
        self.commits = [{"oid": f"{i:040x}", "messageHeadline": f"Change {i}", "message": f"Change {i}\n\nDetails",
                         "committedDate": "2026-01-01T00:00:00Z", "url": f"https://github.com/{OWNER}/{REPO}/commit/{i:040x}",
                         "author": {"name": "Octo Cat", "email": "octocat@example.com"}} for i in range(count)]
        self.viewer: dict[str, Any] = {"id": "U_kgDOviewer", "login": "octocat", "name": "The Octocat", "url": "https://github.com/octocat"}

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and token == TOKEN

    def unauthorized(self) -> web.Response:
        return web.json_response({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                                 status=401)

    def refused(self, request: web.Request) -> web.Response | None:
        """GitHub's answers to a request without a User-Agent, or asking for an API version it does not know."""
        if not request.headers.get("User-Agent"):
            return web.Response(status=403, text="Request forbidden by administrative rules. Please make sure your "
                                                 "request has a User-Agent header.")
        version = request.headers.get("X-GitHub-Api-Version")
        if version is not None and version not in API_VERSIONS:
            return web.json_response({"message": f"Unsupported 'X-GitHub-Api-Version': {version}",
                                      "documentation_url": _DOCS}, status=400)
        return None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/graphql", self.graphql)
        app.router.add_post("/repos/{owner}/{repo}/issues", self.create_issue)
        app.router.add_patch("/repos/{owner}/{repo}/issues/{number}", self.update_issue)
        app.router.add_post("/repos/{owner}/{repo}/issues/{number}/comments", self.create_comment)
        app.router.add_post("/repos/{owner}/{repo}/pulls", self.create_pull)

    # --- GraphQL ------------------------------------------------------------------------------------------
    async def graphql(self, request: web.Request) -> web.Response:
        doc = await request.json()
        query, variables = doc.get("query", ""), doc.get("variables") or {}
        if not isinstance(query, str) or not query.strip():
            return web.json_response({"message": "A query attribute must be specified and must be a string.",
                                      "documentation_url": _DOCS}, status=400)
        operation = query.split("\nfragment ", 1)[0]
        match = re.search(r"\{\s*(\w+)", operation)
        root = match.group(1) if match else ""
        body = self._answer(root, operation, variables)
        return web.json_response(body)

    def _answer(self, root: str, op: str, v: dict[str, Any]) -> dict[str, Any]:
        if root == "viewer":
            return {"data": {"viewer": self.viewer}}
        if root == "repositoryOwner":
            if v.get("username") != OWNER:
                return {"data": {"repositoryOwner": None}}
            return {"data": {"repositoryOwner": {"repositories": _connection(self.repos, v)}}}
        if root == "organization":
            if v.get("org") != OWNER:
                return _not_found("Organization", str(v.get("org")), "organization")
            key = "membersWithRole" if "membersWithRole(" in op else "repositories"
            rows = self.users if key == "membersWithRole" else self.repos
            return {"data": {"organization": {key: _connection(rows, v)}}}
        if root == "user":
            found = next((u for u in self.users if u["login"] == v.get("username")), None)
            if found is None:
                return _not_found("User", str(v.get("username")), "user")
            return {"data": {"user": found}}
        if root == "node":
            return {"data": {"node": next((c for c in self.comments if c["id"] == v.get("id")), None)}}
        if root == "search":
            return {"data": {"search": self._search(op, v)}}
        if root == "repository":
            if (v.get("owner"), v.get("repo")) != (OWNER, REPO):
                return _not_found("Repository", f"{v.get('owner')}/{v.get('repo')}", "repository")
            return {"data": {"repository": self._repository(op, v)}}
        return {"errors": [{"message": f"Field '{root}' doesn't exist on type 'Query'"}]}

    def _repository(self, op: str, v: dict[str, Any]) -> dict[str, Any] | None:
        if "issueOrPullRequest(" in op:
            number = v.get("number")
            if number != 1:
                return {"issueOrPullRequest": None}
            return {"issueOrPullRequest": {"comments": _connection(self.comments, v)}}
        if "history(" in op:
            return {"defaultBranchRef": {"target": {"history": _connection(self.commits, v)}}}
        if "object(" in op:
            return {"object": next((c for c in self.commits if c["oid"] == v.get("sha")), None)}
        if "pullRequests(" in op:
            return {"pullRequests": _connection(self._states(self.pulls, v), v)}
        if "pullRequest(" in op:
            return {"pullRequest": next((p for p in self.pulls if p["number"] == v.get("number")), None)}
        if "issues(" in op:
            return {"issues": _connection(self._states(self.issues, v), v)}
        if "issue(" in op:
            return {"issue": next((i for i in self.issues if i["number"] == v.get("number")), None)}
        return {**self.repos[0], "name": REPO, "nameWithOwner": f"{OWNER}/{REPO}"}

    @staticmethod
    def _states(rows: list[dict[str, Any]], v: dict[str, Any]) -> list[dict[str, Any]]:
        states = v.get("states")
        return rows if not states else [r for r in rows if r["state"] in states]

    def _search(self, op: str, v: dict[str, Any]) -> dict[str, Any]:
        text = str(v.get("query", ""))
        words = [w.lower() for w in text.split() if ":" not in w]
        if "type: REPOSITORY" in op:
            rows, count = self.repos, "repositoryCount"
            rows = [r for r in rows if all(w in (r["description"] or "").lower() or w in r["name"] for w in words)]
        elif "type: USER" in op:
            rows, count = [u for u in self.users if all(w in u["login"] for w in words)], "userCount"
        else:
            rows = self.pulls if "is:pr" in text else self.issues
            rows = [r for r in rows if all(w in (r.get("body") or r["title"]).lower() for w in words)]
            count = "issueCount"
        return {count: len(rows), **_connection(rows, v, default=10)}

    # --- REST writes --------------------------------------------------------------------------------------
    def _repo_ok(self, request: web.Request) -> bool:
        return (request.match_info["owner"], request.match_info["repo"]) == (OWNER, REPO)

    @staticmethod
    def _rest_404() -> web.Response:
        return web.json_response({"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                                  "status": "404"}, status=404)

    async def create_issue(self, request: web.Request) -> web.Response:
        if not self._repo_ok(request):
            return self._rest_404()
        body = await request.json()
        if not body.get("title"):
            return web.json_response({"message": "Validation Failed", "errors": [
                {"resource": "Issue", "code": "missing_field", "field": "title"}]}, status=422)
        number = len(self.issues) + 1
        issue = {"id": 9000 + number, "node_id": f"I_kwDOnew{number}", "number": number, "state": "open",
                 "title": body["title"], "body": body.get("body"),
                 "labels": [{"name": n} for n in body.get("labels", [])],
                 "html_url": f"https://github.com/{OWNER}/{REPO}/issues/{number}"}
        return web.json_response(issue, status=201)

    async def update_issue(self, request: web.Request) -> web.Response:
        if not self._repo_ok(request):
            return self._rest_404()
        body = await request.json()
        number = int(request.match_info["number"])
        return web.json_response({"number": number, "state": body.get("state", "open"), "title": body.get("title")})

    async def create_comment(self, request: web.Request) -> web.Response:
        if not self._repo_ok(request):
            return self._rest_404()
        body = await request.json()
        return web.json_response({"id": 77, "body": body.get("body"),
                                  "issue_url": f"https://api.github.com/repos/{OWNER}/{REPO}/issues/"
                                               f"{request.match_info['number']}"}, status=201)

    async def create_pull(self, request: web.Request) -> web.Response:
        if not self._repo_ok(request):
            return self._rest_404()
        body = await request.json()
        return web.json_response({"number": 500, "title": body.get("title"), "head": {"ref": body.get("head")},
                                  "base": {"ref": body.get("base")}, "state": "open"}, status=201)
