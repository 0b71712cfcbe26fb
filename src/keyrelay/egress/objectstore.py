"""The egress guard: an in-process forward proxy every storage connection goes through.

obstore (reqwest) resolves names itself, follows redirects (a 307 to another host is followed; verified) and,
without an explicit proxy, honours `HTTP(S)_PROXY` from the environment. So every store is given this guard as
its `proxy_url`, with per-store proxy credentials that bind the store to its one configured endpoint:

* `CONNECT host:port` (https endpoints) and absolute-form requests (http endpoints) are accepted only for the
  (host, port) the store was registered with, so a redirect to any other origin is refused (docs/security.md);
* the host is resolved once and every answer checked against the SSRF policy, and the guard dials exactly a
  checked address (the IP actually connected to is the IP validated, so no DNS rebinding; docs/security.md);
* plain-http requests are forwarded one per connection (`Connection: close`), with the proxy headers removed.

Refusals end the connection or answer `502`; obstore then reports an error and the door answers 502.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from keyrelay.egress import ssrf
from keyrelay.errors import KeyrelayError

HEAD_MAX = 64 * 1024
CHUNK = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
_DROP = (b"proxy-authorization:", b"proxy-connection:", b"connection:", b"keep-alive:")


class EgressGuard:
    def __init__(self, *, allow: Sequence[ssrf.Network]) -> None:
        self._allow = tuple(allow)
        self._secret = secrets.token_hex(16)
        self._routes: dict[str, tuple[str, int]] = {}  # proxy user -> the one (host, port) it may reach
        self._users: dict[tuple[str, int], str] = {}
        self._server: asyncio.Server | None = None
        self.dialed: list[tuple[str, str, int]] = []  # (method, host, port) of every accepted connection
        self._port = 0

    async def proxy_url(self, host: str, port: int) -> str:
        """A proxy URL (with credentials) that lets one store reach `host:port` and nothing else."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=HEAD_MAX)
            self._port = self._server.sockets[0].getsockname()[1]
        route = (host.lower(), port)
        user = self._users.get(route)
        if user is None:
            user = self._users[route] = secrets.token_hex(8)
            self._routes[user] = route
        return f"http://{user}:{self._secret}@127.0.0.1:{self._port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _route(self, head: list[bytes]) -> tuple[str, int] | None:
        for line in head[1:]:
            if line.lower().startswith(b"proxy-authorization:"):
                scheme, _, value = line.split(b":", 1)[1].strip().partition(b" ")
                try:
                    user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return None
                if scheme.lower() == b"basic" and hmac.compare_digest(password, self._secret):
                    return self._routes.get(user)
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        forwarding = False
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            head = raw[:-4].split(b"\r\n")
            method, target, version = head[0].decode("latin-1").split(" ")
            route = self._route(head)
            if method == "CONNECT":
                host, port = _authority(target)
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or parts.hostname is None:
                    raise ValueError("not an absolute http URL")
                host, port = parts.hostname.lower(), parts.port or 80
            if route is None or route != (host, port):
                raise ValueError("destination not registered for this store")
            up_reader, upstream = await self._dial(host, port)
            forwarding = True
            if len(self.dialed) < 10_000:
                self.dialed.append((method, host, port))
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                path = target[target.index("/", len("http://")):] if "/" in target[7:] else "/"
                kept = [h for h in head[1:] if not h.lower().startswith(_DROP)]
                request = [f"{method} {path} {version}".encode("latin-1"), *kept, b"Connection: close"]
                upstream.write(b"\r\n".join(request) + b"\r\n\r\n")
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, ValueError, KeyrelayError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            with contextlib.suppress(OSError, RuntimeError):
                if not forwarding:
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _dial(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            answers = await ssrf.resolve_checked(host, port, allow=self._allow)
            return await asyncio.open_connection(answers[0], port, limit=CHUNK)


def _authority(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("CONNECT target must be host:port")
    return host.strip("[]").lower(), int(port)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()
