"""The test servers work as keyrelay's tests rely on: PostgreSQL databases, child processes on their own ports,
and the fake upstream API. (Redis is exercised by the tests that share rate limits and live logs through it.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
import zlib

import httpx
import psycopg

from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.workspaces import SqlWorkspaceStore
from support.net import free_port, owns_listener, stop_child, wait_listening
from support.postgres import PostgresServer
from support.upstream import ISSUED_TOKEN, FakeUpstream, gzip_bomb


async def test_each_postgres_database_is_fresh_and_dumps_what_keyrelay_wrote(postgres: PostgresServer) -> None:
    """What keyrelay's tests rely on: `create_database` gives an empty database that keyrelay's migrations run on
    (through `sqlalchemy_url`), isolated from the others, and `pg_dump` shows what keyrelay stored (the tests scan
    dumps for leaked secrets)."""
    name = "support_" + uuid.uuid4().hex[:8]
    postgres.create_database(name)
    engine = make_engine(postgres.sqlalchemy_url(name))
    try:
        await upgrade(engine)
        await SqlWorkspaceStore(engine).create_workspace(id="ws-1", name="keyrelay-marker-\u00e9", now=1.0)
    finally:
        await engine.dispose()
    assert "keyrelay-marker-\u00e9".encode() in postgres.pg_dump(name)
    other = "support_" + uuid.uuid4().hex[:8]
    postgres.create_database(other)
    with psycopg.connect(postgres.dsn(other)) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert tables.fetchone() == (0,)
    postgres.drop_database(name)
    postgres.drop_database(other)


def test_a_child_is_started_on_its_own_port_even_if_another_process_took_it() -> None:
    """A free port can be taken before a child binds it: `owns_listener` tells our child's listener from a
    stranger's, so a start never mistakes someone else's server for ours."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(30)"
        child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert not wait_listening(child, port, timeout=30)  # it could not bind, and exited
            assert not owns_listener(child, port)
        finally:
            stop_child(child)
    port = free_port()
    code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        assert wait_listening(child, port, timeout=30) and owns_listener(child, port)
    finally:
        stop_child(child)


def test_upstream_records_the_request_exactly(upstream: FakeUpstream) -> None:
    body = b"\x00\xffraw body\r\n"
    raw = (
        b"POST /echo?b=2&a=%2f%2F&a=x HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nX-Mixed-CASE: one\r\nx-dup: 1\r\nX-Dup: 2\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    with socket.create_connection((upstream.host, upstream.port), timeout=5) as sock:
        sock.sendall(raw)
        reply = b""
        for _ in range(1000):  # bounded: the server closes after one response
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ")
    [rec] = upstream.requests
    assert (rec.method, rec.raw_path, rec.body) == ("POST", "/echo?b=2&a=%2f%2F&a=x", body)
    assert rec.headers[1:4] == [("X-Mixed-CASE", "one"), ("x-dup", "1"), ("X-Dup", "2")]
    assert rec.header("x-mixed-case") == "one"
    assert rec.peer[0] == "127.0.0.1"
    assert upstream.connections == 1


def test_sse_first_event_arrives_before_the_last_is_sent(upstream: FakeUpstream) -> None:
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    with httpx.stream("GET", upstream.url + "/sse?events=3&delay=0.6", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        buf = ""
        for text in resp.iter_text():
            buf += text
            while "\n\n" in buf:
                event, buf = buf.split("\n\n", 1)
                seen.append((time.monotonic() - start, event))
    assert [e for _, e in seen] == ["data: 0", "data: 1", "data: 2"]
    assert seen[-1][0] - seen[0][0] >= 1.15  # two 0.6 s waits between the first and the last: not sent at once


def test_redirect_is_not_followed_by_a_client_that_does_not_follow(upstream: FakeUpstream) -> None:
    resp = httpx.get(upstream.url + "/redirect?to=/echo&status=302", follow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["location"] == "/echo"
    assert [r.raw_path for r in upstream.requests] == ["/redirect?to=/echo&status=302"]


def test_oauth_rotates_refresh_tokens_and_rejects_reuse(upstream: FakeUpstream) -> None:
    token_url = upstream.url + "/oauth/token"
    first = upstream.issue_refresh_token()
    resp = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": first})
    assert resp.status_code == 200
    grant = resp.json()
    assert grant["expires_in"] == 3600 and grant["refresh_token"] != first
    reused = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": first})
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    second = grant["refresh_token"]
    again = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": second})
    assert again.status_code == 200
    cc = httpx.post(token_url, data={"grant_type": "client_credentials"}).json()
    assert "refresh_token" not in cc
    assert upstream.token_calls == 4

    upstream.require_auth = ISSUED_TOKEN
    assert httpx.get(upstream.url + "/echo").status_code == 401
    ok = httpx.get(upstream.url + "/echo", headers={"Authorization": f"Bearer {cc['access_token']}"})
    assert ok.status_code == 200


def test_require_auth_and_broken_responses() -> None:
    with FakeUpstream(host="127.0.0.2", require_auth="Bearer s3cret") as up:
        assert up.url.startswith("http://127.0.0.2:")
        assert httpx.get(up.url + "/status/204").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(up.url + "/status/204", headers=auth).status_code == 204
        for path in ("/reset", "/garbage"):
            try:
                httpx.get(up.url + path, headers=auth, timeout=5)
            except httpx.RemoteProtocolError:
                pass
            else:
                raise AssertionError(f"{path} should break the response")


def test_gzip_bomb_is_small_on_the_wire(upstream: FakeUpstream) -> None:
    gzip_bomb()  # built here first (cached per process): building it must not race the client's read timeout
    with httpx.stream("GET", upstream.url + "/gzipbomb") as resp:
        wire = b"".join(resp.iter_raw())
    assert resp.headers["content-encoding"] == "gzip"
    assert len(wire) < 300 * 1024
    head = zlib.decompressobj(31).decompress(wire, 1024 * 1024)
    assert head == bytes(1024 * 1024)


async def test_upstream_serves_async_tests_too(upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        pages, cursor = [], ""
        for _ in range(10):  # bounded: 25 items, 10 per page
            body = (await client.get("/paged", params={"limit": 10, "cursor": cursor})).json()
            pages.append([item["id"] for item in body["data"]])
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
    assert pages == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
