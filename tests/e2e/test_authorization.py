"""Authorisation matrix over the admin routes: every route of the admin and token routers (read from the running
app, so a new route is covered the day it is added) x every kind of token. Only application tokens pass; the one
documented exception is the Airbyte-style `POST /v1/integrations/sources` for a workspace-scoped token in its own
workspace (docs/security.md: tokens, API keys and scopes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

UNKNOWN = "00000000-0000-0000-0000-000000000000"
PUBLIC = {("POST", "/api/v1/applications/token"), ("POST", "/api/v1/account/applications/token")}
# (method, path) -> {token kind: expected status} where it differs from 403: the objects belong to tenant A, so
# tenant B's workspace-scoped token gets the 404 of an unknown workspace
AGENT_KINDS = ("proxy_key", "all_scopes_key", "scoped_a", "scoped_b", "limited_execute", "constrained_application")
EXCEPTIONS = {
    ("POST", "/v1/integrations/sources"): {"scoped_a": 201, "scoped_b": 404},
    # an application without `admin` mints scoped tokens for its workspaces, but never creates one
    ("POST", "/api/v1/embedded/scoped-token"): {"limited_execute": 404},
    # a connector's entities are the catalog's public description, which an agent needs to call execute
    ("GET", "/api/v1/connectors/{name}/entities"): dict.fromkeys(AGENT_KINDS, 200),
}


@dataclass
class World:
    kr: KeyrelayServer
    admin: Admin
    ws_a: str
    ws_b: str
    tokens: dict[str, str | None]

    def fresh_source(self) -> str:
        return str(self.admin.source(self.ws_a, upstream_url="http://127.0.0.1:9", slug="s" + uuid.uuid4().hex[:8],
                                     credentials={"bearer_token": "matrix-secret"})["id"])

    def fill(self, path: str, *, destructive: bool) -> str:
        """Path parameters: real ids (fresh throwaway objects when the call may delete them)."""
        ws = self.admin.workspace("t" + uuid.uuid4().hex[:8]) if destructive else self.ws_a
        src = self.fresh_source()
        key_id = self.admin.post("/api/v1/api-keys", {"workspace_id": self.ws_a, "scopes": ["proxy"]}).json()["id"]
        app_id = self.admin.post("/api/v1/applications", {"name": "m", "workspaces": [self.ws_a],
                                                          "scopes": ["proxy"]}).json()["id"]
        filled = path.replace("{name}", "github").replace("{workspace_id}", ws).replace("{application_id}", app_id)
        return filled.replace("{source_id}", src).replace("{key_id}", key_id)

    def body(self, method: str, path: str) -> dict[str, Any] | None:
        if method not in ("POST", "PATCH", "PUT"):
            return None
        name = "n" + uuid.uuid4().hex[:8]
        http = {"upstream_url": "http://127.0.0.1:9"}
        return {
            "/api/v1/workspaces": {"name": name},
            "/api/v1/sources": {"workspace_id": self.ws_a, "connector": "http", "name": name, "config": http,
                                "credentials": {"bearer_token": "matrix-secret"}},
            "/api/v1/sources/{source_id}": {"name": name},
            "/api/v1/api-keys": {"workspace_id": self.ws_a, "scopes": ["proxy"]},
            "/api/v1/applications": {"name": name, "workspaces": [self.ws_a], "scopes": ["proxy"]},
            "/api/v1/applications/{application_id}": {"scopes": ["proxy", "files"]},
            "/api/v1/embedded/scoped-token": {"workspace_name": name},
            "/v1/sources": {"workspaceId": self.ws_a, "name": name, "sourceDefinitionId": "http",
                            "configuration": http},
            "/v1/integrations/sources": {"source_template_id": "http", "workspace_id": self.ws_a, "name": name,
                                         "config": http, "auth_config": {"bearer_token": "matrix-secret"}},
        }.get(path, {})


def admin_routes(kr: KeyrelayServer) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI spec tagged `admin` or `auth`, except the token endpoint itself."""
    out = []
    for path, operations in kr.app.api.openapi()["paths"].items():
        for method, op in operations.items():
            if set(op.get("tags", ())) & {"admin", "auth"} and (method.upper(), path) not in PUBLIC:
                out.append((method.upper(), path))
    return out


