"""Upstream connections never cross a tenant (docs/security.md, "The upstream connection").

Two tenants (workspaces A and B) each have a source with its own credential on the same upstream origin. The
upstream is hostile: a scripted raw-socket server that desynchronises the way broken or malicious HTTP/1.1
servers do. Each scenario replays A's attack, then requests of both tenants, and proves that zero bytes cross:
no response a tenant receives holds the other tenant's path or credential, and no request the upstream parses
mixes both tenants' bytes (so a request smuggled by A never runs with B's credential).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from support.adversarial import Watcher
from support.keyrelay import Admin, KeyrelayServer
from support.raw_upstream import ScriptedConn, ScriptedUpstream

SECRETS = {"a": "secret-of-tenant-a-0001", "b": "secret-of-tenant-b-0002"}
PARTIAL_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def _echo(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return 0


@dataclass
class Desync:
    """A hostile upstream. Every request it parses is kept in `parsed` as (connection, head).

    It ignores the body of requests to `/static...` (as servers that ignore Content-Length on some routes
    do, "CL.0"), so such a body is parsed as the start of the next request on the connection. With `lag`,
    a request that began inside such a body puts it one response behind for good (its answer, and every
    later one, goes out when the next request arrives). With `second_response`, the first answer on each
    connection carries the start of another response in the same write, and the rest follows when the next
    request arrives: an echo of the first request, credential included.
    """

    lag: bool = False
    second_response: bool = False
    parsed: list[tuple[int, bytes]] = field(default_factory=list)

    async def __call__(self, conn: ScriptedConn) -> None:
        buf = b""
        ignored = 0  # bytes at the front of `buf` that belong to a body the upstream ignored
        queue: collections.deque[bytes] = collections.deque()
        behind = 0
        rest: bytes | None = None
        for _ in range(10_000):
            data = await conn.reader.read(65536)
            if not data:
                return
            buf += data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head = buf[:end + 4]
                smuggled = ignored > 0
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                length = _content_length(head)
                if path.startswith(b"/static"):
                    consumed, body_ignored = len(head), length
                elif len(buf) < len(head) + length:
                    break  # the body is still on its way
                else:
                    consumed, body_ignored = len(head) + length, 0
                buf = buf[consumed:]
                ignored = max(0, ignored - consumed) + body_ignored
                self.parsed.append((conn.index, head))
                if rest is not None:
                    conn.writer.write(rest)
                    rest = None
                if self.second_response and len([c for c, _ in self.parsed if c == conn.index]) == 1:
                    queue.append(_echo(head) + PARTIAL_HEAD)
                    rest = b"Content-Length: %d\r\n\r\n%s" % (len(head), head)
                else:
                    queue.append(_echo(head))
                if self.lag and smuggled:
                    behind += 1
            while len(queue) > behind:
                conn.writer.write(queue.popleft())
            await conn.writer.drain()


@dataclass
class Tenants:
    kr: KeyrelayServer
    up: ScriptedUpstream
    script: Desync
    clients: dict[str, httpx.Client]
    paths: dict[str, str]
    watcher: Watcher
    received: dict[str, list[bytes]] = field(default_factory=lambda: {"a": [], "b": []})

    def send(self, tenant: str, method: str, tail: str, body: bytes | Iterator[bytes] | None = None,
             length: int | None = None) -> httpx.Response:
        headers = {} if length is None else {"Content-Length": str(length)}
        r = self.clients[tenant].request(method, f"{self.paths[tenant]}/{tail}", content=body, headers=headers)
        self.watcher.note(r.status_code, r.content, f"{tenant} {method} {tail}")
        self.received[tenant].append(r.content + repr(r.headers.raw).encode())
        return r

    def verify(self) -> None:
        """Zero cross-tenant bytes, in what each tenant received and in what the upstream parsed."""
        for tenant, other in (("a", "b"), ("b", "a")):
            marker, secret = f"tenant-{other}".encode(), SECRETS[other].encode()
            leaked = [r[:300] for r in self.received[tenant] if marker in r or secret in r]
            assert leaked == [], f"tenant {tenant} received tenant {other}'s bytes: {leaked}"
        mixed = [head for _, head in self.script.parsed if b"tenant-a" in head and b"tenant-b" in head]
        assert mixed == [], f"the upstream parsed requests holding both tenants' bytes: {mixed}"
        for conn in {c for c, _ in self.script.parsed}:  # and never served both tenants on one connection
            heads = b"".join(head for c, head in self.script.parsed if c == conn)
            assert not (SECRETS["a"].encode() in heads and SECRETS["b"].encode() in heads), conn
        self.watcher.verify()


@pytest.fixture
def tenants(kr: KeyrelayServer, admin: Admin, request: pytest.FixtureRequest) -> Iterator[Tenants]:
    script: Desync = request.param
    with ScriptedUpstream(script) as up:
        clients, paths = {}, {}
        for tenant in ("a", "b"):
            ws = admin.workspace(f"isolation-{tenant}")
            admin.source(ws, upstream_url=up.url, slug="api", credentials={"bearer_token": SECRETS[tenant]})
            key = admin.api_key(ws, ["proxy"])
            clients[tenant] = httpx.Client(base_url=kr.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            paths[tenant] = f"/api/{ws}/proxy/api"
        t = Tenants(kr, up, script, clients, paths, Watcher(hosts=[f"127.0.0.1:{up.port}"]))
        try:
            yield t
        finally:
            for client in clients.values():
                client.close()


def _then_both_tenants(t: Tenants) -> None:
    for tenant, n in (("b", 1), ("a", 2), ("b", 3), ("a", 4)):
        assert t.send(tenant, "GET", f"tenant-{tenant}/{n}").status_code == 200


@pytest.mark.parametrize("tenants", [Desync(lag=True)], indirect=True, ids=["lagging"])
def test_a_smuggled_request_never_shifts_another_tenants_responses(tenants: Tenants) -> None:
    """A's body holds a whole request; the upstream answers it too, one response behind. On a shared
    connection B would get the answer to A's smuggled request, and A the answer to B's, with B's credential."""
    smuggled = b"GET /tenant-a/smuggled HTTP/1.1\r\nHost: x\r\nX-Smuggled: tenant-a\r\n\r\n"
    assert tenants.send("a", "POST", "static/a", smuggled).status_code == 200
    _then_both_tenants(tenants)
    tenants.verify()


