"""Observe mode (docs/security.md: observe mode), end to end: for each refusing rule of a source (method
allowlist, write policy, rate limit, approval) an observing source lets the request through, its log row names
the rule in `would_deny`, and `keyrelay_would_deny_total{rule}` counts it; the same policy enforced refuses.
Rules that protect the credential, keyrelay or other tenants refuse whatever the mode."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer
from support.pipeline import ManualClock
from support.upstream import FakeUpstream


@pytest.fixture
def kr_settings(kr_settings: dict[str, Any]) -> dict[str, Any]:
    return {**kr_settings, "caller_rate_limit_per_minute": 8}


@pytest.fixture
def kr_clock() -> ManualClock:
    """The server's clock: the rate-limit test counts requests against per-minute windows, and a pinned clock
    keeps them all inside one (on the real clock, a minute boundary between them let one more through)."""
    return ManualClock()


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


def _would_deny(kr: KeyrelayServer) -> dict[str, float]:
    text = httpx.get(kr.url + "/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(r'^keyrelay_would_deny_total\{rule="([a-z_]+)"\} (\S+)$', text,
                                                  re.MULTILINE)}


def _rows(admin: Admin, ws: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, Any]] = admin.get("/api/v1/logs", params={"workspace_id": ws}).json()["data"]
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} log rows, wanted {count}"
        time.sleep(0.02)


def _pair(admin: Admin, name: str, upstream_url: str, policy: dict[str, Any], **source: Any) -> dict[str, Any]:
    """Two workspaces with the same source: one observing `policy`, one enforcing it."""
    out: dict[str, Any] = {}
    for mode in ("observe", "enforce"):
        ws = admin.workspace(f"{name}-{mode}")
        src = admin.source(ws, upstream_url=upstream_url, policy={**policy, "mode": mode}, **source)
        key = admin.api_key(ws, ["proxy", "execute", "logs"])
        out[mode] = {"ws": ws, "src": src, "auth": {"Authorization": f"Bearer {key}"}}
    return out


def test_an_observed_method_allowlist(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    pair = _pair(admin, "methods", upstream.url, {"allowed_methods": ["GET"]})
    ob, en = pair["observe"], pair["enforce"]
    assert httpx.delete(f"{kr.url}/api/{ob['ws']}/proxy/echo/echo", headers=ob["auth"]).status_code == 200
    assert httpx.get(f"{kr.url}/api/{ob['ws']}/proxy/echo/echo", headers=ob["auth"]).status_code == 200
    assert httpx.delete(f"{kr.url}/api/{en['ws']}/proxy/echo/echo", headers=en["auth"]).status_code == 405
    rows = _rows(admin, ob["ws"], 2)
    assert sorted((r["method"], r["would_deny"]) for r in rows) == [("DELETE", "allowed_methods"), ("GET", None)]
    assert [r["would_deny"] for r in _rows(admin, en["ws"], 1)] == [None]  # refused, not "would" be
    assert _would_deny(kr) == {"allowed_methods": 1.0}
    assert len(upstream.requests) == 2


def test_an_observed_write_policy_on_the_gateway_and_execute(kr: KeyrelayServer, admin: Admin,
                                                             stripe: FakeStripe) -> None:
    pair = _pair(admin, "writes", "", {"allow_writes": False, "allowed_methods": ["GET", "POST"]},
                 connector="stripe", slug="stripe",
                 config={"base_url": stripe.url}, credentials={"api_key": API_KEY})
    ob, en = pair["observe"], pair["enforce"]
    create = {"entity": "customers", "action": "create", "params": {"email": "x@example.com"}}
    assert httpx.post(f"{kr.url}/api/{ob['ws']}/proxy/stripe/v1/customers", headers=ob["auth"],
                      data={"email": "y@example.com"}).status_code == 200
    r = httpx.post(f"{kr.url}/api/v1/connectors/instances/{ob['src']['id']}/execute", json=create, headers=ob["auth"])
    assert r.status_code == 200 and r.json()["result"]["email"] == "x@example.com"
    assert httpx.post(f"{kr.url}/api/{en['ws']}/proxy/stripe/v1/customers", headers=en["auth"],
                      data={"email": "y@example.com"}).status_code == 405
    assert httpx.post(f"{kr.url}/api/v1/connectors/instances/{en['src']['id']}/execute", json=create,
                      headers=en["auth"]).status_code == 403
    assert sorted((r["door"], r["would_deny"]) for r in _rows(admin, ob["ws"], 2)) == [
        ("execute", "allow_writes"), ("gateway", "allow_writes")]
    assert _would_deny(kr) == {"allow_writes": 2.0}
    assert len([s for s in stripe.requests if s.method == "POST"]) == 2


def test_an_observed_rate_limit_and_the_caller_limit_that_stays(kr: KeyrelayServer, admin: Admin,
                                                                upstream: FakeUpstream) -> None:
    pair = _pair(admin, "rate", upstream.url, {"rate_limit_per_minute": 2})
    ob, en = pair["observe"], pair["enforce"]
    statuses = [httpx.get(f"{kr.url}/api/{ob['ws']}/proxy/echo/echo", headers=ob["auth"]).status_code
                for _ in range(10)]
    assert statuses == [200] * 8 + [429] * 2  # the deployment's per-caller limit (8) is never observe-only
    enforced = [httpx.get(f"{kr.url}/api/{en['ws']}/proxy/echo/echo", headers=en["auth"]).status_code
                for _ in range(3)]
    assert enforced == [200, 200, 429]
    rows = _rows(admin, ob["ws"], 10)
    assert sorted(str(r["would_deny"]) for r in rows if r["status"] == 200) == \
        ["None"] * 2 + ["rate_limit_per_minute"] * 6
    # the two the caller limit refused would have been refused by the source limit too: the rows say so
    assert [r["would_deny"] for r in rows if r["status"] == 429] == ["rate_limit_per_minute"] * 2
    assert _would_deny(kr) == {"rate_limit_per_minute": 8.0}


def test_an_observed_approval_rule_parks_nothing(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    pair = _pair(admin, "approval", upstream.url, {"approval": {"methods": ["POST"]}})
    ob, en = pair["observe"], pair["enforce"]
    r = httpx.post(f"{kr.url}/api/{ob['ws']}/proxy/echo/echo", content=b"sent", headers=ob["auth"])
    assert r.status_code == 200 and r.json()["body"] == "sent"
    assert httpx.post(f"{kr.url}/api/{en['ws']}/proxy/echo/echo", content=b"parked",
                      headers=en["auth"]).status_code == 202
    row = _rows(admin, ob["ws"], 1)[0]
    assert row["would_deny"] == "approval" and row["approval_id"] is None
    assert [a["workspace_id"] for a in admin.get("/api/v1/approvals").json()["data"]] == [en["ws"]]
    assert _would_deny(kr) == {"approval": 1.0}
    assert [q.body for q in upstream.requests] == [b"sent"]


def test_protections_refuse_whatever_the_mode(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    policy = {"allowed_methods": ["GET"], "mode": "observe"}
    ws = admin.workspace("guarded")
    src = admin.source(ws, upstream_url=upstream.url, policy=policy)
    auth = {"Authorization": f"Bearer {admin.api_key(ws, ['proxy'])}"}
    base = f"{kr.url}/api/{ws}/proxy/echo"
    assert httpx.request("TRACE", base + "/echo", headers=auth).status_code == 405
    assert httpx.request("GET", base + "/echo", content=b"smuggled", headers=auth).status_code == 400
    assert httpx.get(base + "/%2e%2e/admin", headers=auth).status_code == 400
    assert httpx.get(base + "/echo").status_code == 401
    other = admin.workspace("elsewhere")
    foreign = {"Authorization": f"Bearer {admin.api_key(other, ['proxy'])}"}
    assert httpx.get(base + "/echo", headers=foreign).status_code == 404
    sonar = f"{kr.url}/api/v1/sonar/apis/{src['id']}/request"
    assert httpx.post(sonar, json={"method": "GET", "url": "http://127.0.0.2:9/steal"},
                      headers=auth).json()["error"]["code"] == "destination_not_allowed"
    assert upstream.requests == [] and _would_deny(kr) == {}