@pytest.fixture
def kr_settings(kr_settings: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**kr_settings, "local_roots": str(tmp_path / "files")}


@pytest.fixture
def world(kr: KeyrelayServer, admin: Admin) -> Iterator[World]:
    ws_a, ws_b = admin.workspace("tenant-a"), admin.workspace("tenant-b")
    revoked = admin.post("/api/v1/api-keys", {"workspace_id": ws_a, "scopes": ["proxy"]}).json()
    assert admin.http.delete(f"/api/v1/api-keys/{revoked['id']}", headers=admin.headers).status_code == 204
    tokens: dict[str, str | None] = {
        "none": None, "malformed": "not-a-bearer", "unknown": "Bearer kr_" + "A" * 43,
        "revoked_key": f"Bearer {revoked['key']}",
        "proxy_key": f"Bearer {admin.api_key(ws_a, ['proxy'])}",
        "all_scopes_key": f"Bearer {admin.api_key(ws_a, ['proxy', 'files', 'query', 'execute', 'mcp', 'logs'])}",
        "scoped_a": f"Bearer {admin.scoped_token('tenant-a')}",
        "scoped_b": f"Bearer {admin.scoped_token('tenant-b')}",
        "application": f"Bearer {admin.token}",
        "limited_execute": _application_token(kr, admin, [ws_a], ["execute", "proxy"]),
        "constrained_application": _attenuated(kr, admin.token),
    }
    yield World(kr, admin, ws_a, ws_b, tokens)


UNAUTHENTICATED = ("none", "malformed", "unknown", "revoked_key")
AGENTS = AGENT_KINDS


def _application_token(kr: KeyrelayServer, admin: Admin, workspaces: list[str], scopes: list[str]) -> str:
    app = admin.post("/api/v1/applications", {"name": "limited", "workspaces": workspaces, "scopes": scopes}).json()
    r = httpx.post(kr.url + "/api/v1/applications/token",
                   json={"client_id": app["client_id"], "client_secret": app["client_secret"]})
    return f"Bearer {r.json()['access_token']}"


def _attenuated(kr: KeyrelayServer, token: str) -> str:
    r = httpx.post(kr.url + "/api/v1/tokens/attenuate", json={"constraints": {"methods": ["GET"]}},
                   headers={"Authorization": f"Bearer {token}"})
    return f"Bearer {r.json()['token']}"


def test_the_matrix_covers_the_admin_routes(kr: KeyrelayServer) -> None:
    routes = admin_routes(kr)
    for wanted in [("GET", "/api/v1/workspaces"), ("GET", "/api/v1/sources"), ("GET", "/api/v1/sources/{source_id}"),
                   ("PATCH", "/api/v1/sources/{source_id}"), ("GET", "/api/v1/connectors"),
                   ("GET", "/api/v1/api-keys"), ("DELETE", "/api/v1/workspaces/{workspace_id}")]:
        assert wanted in routes
    assert len(routes) >= 15


def test_only_application_tokens_pass_the_admin_routes(world: World) -> None:
    problems = []
    with httpx.Client(base_url=world.kr.url, timeout=20) as http:
        for method, path in admin_routes(world.kr):
            for kind, auth in world.tokens.items():
                headers = {} if auth is None else {"Authorization": auth}
                url = world.fill(path, destructive=method == "DELETE")
                r = http.request(method, url, headers=headers, json=world.body(method, path))
                special = EXCEPTIONS.get((method, path), {}).get(kind)
                if special is not None:
                    ok = r.status_code == special
                elif kind in UNAUTHENTICATED:
                    ok = r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
                elif kind != "application":
                    ok = r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
                    ok = ok and "matrix-secret" not in r.text and "127.0.0.1" not in r.text
                else:
                    ok = r.status_code < 400
                if not ok:
                    problems.append(f"{kind} {method} {path} -> {r.status_code} {r.text[:120]}")
    assert not problems, "\n".join(problems)


