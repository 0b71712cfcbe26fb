"""Admin routes over HTTP (contract: Admin routes): workspaces, connectors, sources, seed aliases, validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer

UNKNOWN = "00000000-0000-0000-0000-000000000000"
CREDS = {"bearer_token": "tok-value-1", "basic": {"username": "user-1", "password": "pw-value-1"},
         "api_key": {"value": "key-value-1", "header": "X-Api-Key"}, "inject_headers": {"X-Extra": "hdr-value-1"}}
VALUES = ("tok-value-1", "pw-value-1", "key-value-1", "hdr-value-1")


@pytest.fixture
def statuses(admin: Admin) -> Iterator[list[int]]:
    """Every response the admin client sees; none may be a 500 (docs/errors.md)."""
    seen: list[int] = []
    admin.http.event_hooks["response"].append(lambda r: seen.append(r.status_code))
    yield seen
    assert seen and all(s < 500 for s in seen), seen


def _body(ws: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"workspace_id": ws, "connector": "http", "name": "Echo",
                            "config": {"upstream_url": "http://127.0.0.1:9/v1"}, "credentials": {}}
    body.update(kw)
    return body


def _err(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code
    assert err["request_id"] == r.headers["x-request-id"]
    if field is not None:
        assert err.get("field") == field, err
    return err


def _no_values(r: httpx.Response) -> None:
    for v in VALUES:
        assert v not in r.text and v not in str(r.headers)


# --- workspaces ---------------------------------------------------------------------------------------------

def test_workspace_crud(admin: Admin, statuses: list[int]) -> None:
    r = admin.post("/api/v1/workspaces", {"name": "acme"})
    assert r.status_code == 201
    ws = r.json()
    assert set(ws) >= {"id", "name", "created_at"} and ws["name"] == "acme"
    assert admin.get(f"/api/v1/workspaces/{ws['id']}").json() == ws
    admin.workspace("globex")
    listed = admin.get("/api/v1/workspaces").json()["data"]
    assert [w["name"] for w in listed] == ["acme", "globex"]
    assert [w["name"] for w in admin.get("/api/v1/workspaces", params={"name_contains": "glob"}).json()["data"]] \
        == ["globex"]
    assert admin.http.delete(f"/api/v1/workspaces/{ws['id']}", headers=admin.headers).status_code == 204
    _err(admin.get(f"/api/v1/workspaces/{ws['id']}"), 404, "not_found")
    _err(admin.http.delete(f"/api/v1/workspaces/{ws['id']}", headers=admin.headers), 404, "not_found")


def test_duplicate_workspace_name_is_409(admin: Admin, statuses: list[int]) -> None:
    admin.workspace("dup")
    _err(admin.post("/api/v1/workspaces", {"name": "dup"}), 409, "conflict", "name")


def test_deleting_a_workspace_deletes_its_sources(admin: Admin, statuses: list[int]) -> None:
    ws = admin.workspace("w")
    src = admin.source(ws, upstream_url="http://127.0.0.1:9", credentials={"bearer_token": "t"})
    assert admin.http.delete(f"/api/v1/workspaces/{ws}", headers=admin.headers).status_code == 204
    _err(admin.get(f"/api/v1/sources/{src['id']}"), 404, "not_found")


# --- connectors ---------------------------------------------------------------------------------------------

def test_connectors_list_http_with_both_schemas(admin: Admin, statuses: list[int]) -> None:
    r = admin.get("/api/v1/connectors")
    assert r.status_code == 200
    http = next(c for c in r.json()["data"] if c["name"] == "http")
    assert http["config_schema"]["required"] == ["upstream_url"]
    assert {"bearer_token", "basic", "api_key", "inject_headers", "oauth2"} <= set(
        http["credentials_schema"]["properties"])



def test_connector_entities_describe_actions_params_and_paging(admin: Admin, statuses: list[int]) -> None:
    r = admin.get("/api/v1/connectors/stripe/entities")
    assert r.status_code == 200
    assert r.json()["connector"] == "stripe"
    customers = next(e for e in r.json()["data"] if e["name"] == "customers")
    listing = next(a for a in customers["actions"] if a["name"] == "list")
    assert listing["pagination"]["page_param"] == "starting_after"
    assert "email" in {p["name"] for p in listing["params"]}
    _err(admin.get("/api/v1/connectors/nope/entities"), 404, "not_found")
    assert admin.get("/api/v1/connectors/http/entities").json()["data"] == []
    assert admin.get("/api/v1/connectors/instances_for_user", params={"external_user_id": "x"}).json() \
        == {"instances": []}  # the static route is not shadowed


def test_connector_entities_need_a_token(kr: KeyrelayServer) -> None:
    r = httpx.get(kr.url + "/api/v1/connectors/stripe/entities")
    _err(r, 401, "unauthenticated")

# --- sources ------------------------------------------------------------------------------------------------

def test_source_crud_never_returns_a_credential_value(admin: Admin, statuses: list[int]) -> None:
    ws = admin.workspace("w")
    r = admin.post("/api/v1/sources", _body(ws, credentials=CREDS, slug="echo"))
    assert r.status_code == 201, r.text
    _no_values(r)
    src = r.json()
    assert src["credentials"] == ["api_key", "basic", "bearer_token", "inject_headers"]
    assert (src["workspace_id"], src["connector"], src["slug"], src["status"]) == (ws, "http", "echo", "active")
    assert src["config"] == {"upstream_url": "http://127.0.0.1:9/v1"}
    assert src["policy"]["allowed_methods"] is None and src["policy"]["timeout_seconds"] == 30.0
    sid = src["id"]

    got = admin.get(f"/api/v1/sources/{sid}")
    _no_values(got)
    assert got.json() == src
    listed = admin.get("/api/v1/sources", params={"workspace_id": ws})
    _no_values(listed)
    assert [s["id"] for s in listed.json()["data"]] == [sid]
    everything = admin.get("/api/v1/sources")
    _no_values(everything)
    assert [s["id"] for s in everything.json()["data"]] == [sid]

    def patch(body: dict[str, Any]) -> dict[str, Any]:
        resp = admin.http.patch(f"/api/v1/sources/{sid}", json=body, headers=admin.headers)
        assert resp.status_code == 200, resp.text
        _no_values(resp)
        out: dict[str, Any] = resp.json()
        return out

    assert patch({"name": "Renamed"})["name"] == "Renamed"
    pol = patch({"policy": {"allowed_methods": ["get", "POST"], "timeout_seconds": 5}})["policy"]
    assert pol["allowed_methods"] == ["GET", "POST"] and pol["timeout_seconds"] == 5.0
    pol = patch({"policy": {"rate_limit_per_minute": 10}})["policy"]  # merges with the stored policy
    assert pol["allowed_methods"] == ["GET", "POST"] and pol["rate_limit_per_minute"] == 10
    assert patch({"credentials": {"bearer_token": "tok-value-1"}})["credentials"] == ["bearer_token"]
    assert patch({"status": "inactive"})["status"] == "inactive"
    assert patch({"slug": "echo-2"})["slug"] == "echo-2"
    assert patch({"config": {"upstream_url": "http://127.0.0.1:9/v2"}})["config"]["upstream_url"].endswith("/v2")
    _err(admin.http.patch(f"/api/v1/sources/{sid}", json={}, headers=admin.headers), 400, "invalid_request")
    _err(admin.http.patch(f"/api/v1/sources/{sid}", json={"status": "paused"}, headers=admin.headers),
         400, "invalid_request", "status")
    _err(admin.http.patch(f"/api/v1/sources/{sid}", json={"nope": 1}, headers=admin.headers),
         400, "invalid_request", "nope")

    assert admin.http.delete(f"/api/v1/sources/{sid}", headers=admin.headers).status_code == 204
    _err(admin.get(f"/api/v1/sources/{sid}"), 404, "not_found")
    _err(admin.http.delete(f"/api/v1/sources/{sid}", headers=admin.headers), 404, "not_found")
    _err(admin.http.patch(f"/api/v1/sources/{sid}", json={"name": "x"}, headers=admin.headers), 404, "not_found")
    assert admin.get("/api/v1/sources", params={"workspace_id": ws}).json()["data"] == []


def test_slug_conflicts_are_per_workspace(admin: Admin, statuses: list[int]) -> None:
    a, b = admin.workspace("a"), admin.workspace("b")
    assert admin.post("/api/v1/sources", _body(a, slug="echo")).status_code == 201
    assert admin.post("/api/v1/sources", _body(b, slug="echo")).status_code == 201
    _err(admin.post("/api/v1/sources", _body(a, slug="echo")), 409, "conflict", "slug")
    other = admin.post("/api/v1/sources", _body(a, slug="other")).json()
    _err(admin.http.patch(f"/api/v1/sources/{other['id']}", json={"slug": "echo"}, headers=admin.headers),
         409, "conflict", "slug")
    # slug defaults to one derived from the name
    assert admin.post("/api/v1/sources", _body(a, name="My Stripe API!")).json()["slug"] == "my-stripe-api"


@pytest.mark.parametrize("policy,field", [
    ({"allowed_methods": ["GET", "NOT A METHOD"]}, "policy.allowed_methods"),
    ({"allowed_methods": "GET"}, "policy.allowed_methods"),
    ({"forward_headers": ["accept", "Authorization"]}, "policy.forward_headers"),
    ({"forward_headers": ["cookie"]}, "policy.forward_headers"),
    ({"timeout_seconds": -1}, "policy.timeout_seconds"),
    ({"timeout_seconds": 0}, "policy.timeout_seconds"),
    ({"rate_limit_per_minute": 0}, "policy.rate_limit_per_minute"),
    ({"max_body_bytes": -5}, "policy.max_body_bytes"),
    ({"allow_writes": "yes"}, "policy.allow_writes"),
    ({"surprise": 1}, "policy.surprise"),
])
def test_policy_validation_names_the_field(admin: Admin, statuses: list[int], policy: dict[str, Any],
                                           field: str) -> None:
    ws = admin.workspace("w")
    _err(admin.post("/api/v1/sources", _body(ws, policy=policy)), 400, "invalid_request", field)
    src = admin.post("/api/v1/sources", _body(ws, slug="ok")).json()
    _err(admin.http.patch(f"/api/v1/sources/{src['id']}", json={"policy": policy}, headers=admin.headers),
         400, "invalid_request", field)


@pytest.mark.parametrize("change,field", [
    ({"connector": "no-such-connector"}, "connector"),
    ({"credentials": {"basic": {"username": "u"}}}, "credentials.basic"),
    ({"credentials": {"api_key": {"header": "X-Key"}}}, "credentials.api_key"),
    ({"credentials": {"bearer_token": 5}}, "credentials.bearer_token"),
    ({"credentials": {"unknown_kind": "x"}}, "credentials"),
    ({"credentials": {"bearer_token": "bad\r\nX-Injected: 1"}}, "credentials.bearer_token"),
    ({"config": {}}, "config"),
    ({"config": {"upstream_url": "ftp://example.com"}}, "config.upstream_url"),
    ({"config": {"upstream_url": "http://127.0.0.1:9", "extra": 1}}, "config"),
    ({"slug": "Not A Slug"}, "slug"),
    ({"name": ""}, "name"),
    ({"name": 123}, "name"),
    ({"config": "not an object"}, "config"),
    ({"credentials": ["a"]}, "credentials"),
    ({"workspace_id": 7}, "workspace_id"),
    ({"unexpected": True}, "unexpected"),
])
def test_invalid_source_requests_are_400_naming_the_field(admin: Admin, statuses: list[int],
                                                          change: dict[str, Any], field: str) -> None:
    ws = admin.workspace("w")
    err = _err(admin.post("/api/v1/sources", _body(ws, **change)), 400, "invalid_request", field)
    assert "bad\r\n" not in err["message"]


def test_missing_required_fields(admin: Admin, statuses: list[int]) -> None:
    ws = admin.workspace("w")
    for missing in ("workspace_id", "connector", "name"):
        body = _body(ws)
        del body[missing]
        _err(admin.post("/api/v1/sources", body), 400, "invalid_request", missing)
    _err(admin.post("/api/v1/workspaces", {}), 400, "invalid_request", "name")
    _err(admin.post("/api/v1/workspaces", {"name": 5}), 400, "invalid_request", "name")
    _err(admin.post("/api/v1/workspaces", ["name"]), 400, "invalid_request")


def test_source_in_unknown_workspace_is_404(admin: Admin, statuses: list[int]) -> None:
    _err(admin.post("/api/v1/sources", _body(UNKNOWN)), 404, "not_found")


@pytest.mark.parametrize("raw", [b"{", b'{"name": "x",}', b"not json", b"\xff\xfe", b'{"name": "a"} trailing'])
def test_malformed_json_is_400(admin: Admin, statuses: list[int], raw: bytes) -> None:
    for path in ("/api/v1/workspaces", "/api/v1/sources"):
        r = admin.http.post(path, content=raw, headers={**admin.headers, "content-type": "application/json"})
        _err(r, 400, "invalid_request")


def test_body_over_the_admin_limit_is_413(kr: KeyrelayServer, admin: Admin, statuses: list[int]) -> None:
    limit = kr.settings.max_admin_body_bytes
    assert limit == 1024 * 1024
    big = json.dumps({"name": "x" * (limit + 10)}).encode()
    _err(admin.http.post("/api/v1/workspaces", content=big, headers=admin.headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for chunked bodies too
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    _err(admin.http.post("/api/v1/workspaces", content=chunks(), headers=admin.headers), 413, "payload_too_large")
    assert admin.post("/api/v1/workspaces", {"name": "fits"}).status_code == 201


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[::ffff:169.254.169.254]/",
                                 "http://10.0.0.1/", "http://0.0.0.0:80/"])
def test_ssrf_is_refused_at_create_even_with_loopback_allowed(admin: Admin, statuses: list[int], url: str) -> None:
    ws = admin.workspace("w")
    _err(admin.post("/api/v1/sources", _body(ws, config={"upstream_url": url})), 422, "ssrf_blocked",
         "config.upstream_url")
    src = admin.post("/api/v1/sources", _body(ws, slug="ok")).json()
    _err(admin.http.patch(f"/api/v1/sources/{src['id']}", json={"config": {"upstream_url": url}},
                          headers=admin.headers), 422, "ssrf_blocked", "config.upstream_url")


@pytest.fixture
def no_allow(kr_settings: dict[str, Any]) -> None:
    kr_settings["upstream_allow_cidrs"] = ""


@pytest.mark.parametrize("url,status,code", [
    ("http://127.0.0.1", 422, "ssrf_blocked"), ("http://127.0.0.1:8080/", 422, "ssrf_blocked"),
    ("http://localhost/", 422, "ssrf_blocked"), ("http://[::1]/", 422, "ssrf_blocked"),
    ("http://169.254.169.254/", 422, "ssrf_blocked"),
    ("http://2130706433/", 400, "invalid_request"),  # decimal IPv4: refused by the URL parser
])
def test_loopback_is_refused_by_default(no_allow: None, admin: Admin, statuses: list[int], url: str, status: int,
                                        code: str) -> None:
    ws = admin.workspace("w")
    _err(admin.post("/api/v1/sources", _body(ws, config={"upstream_url": url})), status, code,
         "config.upstream_url")
    assert admin.get("/api/v1/sources").json()["data"] == []


# --- tenancy ------------------------------------------------------------------------------------------------

def _strip(r: httpx.Response) -> dict[str, Any]:
    err = dict(r.json()["error"])
    err.pop("request_id")
    return err


def test_agent_tokens_cannot_read_admin_routes(admin: Admin, statuses: list[int]) -> None:
    """Reads are admin routes too: an agent's token learns nothing, not even whether an id exists."""
    ws_a = admin.workspace("ws-a")
    token_a = admin.scoped_token("ws-a")
    key_a = admin.api_key(ws_a, ["proxy"])
    ws_b = admin.workspace("ws-b")
    own = admin.source(ws_a, upstream_url="http://127.0.0.1:9/v1", credentials={"bearer_token": "a-secret"})
    src_b = admin.source(ws_b, upstream_url="http://127.0.0.1:9", credentials={"bearer_token": "b-secret"})
    for token in (token_a, key_a):
        h = {"Authorization": f"Bearer {token}"}
        bodies = []
        for path in ("/api/v1/workspaces", f"/api/v1/workspaces/{ws_a}", f"/api/v1/workspaces/{ws_b}",
                     f"/api/v1/workspaces/{UNKNOWN}", "/api/v1/sources", f"/api/v1/sources?workspace_id={ws_a}",
                     f"/api/v1/sources/{own['id']}", f"/api/v1/sources/{src_b['id']}", f"/api/v1/sources/{UNKNOWN}",
                     "/api/v1/connectors"):
            r = admin.http.get(path, headers=h)
            _err(r, 403, "forbidden")
            for leak in ("127.0.0.1", "bearer_token", "a-secret", "b-secret", "ws-a", "upstream_url"):
                assert leak not in r.text, (path, leak)
            bodies.append(_strip(r))
        assert all(b == bodies[0] for b in bodies)


