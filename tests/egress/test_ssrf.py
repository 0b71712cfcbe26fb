"""SSRF guard: the address table, the resolver, and real connections through the upstream pool (egress/http1.py).

The pool dials only addresses `resolve_checked` validated; the last section proves it against counting servers
on 127.0.0.1 and 127.0.0.2: a refused destination never gets so much as a TCP connection."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyrelay.egress import http1
from keyrelay.egress.http1 import Pool
from keyrelay.egress.ssrf import (
    Network,
    check_destination,
    is_forbidden,
    parse_cidrs,
    resolve_checked,
)
from keyrelay.errors import InvalidRequest, SsrfBlocked, UpstreamUnreachable

LOOPBACK = parse_cidrs("127.0.0.0/8")

FORBIDDEN = [
    "0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1",
    "172.31.255.255", "192.168.0.1", "192.168.255.255", "169.254.169.254", "169.254.0.1", "100.64.0.1",
    "100.127.255.255", "192.0.0.1", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "192.88.99.1", "3fff::1", "3fff:fff:ffff::1",  # 6to4 relay anycast, RFC 9637 documentation: global to 3.11.7
    "::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "::ffff:0:0", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::127.0.0.1", "64:ff9b:1::1", "100::1",
    "2001::1", "2001:0:4136:e378::1", "2001:db8::1", "2002::", "2002:7f00:1::1", "fc00::1", "fd12:3456::1",
    "fe80::1", "fe80::1%eth0", "fe80::1%1", "fec0::1", "ff02::1", "ff0e::1",
    # reserved IPv6 outside the deny lists (IPv4-translated ::ffff:0:0:0/96, unassigned space): only the
    # is_global/is_reserved check refuses these
    "::ffff:0:7f00:1", "::ffff:0:a00:1", "4000::1", "5f00::1", "e000::1", "fe00::1",
    # odd literal forms and non-addresses: never an IP we could judge, so forbidden
    "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "127.0.1", "017700000001",
    "127.000.000.001", "1.2.3.4.5", "[::1]", "localhost", "", " 127.0.0.1", "93.184.216.34%eth0", "::ffff:1.2.3",
]
ALLOWED = [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "151.101.1.69", "2606:4700::1111", "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34", "::ffff:5db8:d822", "64:ff9b::5db8:d822", "64:ff9b::8.8.8.8",
]


@pytest.mark.parametrize("addr", FORBIDDEN)
def test_forbidden_addresses(addr: str) -> None:
    assert is_forbidden(addr)


@pytest.mark.parametrize("addr", ALLOWED)
def test_public_addresses(addr: str) -> None:
    assert not is_forbidden(addr)


@pytest.mark.parametrize(("addr", "forbidden"), [
    ("127.0.0.1", False), ("127.9.9.9", False), ("::ffff:127.0.0.1", False), ("::ffff:7f00:1", False),
    ("10.0.0.1", True), ("::1", True), ("64:ff9b::7f00:1", True), ("::127.0.0.1", True), ("fe80::1%lo", True),
])
def test_allow_cidrs_exempt_only_their_networks(addr: str, forbidden: bool) -> None:
    assert is_forbidden(addr, allow=LOOPBACK) is forbidden


def test_allow_v6_network() -> None:
    allow = parse_cidrs("fd00::/8")
    assert not is_forbidden("fd00::5", allow=allow)
    assert is_forbidden("fc00::5", allow=allow)


def test_parse_cidrs() -> None:
    assert parse_cidrs("") == ()
    assert parse_cidrs("  ") == ()
    assert parse_cidrs(" 127.0.0.0/8 ,10.1.0.0/16,, ::1/128 ") == (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("::1/128"))
    for bad in ("127.0.0.1/8", "nope", "10.0.0.0/33", "127.0.0.0/8;rm"):
        with pytest.raises(ValueError, match="not a network"):
            parse_cidrs(bad)


def fake_dns(*rounds: Sequence[str], calls: list[str] | None = None) -> Any:
    """A getaddrinfo stand-in: call n answers rounds[n] (the last round repeats)."""
    state = {"n": 0}

    async def getaddrinfo(host: str, port: int, *, family: int = 0, type: int = 0, **_: Any) -> list[Any]:
        if calls is not None:
            calls.append(host)
        answers = rounds[min(state["n"], len(rounds) - 1)]
        state["n"] += 1
        if answers == ["NXDOMAIN"]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[Any, ...]] = []
        for ip in answers:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out

    return getaddrinfo


async def test_resolve_literal_and_names() -> None:
    assert await resolve_checked("93.184.216.34", 443) == ["93.184.216.34"]
    assert await resolve_checked("[2606:4700::1111]", 443) == ["2606:4700::1111"]
    dns = fake_dns(["93.184.216.34", "93.184.216.34", "2606:4700::1111"])
    assert await resolve_checked("api.example.com", 443, getaddrinfo=dns) == ["93.184.216.34", "2606:4700::1111"]
    assert await resolve_checked("127.0.0.1", 80, allow=LOOPBACK) == ["127.0.0.1"]


@pytest.mark.parametrize("answers", [
    ["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["2606:4700::1111", "::1"], ["93.184.216.34", "::ffff:a00:1"],
    [], ["169.254.169.254"],
])
async def test_any_forbidden_answer_refuses_the_name(answers: list[str]) -> None:
    with pytest.raises(SsrfBlocked) as info:
        await resolve_checked("api.example.com", 443, getaddrinfo=fake_dns(answers))
    assert info.value.message == "Upstream address is not allowed"


async def test_scope_ids_from_dns_are_refused() -> None:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 3))]

    with pytest.raises(SsrfBlocked):
        await resolve_checked("api.example.com", 443, getaddrinfo=getaddrinfo)


async def test_dns_failure_is_unreachable() -> None:
    with pytest.raises(UpstreamUnreachable, match="could not be resolved"):
        await resolve_checked("nx.example.com", 443, getaddrinfo=fake_dns(["NXDOMAIN"]))


@pytest.mark.parametrize("host", [
    "2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "0x7f000001", "127.0.0.01", "1.2.3.0x4", "api.0x1",
    "api.example.com.", "api..example.com", "fe80::1%eth0", "[fe80::1%25eth0]", "ex ample.com", "\u0430pi.com", "",
])
async def test_odd_literal_forms_never_reach_a_resolver(host: str) -> None:
    calls: list[str] = []
    with pytest.raises(InvalidRequest, match="not a valid host"):
        await resolve_checked(host, 443, getaddrinfo=fake_dns(["93.184.216.34"], calls=calls), allow=LOOPBACK)
    assert calls == []


async def test_check_destination() -> None:
    with pytest.raises(SsrfBlocked):
        await check_destination("http://127.0.0.1:8080/api")
    with pytest.raises(SsrfBlocked):
        await check_destination("https://[::ffff:169.254.169.254]/")
    with pytest.raises(SsrfBlocked):
        await check_destination("http://localhost:8080/")  # /etc/hosts: loopback only
    with pytest.raises(InvalidRequest):
        await check_destination("http://0x7f.0.0.1/")
    with pytest.raises(InvalidRequest):
        await check_destination("ftp://93.184.216.34/")
    await check_destination("http://127.0.0.1:8080/api", allow=LOOPBACK)
    await check_destination("https://93.184.216.34/v1")


# --- real connections through the upstream pool (egress/http1.py) ---

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    host: str
    port: int = 0
    close: bool = False  # answer `Connection: close`, so every request needs a new connection
    connections: int = 0
    requests: list[str] = field(default_factory=list)  # the Host header of each request
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


async def _start(srv: Server) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        srv.tasks.add(task)
        srv.connections += 1
        try:
            async with asyncio.timeout(30):
                for _ in range(100):  # GET requests only: no body to read
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    srv.requests.append(next(v.strip() for n, _, v in (ln.partition(":") for ln in lines[1:])
                                             if n.lower() == "host"))
                    writer.write(CLOSE if srv.close else OK)
                    await writer.drain()
                    if srv.close:
                        break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(handle, srv.host, srv.port)
    srv.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """Two counting servers on the same port: 127.0.0.1 (the real upstream) and 127.0.0.2 (the internal one)."""
    started: list[tuple[asyncio.Server, Server]] = []
    for _ in range(20):
        a = Server("127.0.0.1")
        started.append((await _start(a), a))
        b = Server("127.0.0.2", port=a.port)
        try:
            started.append((await _start(b), b))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    else:
        raise RuntimeError("no free port pair")
    yield a, b
    for server, srv in started:
        server.close()
        for task in srv.tasks:
            task.cancel()
        if srv.tasks:
            await asyncio.wait(srv.tasks, timeout=5)
        await server.wait_closed()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., Pool]]:
    """Make pools (nothing allowed unless told); all closed after the test, before the servers stop."""
    made: list[Pool] = []

    def make(*, allow: Sequence[Network] = (), **kw: Any) -> Pool:
        pool = Pool(allow=allow, max_connections=4, **kw)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def _get(pool: Pool, url: str) -> str:
    resp = await pool.request("GET", url, [], None, deadline=time.monotonic() + 5, read_timeout=5)
    try:
        return (await resp.read()).decode()
    finally:
        resp.release()


async def test_ip_literal_blocked_at_dial_with_zero_connections(
    servers: tuple[Server, Server], pools: Callable[..., Pool]
) -> None:
    a, _ = servers
    dialed: list[str] = []
    with pytest.raises(SsrfBlocked) as info:
        await _get(pools(on_dial=dialed.append), f"http://127.0.0.1:{a.port}/")
    assert info.value.message == "Upstream address is not allowed"
    assert a.connections == 0 and a.requests == [] and dialed == []
    assert await _get(pools(allow=LOOPBACK, on_dial=dialed.append), f"http://127.0.0.1:{a.port}/") == "ok"
    assert a.requests == [f"127.0.0.1:{a.port}"] and dialed == ["127.0.0.1"]


@pytest.mark.parametrize(("host", "error"), [
    ("127.0.0.1", SsrfBlocked), ("[::ffff:127.0.0.1]", SsrfBlocked), ("[::ffff:7f00:1]", SsrfBlocked),
    ("[::1]", SsrfBlocked), ("localhost", SsrfBlocked), ("2130706433", InvalidRequest),
    ("0x7f.0.0.1", InvalidRequest), ("127.1", InvalidRequest), ("0177.0.0.1", InvalidRequest),
    ("0x7f000001", InvalidRequest), ("127.0.0.1.", InvalidRequest), ("[fe80::1%25lo]", InvalidRequest),
])
async def test_every_literal_form_is_refused_through_the_pool(
    servers: tuple[Server, Server], pools: Callable[..., Pool], host: str, error: type[Exception]
) -> None:
    a, _ = servers
    calls: list[str] = []
    dialed: list[str] = []
    pool = pools(getaddrinfo=fake_dns(["127.0.0.1"], calls=calls), on_dial=dialed.append)
    with pytest.raises(error):
        await _get(pool, f"http://{host}:{a.port}/")
    assert a.connections == 0 and dialed == []
    assert calls == (["localhost"] if host == "localhost" else [])  # literals are judged as they are
    if error is InvalidRequest:  # odd forms are never read as an address, whatever is allowed
        with pytest.raises(InvalidRequest):
            await _get(pools(allow=LOOPBACK, getaddrinfo=fake_dns(["127.0.0.1"])), f"http://{host}:{a.port}/")
        assert a.connections == 0


async def test_ip_literals_never_reach_the_resolver(
    servers: tuple[Server, Server], pools: Callable[..., Pool]
) -> None:
    a, _ = servers
    calls: list[str] = []
    dialed: list[str] = []
    pool = pools(allow=LOOPBACK, getaddrinfo=fake_dns(["10.0.0.1"], calls=calls), on_dial=dialed.append)
    assert await _get(pool, f"http://127.0.0.1:{a.port}/") == "ok"
    assert calls == [] and dialed == ["127.0.0.1"] and a.connections == 1


async def test_hostname_blocked_by_resolver_with_zero_connections(
    servers: tuple[Server, Server], pools: Callable[..., Pool]
) -> None:
    a, _ = servers
    dns = fake_dns(["127.0.0.1"])
    with pytest.raises(SsrfBlocked):
        await _get(pools(getaddrinfo=dns), f"http://api.internal.test:{a.port}/")
    assert a.connections == 0
    text = await _get(pools(getaddrinfo=dns, allow=LOOPBACK), f"http://api.internal.test:{a.port}/")
    assert text == "ok" and a.requests == [f"api.internal.test:{a.port}"]  # Host header keeps the name


async def test_dns_failure_surfaces_as_unreachable_not_blocked(
    servers: tuple[Server, Server], pools: Callable[..., Pool]
) -> None:
    a, _ = servers
    with pytest.raises(UpstreamUnreachable) as info:
        await _get(pools(getaddrinfo=fake_dns(["NXDOMAIN"]), allow=LOOPBACK), f"http://nx.test:{a.port}/")
    assert not isinstance(info.value, SsrfBlocked)
    assert info.value.message == "Upstream host could not be resolved"
    assert a.connections == 0


@pytest.mark.parametrize("second", [["127.0.0.2"], ["10.0.0.1"], ["127.0.0.1", "127.0.0.2"]])
async def test_dns_rebinding_is_refused_on_the_next_connection(
    servers: tuple[Server, Server], pools: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch,
    second: list[str],
) -> None:
    a, b = servers
    a.close = True  # no keep-alive: the second request needs a new connection
    # The pool keeps validated answers for http1.DNS_TTL (10 s); with 0 the next connection resolves again,
    # which is the moment a rebinding name would switch to an internal address.
    monkeypatch.setattr(http1, "DNS_TTL", 0.0)
    calls: list[str] = []
    dialed: list[str] = []
    pool = pools(allow=parse_cidrs("127.0.0.1/32"), getaddrinfo=fake_dns(["127.0.0.1"], second, calls=calls),
                 on_dial=dialed.append)
    url = f"http://api.rebind.test:{a.port}/"
    assert await _get(pool, url) == "ok"
    with pytest.raises(SsrfBlocked):
        await _get(pool, url)
    assert calls == ["api.rebind.test"] * 2  # the second connection did look the name up again
    assert len(a.requests) == 1 and b.connections == 0
    assert dialed == ["127.0.0.1"]  # every dialed IP was validated


async def test_dns_cache_only_holds_validated_answers(
    servers: tuple[Server, Server], pools: Callable[..., Pool]
) -> None:
    a, b = servers
    a.close = True
    url = f"http://api.rebind.test:{a.port}/"
    calls: list[str] = []
    pool = pools(allow=parse_cidrs("127.0.0.1/32"), getaddrinfo=fake_dns(["127.0.0.1"], ["127.0.0.2"], calls=calls))
    for _ in range(2):
        assert await _get(pool, url) == "ok"
    assert calls == ["api.rebind.test"] and a.connections == 2 and len(a.requests) == 2 and b.connections == 0
    # a refused answer is not remembered: the next connection asks again
    calls = []
    pool = pools(allow=parse_cidrs("127.0.0.1/32"), getaddrinfo=fake_dns(["10.0.0.1"], ["127.0.0.1"], calls=calls))
    with pytest.raises(SsrfBlocked):
        await _get(pool, url)
    assert await _get(pool, url) == "ok"
    assert calls == ["api.rebind.test"] * 2 and a.connections == 3 and b.connections == 0
