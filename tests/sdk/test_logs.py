"""The request log through the SDK: listing with filters, and the live SSE feed (sync and async), against a live
keyrelay; the SSE decoder on its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from keyrelay_client import AsyncKeyrelay, ConnectionFailed, Keyrelay, LogEntry, RequestTimeout, UsageError
from keyrelay_client.logs import SseDecoder
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer
from support.scripted import Reply, ScriptedServer

ENTRY = {"id": "e1", "ts": "2030-01-01T00:00:00Z", "workspace_id": "w", "source_id": "s", "door": "gateway",
         "method": "GET", "path": "/x", "status": 200, "latency_ms": 1.0}


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    dec = SseDecoder()
    lines = [": connected", "", "data: {\"a\":", "data:1}", "", "event: ping", "id: 7", "", ": keep-alive", "",
             "data: x", ""]
    assert [d for d in map(dec.feed, lines) if d is not None] == ['{"a":\n1}', "x"]


def gateway(server: KeyrelayServer, workspace: dict[str, str], key: str) -> Callable[[str], httpx.Response]:
    return lambda path: httpx.get(f"{server.url}/api/{workspace['id']}/proxy/echo{path}",
                                  headers={"Authorization": f"Bearer {key}"}, timeout=10)


def until(probe: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll `probe` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def test_list_filters_by_workspace_source_and_status(client: Any, server: KeyrelayServer, raw: Admin,
                                                     workspace: dict[str, str], echo: dict[str, Any]) -> None:
    send = gateway(server, workspace, raw.api_key(workspace["id"], ["proxy"]))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    assert send("/echo").status_code == 200
    assert send("/status/404").status_code == 404
    entries = until(lambda: len(got := client.logs.list(workspace=workspace["name"])) >= 2 and got)
    assert all(isinstance(e, LogEntry) and e.workspace_id == workspace["id"] for e in entries)
    assert {e.path.rsplit("/", 1)[-1] for e in entries} >= {"echo", "404"}
    not_found = client.logs.list(workspace=workspace["id"], source=echo["id"], status=404)
    assert [e.status for e in not_found] == [404] and not_found[0].door == "gateway"
    assert len(client.logs.list(workspace=workspace["id"], since=before, limit=1)) == 1
    assert client.logs.list(workspace=workspace["id"], since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []
    with pytest.raises(UsageError):
        client.logs.list(since=dt.datetime(2030, 1, 1))


@contextmanager
def traffic(send: Callable[[str], httpx.Response]) -> Iterator[threading.Event]:
    """Send a gateway request every 50 ms (bounded) until the event is set: the feed subscribes asynchronously,
    so one request could come before it listens."""
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 15
        while not stop.is_set() and time.monotonic() < deadline:
            send("/echo?tail=1")
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(15)


def test_tail_yields_live_entries_sync(server: KeyrelayServer, raw: Admin, workspace: dict[str, str],
                                       echo: dict[str, Any]) -> None:
    send = gateway(server, workspace, raw.api_key(workspace["id"], ["proxy"]))
    with Keyrelay(server.url, client_id=ADMIN_ID, client_secret=ADMIN_SECRET, env={}) as kr:
        feed = kr.logs.tail(workspace=workspace["name"], read_timeout=10)
        with traffic(send):
            first = next(feed)
        feed.close()
    assert first.workspace_id == workspace["id"] and first.source_id == echo["id"]
    assert first.door == "gateway" and first.status == 200 and "tail" not in first.path  # no query values


def test_tail_yields_live_entries_async(server: KeyrelayServer, raw: Admin, workspace: dict[str, str],
                                        echo: dict[str, Any]) -> None:
    key = raw.api_key(workspace["id"], ["proxy", "logs"])
    send = gateway(server, workspace, key)

    async def main() -> LogEntry:
        async with AsyncKeyrelay(server.url, api_key=key, env={}) as kr:  # an API key sees its own workspace
            feed = kr.logs.tail(read_timeout=10)
            try:
                return await anext(feed)
            finally:
                await feed.aclose()

    with traffic(send):
        first = asyncio.run(main())
    assert first.workspace_id == workspace["id"] and first.method == "GET"


def test_a_dead_or_dropped_feed_raises_the_sdks_errors(connect: Any, scripted: ScriptedServer) -> None:
    feed = b": connected\n\ndata: " + json.dumps(ENTRY).encode() + b"\n\n" + b" " * 1000
    scripted.on("GET", "/api/v1/logs/stream", Reply(200, body=feed, cut=len(feed) - 1000, stall=True))
    kr = connect(scripted.url, token="krw_t")
    tail = iter(kr.logs.tail(read_timeout=0.2))
    assert next(tail).id == "e1"
    with pytest.raises(RequestTimeout):
        next(tail)
    scripted.on("GET", "/api/v1/logs/stream", Reply(200, body=feed, cut=len(feed) - 1000))
    tail = iter(kr.logs.tail(read_timeout=5))
    assert next(tail).id == "e1"
    with pytest.raises(ConnectionFailed):
        next(tail)
