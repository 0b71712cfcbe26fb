"""SSRF guard: the address policy (docs/security.md: SSRF) and a resolver enforcing it.

`resolve_checked` returns every answer for a host only if all of them are allowed (IP literals are judged
as they are, odd literal forms are refused before any lookup). The upstream connection pool
(egress/http1.py) dials only such answers and checks each exact address again right before dialing it;
`check_destination` is the same check at source create/update time (a fast 422).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from keyrelay.egress.destination import normalize_host, parse_base_url
from keyrelay.errors import SsrfBlocked, UpstreamUnreachable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
GetAddrInfo = Callable[..., Awaitable[Sequence[tuple[Any, ...]]]]

_DENY_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"))
# listed even where `is_global` already refuses them: the Python in use decides what `is_global` knows (3.11.7
# counts the 6to4 relay anycast 192.88.99.0/24 and the documentation prefix 3fff::/20 of RFC 9637 as global)
_DENY_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")  # DNS64: judged on the embedded IPv4
_BLOCKED = "Upstream address is not allowed"
CHECK_TIMEOUT_S = 5.0  # config-time resolution budget


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