def test_the_seed_002_exception_holds_only_for_the_tokens_own_workspace(world: World) -> None:
    """A workspace-scoped token creates sources in its own workspace; another tenant's looks like an unknown id;
    an API key (even with every scope) cannot use it."""
    body = world.body("POST", "/v1/integrations/sources")
    assert body is not None
    post = world.admin.http.post
    own = post("/v1/integrations/sources", json=body, headers={"Authorization": str(world.tokens["scoped_a"])})
    assert own.status_code == 201 and own.json()["workspace_id"] == world.ws_a
    assert "matrix-secret" not in own.text
    theirs = post("/v1/integrations/sources", json={**body, "workspace_id": world.ws_b},
                  headers={"Authorization": str(world.tokens["scoped_a"])})
    unknown = post("/v1/integrations/sources", json={**body, "workspace_id": UNKNOWN},
                   headers={"Authorization": str(world.tokens["scoped_a"])})
    assert theirs.status_code == unknown.status_code == 404
    strip = [dict(r.json()["error"], request_id=None) for r in (theirs, unknown)]
    assert strip[0] == strip[1]
    for kind in ("proxy_key", "all_scopes_key"):
        r = post("/v1/integrations/sources", json=body, headers={"Authorization": str(world.tokens[kind])})
        assert r.status_code == 403


def test_agent_lookups_stay_open_and_show_ids_and_names_only(world: World) -> None:
    """The instance lookup and the Airbyte-compatible connector lookups keep working for agents' tokens."""
    admin = world.admin
    stripe = admin.source(world.ws_a, upstream_url="", connector="stripe", slug="pay",
                          config={"base_url": "http://127.0.0.1:9"}, credentials={"api_key": "sk_test_matrix_1"})
    h = {"Authorization": str(world.tokens["scoped_a"])}
    r = admin.http.get("/api/v1/connectors/instances_for_user", params={"external_user_id": "tenant-a"}, headers=h)
    assert r.status_code == 200 and {"id": stripe["id"], "name": "pay"} in r.json()["instances"]
    assert all(set(i) == {"id", "name"} for i in r.json()["instances"])
    other = admin.http.get("/api/v1/connectors/instances_for_user", params={"external_user_id": "tenant-b"},
                           headers=h)
    assert other.status_code == 200 and other.json() == {"instances": []}
    execute_key = {"Authorization": f"Bearer {admin.api_key(world.ws_a, ['execute'])}"}
    for headers in (h, execute_key):
        listed = admin.http.get("/api/v1/integrations/connectors", headers=headers)
        assert listed.status_code == 200 and [c["id"] for c in listed.json()["data"]] == [stripe["id"]]
        one = admin.http.get(f"/api/v1/integrations/connectors/{stripe['id']}", headers=headers)
        assert one.status_code == 200
        for text in (listed.text, one.text):
            assert "127.0.0.1" not in text and "sk_test_matrix_1" not in text and "api_key" not in text
    no_execute = {"Authorization": str(world.tokens["proxy_key"])}
    assert admin.http.get("/api/v1/integrations/connectors", headers=no_execute).status_code == 403


def test_streams_need_the_query_scope(world: World) -> None:
    stripe = world.admin.source(world.ws_a, upstream_url="", connector="stripe", slug="pay2",
                                config={"base_url": "http://127.0.0.1:9"}, credentials={"api_key": "sk_test_matrix_2"})
    path = f"/api/v1/sources/{stripe['id']}/streams"
    assert world.admin.http.get(path, headers={"Authorization": str(world.tokens["proxy_key"])}).status_code == 403
    ok = world.admin.http.get(path, headers={"Authorization": str(world.tokens["scoped_a"])})
    assert ok.status_code == 200 and "127.0.0.1" not in ok.text
    theirs = world.admin.http.get(path, headers={"Authorization": str(world.tokens["scoped_b"])})
    assert theirs.status_code == 404


