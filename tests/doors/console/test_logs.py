"""Live logs in the console: the page (filters, newest rows, names as text) and its event stream, which needs a
console session (never a bearer token), filters by workspace, source, door and status class, adds names,
shows the same rows on every instance when scaled out, and ends with the session."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.doors.console import logs
from support.console import ConsoleClient, assert_page_headers
from support.keyrelay import Admin, KeyrelayServer, scaled_out_pair
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(autouse=True)
def fast_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep-alives every 0.2 s: the session check runs that often, and a reader can hang up between frames."""
    monkeypatch.setattr(logs, "KEEPALIVE_SECONDS", 0.2)


@contextlib.contextmanager
def stream(base_url: str, cookies: httpx.Cookies, query: str = "") -> Iterator[queue.Queue[Any]]:
    """Read `/console/logs/stream` in a thread; the queue gets the status, then each frame's JSON (or
    ("event", name)). The stream is connected when the context is entered, and hung up when it is left."""
    frames: queue.Queue[Any] = queue.Queue()
    connected, leave = threading.Event(), threading.Event()

    def run() -> None:
        with httpx.Client(base_url=base_url, cookies=cookies, timeout=30) as client, client.stream(
                "GET", "/console/logs/stream?" + query) as r:
            frames.put(r.status_code)
            event = None
            for line in r.iter_lines():
                connected.set()
                if leave.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    frames.put(("event", event) if event else json.loads(line[6:]))
                    event = None
        connected.set()

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    assert connected.wait(10), "the stream did not connect"
    try:
        yield frames
    finally:
        leave.set()  # hang up, as a browser leaving the page does
        reader.join(10)


def _next(frames: queue.Queue[Any], timeout: float = 5.0) -> Any:
    return frames.get(timeout=timeout)


def _setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, source_name: str = "echo") -> tuple[str, str,
                                                                                                         str]:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url=upstream.url)
    if source_name != "echo":
        admin.http.patch(f"/api/v1/sources/{src['id']}", json={"name": source_name}, headers=admin.headers)
    return ws, str(src["id"]), admin.api_key(ws, ["proxy"])


def test_the_stream_needs_a_console_session(kr: KeyrelayServer, admin: Admin) -> None:
    r = httpx.get(kr.url + "/console/logs/stream", headers={"Authorization": f"Bearer {admin.token}"})
    assert r.status_code == 401


def test_the_stream_carries_matching_rows_with_names(kr: KeyrelayServer, admin: Admin,
                                                     upstream: FakeUpstream) -> None:
    ws, src, key = _setup(kr, admin, upstream)
    c = ConsoleClient(kr.url).signed_in()
    auth = {"Authorization": f"Bearer {key}"}
    with stream(kr.url, c.http.cookies, f"status=4xx&workspace_id={ws}&door=gateway") as frames:
        assert _next(frames) == 200
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=auth).status_code == 200  # filtered out
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/echo/status/404", headers=auth).status_code == 404
        row = _next(frames)
    assert (row["status"], row["workspace_id"], row["source_id"], row["door"]) == (404, ws, src, "gateway")
    assert (row["workspace_name"], row["source_name"]) == ("acme", "echo")
    assert row["short_path"] == "\u2026/echo/status/404" and row["path"] == f"/api/{ws}/proxy/echo/status/404"
    assert set(row) >= {"id", "ts", "method", "latency_ms", "error_code", "caller", "bytes_out"}


def test_the_stream_knows_sources_created_after_it_started(kr: KeyrelayServer, admin: Admin,
                                                           upstream: FakeUpstream) -> None:
    c = ConsoleClient(kr.url).signed_in()
    with stream(kr.url, c.http.cookies) as frames:
        assert _next(frames) == 200
        ws, _, key = _setup(kr, admin, upstream, source_name="late")
        httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
        row = _next(frames)
    assert (row["workspace_name"], row["source_name"]) == ("acme", "late")


@pytest.mark.parametrize("query", ["status=6xx", "status=abc", "door=teleport"])
def test_unknown_filters_are_refused(kr: KeyrelayServer, query: str) -> None:
    c = ConsoleClient(kr.url).signed_in()
    assert c.get("/console/logs/stream?" + query).status_code == 400
    assert c.get("/console/logs?" + query).status_code == 400


def test_the_stream_ends_with_the_session(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    with stream(kr.url, c.http.cookies) as frames:
        assert _next(frames) == 200
        assert c.submit("/console/", "/console/sign-out", {}).status_code == 303
        assert _next(frames) == ("event", "ended")


def test_the_page_shows_the_newest_matching_rows_as_text(kr: KeyrelayServer, admin: Admin,
                                                         upstream: FakeUpstream) -> None:
    ws, src, key = _setup(kr, admin, upstream, source_name=XSS)
    auth = {"Authorization": f"Bearer {key}"}
    httpx.get(f"{kr.url}/api/{ws}/proxy/echo/echo", headers=auth)
    httpx.get(f"{kr.url}/api/{ws}/proxy/echo/status/503", headers=auth)
    c = ConsoleClient(kr.url).signed_in()
    deadline = time.monotonic() + 5
    while True:  # the request log is written in batches
        page = c.get(f"/console/logs?source_id={src}&status=5xx")
        if "status/503" in page.text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert page.status_code == 200
    assert_page_headers(page)
    assert "\u2026/echo/status/503" in page.text and "/echo/echo<" not in page.text
    assert "<img" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert f'data-stream="/console/logs/stream?source_id={src}&amp;status=5xx"' in page.text
    assert f'<option value="{src}" selected>' in page.text


@pytest.mark.postgres
def test_every_instance_shows_every_instances_rows(tmp_path: Path, postgres: PostgresServer,
                                                   redis_server: RedisServer, upstream: FakeUpstream) -> None:
    with scaled_out_pair(tmp_path, postgres, redis_server.url) as (one, two):
        admin = Admin(one.url)
        ws, _, key = _setup(one, admin, upstream)
        c = ConsoleClient(two.url).signed_in()  # watching instance two
        with stream(two.url, c.http.cookies, f"workspace_id={ws}") as frames:
            assert _next(frames) == 200
            deadline, row = time.monotonic() + 15, None
            while row is None and time.monotonic() < deadline:  # until both instances' Redis feeds are live
                httpx.get(f"{one.url}/api/{ws}/proxy/echo/echo", headers={"Authorization": f"Bearer {key}"})
                with contextlib.suppress(queue.Empty):
                    row = _next(frames, timeout=0.5)
        admin.close()
    assert row is not None and row["workspace_id"] == ws and row["source_name"] == "echo"