def test_workspace_tokens_cannot_write_admin_routes(admin: Admin, statuses: list[int]) -> None:
    token = admin.scoped_token("ws-a")
    ws = admin.get("/api/v1/workspaces").json()["data"][0]["id"]
    src = admin.source(ws, upstream_url="http://127.0.0.1:9")
    h = {"Authorization": f"Bearer {token}"}
    for r in (admin.http.post("/api/v1/sources", json=_body(ws), headers=h),
              admin.http.patch(f"/api/v1/sources/{src['id']}", json={"name": "x"}, headers=h),
              admin.http.delete(f"/api/v1/sources/{src['id']}", headers=h),
              admin.http.delete(f"/api/v1/workspaces/{ws}", headers=h)):
        _err(r, 403, "forbidden")
    after = admin.get(f"/api/v1/sources/{src['id']}")  # nothing was changed or deleted
    assert after.status_code == 200 and after.json()["name"] == src["name"]
    assert len(admin.get("/api/v1/sources", params={"workspace_id": ws}).json()["data"]) == 1
    for r in (admin.http.get("/api/v1/sources"), admin.http.post("/api/v1/workspaces", json={"name": "x"})):
        _err(r, 401, "unauthenticated")


# --- seed-shaped aliases ------------------------------------------------------------------------------------

