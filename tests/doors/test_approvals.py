"""The approval routes end to end (doors/approvals.py, docs/approvals.md): a real keyrelay in front of real loopback
upstreams and a real webhook receiver. Parking on each door, who may read and decide, the single execution and
the single fetch, the hash binding, the single-use link, the destination bound at park time, bounds, log rows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from keyrelay.approval_webhook import verify
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

SECRET = "cred-approvals-5d2e91"
HOOK_SECRET = "whsec-test-approvals"
BODY = b'{"amount": 4200, "note": "agent-data-77ab"}'
WRITES = ["POST", "PUT", "PATCH", "DELETE"]


@pytest.fixture
def receiver() -> Iterator[FakeUpstream]:
    """The operator's webhook endpoint (its /echo answers 200 and records what arrived)."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def kr_settings(kr_settings: dict[str, Any], receiver: FakeUpstream) -> dict[str, Any]:
    return {**kr_settings, "approval_webhook_url": receiver.url + "/echo", "approval_webhook_secret": HOOK_SECRET,
            "public_url": "https://keyrelay.example", "approval_max_body_bytes": 4096}


@pytest.fixture
def setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET},
                       policy={"approval": {"methods": WRITES, "timeout_seconds": 600}})
    key = admin.api_key(ws, ["proxy", "execute", "logs"])
    return {"ws": ws, "src": src, "key": key, "auth": {"Authorization": f"Bearer {key}"},
            "base": f"{kr.url}/api/{ws}/proxy/echo", "kr": kr.url}


def _park(setup: dict[str, Any], path: str = "/echo?q=1", body: bytes = BODY, **headers: str) -> dict[str, Any]:
    r = httpx.post(setup["base"] + path, content=body,
                   headers={**setup["auth"], "Content-Type": "application/json", "X-Trace": "t-1", **headers})
    assert r.status_code == 202, r.text
    view: dict[str, Any] = r.json()["approval"]
    assert r.headers["location"] == view["poll_url"] == f"https://keyrelay.example/api/v1/approvals/{view['id']}"
    return view


def _poll(setup: dict[str, Any], approval_id: str, token: str | None = None) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else setup["auth"]
    return httpx.get(f"{setup['kr']}/api/v1/approvals/{approval_id}", headers=auth)


def _until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


def test_a_write_is_parked_and_sent_once_when_approved(setup: dict[str, Any], admin: Admin,
                                                      upstream: FakeUpstream) -> None:
    view = _park(setup)
    assert view["status"] == "pending" and len(view["request_hash"]) == 64
    assert upstream.requests == []
    assert _poll(setup, view["id"]).status_code == 202
    listed = admin.get("/api/v1/approvals", params={"status": "pending"}).json()["data"]
    assert [a["id"] for a in listed] == [view["id"]] and listed[0]["body_bytes"] == len(BODY)
    r = admin.post(f"/api/v1/approvals/{view['id']}/approve", {})
    assert r.status_code == 200 and r.json()["approval"]["status"] == "executed"
    assert r.json()["approval"]["upstream_status"] == 200
    assert len(upstream.requests) == 1
    sent = upstream.requests[0]
    assert sent.method == "POST" and sent.raw_path == "/echo?q=1" and sent.body == BODY
    assert sent.header("authorization") == f"Bearer {SECRET}" and sent.header("content-type") == "application/json"
    assert sent.header("x-trace") is None  # the header policy applied at park time as it would have
    again = admin.post(f"/api/v1/approvals/{view['id']}/approve", {})  # a retried approve: nothing more is sent
    assert again.status_code == 200 and again.json()["approval"]["status"] == "executed"
    assert admin.post(f"/api/v1/approvals/{view['id']}/deny", {}).json()["error"]["code"] == "approval_not_pending"
    assert len(upstream.requests) == 1
    first = _poll(setup, view["id"])
    assert first.status_code == 200 and first.json()["response"]["status_code"] == 200
    assert json.loads(first.json()["response"]["response_body"])["body"] == BODY.decode()
    assert SECRET not in first.text  # redacted as any response is
    second = _poll(setup, view["id"])
    assert second.status_code == 200 and "response" not in second.json()  # handed over once


