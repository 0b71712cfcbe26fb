"""SSRF guard: the address policy (security.md Appendix A) plus a resolver and dialer enforcing it.

Use `guarded_connector()` for the upstream `ClientSession` (with `trust_env=False`, so no proxy bypasses it).
aiohttp 3.14 never calls the resolver for IP-literal hosts, so the connector also installs `DialGuard` as its
`socket_factory`: every socket is checked against the policy right before it connects.

How the upstream module recognises a refusal (aiohttp 3.14): resolver errors surface as
`aiohttp.ClientConnectorDNSError`, dial-time errors as `aiohttp.ClientConnectorError` (the DNS error is a
subclass); both keep the original exception in `exc.os_error` (also `exc.__cause__`). So:
`except aiohttp.ClientConnectorError as exc:` -> `SsrfBlocked` if
`isinstance(exc.os_error, DestinationBlocked)`, else `UpstreamUnreachable`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from keyrelay.errors import KeyrelayError, SsrfBlocked, UpstreamUnreachable
from keyrelay.pipeline.destination import normalize_host, parse_base_url

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
GetAddrInfo = Callable[..., Awaitable[Sequence[tuple[Any, ...]]]]
OnResolved = Callable[[str, list[str]], None]
OnDial = Callable[[str], None]

_DENY_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"))
_DENY_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")  # DNS64: judged on the embedded IPv4
_BLOCKED = "Upstream address is not allowed"
CHECK_TIMEOUT_S = 5.0  # config-time resolution budget


class DestinationBlocked(OSError):
    """Raised inside aiohttp's connector when the guard refuses an address; report it as `SsrfBlocked`."""

    def __init__(self) -> None:
        super().__init__(_BLOCKED)  # fixed text: aiohappyeyeballs keeps the type only when messages agree


def parse_cidrs(text: str) -> tuple[Network, ...]:
    """Parse KEYRELAY_UPSTREAM_ALLOW_CIDRS: comma-separated networks, whitespace tolerated."""
    nets: list[Network] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ValueError(f"{item!r} is not a network such as 127.0.0.0/8 (no host bits set)") from None
    return tuple(nets)


def is_forbidden(addr: str, *, allow: Sequence[Network] = ()) -> bool:
    """True unless `addr` is a public unicast IP (or inside an operator-allowed network)."""
    if "%" in addr:  # zone ids (fe80::1%eth0) are never allowed
        return True
    try:
        return _forbidden(ipaddress.ip_address(addr), allow)
    except ValueError:
        return True


def _forbidden(a: Address, allow: Sequence[Network]) -> bool:
    if any(a.version == n.version and a in n for n in allow):
        return False
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on the wire
            return _forbidden(a.ipv4_mapped, allow)
        if a in _NAT64_WKP:  # a translator dials the embedded IPv4; `allow` does not extend to it
            return _forbidden(ipaddress.IPv4Address(a.packed[-4:]), ())
        if any(a in n for n in _DENY_V6):
            return True
    elif any(a in n for n in _DENY_V4):
        return True
    return (not a.is_global) or a.is_multicast or a.is_reserved


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ip_of(sockaddr: tuple[Any, ...]) -> str:
    ip = str(sockaddr[0])
    return f"{ip}%{sockaddr[3]}" if len(sockaddr) >= 4 and sockaddr[3] else ip  # keep the scope id visible


async def resolve_checked(
    host: str, port: int, *, allow: Sequence[Network] = (), getaddrinfo: GetAddrInfo | None = None,
    family: int = socket.AF_UNSPEC,
) -> list[str]:
    """Resolve once; return every answer (deduped, in order) or raise if any answer is forbidden."""
    name = normalize_host(host)  # InvalidRequest for 2130706433, 0x7f.1, trailing dots, ...
    if _is_ip(name):
        answers = [name]
    else:
        lookup = getaddrinfo or asyncio.get_running_loop().getaddrinfo
        try:
            infos = await lookup(name, port, family=family, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UpstreamUnreachable("Upstream host could not be resolved") from exc
        answers = list(dict.fromkeys(_ip_of(info[4]) for info in infos))
    if not answers or any(is_forbidden(a, allow=allow) for a in answers):
        raise SsrfBlocked(_BLOCKED)
    return answers


async def check_destination(url: str, *, allow: Sequence[Network] = ()) -> None:
    """Config-time check (fast 422): the URL is well-formed and resolves only to allowed addresses."""
    base = parse_base_url(url)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await resolve_checked(base.host, base.port, allow=allow)
    except TimeoutError:
        raise UpstreamUnreachable("Upstream host could not be resolved") from None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver returning only validated answers; refuses a name if any answer is forbidden."""

    def __init__(
        self, *, allow: Sequence[Network] = (), on_resolved: OnResolved | None = None,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self._allow = tuple(allow)
        self._on_resolved = on_resolved
        self._getaddrinfo = getaddrinfo

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            ips = await resolve_checked(host, port, allow=self._allow, getaddrinfo=self._getaddrinfo,
                                        family=family)
        except UpstreamUnreachable as exc:
            raise socket.gaierror(socket.EAI_NONAME, "Upstream host could not be resolved") from exc
        except KeyrelayError as exc:  # SsrfBlocked, or InvalidRequest for an odd host form
            raise DestinationBlocked() from exc
        if self._on_resolved is not None:
            self._on_resolved(host, list(ips))
        return [_result(host, ip, port) for ip in ips]

    async def close(self) -> None:
        return None


def _result(host: str, ip: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return ResolveResult(hostname=host, host=ip, port=port, family=family, proto=0,
                         flags=socket.AI_NUMERICHOST)


class DialGuard:
    """aiohttp `socket_factory`: checks the exact address about to be dialed (covers IP-literal hosts)."""

    def __init__(self, *, allow: Sequence[Network] = (), on_dial: OnDial | None = None) -> None:
        self._allow = tuple(allow)
        self._on_dial = on_dial

    def __call__(self, addr_info: tuple[int, int, int, str, tuple[Any, ...]]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = _ip_of(sockaddr)
        if is_forbidden(ip, allow=self._allow):
            raise DestinationBlocked()
        if self._on_dial is not None:
            self._on_dial(ip)
        return socket.socket(family=family, type=type_, proto=proto)


def guarded_connector(
    *, allow: Iterable[Network] = (), on_resolved: OnResolved | None = None,
    on_dial: OnDial | None = None, getaddrinfo: GetAddrInfo | None = None, **kwargs: Any,
) -> aiohttp.TCPConnector:
    """A TCPConnector whose resolver and dialer both enforce the policy. Extra kwargs go to TCPConnector.

    aiohttp's DNS cache (default on, 10 s) only ever holds validated answers, so it is safe; pass
    `use_dns_cache=False` to re-resolve (and re-check) on every new connection.
    """
    allowed = tuple(allow)
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow=allowed, on_resolved=on_resolved, getaddrinfo=getaddrinfo),
        socket_factory=DialGuard(allow=allowed, on_dial=on_dial), **kwargs)