def test_every_front_door_needs_its_own_scope(world: World, upstream: FakeUpstream, tmp_path: Path) -> None:
    """An API key passes a door only with that door's scope (pipeline/authorize.py): gateway and request API
    `proxy`, execute `execute`, stream query `query`, files `files`."""
    admin, ws = world.admin, world.ws_a
    api = admin.source(ws, upstream_url=upstream.url, slug="scoped-api")
    stripe = admin.source(ws, upstream_url="", connector="stripe", slug="scoped-pay",
                          config={"base_url": upstream.url}, credentials={"api_key": "sk_test_scope_0001"})
    (tmp_path / "files").mkdir(exist_ok=True)
    files = admin.source(ws, upstream_url="", connector="local", slug="scoped-files",
                         config={"root": str(tmp_path / "files")})
    base = world.kr.url
    doors: dict[str, Any] = {
        "proxy": [lambda h: httpx.get(f"{base}/api/{ws}/proxy/scoped-api/echo", headers=h),
                  lambda h: httpx.post(f"{base}/api/v1/sonar/apis/{api['id']}/request", headers=h,
                                       json={"method": "GET", "url": upstream.url + "/echo"})],
        "execute": [lambda h: httpx.post(f"{base}/api/v1/connectors/instances/{stripe['id']}/execute", headers=h,
                                         json={"entity": "customers", "action": "list"})],
        "query": [lambda h: httpx.post(f"{base}/v1/proxy/sources/{stripe['id']}/query", headers=h,
                                       json={"stream": "customers"})],
        "files": [lambda h: httpx.get(f"{base}/api/v1/sonar/files/{files['id']}/list/", headers=h)],
    }
    for scope, calls in doors.items():
        for other in ("proxy", "execute", "query", "files", "logs"):
            if other == scope:
                continue
            h = {"Authorization": f"Bearer {admin.api_key(ws, [other])}"}
            for call in calls:
                before = len(upstream.requests)
                r = call(h)
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (scope, other, r.text)
                assert len(upstream.requests) == before
        h = {"Authorization": f"Bearer {admin.api_key(ws, [scope])}"}
        for call in calls:
            assert call(h).status_code != 403, scope


def test_a_limited_admin_sees_another_tenants_objects_as_unknown(world: World) -> None:
    """An application holding `admin` over tenant B only: tenant A's objects answer the 404 of an unknown id, with
    the same body, and nothing changes."""
    admin, kr = world.admin, world.kr
    auth = {"Authorization": _application_token(kr, admin, [world.ws_b], ["admin", "proxy"])}
    src = world.fresh_source()
    key_id = admin.post("/api/v1/api-keys", {"workspace_id": world.ws_a, "scopes": ["proxy"]}).json()["id"]
    app_id = admin.post("/api/v1/applications", {"name": "a-only", "workspaces": [world.ws_a],
                                                 "scopes": ["proxy"]}).json()["id"]
    cases = [("GET", "/api/v1/workspaces/{}", world.ws_a, None), ("DELETE", "/api/v1/workspaces/{}", world.ws_a, None),
             ("GET", "/api/v1/sources/{}", src, None), ("PATCH", "/api/v1/sources/{}", src, {"name": "x"}),
             ("DELETE", "/api/v1/sources/{}", src, None), ("DELETE", "/api/v1/api-keys/{}", key_id, None),
             ("DELETE", "/api/v1/applications/{}", app_id, None),
             ("POST", "/api/v1/applications/{}/rotate-secret", app_id, None),
             ("PATCH", "/api/v1/applications/{}", app_id, {"scopes": ["proxy"]})]
    with httpx.Client(base_url=kr.url, timeout=20, headers=auth) as http:
        for method, path, real, body in cases:
            theirs = http.request(method, path.format(real), json=body)
            unknown = http.request(method, path.format(UNKNOWN), json=body)
            assert theirs.status_code == unknown.status_code == 404, (method, path, theirs.text)
            assert dict(theirs.json()["error"], request_id=None) == dict(unknown.json()["error"], request_id=None)
        listed = http.get("/api/v1/sources").json()["data"]
        assert all(s["workspace_id"] == world.ws_b for s in listed)
        keys = http.get("/api/v1/api-keys").json()["data"]
        assert all(k["workspace_id"] == world.ws_b for k in keys)
    assert admin.get(f"/api/v1/sources/{src}").status_code == 200
    assert admin.get(f"/api/v1/workspaces/{world.ws_a}").status_code == 200
