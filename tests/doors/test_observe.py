"""Prometheus metrics of the requests and the request log (list + live SSE)."""

from __future__ import annotations

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer, first_live_log, logged
from support.pipeline import ManualClock
from support.upstream import FakeUpstream


def _proxy_setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, name: str) -> tuple[str, str, str]:
    ws = admin.workspace(name)
    admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": "metric-secret-123"})
    key = admin.api_key(ws, ["proxy", "logs"])
    return ws, key, f"{kr.url}/api/{ws}/proxy/echo"


def test_metrics_count_requests_by_door_status_and_source_type(kr: KeyrelayServer, admin: Admin,
                                                                upstream: FakeUpstream) -> None:
    _, key, base = _proxy_setup(kr, admin, upstream, "m")
    for _ in range(3):
        httpx.get(base + "/echo", headers={"Authorization": f"Bearer {key}"})
    httpx.get(base + "/status/503", headers={"Authorization": f"Bearer {key}"})
    text = httpx.get(kr.url + "/metrics").text
    assert 'keyrelay_requests_total{door="gateway",source_type="http",status_class="2xx"} 3.0' in text
    assert 'keyrelay_requests_total{door="gateway",source_type="http",status_class="5xx"} 1.0' in text
    assert 'keyrelay_request_seconds_count{door="gateway"} 4.0' in text
    assert "keyrelay_upstream_seconds_bucket" in text and "keyrelay_bytes_out_total" in text
    assert "metric-secret-123" not in text


@pytest.mark.parametrize("kr_clock", [ManualClock()])  # the server's clock: no window boundary mid-test
def test_rate_limited_requests_are_counted(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("rl")
    admin.source(ws, upstream_url=upstream.url, policy={"rate_limit_per_minute": 1})
    key = admin.api_key(ws, ["proxy"])
    for _ in range(3):
        httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
    assert 'keyrelay_rate_limited_total{door="gateway"} 2.0' in httpx.get(kr.url + "/metrics").text


def test_logs_filter_by_status_and_source(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws, key, base = _proxy_setup(kr, admin, upstream, "lg")
    httpx.get(base + "/echo", headers={"Authorization": f"Bearer {key}"})
    httpx.get(base + "/status/404", headers={"Authorization": f"Bearer {key}"})
    logged(admin, 2, workspace_id=ws)
    only = admin.get("/api/v1/logs", params={"workspace_id": ws, "status": 404}).json()["data"]
    assert [r["status"] for r in only] == [404]
    own = httpx.get(kr.url + "/api/v1/logs", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert {r["workspace_id"] for r in own} == {ws}
    bad = admin.get("/api/v1/logs", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "since"


def test_a_workspace_key_cannot_read_another_workspaces_logs(kr: KeyrelayServer, admin: Admin,
                                                             upstream: FakeUpstream) -> None:
    _, key, _ = _proxy_setup(kr, admin, upstream, "own")
    other = admin.workspace("theirs")
    r = httpx.get(kr.url + "/api/v1/logs", params={"workspace_id": other}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404


def test_live_log_stream_delivers_new_entries(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    _, key, base = _proxy_setup(kr, admin, upstream, "live")
    with first_live_log(kr.url, key) as got:
        httpx.get(base + "/echo", headers={"Authorization": f"Bearer {key}"})
    assert got and got[0]["door"] == "gateway" and got[0]["status"] == 200
