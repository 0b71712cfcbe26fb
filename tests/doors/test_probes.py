"""Health, readiness and metrics (doors/probes.py): each answers GET only, in the contract's shape on failure, with
the request id, and without loading the admin framework (tests/test_app.py checks the whole worker)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyrelay.doors.probes import ProbesDoor, is_probe
from keyrelay.errors import Sealed, Unavailable
from support.keyrelay import KeyrelayServer


def test_healthz_readyz_and_metrics_over_http(kr: KeyrelayServer) -> None:
    health = httpx.get(kr.url + "/healthz", headers={"X-Request-Id": "probe-1"})
    assert health.json() == {"status": "ok"} and health.headers["x-request-id"] == "probe-1"
    assert health.headers["cache-control"] == "no-store"
    assert httpx.get(kr.url + "/readyz").json() == {"status": "ready"}
    metrics = httpx.get(kr.url + "/metrics?name[]=x")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE keyrelay_requests_total counter" in metrics.text


@pytest.mark.parametrize("method", ["POST", "DELETE", "HEAD"])
def test_only_get_is_answered(kr: KeyrelayServer, method: str) -> None:
    r = httpx.request(method, kr.url + "/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    if method != "HEAD":
        assert r.json()["error"]["code"] == "method_not_allowed"


def test_probe_paths_are_exact() -> None:
    assert all(is_probe(p) for p in ("/healthz", "/readyz", "/metrics"))
    assert not any(is_probe(p) for p in ("/healthz/", "/metrics/x", "/api/v1/healthz", "/Healthz"))


async def _answer(door: ProbesDoor, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await door({"type": "http", "method": "GET", "path": path, "state": {"request_id": "rid-5"}}, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.parametrize("failure,status,code", [
    (Unavailable("Database unreachable"), 503, "unavailable"), (Sealed("The vault is sealed"), 503, "sealed"),
])
async def test_readyz_says_what_is_wrong(failure: Exception, status: int, code: str) -> None:
    async def ready() -> None:
        raise failure

    door = ProbesDoor(ready=ready, metrics=lambda: b"m 1\n", metrics_content_type="text/plain")
    got, headers, body = await _answer(door, "/readyz")
    doc = httpx.Response(got, content=body).json()["error"]
    assert (got, doc["code"], doc["request_id"]) == (status, code, "rid-5")
    assert int(headers[b"content-length"]) == len(body)
    healthy = await _answer(door, "/healthz")  # the process is up all the same
    assert healthy[0] == 200
    metrics = await _answer(door, "/metrics")
    assert metrics[0] == 200 and metrics[1][b"content-type"] == b"text/plain" and metrics[2] == b"m 1\n"
