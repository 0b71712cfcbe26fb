"""Clean failures (docs/security.md): a real keyrelay in front of a real loopback
upstream that resets, speaks garbage, stalls, refuses, bombs, or is flooded. Every failure ends in the contract's
status and JSON error body, never a 500, a traceback, a library exception name, a path or the upstream's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from keyrelay.pipeline.response import RATIO_MAX, RATIO_SLACK
from support.adversarial import Watcher, raw_exchange, read_response, rss_bytes, tcp_sockets, wait_until
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.net import free_port
from support.upstream import FakeUpstream, gzip_bomb

SECRET = "fail-secret-5b1e8d"
SONAR = "/api/v1/sonar/apis/{}/request"


@dataclass
class Env:
    kr: KeyrelayServer
    admin: Admin
    upstream: FakeUpstream
    ws: str
    key: str
    client: httpx.Client
    watcher: Watcher
    sources: dict[str, str]  # slug -> id

    def add(self, slug: str, *, url: str | None = None, **policy: Any) -> str:
        src = self.admin.source(self.ws, upstream_url=url or self.upstream.url, slug=slug,
                                credentials={"bearer_token": SECRET}, policy=policy or None)
        self.sources[slug] = src["id"]
        return str(src["id"])

    def gw(self, slug: str, tail: str) -> str:
        return f"/api/{self.ws}/proxy/{slug}/{tail}"

    def sonar(self, slug: str, url: str, method: str = "GET", **extra: Any) -> httpx.Response:
        return self.client.post(SONAR.format(self.sources[slug]), json={"method": method, "url": url, **extra})

    def error(self, r: httpx.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert err["code"] == code and err["request_id"] == r.headers["x-request-id"], r.text
        assert SECRET not in r.text

    def logs(self) -> list[dict[str, Any]]:
        r = self.admin.get("/api/v1/logs", params={"workspace_id": self.ws, "limit": 500})
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["data"]
        return rows


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> Iterator[Env]:
    ws = admin.workspace("failures")
    key = admin.api_key(ws, ["proxy"])
    watcher = Watcher(hosts=[f"127.0.0.1:{upstream.port}"])
    client = watcher.client(kr.url, headers={"Authorization": f"Bearer {key}"})
    e = Env(kr, admin, upstream, ws, key, client, watcher, {})
    e.add("up")
    yield e
    client.close()
    watcher.verify()


def test_upstream_reset_mid_body_is_a_clean_502_or_a_closed_connection(env: Env) -> None:
    try:
        r = env.client.get(env.gw("up", "reset"))
    except httpx.RemoteProtocolError:
        pass  # the response had started: the agent sees the connection close before the declared length
    else:
        env.error(r, 502, "upstream_unreachable")
    r = env.sonar("up", f"{env.upstream.url}/reset")
    env.error(r, 502, "upstream_unreachable")
    assert 2 <= len(env.upstream.requests) <= 6  # the upstream was reached (and retried at most twice each)

    def rows() -> list[dict[str, Any]]:
        return [row for row in env.logs() if row["path"].endswith("/reset") or row["door"] == "sonar"]

    assert wait_until(lambda: len(rows()) >= 2, 5.0, step=0.05), rows()  # the gateway's and the request API's
    assert all(row["status"] != 500 for row in rows())


def test_upstream_dying_mid_stream_truncates_the_response_without_a_500(env: Env) -> None:
    with env.client.stream("GET", env.gw("up", "sse?events=100&delay=0.05"), extensions={"kr_stream": True}) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        assert next(chunks).startswith(b"data: 0")
        env.upstream.stop()  # the upstream process goes away in the middle of the stream
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):  # the chunked body ends without its last chunk
            for chunk in chunks:
                received += chunk
                assert len(received) < 10_000
    assert b"Traceback" not in received and b"error" not in received
    env.watcher.note(200, received, "truncated stream")

    def row() -> dict[str, Any] | None:
        return next((x for x in env.logs() if x["path"].endswith("/sse")), None)

    assert wait_until(lambda: row() is not None, 3.0, step=0.1)
    logged = row()
    assert logged is not None and logged["error_code"] == "upstream_unreachable"


def test_garbage_from_the_upstream_is_502(env: Env) -> None:
    env.error(env.client.get(env.gw("up", "garbage")), 502, "upstream_unreachable")
    env.error(env.client.post(env.gw("up", "garbage"), content=b"{}"), 502, "upstream_unreachable")
    env.error(env.sonar("up", f"{env.upstream.url}/garbage"), 502, "upstream_unreachable")
    assert _count(env.upstream, "/garbage") == 3 + 1 + 3  # GETs retried twice (nothing reached the agent), POST not


def test_connection_refused_is_502(env: Env) -> None:
    port = free_port()  # nothing listens here
    env.add("closed", url=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    env.error(env.client.get(env.gw("closed", "x")), 502, "upstream_unreachable")
    env.error(env.client.post(env.gw("closed", "x"), content=b"1"), 502, "upstream_unreachable")
    env.error(env.sonar("closed", f"http://127.0.0.1:{port}/x"), 502, "upstream_unreachable")
    assert time.monotonic() - started < 8
    env.watcher.hosts.append(f"127.0.0.1:{port}")


def test_slow_upstream_beyond_the_source_timeout_is_504(env: Env) -> None:
    env.add("slow", timeout_seconds=1)
    started = time.monotonic()
    env.error(env.client.get(env.gw("slow", "slow?delay=10")), 504, "upstream_timeout")
    assert time.monotonic() - started < 5  # ~1 s: the source's timeout, not the upstream's 10 s
    started = time.monotonic()
    env.error(env.sonar("slow", f"{env.upstream.url}/slow?delay=10", method="POST"), 504, "upstream_timeout")
    assert time.monotonic() - started < 5
    r = env.client.get(env.gw("slow", "slow?delay=0.1"))  # a fast answer on the same source still works
    assert r.status_code == 200 and r.json() == {"slow": True}


def _count(up: FakeUpstream, path: str) -> int:
    return sum(1 for s in up.requests if s.raw_path.split("?")[0] == path)


def test_idempotent_requests_are_retried_and_others_are_not(env: Env) -> None:
    r = env.client.get(env.gw("up", "status/503"))
    assert r.status_code == 503 and r.json() == {"status": 503}  # the upstream's own answer, after retries
    assert _count(env.upstream, "/status/503") == 3
    env.upstream.clear()
    r = env.client.post(env.gw("up", "status/503"), content=b'{"charge": 1}')
    assert r.status_code == 503
    assert _count(env.upstream, "/status/503") == 1  # a POST without Idempotency-Key is never replayed
    env.upstream.clear()
    r = env.client.post(env.gw("up", "status/503"), content=b'{"charge": 1}', headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 503
    seen = env.upstream.requests
    assert len(seen) == 3 and all(s.body == b'{"charge": 1}' and s.header("Idempotency-Key") == "k-1" for s in seen)
    env.upstream.clear()
    r = env.sonar("up", f"{env.upstream.url}/status/502", method="POST", body="x")
    assert r.status_code == 200 and r.json()["status_code"] == 502
    assert _count(env.upstream, "/status/502") == 1
    env.upstream.clear()
    r = env.sonar("up", f"{env.upstream.url}/status/504")
    assert r.json()["status_code"] == 504 and _count(env.upstream, "/status/504") == 3


def test_429_with_retry_after_is_retried_only_within_the_deadline(env: Env) -> None:
    env.add("short", timeout_seconds=2)
    started = time.monotonic()
    r = env.client.get(env.gw("short", "status/429?retry_after=1"))
    elapsed = time.monotonic() - started
    assert r.status_code == 429 and r.headers["retry-after"] == "1"  # the upstream's answer, passed through
    assert _count(env.upstream, "/status/429") == 2  # retried once after 1 s; a 2nd wait would pass the deadline
    assert 0.9 <= elapsed < 3.5
    env.upstream.clear()
    started = time.monotonic()
    r = env.client.get(env.gw("up", "status/429?retry_after=120"))  # longer than the 30 s deadline: no wait
    assert r.status_code == 429 and _count(env.upstream, "/status/429") == 1
    assert time.monotonic() - started < 3
    env.upstream.clear()
    r = env.client.post(env.gw("up", "status/429?retry_after=1"), content=b"x")
    assert r.status_code == 429 and _count(env.upstream, "/status/429") == 1


def _request_head(env: Env, path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {env.key}\r\n"
            f"Content-Type: application/octet-stream\r\n{extra}\r\n").encode()


def test_declared_body_over_the_limit_is_413_and_the_upstream_sees_nothing(env: Env) -> None:
    env.add("small", max_body_bytes=1024)
    for declared in (1025, 70_000, 10 * 1024 * 1024):
        head = _request_head(env, env.gw("small", "echo"), f"Content-Length: {declared}\r\n")
        r = raw_exchange(env.kr.port, head + b"x" * min(declared, 4096))
        env.watcher.note(r.status, r.body, f"declared {declared}")
        assert r.status == 413, (declared, r.body)
        assert b'"payload_too_large"' in r.body
        assert r.closed  # the rest of the body is not drained from the socket
    # with Expect: 100-continue the agent is told 413 before it sends a single body byte
    head = _request_head(env, env.gw("small", "echo"), "Content-Length: 10485760\r\nExpect: 100-continue\r\n")
    r = raw_exchange(env.kr.port, head)
    env.watcher.note(r.status, r.body, "expect 100-continue")
    assert r.status == 413 and r.closed
    r2 = env.client.put(env.gw("small", "echo"), content=b"y" * 2000)
    env.error(r2, 413, "payload_too_large")
    r2 = env.sonar("small", f"{env.upstream.url}/echo", method="POST", body="z" * 5000)
    env.error(r2, 413, "payload_too_large")
    assert env.upstream.requests == [] and env.upstream.connections == 0
    r2 = env.client.put(env.gw("small", "echo"), content=b"y" * 1024)  # exactly at the limit is fine
    assert r2.status_code == 200 and env.upstream.requests[-1].body == b"y" * 1024


def test_chunked_upload_over_the_limit_is_413(env: Env) -> None:
    env.add("chunky", max_body_bytes=100_000)
    chunk = b"c" * 16384
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = {"bytes": 0}
    with socket.create_connection(("127.0.0.1", env.kr.port), timeout=10) as sock:
        sock.sendall(_request_head(env, env.gw("chunky", "echo"), "Transfer-Encoding: chunked\r\n"))

        def upload() -> None:  # up to 32 MiB, stopping as soon as keyrelay stops reading
            try:
                for _ in range(2048):
                    sock.sendall(frame)
                    sent["bytes"] += len(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass

        writer = threading.Thread(target=upload, daemon=True)
        writer.start()
        r = read_response(sock, timeout=10)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        writer.join(10)
    env.watcher.note(r.status, r.body, "chunked upload")
    assert r.status == 413 and b'"payload_too_large"' in r.body and r.closed
    assert sent["bytes"] < 32 * 1024 * 1024  # keyrelay stopped reading: the upload could not finish
    assert all(s.raw_path != "/echo" for s in env.upstream.requests)  # no complete request reached the upstream
    env.upstream.clear()
    r2 = env.client.post(env.gw("chunky", "echo"), content=iter([b"a" * 50_000, b"b" * 50_000]))
    assert r2.status_code == 200  # a chunked upload at the limit passes whole
    assert env.upstream.requests[-1].body == b"a" * 50_000 + b"b" * 50_000


class RssPeak:
    """Samples this process's RSS (keyrelay runs in it) every 5 ms while active."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_gzip_bomb_never_grows_memory_decoded_or_passed_through(env: Env) -> None:
    bomb = gzip_bomb()  # built once per process (the fake upstream serves the same cached bytes)
    env.admin.source(env.ws, upstream_url=env.upstream.url, slug="open")  # no credential: nothing to redact
    env.client.get(env.gw("up", "echo"))  # warm the path
    baseline = rss_bytes()
    with RssPeak() as rss:
        for _ in range(3):
            # a secret is injected: keyrelay asked for identity, so it decodes the one gzip layer in bounded steps
            # (to redact it) and ends the response once the body expands too far
            with env.client.stream("GET", env.gw("up", "gzipbomb"), headers={"Accept-Encoding": "gzip"},
                                   extensions={"kr_stream": True}) as r:
                assert r.status_code == 200 and "content-encoding" not in r.headers
                got = 0
                with pytest.raises(httpx.RemoteProtocolError):  # cut short, never a complete 256 MiB
                    for piece in r.iter_raw():
                        got += len(piece)
            assert 0 < got <= RATIO_MAX * len(bomb) + RATIO_SLACK
            # no secret injected: the bytes pass as sent, never decoded, never re-encoded
            with env.client.stream("GET", env.gw("open", "gzipbomb"), headers={"Accept-Encoding": "gzip"},
                                   extensions={"kr_stream": True}) as r:
                assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
                assert b"".join(r.iter_raw()) == bomb
        r = env.sonar("up", f"{env.upstream.url}/gzipbomb")
        assert r.status_code == 502 and len(r.content) < 4096, (r.status_code, len(r.content))
        env.error(r, 502, "upstream_unreachable")
    growth = rss.peak - baseline
    assert growth < 32 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert all(s.header("Accept-Encoding") in ("identity", "gzip") for s in env.upstream.requests)