def test_seed_000_create_source(admin: Admin, statuses: list[int]) -> None:
    ws = admin.workspace("w")
    r = admin.post("/v1/sources", {"workspaceId": ws, "name": "Seed Source", "sourceDefinitionId": "http",
                                   "configuration": {"upstream_url": "http://127.0.0.1:9",
                                                     "credentials": {"bearer_token": "tok-value-1"}}})
    assert r.status_code == 201, r.text
    _no_values(r)
    body = r.json()
    assert body["sourceId"] == body["id"] and body["workspaceId"] == ws and body["sourceType"] == "http"
    assert body["credentials"] == ["bearer_token"] and body["config"] == {"upstream_url": "http://127.0.0.1:9"}
    assert admin.get(f"/api/v1/sources/{body['id']}").json()["slug"] == "seed-source"
    bad = admin.post("/v1/sources", {"workspaceId": ws, "name": "x", "sourceDefinitionId": "nope",
                                     "configuration": {}})
    _err(bad, 400, "invalid_request", "connector")


def test_seed_002_integration_source_with_scoped_token(admin: Admin, statuses: list[int]) -> None:
    token_a = admin.scoped_token("ws-a")
    ws_a = admin.get("/api/v1/workspaces", params={"name_contains": "ws-a"}).json()["data"][0]["id"]
    ws_b = admin.workspace("ws-b")
    h = {"Authorization": f"Bearer {token_a}"}
    body = {"source_template_id": "http", "name": "mine", "config": {"upstream_url": "http://127.0.0.1:9"},
            "auth_config": {"bearer_token": "tok-value-1"}}
    r = admin.http.post("/v1/integrations/sources", json={**body, "workspace_id": ws_a}, headers=h)
    assert r.status_code == 201, r.text
    _no_values(r)
    assert r.json()["workspace_id"] == ws_a and r.json()["credentials"] == ["bearer_token"]
    other = admin.http.post("/v1/integrations/sources", json={**body, "workspace_id": ws_b}, headers=h)
    unknown = admin.http.post("/v1/integrations/sources", json={**body, "workspace_id": UNKNOWN}, headers=h)
    assert other.status_code == unknown.status_code == 404
    assert _strip(other) == _strip(unknown)
    assert admin.get("/api/v1/sources", params={"workspace_id": ws_b}).json()["data"] == []
    key = admin.api_key(ws_a, ["proxy"])
    r = admin.http.post("/v1/integrations/sources", json={**body, "name": "k", "workspace_id": ws_a},
                        headers={"Authorization": f"Bearer {key}"})
    _err(r, 403, "forbidden")
