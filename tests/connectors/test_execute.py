"""Execute and stream query against the Stripe definition and a fake Stripe API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer, logged


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, stripe: FakeStripe) -> dict[str, Any]:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url="", connector="stripe", slug="stripe",
                       config={"base_url": stripe.url}, credentials={"api_key": API_KEY})
    key = admin.api_key(ws, ["execute", "query"])
    return {"ws": ws, "src": src, "auth": {"Authorization": f"Bearer {key}"},
            "exec": f"{kr.url}/api/v1/connectors/instances/{src['id']}/execute",
            "query": f"{kr.url}/v1/proxy/sources/{src['id']}/query"}


def run(env: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(env["exec"], json=body, headers=env["auth"], timeout=20)


def test_list_returns_records_and_pagination_metadata(env: dict[str, Any], stripe: FakeStripe) -> None:
    r = run(env, {"entity": "customers", "action": "list", "params": {"limit": 5}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success"
    assert [c["id"] for c in out["result"]] == [f"cus_{i:04d}" for i in range(5)]
    assert out["connector_metadata"]["has_more"] is True
    assert out["connector_metadata"]["next_cursor"] == "cus_0004"
    assert out["execution_metadata"]["connector_instance_id"] == env["src"]["id"]
    assert stripe.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in r.text


def test_paging_with_the_cursor_param_walks_to_the_end(env: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["starting_after"] = cursor
        out = run(env, {"entity": "invoices", "action": "list", "params": params}).json()
        seen += [r["id"] for r in out["result"]]
        if not out["connector_metadata"]["has_more"]:
            break
        cursor = out["connector_metadata"]["next_cursor"]
    assert seen == [f"in_{i:04d}" for i in range(25)]


def test_get_and_search(env: dict[str, Any]) -> None:
    got = run(env, {"entity": "charges", "action": "get", "params": {"id": "ch_0003"}}).json()
    assert got["result"]["id"] == "ch_0003"
    found = run(env, {"entity": "customers", "action": "api_search",
                      "params": {"query": "email:'user7@example.com'"}}).json()
    assert [c["id"] for c in found["result"]] == ["cus_0007"]


def test_an_escaped_echo_of_the_key_is_redacted_in_the_parsed_result(env: dict[str, Any],
                                                                       stripe: FakeStripe) -> None:
    stripe.echo_key = True
    r = run(env, {"entity": "customers", "action": "get", "params": {"id": "cus_0001"}})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["debug"] == "Bearer [REDACTED]"
    assert API_KEY not in r.text and "\\u" not in r.text
    assert stripe.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"  # positive control


def test_select_exclude_and_truncation(env: dict[str, Any]) -> None:
    sel = run(env, {"entity": "customers", "action": "list", "params": {"limit": 2},
                    "select_fields": ["id", "email"], "exclude_fields": ["email"]}).json()
    assert sel["result"][0] == {"id": "cus_0000", "email": "user0@example.com"}
    exc = run(env, {"entity": "customers", "action": "list", "params": {"limit": 1},
                    "exclude_fields": ["description", "created"]}).json()
    assert "description" not in exc["result"][0] and "created" not in exc["result"][0]
    cut = run(env, {"entity": "customers", "action": "list", "params": {"limit": 1},
                    "skip_truncation": False}).json()
    assert cut["result"][0]["description"].endswith("[truncated]") and len(cut["result"][0]["description"]) < 230


@pytest.mark.parametrize("body,status,field", [
    ({"entity": "nope", "action": "list"}, 422, "entity"),
    ({"entity": "customers", "action": "explode"}, 422, "action"),
    ({"entity": "customers", "action": "get", "params": {}}, 422, "params.id"),
    ({"entity": "customers", "action": "list", "params": {"limit": "many"}}, 422, "params.limit"),
    ({"entity": "customers", "action": "list", "params": {"limit": 1000}}, 422, "params.limit"),
    ({"entity": "customers", "action": "list", "params": {"bogus": 1}}, 422, "params.bogus"),
])
def test_bad_execute_requests_name_the_problem(env: dict[str, Any], stripe: FakeStripe, body: dict[str, Any],
                                               status: int, field: str) -> None:
    r = run(env, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field
    if field == "entity":
        assert "customers" in err["message"] and "invoices" in err["message"]
    assert stripe.requests == []


def test_writes_need_allow_writes(env: dict[str, Any], admin: Admin, stripe: FakeStripe) -> None:
    body = {"entity": "customers", "action": "create", "params": {"email": "new@example.com", "name": "New"}}
    r = run(env, body)
    assert r.status_code == 403 and stripe.requests == []
    admin.http.patch(f"/api/v1/sources/{env['src']['id']}", json={"policy": {"allow_writes": True}},
                     headers=admin.headers)
    r = run(env, body)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["email"] == "new@example.com"
    assert stripe.requests[-1].body == b"email=new%40example.com&name=New"


def test_upstream_errors_are_mapped(env: dict[str, Any], stripe: FakeStripe) -> None:
    # a Retry-After beyond the request deadline is not retried by keyrelay: the agent gets it
    stripe.fail_next.append((429, {"Retry-After": "120"}, {"error": {"message": "Too many requests"}}))
    r = run(env, {"entity": "customers", "action": "get", "params": {"id": "cus_0001"}})
    assert r.status_code == 429 and r.headers["retry-after"] == "120"
    assert "Too many requests" in r.json()["error"]["message"]
    r = run(env, {"entity": "customers", "action": "get", "params": {"id": "cus_missing"}})
    assert r.status_code == 404 and "No such object" in r.json()["error"]["message"]
    stripe.fail_next.append((401, {}, {"error": {"message": f"Invalid API Key provided: {API_KEY}"}}))
    r = run(env, {"entity": "customers", "action": "get", "params": {"id": "cus_0001"}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "upstream_rejected"
    assert API_KEY not in r.text
    stripe.fail_next.append((500, {}, {"error": {"message": "boom"}}))
    r = run(env, {"entity": "customers", "action": "get", "params": {"id": "cus_0001"}})
    assert r.status_code == 502


def test_stream_query_walks_every_page_with_tokens(env: dict[str, Any]) -> None:
    ids: list[str] = []
    token = None
    for _ in range(10):
        body: dict[str, Any] = {"stream": "customers", "filters": {"limit": 7}}
        if token:
            body["page_token"] = token
        out = httpx.post(env["query"], json=body, headers=env["auth"]).json()
        ids += [r["id"] for r in out["records"]]
        token = out["next_page_token"]
        if token is None:
            break
    assert ids == [f"cus_{i:04d}" for i in range(25)]


def test_stream_query_filters_and_tokens_are_checked(env: dict[str, Any], stripe: FakeStripe) -> None:
    r = httpx.post(env["query"], json={"stream": "customers", "filters": {"colour": "red"}}, headers=env["auth"])
    assert r.status_code == 400 and "email" in r.json()["error"]["message"]
    r = httpx.post(env["query"], json={"stream": "customers", "filters": {"limit": 0}}, headers=env["auth"])
    assert r.status_code == 400 and r.json()["error"]["field"] == "filters.limit"
    first = httpx.post(env["query"], json={"stream": "customers", "filters": {"limit": 2}}, headers=env["auth"]).json()
    token = first["next_page_token"]
    for bad in (token[:-2] + "xx", token + "a", "garbage"):
        r = httpx.post(env["query"], json={"stream": "customers", "filters": {"limit": 2}, "page_token": bad},
                       headers=env["auth"])
        assert r.status_code == 400
    other = httpx.post(env["query"], json={"stream": "customers", "filters": {"limit": 3}, "page_token": token},
                       headers=env["auth"])
    assert other.status_code == 400  # bound to the filters it was issued for
    r = httpx.post(env["query"], json={"stream": "nope"}, headers=env["auth"])
    assert r.status_code == 422 and "customers" in r.json()["error"]["message"]
    filtered = httpx.post(env["query"], json={"stream": "customers", "filters": {"email": "user3@example.com"}},
                          headers=env["auth"]).json()
    assert [c["id"] for c in filtered["records"]] == ["cus_0003"]
    assert "email=user3%40example.com" in stripe.requests[-1].raw_path


def test_entity_cache_is_per_source_and_bypassable(env: dict[str, Any], admin: Admin, stripe: FakeStripe) -> None:
    admin.http.patch(f"/api/v1/sources/{env['src']['id']}", json={"policy": {"cache_ttl_seconds": 60}},
                     headers=admin.headers)
    body = {"entity": "customers", "action": "get", "params": {"id": "cus_0002"}}
    a, b = run(env, body).json(), run(env, body).json()
    assert a["result"] == b["result"] and len(stripe.requests) == 1
    run(env, {**body, "no_cache": True})
    assert len(stripe.requests) == 2
    other_ws = admin.workspace("other")
    other = admin.source(other_ws, upstream_url="", connector="stripe", slug="stripe",
                         config={"base_url": stripe.url}, credentials={"api_key": API_KEY},
                         policy={"cache_ttl_seconds": 60})
    key = admin.api_key(other_ws, ["execute"])
    r = httpx.post(env["exec"].replace(env["src"]["id"], other["id"]), json=body,
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and len(stripe.requests) == 3  # never served from another workspace's entry


def test_execute_and_query_are_logged_once_each(env: dict[str, Any], admin: Admin) -> None:
    run(env, {"entity": "customers", "action": "list", "params": {"limit": 1}})
    run(env, {"entity": "nope", "action": "list"})
    httpx.post(env["query"], json={"stream": "customers"}, headers=env["auth"])
    rows = logged(admin, 3, workspace_id=env["ws"])
    assert sorted((r["door"], r["status"]) for r in rows) == [("execute", 200), ("execute", 422), ("query", 200)]
