"""The gateway route end to end: a real keyrelay in front of a real loopback upstream (docs/security.md: the
destination is fixed)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer, logged
from support.pipeline import ManualClock
from support.upstream import FakeUpstream

SECRET = "upstream-secret-7f3a9c"



@pytest.fixture(params=[True, False], ids=["direct", "asgi"])
def kr_direct(request: pytest.FixtureRequest) -> bool:
    """Every case on both of the server's paths to the gateway door (server.py)."""
    return bool(request.param)

@pytest.fixture
def setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("gw")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET})
    key = admin.api_key(ws, ["proxy"])
    return {"ws": ws, "src": src, "key": key, "base": f"{kr.url}/api/{ws}/proxy/echo",
            "auth": {"Authorization": f"Bearer {key}"}}


def test_get_is_forwarded_with_the_credential_injected(setup: dict[str, Any], upstream: FakeUpstream) -> None:
    upstream.require_auth = f"Bearer {SECRET}"
    r = httpx.get(setup["base"] + "/echo?q=Berlin&units=metric", headers=setup["auth"])
    assert r.status_code == 200, r.text
    assert r.json()["raw_path"] == "/echo?q=Berlin&units=metric"
    seen = upstream.requests[-1]
    assert seen.header("Authorization") == f"Bearer {SECRET}"
    assert SECRET not in r.text  # the echoed credential was redacted on the way back
    assert "[REDACTED]" in r.text


def test_agent_authorization_and_hop_headers_never_reach_the_upstream(setup: dict[str, Any],
                                                                       upstream: FakeUpstream) -> None:
    headers = {**setup["auth"], "Cookie": "a=b", "X-Forwarded-For": "1.2.3.4", "Connection": "keep-alive, X-Foo",
               "X-Foo": "1", "Accept": "application/json", "Stripe-Version": "2024-01-01"}
    r = httpx.get(setup["base"] + "/echo", headers=headers)
    assert r.status_code == 200
    sent = {k.lower(): v for k, v in upstream.requests[-1].headers}
    assert sent["authorization"] == f"Bearer {SECRET}"
    for name in ("cookie", "x-forwarded-for", "x-foo"):
        assert name not in sent
    assert sent["accept"] == "application/json" and sent["stripe-version"] == "2024-01-01"


def test_post_body_passes_through_untouched(setup: dict[str, Any], upstream: FakeUpstream) -> None:
    data = bytes(range(256)) * 10
    headers = {**setup["auth"], "Content-Type": "application/x-bin"}
    r = httpx.post(setup["base"] + "/echo", content=data, headers=headers)
    assert r.status_code == 200
    assert upstream.requests[-1].body == data


def test_large_streamed_upload_arrives_whole(setup: dict[str, Any], upstream: FakeUpstream) -> None:
    data = b"x" * (3 * 1024 * 1024)
    r = httpx.put(setup["base"] + "/echo", content=iter([data[i:i + 65536] for i in range(0, len(data), 65536)]),
                  headers=setup["auth"])
    assert r.status_code == 200
    assert upstream.requests[-1].body == data


def test_upstream_errors_pass_through_verbatim(setup: dict[str, Any]) -> None:
    r = httpx.get(setup["base"] + "/status/418", headers=setup["auth"])
    assert r.status_code == 418 and r.json() == {"status": 418}


def test_redirects_are_returned_not_followed(setup: dict[str, Any], upstream: FakeUpstream) -> None:
    r = httpx.get(setup["base"] + "/redirect", params={"to": "http://127.0.0.2:9/steal"}, headers=setup["auth"])
    assert r.status_code == 302 and r.headers["location"] == "http://127.0.0.2:9/steal"
    assert len(upstream.requests) == 1


def test_sse_first_event_arrives_before_the_upstream_finishes(setup: dict[str, Any]) -> None:
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream("GET", setup["base"] + "/sse", params={"events": 3, "delay": 0.5}, headers=setup["auth"],
                      timeout=10) as r:
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    assert arrivals[0][1].startswith(b"data: 0") and b"".join(c for _, c in arrivals).endswith(b"data: 2\n\n")
    # the upstream waits 0.5 s before each later event: had keyrelay buffered the stream, everything would arrive
    # at once; streamed, the first event comes at least those two waits before the last (a lower bound: no race)
    assert arrivals[-1][0] - arrivals[0][0] >= 0.95


