"""Helpers for the adversarial e2e suites: a response watcher that enforces "clean failures" (docs/security.md),
raw-socket HTTP exchanges, and small probes of this process (RSS, TCP sockets of an upstream port).

keyrelay runs in-process (tests/support/keyrelay.py), so /proc/self describes keyrelay too.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

# What must never appear in a body keyrelay produces: stack traces, library exception names, source paths.
LEAK_MARKERS: tuple[bytes, ...] = (
    b"Traceback", b'File "', b".py\"", b".py:", b"site-packages", b"/work/", b"/tmp/", b"/usr/lib",
    b"aiohttp", b"yarl", b"httptools", b"uvicorn", b"starlette", b"sqlalchemy", b"asyncio", b"Errno",
    b"ClientConnectorError", b"ClientConnectorDNSError", b"ServerDisconnectedError", b"ClientPayloadError",
    b"ClientOSError", b"ClientResponseError", b"ServerTimeoutError", b"ContentLengthError", b"TransferEncodingError",
    b"ConnectionResetError", b"ConnectionRefusedError", b"BrokenPipeError", b"TimeoutError", b"CancelledError",
    b"DestinationBlocked", b"OSError", b"ValueError", b"KeyError", b"TypeError", b"RuntimeError", b"AttributeError",
    b"AssertionError", b"UnicodeDecodeError", b"BadStatusLine", b"HttpProcessingError", b"HttpParserError",
    b"ExceptionGroup", b"KeyrelayError", b"PayloadTooLarge", b"UpstreamUnreachable",
)


def leaks(status: int, body: bytes, hosts: Iterable[str] = ()) -> list[str]:
    """Every clean-failure rule (docs/security.md) that (status, body) breaks. `hosts` (host:port of upstreams)
    are checked on errors."""
    found = [f"status {status}"] if status >= 500 and status not in (502, 503, 504) else []
    found += [m.decode() for m in LEAK_MARKERS if m in body]
    if status >= 400:
        found += [h for h in hosts if h.encode() in body]
    return found


@dataclass
class Watcher:
    """Records every response of a client (httpx event hook) and checks all of them at the end of a test."""

    hosts: list[str] = field(default_factory=list)
    seen: list[tuple[int, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def hook(self, r: httpx.Response) -> None:
        if r.is_stream_consumed or not isinstance(r.stream, httpx.SyncByteStream):
            return
        if r.request.extensions.get("kr_stream"):
            self.seen.append((r.status_code, b""))  # a streamed response: the test checks its bytes itself
            return
        r.read()
        self.note(r.status_code, r.content, f"{r.request.method} {r.request.url}")

    async def ahook(self, r: httpx.Response) -> None:
        await r.aread()
        self.note(r.status_code, r.content, f"{r.request.method} {r.request.url}")

    def note(self, status: int, body: bytes, what: str = "") -> None:
        self.seen.append((status, body))
        bad = leaks(status, body, self.hosts)
        if bad:
            self.problems.append(f"{what}: {bad}: {body[:300]!r}")

    def client(self, base_url: str, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=base_url, timeout=20, event_hooks={"response": [self.hook]}, **kw)  # type: ignore[arg-type]

    def async_client(self, base_url: str, **kw: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=20, event_hooks={"response": [self.ahook]},
                                 **kw)  # type: ignore[arg-type]

    def verify(self) -> None:
        assert self.seen, "the watcher saw no response: the test did not exercise keyrelay"
        assert not any(s == 500 for s, _ in self.seen), "keyrelay answered 500"
        assert not self.problems, "\n".join(self.problems)


# --- raw sockets ----------------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool  # the server closed the connection after the response

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def _read_head(sock: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf[:200]!r}")
        buf += chunk
        if len(buf) > 1 << 20:
            raise ConnectionError("response head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _drain(sock: socket.socket, wait: float) -> tuple[bool, bytes]:
    """(whether the peer closed (EOF or reset) within `wait` seconds, the bytes it sent until then)."""
    deadline = time.monotonic() + wait
    data = b""
    while time.monotonic() < deadline and len(data) < 1 << 24:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            extra = sock.recv(65536)
        except TimeoutError:
            return False, data
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not extra:
            return True, data
        data += extra
    return False, data


def read_response(sock: socket.socket, *, timeout: float = 10.0, close_wait: float = 2.0) -> RawResponse:
    deadline = time.monotonic() + timeout
    head, rest = _read_head(sock, deadline)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    body = rest
    if length is not None:
        while len(body) < length:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        extra, body = body[length:], body[:length]
        if extra:
            return RawResponse(status, headers, body, closed=False)
        closed, more = _drain(sock, close_wait)
        return RawResponse(status, headers, body, closed=closed and not more)
    closed, more = _drain(sock, close_wait)  # no length: the body runs until the server closes
    return RawResponse(status, headers, body + more, closed=closed)


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send `data` on a fresh connection to 127.0.0.1:port and read one response (plus whether it then closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer and close before reading everything
        return read_response(sock, timeout=timeout)


# --- probes of this process -------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


_TCP_STATES = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "0A": "LISTEN"}


def tcp_sockets(port: int, *, local: bool = True) -> list[str]:
    """States of the IPv4 TCP sockets whose local (or remote) port is `port`, except listeners and TIME_WAIT."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            addr = cols[1] if local else cols[2]
            state = cols[3]
            if int(addr.split(":")[1], 16) == port and state not in ("0A", "06"):
                out.append(_TCP_STATES.get(state, state))
    return out


def wait_until(check: object, timeout: float, step: float = 0.05) -> bool:
    """Poll `check()` until it is truthy or `timeout` passes (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