def test_client_disconnect_mid_sse_cancels_the_upstream_request(env: Env) -> None:
    full = sum(len(f"data: {i}\n\n") for i in range(100))
    assert tcp_sockets(env.upstream.port) == []
    with env.client.stream("GET", env.gw("up", "sse?events=100&delay=0.2"), extensions={"kr_stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = r.iter_raw()  # keep a reference: a dropped generator would close the stream at once
        first = next(chunks)
        assert first.startswith(b"data: 0")
        assert "ESTABLISHED" in tcp_sockets(env.upstream.port)  # the upstream is still streaming to keyrelay
    closed_at = time.monotonic()  # the agent hung up ~0.2 s into a 20 s stream
    assert wait_until(lambda: tcp_sockets(env.upstream.port) == [], 5.0), tcp_sockets(env.upstream.port)

    def row() -> dict[str, Any] | None:
        return next((x for x in env.logs() if x["path"].endswith("/sse")), None)

    assert wait_until(lambda: row() is not None, 5.0, step=0.1)
    logged = row()
    assert logged is not None and logged["status"] == 200 and 0 < logged["bytes_out"] < full
    assert time.monotonic() - closed_at < 10
    assert len(env.upstream.requests) == 1


def test_workspace_concurrency_cap_rejects_the_excess_quickly(kr_settings: dict[str, Any],
                                                              upstream: FakeUpstream) -> None:
    kr_settings["workspace_max_concurrency"] = 5
    with KeyrelayServer(make_settings(**kr_settings)) as server:
        admin = Admin(server.url)
        ws = admin.workspace("flood")
        admin.source(ws, upstream_url=upstream.url, slug="up", credentials={"bearer_token": SECRET})
        key = admin.api_key(ws, ["proxy"])
        admin.close()
        watcher = Watcher(hosts=[f"127.0.0.1:{upstream.port}"])
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.get(f"/api/{ws}/proxy/up/slow?delay=0").status_code == 200  # warm token and source caches
        upstream.clear()
        results = asyncio.run(_flood(watcher, server.url, f"/api/{ws}/proxy/up/slow?delay=4", key, 100))
        ok = [t for s, t, _ in results if s == 200]
        limited = [(t, h) for s, t, h in results if s == 429]
        assert len(ok) + len(limited) == 100, sorted({s for s, _, _ in results})
        assert 1 <= len(ok) <= 5 and len(upstream.requests) == len(ok)
        assert upstream.connections <= 5  # never more than 5 upstream requests at once
        assert all(h is not None and 1 <= int(h) <= 60 for _, h in limited)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
            r = c.get(f"/api/{ws}/proxy/up/slow?delay=0")  # the slots were released
            assert r.status_code == 200
            assert wait_until(lambda: sum(row["status"] == 429 for row in admin_rows(server.url, ws)) >= len(limited),
                              10.0, step=0.1)  # the rows are flushed in batches
            rows = admin_rows(server.url, ws)
        refused = [row for row in rows if row["status"] == 429]
        assert len(refused) == len(limited) and all(row["error_code"] == "rate_limited" for row in refused)
        assert max(row["latency_ms"] for row in refused) < 1000  # refused at once on the server, never queued
        watcher.verify()


def admin_rows(url: str, ws: str) -> list[dict[str, Any]]:
    admin = Admin(url)
    try:
        r = admin.get("/api/v1/logs", params={"workspace_id": ws, "limit": 500})
        assert r.status_code == 200, r.text
        return list(r.json()["data"])
    finally:
        admin.close()


async def _flood(watcher: Watcher, base: str, path: str, key: str, n: int) -> list[tuple[int, float, str | None]]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with watcher.async_client(base, limits=limits, headers={"Authorization": f"Bearer {key}"}) as client:

        async def one() -> tuple[int, float, str | None]:
            started = time.monotonic()
            r = await client.get(path)
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "rate_limited"
            return r.status_code, time.monotonic() - started, r.headers.get("retry-after")

        return await asyncio.gather(*(one() for _ in range(n)))
