"""The approvals queue in the console (doors/console/approvals.py): parked requests listed pending first, decided
with a button through the approvals service with the session's application as the approver (sent once, as the
original caller), CSRF on both buttons, `approve` needed, a limited application's workspaces only, and never a
parked request's body or a credential on the page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

SECRET = "cred-console-approvals-91ac"
BODY = b'{"amount": 4200, "note": "parked-body-canary-3f1"}'


@pytest.fixture
def parked(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("mine-corp", "theirs-corp"):
        ws = admin.workspace(name)
        admin.source(ws, upstream_url=upstream.url, slug=f"{name}-src", credentials={"bearer_token": SECRET},
                     policy={"approval": {"methods": ["POST"], "timeout_seconds": 600}})
        key = admin.api_key(ws, ["proxy"])
        out[name] = {"ws": ws, "key": key, "url": f"{kr.url}/api/{ws}/proxy/{name}-src/echo"}
    return out


def _park(who: dict[str, Any], path: str = "") -> str:
    r = httpx.post(who["url"] + path, content=BODY, headers={"Authorization": f"Bearer {who['key']}",
                                                             "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    return str(r.json()["approval"]["id"])


def _status(admin: Admin, approval_id: str) -> str:
    return str(admin.get(f"/api/v1/approvals/{approval_id}").json()["approval"]["status"])


def _application(kr: KeyrelayServer, admin: Admin, workspaces: list[str] | str, scopes: list[str]) -> ConsoleClient:
    r = admin.post("/api/v1/applications", {"name": "operator", "workspaces": workspaces, "scopes": scopes})
    assert r.status_code == 201, r.text
    c = ConsoleClient(kr.url)
    assert c.sign_in(r.json()["client_id"], r.json()["client_secret"]).status_code == 303
    return c


def test_approving_in_the_console_sends_the_request_once(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                                         parked: dict[str, Any]) -> None:
    first = _park(parked["mine-corp"], "?q=1")
    second = _park(parked["mine-corp"], "?q=2")
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/approvals")
    assert page.status_code == 200
    assert_page_headers(page)
    assert 'href="/console/approvals"' in page.text and first in page.text and second in page.text
    assert "parked-body-canary" not in page.text and SECRET not in page.text and "q=1" not in page.text
    assert upstream.requests == []

    r = c.submit("/console/approvals", f"/console/approvals/{first}/approve", {})
    assert r.status_code == 303 and r.headers["location"] == "/console/approvals?done=approved"
    assert len(upstream.requests) == 1 and upstream.requests[0].raw_path == "/echo?q=1"
    assert upstream.requests[0].header("authorization") == f"Bearer {SECRET}"
    decided = admin.get(f"/api/v1/approvals/{first}").json()["approval"]
    assert decided["status"] == "executed" and decided["decided_by"].startswith("app:")
    assert "sent once" in notice(c.get("/console/approvals?done=approved").text, "ok")

    r = c.submit("/console/approvals", f"/console/approvals/{second}/deny", {})
    assert r.status_code == 303 and _status(admin, second) == "denied"
    assert len(upstream.requests) == 1

    # pending first, then the rest; a filter shows one status
    third = _park(parked["mine-corp"], "?q=3")
    listed = c.get("/console/approvals").text
    assert listed.index(third) < listed.index(first) and listed.index(third) < listed.index(second)
    denied = c.get("/console/approvals?status=denied").text
    assert second in denied and first not in denied and third not in denied


def test_a_decided_approval_is_not_decided_again(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                                 parked: dict[str, Any]) -> None:
    a = _park(parked["mine-corp"])
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/approvals").text
    deny_token = csrf_of(page, f"/console/approvals/{a}/deny")
    assert c.submit("/console/approvals", f"/console/approvals/{a}/approve", {}).status_code == 303
    r = c.http.post(f"/console/approvals/{a}/deny", data={"csrf": deny_token})  # an old page's button
    assert r.status_code == 409 and "executed" in notice(r.text)
    assert _status(admin, a) == "executed" and len(upstream.requests) == 1


def test_the_buttons_need_their_csrf_token(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                           parked: dict[str, Any]) -> None:
    a = _park(parked["mine-corp"])
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/approvals").text
    deny_token = csrf_of(page, f"/console/approvals/{a}/deny")
    for data in ({"note": "x"}, {"csrf": "x"}, {"csrf": deny_token}):  # none, a made-up one, another button's
        r = c.http.post(f"/console/approvals/{a}/approve", data=data)
        assert r.status_code == 403, data
        assert_page_headers(r)
    other = ConsoleClient(kr.url).signed_in()  # another session's token
    token = csrf_of(other.get("/console/approvals").text, f"/console/approvals/{a}/approve")
    assert c.http.post(f"/console/approvals/{a}/approve", data={"csrf": token}).status_code == 403
    assert _status(admin, a) == "pending" and upstream.requests == []


def test_without_approve_the_queue_is_not_allowed(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                                  parked: dict[str, Any]) -> None:
    a = _park(parked["mine-corp"])
    c = _application(kr, admin, "*", ["admin", "proxy"])
    assert 'href="/console/approvals"' not in c.get("/console/").text
    r = c.get("/console/approvals")
    assert r.status_code == 403 and "Not allowed" in r.text and "<code>approve</code>" in r.text and a not in r.text
    assert_page_headers(r)
    token = csrf_of(ConsoleClient(kr.url).signed_in().get("/console/approvals").text,
                    f"/console/approvals/{a}/approve")
    assert c.http.post(f"/console/approvals/{a}/approve", data={"csrf": token}).status_code == 403
    assert _status(admin, a) == "pending" and upstream.requests == []


def test_a_limited_application_decides_only_its_workspaces(kr: KeyrelayServer, admin: Admin,
                                                           upstream: FakeUpstream, parked: dict[str, Any]) -> None:
    mine, theirs = _park(parked["mine-corp"]), _park(parked["theirs-corp"])
    c = _application(kr, admin, [parked["mine-corp"]["ws"]], ["admin", "approve", "proxy"])
    page = c.get("/console/approvals").text
    assert mine in page and theirs not in page and "theirs-corp" not in page
    # its own button pointed at the other workspace's approval: a token is bound to one approval, refused
    token = csrf_of(page, f"/console/approvals/{mine}/approve")
    assert c.http.post(f"/console/approvals/{theirs}/approve", data={"csrf": token}).status_code == 403
    assert _status(admin, theirs) == "pending"
    assert c.submit("/console/approvals", f"/console/approvals/{mine}/approve", {}).status_code == 303
    assert _status(admin, mine) == "executed" and len(upstream.requests) == 1