def test_only_the_original_caller_reads_its_approval_and_agents_never_decide(setup: dict[str, Any], admin: Admin,
                                                                            upstream: FakeUpstream) -> None:
    view = _park(setup)
    refused = admin.http.post(f"{setup['kr']}/api/v1/api-keys", headers=admin.headers,
                              json={"workspace_id": setup["ws"], "scopes": ["proxy", "approve"]})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "scopes"  # approve is not a data scope
    other_key = admin.api_key(setup["ws"], ["proxy", "mcp"])
    scoped = admin.scoped_token("acme")
    nobody = _poll(setup, "apv_" + "0" * 32, other_key)
    for token in (other_key, scoped):
        r = _poll(setup, view["id"], token)
        assert r.status_code == 404 and r.json()["error"]["message"] == nobody.json()["error"]["message"]
        for verb in ("approve", "deny"):
            d = httpx.post(f"{setup['kr']}/api/v1/approvals/{view['id']}/{verb}",
                           headers={"Authorization": f"Bearer {token}"})
            assert d.status_code == 403 and d.json()["error"]["code"] == "forbidden"
        assert httpx.get(f"{setup['kr']}/api/v1/approvals",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 403
    approver_view = admin.get(f"/api/v1/approvals/{view['id']}").json()["approval"]
    assert approver_view["method"] == "POST" and approver_view["caller"].startswith("key:")
    assert "agent-data" not in json.dumps(approver_view) and "t-1" not in json.dumps(approver_view)
    assert upstream.requests == []


def test_a_denied_request_is_never_sent(setup: dict[str, Any], admin: Admin, upstream: FakeUpstream) -> None:
    view = _park(setup)
    assert admin.post(f"/api/v1/approvals/{view['id']}/deny", {}).json()["approval"]["status"] == "denied"
    r = _poll(setup, view["id"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "approval_denied"
    assert admin.post(f"/api/v1/approvals/{view['id']}/approve", {}).status_code == 409
    assert upstream.requests == []


def test_a_decision_naming_another_hash_sends_nothing(setup: dict[str, Any], admin: Admin,
                                                     upstream: FakeUpstream) -> None:
    view = _park(setup)
    wrong = admin.post(f"/api/v1/approvals/{view['id']}/approve", {"request_hash": "f" * 64})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "approval_mismatch"
    assert upstream.requests == [] and _poll(setup, view["id"]).status_code == 202
    right = admin.post(f"/api/v1/approvals/{view['id']}/approve", {"request_hash": view["request_hash"]})
    assert right.json()["approval"]["status"] == "executed" and len(upstream.requests) == 1


def test_the_webhook_link_shows_the_request_and_decides_once(setup: dict[str, Any], receiver: FakeUpstream,
                                                            upstream: FakeUpstream) -> None:
    view = _park(setup)
    hook = _until(lambda: [r for r in receiver.requests if r.header("keyrelay-event") == "approval.requested"])[0]
    assert verify(HOOK_SECRET, hook.header("keyrelay-signature") or "", hook.body, now=time.time())
    event = json.loads(hook.body)
    assert event["type"] == "approval.requested" and event["data"]["approval"]["id"] == view["id"]
    assert event["data"]["approval"]["request_hash"] == view["request_hash"]
    for secret in (b"agent-data-77ab", b"t-1", SECRET.encode(), setup["key"].encode()):
        assert secret not in hook.body  # no body, header value or token in the event
    link = event["data"]["decide_url"]
    assert link.startswith("https://keyrelay.example/approvals/link/krl_")
    path = link.removeprefix("https://keyrelay.example")
    page = httpx.get(setup["kr"] + path)  # opening the link (as a mail scanner would) decides nothing
    assert page.status_code == 200 and view["request_hash"] in page.text and "Approve" in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and "frame-ancestors 'none'" in \
        page.headers["content-security-policy"]
    assert upstream.requests == [] and _poll(setup, view["id"]).status_code == 202
    decided = httpx.post(setup["kr"] + path + "/approve")
    assert decided.status_code == 200 and "executed" in decided.text and len(upstream.requests) == 1
    for verb in ("approve", "deny"):  # the link is spent: it decides nothing more
        assert "executed" in httpx.post(setup["kr"] + path + f"/{verb}").text
    assert len(upstream.requests) == 1
    assert httpx.get(setup["kr"] + "/approvals/link/krl_" + "x" * 43).status_code == 404


def test_prefer_wait_gives_the_request_api_its_envelope_once_approved(setup: dict[str, Any], admin: Admin,
                                                                      upstream: FakeUpstream) -> None:
    got: list[httpx.Response] = []
    body = {"method": "DELETE", "url": upstream.url + "/echo?id=thing-1"}
    url = f"{setup['kr']}/api/v1/sonar/apis/{setup['src']['id']}/request"
    waiter = threading.Thread(target=lambda: got.append(httpx.post(
        url, json=body, headers={**setup["auth"], "Prefer": "wait=30"}, timeout=60)))
    waiter.start()
    pending = _until(lambda: admin.get("/api/v1/approvals", params={"status": "pending"}).json()["data"])
    assert pending[0]["door"] == "sonar" and pending[0]["method"] == "DELETE" and upstream.requests == []
    admin.post(f"/api/v1/approvals/{pending[0]['id']}/approve", {})
    waiter.join(30)
    assert got and got[0].status_code == 200, got
    assert got[0].json()["status_code"] == 200 and got[0].json()["body"]["raw_path"] == "/echo?id=thing-1"
    assert "response" not in _poll(setup, pending[0]["id"]).json()  # the waiting request took it
    no_wait = httpx.post(url, json=body, headers=setup["auth"])
    assert no_wait.status_code == 202 and set(no_wait.json()) == {"approval"}
    assert no_wait.headers["location"] == no_wait.json()["approval"]["poll_url"]


def test_an_approved_request_goes_only_where_it_was_parked_for(setup: dict[str, Any], admin: Admin,
                                                              upstream: FakeUpstream) -> None:
    view = _park(setup, path="/echo/a")
    moved = admin.http.patch(f"/api/v1/sources/{setup['src']['id']}", headers=admin.headers,
                             json={"config": {"upstream_url": upstream.url + "/v2"}})
    assert moved.status_code == 200, moved.text
    r = admin.post(f"/api/v1/approvals/{view['id']}/approve", {})
    assert r.json()["approval"]["status"] == "failed" and r.json()["approval"]["error_code"] == "destination_changed"
    assert _poll(setup, view["id"]).json()["error"]["code"] == "destination_changed"
    gone = _park(setup, path="/echo/b")
    assert admin.http.delete(f"/api/v1/sources/{setup['src']['id']}", headers=admin.headers).status_code == 204
    assert admin.post(f"/api/v1/approvals/{gone['id']}/approve", {}).json()["approval"]["error_code"] == "not_found"
    assert upstream.requests == []


def test_a_body_over_the_bound_is_refused_before_parking(setup: dict[str, Any], admin: Admin,
                                                        upstream: FakeUpstream) -> None:
    for body in (b"x" * 4097, iter([b"x" * 3000, b"x" * 3000])):  # declared, and streamed without a length
        r = httpx.post(setup["base"] + "/echo", content=body, headers=setup["auth"])
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert admin.get("/api/v1/approvals").json()["data"] == [] and upstream.requests == []
    assert httpx.get(setup["base"] + "/echo", headers=setup["auth"]).status_code == 200  # reads are not parked


def test_park_decision_and_execution_are_one_log_row_each(setup: dict[str, Any], admin: Admin) -> None:
    view = _park(setup)
    admin.post(f"/api/v1/approvals/{view['id']}/approve", {})
    rows = _until(lambda: (lambda d: d if len(d) >= 3 else None)(
        admin.get("/api/v1/logs", params={"approval_id": view["id"]}).json()["data"]))
    by = sorted((r["door"], r["status"]) for r in rows)
    assert by == [("admin", 200), ("gateway", 200), ("gateway", 202)]
    assert {r["approval_id"] for r in rows} == {view["id"]}
    decision = next(r for r in rows if r["door"] == "admin")
    assert decision["path"] == f"/api/v1/approvals/{view['id']}/approve" and decision["caller"].startswith("app:")
    executed = next(r for r in rows if r["status"] == 200 and r["door"] == "gateway")
    assert executed["caller"] == next(r for r in rows if r["status"] == 202)["caller"]  # the agent's request


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


def test_an_execute_action_is_parked_and_run_once(setup: dict[str, Any], admin: Admin, stripe: FakeStripe) -> None:
    pay = admin.source(setup["ws"], upstream_url="", connector="stripe", slug="stripe",
                       config={"base_url": stripe.url}, credentials={"api_key": API_KEY},
                       policy={"allow_writes": True, "approval": {"entities_actions": ["customers.create"]}})
    url = f"{setup['kr']}/api/v1/connectors/instances/{pay['id']}/execute"
    listed = httpx.post(url, json={"entity": "customers", "action": "list"}, headers=setup["auth"])
    assert listed.status_code == 200  # not named: runs at once
    before = len(stripe.requests)
    r = httpx.post(url, json={"entity": "customers", "action": "create", "params": {"email": "a@example.com"}},
                   headers=setup["auth"])
    assert r.status_code == 202 and set(r.json()) == {"approval"} and len(stripe.requests) == before
    assert r.headers["location"] == r.json()["approval"]["poll_url"]
    aid = r.json()["approval"]["id"]
    assert admin.get(f"/api/v1/approvals/{aid}").json()["approval"]["action"] == "customers.create"
    bad = httpx.post(url, json={"entity": "customers", "action": "create", "params": {"nope": 1}},
                     headers=setup["auth"])
    assert bad.status_code == 422  # checked as running it would be, before anything is parked
    assert admin.post(f"/api/v1/approvals/{aid}/approve", {}).json()["approval"]["status"] == "executed"
    assert len(stripe.requests) == before + 1 and stripe.requests[-1].method == "POST"
    fetched = _poll(setup, aid).json()
    assert fetched["response"]["status"] == "success" and fetched["response"]["result"]["email"] == "a@example.com"


def test_a_narrowed_token_is_refused_before_its_call_is_parked(setup: dict[str, Any], admin: Admin,
                                                              stripe: FakeStripe) -> None:
    """An approver is never asked about a call the caller's token may not make: its `actions` are checked first."""
    pay = admin.source(setup["ws"], upstream_url="", connector="stripe", slug="stripe-narrow",
                       config={"base_url": stripe.url}, credentials={"api_key": API_KEY},
                       policy={"allow_writes": True, "approval": {"entities_actions": ["customers.create"]}})
    made = admin.post("/api/v1/api-keys", {"workspace_id": setup["ws"], "scopes": ["execute"],
                                           "constraints": {"actions": ["customers.list"]}})
    assert made.status_code == 201, made.text
    narrow = {"Authorization": f"Bearer {made.json()['key']}"}
    url = f"{setup['kr']}/api/v1/connectors/instances/{pay['id']}/execute"
    r = httpx.post(url, json={"entity": "customers", "action": "create", "params": {"email": "a@example.com"}},
                   headers=narrow)
    assert r.status_code == 403 and r.json()["error"]["constraint"] == "actions", r.text
    assert admin.get("/api/v1/approvals").json()["data"] == [] and stripe.requests == []
    assert httpx.post(url, json={"entity": "customers", "action": "list"}, headers=narrow).status_code == 200


def test_a_parked_request_edited_in_the_database_is_never_sent(setup: dict[str, Any], admin: Admin, kr: KeyrelayServer,
                                                              upstream: FakeUpstream) -> None:
    """Someone who can write the database but holds no key: a changed hash, or another approval's sealed request
    moved in, does not run."""
    import sqlite3

    edited, moved, source = (_park(setup, body=b'{"amount": %d}' % n) for n in (1, 2, 999999))
    db = sqlite3.connect(kr.settings.data_dir / "keyrelay.db")
    try:
        db.execute("UPDATE approvals SET request_hash = ? WHERE id = ?", ("e" * 64, edited["id"]))
        db.execute("UPDATE approvals SET request = (SELECT request FROM approvals WHERE id = ?), request_hash = "
                   "(SELECT request_hash FROM approvals WHERE id = ?) WHERE id = ?",
                   (source["id"], source["id"], moved["id"]))
        db.commit()
    finally:
        db.close()
    for view in (edited, moved):
        r = admin.post(f"/api/v1/approvals/{view['id']}/approve", {})
        assert r.json()["approval"]["status"] == "failed"
        assert r.json()["approval"]["error_code"] == "approval_mismatch"
        assert _poll(setup, view["id"]).json()["error"]["code"] == "approval_mismatch"
    assert upstream.requests == []


@pytest.mark.parametrize("token", [None, "Bearer kr_" + "A" * 43, "Basic dXNlcjpwYXNz"])
def test_every_approval_route_needs_a_valid_token(setup: dict[str, Any], token: str | None,
                                                  upstream: FakeUpstream) -> None:
    view = _park(setup)
    headers = {} if token is None else {"Authorization": token}
    for method, path in (("GET", "/api/v1/approvals"), ("GET", f"/api/v1/approvals/{view['id']}"),
                         ("POST", f"/api/v1/approvals/{view['id']}/approve"),
                         ("POST", f"/api/v1/approvals/{view['id']}/deny")):
        r = httpx.request(method, setup["kr"] + path, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", (method, path)
    assert upstream.requests == [] and _poll(setup, view["id"]).status_code == 202