def test_unknown_slug_and_other_workspace_are_404(setup: dict[str, Any], kr: KeyrelayServer, admin: Admin,
                                                   upstream: FakeUpstream) -> None:
    r = httpx.get(f"{kr.url}/api/{setup['ws']}/proxy/nope/x", headers=setup["auth"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    other = admin.workspace("other")
    admin.source(other, upstream_url=upstream.url)  # a real `echo` source there: still not reachable
    r2 = httpx.get(f"{kr.url}/api/{other}/proxy/echo/x", headers=setup["auth"])
    assert r2.status_code == 404 and r2.json()["error"]["message"] == r.json()["error"]["message"]
    assert upstream.requests == []


def test_wrong_scope_is_403_and_nothing_reaches_the_upstream(setup: dict[str, Any], admin: Admin,
                                                                upstream: FakeUpstream) -> None:
    key = admin.api_key(setup["ws"], ["files"])
    r = httpx.get(setup["base"] + "/echo", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and "'proxy'" in r.text
    assert upstream.requests == []


def test_method_allowlist_gives_405(setup: dict[str, Any], admin: Admin, upstream: FakeUpstream) -> None:
    r = admin.http.patch(f"/api/v1/sources/{setup['src']['id']}", json={"policy": {"allowed_methods": ["GET"]}},
                         headers=admin.headers)
    assert r.status_code == 200, r.text
    r = httpx.post(setup["base"] + "/echo", content=b"x", headers=setup["auth"])
    assert r.status_code == 405
    assert "POST" in r.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("kr_clock", [ManualClock], indirect=True)  # a new pinned clock per case: no window edge
def test_rate_limit_gives_429_with_retry_after_and_no_upstream_traffic(setup: dict[str, Any], admin: Admin,
                                                                        upstream: FakeUpstream,
                                                                        kr_clock: ManualClock) -> None:
    r = admin.http.patch(f"/api/v1/sources/{setup['src']['id']}", json={"policy": {"rate_limit_per_minute": 3}},
                         headers=admin.headers)
    assert r.status_code == 200, r.text

    def burst(n: int) -> list[httpx.Response]:
        return [httpx.get(setup["base"] + "/echo", headers={**setup["auth"], "X-Forwarded-For": f"10.0.0.{i}"})
                for i in range(n)]  # a spoofed client address changes nothing: the key is the source

    codes = burst(6)
    assert [c.status_code for c in codes] == [200, 200, 200, 429, 429, 429]
    assert int(codes[3].headers["retry-after"]) == 60  # at the start of a window only the next one makes room
    assert codes[3].json()["error"]["retry_after"] == int(codes[3].headers["retry-after"])
    assert len(upstream.requests) == 3
    kr_clock.advance(60)  # the next window: the previous three still weigh fully at its start
    [late] = burst(1)
    assert late.status_code == 429 and int(late.headers["retry-after"]) == 20  # their weight falls by 3/60 a second
    kr_clock.advance(20)
    assert [c.status_code for c in burst(2)] == [200, 429]  # 3 * 40/60 = 2 still count: room for one
    assert len(upstream.requests) == 4


def test_path_escape_in_tail_is_rejected_without_upstream_traffic(setup: dict[str, Any],
                                                                   upstream: FakeUpstream) -> None:
    for tail in ("/%2e%2e/admin", "/a/%2F/b", "/..%2fetc", "/a%5cb", "/%252e%252e/x"):
        r = httpx.get(setup["base"] + tail, headers=setup["auth"])
        assert r.status_code == 400, tail
    assert upstream.requests == []


def test_request_log_has_one_row_per_request(setup: dict[str, Any], admin: Admin) -> None:
    httpx.get(setup["base"] + "/echo?secret=abc", headers=setup["auth"])
    httpx.get(setup["base"] + "/echo", headers={"Authorization": "Bearer kr_" + "x" * 43})
    rows = logged(admin, 2, workspace_id=setup["ws"])
    assert sorted(r["status"] for r in rows) == [200, 401]  # denied requests are logged too
    ok = next(r for r in rows if r["status"] == 200)
    assert ok["door"] == "gateway" and ok["path"].endswith("/echo") and ok["source_id"] == setup["src"]["id"]
    assert ok["upstream_latency_ms"] is not None and ok["caller"].startswith("key:")
    denied = next(r for r in rows if r["status"] == 401)
    assert denied["error_code"] == "unauthenticated" and denied["caller"] is None
    assert "abc" not in str(rows)


def test_connect_and_trace_are_never_forwarded(setup: dict[str, Any], upstream: FakeUpstream) -> None:
    for method in ("TRACE", "CONNECT"):
        r = httpx.request(method, setup["base"] + "/echo", headers=setup["auth"])
        assert r.status_code == 405, method
    assert upstream.requests == []


def test_the_same_slug_in_another_workspace_is_never_reached(kr: KeyrelayServer, admin: Admin) -> None:
    """Both tenants have a source named `echo`: a token of A asking for B's workspace gets the 404 of an unknown
    workspace, never A's source and never B's, whatever was cached before."""
    with FakeUpstream() as up_a, FakeUpstream() as up_b:
        ws_a, ws_b = admin.workspace("tenant-a"), admin.workspace("tenant-b")
        admin.source(ws_a, upstream_url=up_a.url, credentials={"bearer_token": "secret-of-a"})
        admin.source(ws_b, upstream_url=up_b.url, credentials={"bearer_token": "secret-of-b"})
        key_a, key_b = admin.api_key(ws_a, ["proxy"]), admin.api_key(ws_b, ["proxy"])
        as_a, as_b = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
        for _ in range(2):  # second round: every resolution is cached
            assert httpx.get(f"{kr.url}/api/{ws_a}/proxy/echo/echo", headers=as_a).status_code == 200
            assert up_a.requests[-1].header("authorization") == "Bearer secret-of-a"
            assert httpx.get(f"{kr.url}/api/{ws_b}/proxy/echo/echo", headers=as_b).status_code == 200
            assert up_b.requests[-1].header("authorization") == "Bearer secret-of-b"
            seen_a, seen_b = len(up_a.requests), len(up_b.requests)
            theirs = httpx.get(f"{kr.url}/api/{ws_b}/proxy/echo/echo", headers=as_a)
            unknown = httpx.get(f"{kr.url}/api/00000000-0000-0000-0000-000000000000/proxy/echo/echo", headers=as_a)
            assert theirs.status_code == unknown.status_code == 404
            assert {**theirs.json()["error"], "request_id": ""} == {**unknown.json()["error"], "request_id": ""}
            assert (len(up_a.requests), len(up_b.requests)) == (seen_a, seen_b)