@pytest.mark.parametrize("tenants", [Desync()], indirect=True, ids=["cl0"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole body", "streamed body"])
def test_a_smuggled_request_prefix_never_runs_with_another_tenants_credential(tenants: Tenants,
                                                                              streamed: bool) -> None:
    """A's body is the start of a request; the next request on the connection completes it. On a shared
    connection that would be B's, and A's request would run upstream with B's credential."""
    prefix = b"GET /tenant-a/smuggled HTTP/1.1\r\nHost: x\r\nX-Smuggled: tenant-a\r\nX-Ignore: "
    if streamed:  # longer than the gateway reads whole: it streams to the upstream as it arrives
        body = prefix + b"p" * 100_000
        parts = iter([body[:1000], body[1000:]])
        assert tenants.send("a", "POST", "static/a", parts, length=len(body)).status_code == 200
    else:
        assert tenants.send("a", "POST", "static/a", prefix).status_code == 200
    _then_both_tenants(tenants)
    tenants.verify()


@pytest.mark.parametrize("tenants", [Desync(second_response=True)], indirect=True, ids=["second response"])
def test_the_start_of_a_second_response_never_answers_another_tenant(tenants: Tenants) -> None:
    """The upstream's first answer carries the start of another response holding A's request (credential
    included); on a shared connection it would complete as the answer to B's request."""
    assert tenants.send("a", "GET", "tenant-a/0").status_code == 200
    _then_both_tenants(tenants)
    tenants.verify()


@pytest.mark.parametrize("tenants", [Desync()], indirect=True, ids=["well-behaved"])
def test_each_source_keeps_its_own_keep_alive_connection(tenants: Tenants) -> None:
    """Positive control: the isolation above comes from one pool per source, not from never reusing a
    connection. A well-behaved upstream sees one connection per tenant, each carrying only that tenant."""
    for tenant, n in (("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)):
        assert tenants.send(tenant, "GET", f"tenant-{tenant}/{n}").status_code == 200
    by_conn: dict[int, set[bytes]] = {}
    for conn, head in tenants.script.parsed:
        by_conn.setdefault(conn, set()).add(b"tenant-a" if b"tenant-a" in head else b"tenant-b")
    assert sorted(by_conn.values(), key=sorted) == [{b"tenant-a"}, {b"tenant-b"}]
    tenants.verify()
