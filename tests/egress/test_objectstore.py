"""The egress guard: a store reaches its one endpoint through checked addresses, and follows no redirect."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from keyrelay.egress.objectstore import EgressGuard
from keyrelay.errors import KeyrelayError
from keyrelay.files import reading
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Credentials
from support.storage import make_source

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


class Server:
    """A tiny HTTP server counting requests; optionally redirecting every request to `redirect`."""

    def __init__(self, redirect: str | None = None) -> None:
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                if redirect:
                    self.send_response(307)
                    self.send_header("Location", redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.send_header("Last-Modified", "Sun, 22 Nov 2026 16:36:19 GMT")
                self.send_header("ETag", '"e"')
                self.end_headers()
                self.wfile.write(b"hi")

            do_HEAD = do_GET

            def log_message(self, *args: Any) -> None:
                return

        self.hits = hits
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    elsewhere = Server()
    redirecting = Server(redirect=elsewhere.url)
    yield redirecting, elsewhere
    redirecting.close()
    elsewhere.close()


async def test_redirects_to_another_origin_are_not_followed(servers: tuple[Server, Server]) -> None:
    redirecting, elsewhere = servers
    factory = StoreFactory(allow=LOOPBACK, local_roots=())
    src = make_source("s3", {"bucket": "files", "endpoint_url": redirecting.url})
    fs = await factory.open(src, Credentials({"access_key_id": "a", "secret_access_key": "b"}))
    with pytest.raises(KeyrelayError) as info:
        await reading.open_file(fs, "x", range_header=None, max_span=10)
    assert info.value.status == 502
    assert redirecting.hits and elsewhere.hits == []
    assert {host for _, host, _ in factory.guard.dialed} == {"127.0.0.1"}


async def test_the_guard_serves_only_registered_routes_with_its_credentials(servers: tuple[Server, Server]) -> None:
    _, target = servers
    port = int(target.url.rsplit(":", 1)[1])
    guard = EgressGuard(allow=LOOPBACK)
    proxy = await guard.proxy_url("127.0.0.1", port)
    creds = proxy.split("//")[1].split("@")[0]
    guard_port = int(proxy.rsplit(":", 1)[1])

    async def ask(line: str, auth: str | None) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", guard_port)
        head = line + "\r\n" + (f"Proxy-Authorization: Basic {auth}\r\n" if auth else "") + "\r\n"
        writer.write(head.encode())
        if line.startswith("CONNECT"):
            first = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in first:
                writer.close()
                return first
            writer.write(b"GET /via-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data

    good = base64.b64encode(creds.encode()).decode()
    wrong = base64.b64encode(creds.split(":")[0].encode() + b":nope").decode()
    assert b" 200 " in await ask(f"GET http://127.0.0.1:{port}/plain HTTP/1.1", good)
    assert b"hi" in await ask(f"CONNECT 127.0.0.1:{port} HTTP/1.1", good)
    assert target.hits == ["/plain", "/via-tunnel"]
    plain = f"GET http://127.0.0.1:{port}/x HTTP/1.1"
    for line, auth in [(plain, None), (plain, wrong), (plain.replace("127.0.0.1", "127.0.0.2"), good),
                       (f"CONNECT 127.0.0.1:{port + 1} HTTP/1.1", good), ("GET /relative HTTP/1.1", good)]:
        assert b" 502 " in await ask(line, auth)
    refusing = EgressGuard(allow=())  # production policy: loopback is never dialed
    proxy = await refusing.proxy_url("127.0.0.1", port)
    guard_port = int(proxy.rsplit(":", 1)[1])
    good = base64.b64encode(proxy.split("//")[1].split("@")[0].encode()).decode()
    assert b" 502 " in await ask(f"GET http://127.0.0.1:{port}/x HTTP/1.1", good)
    assert target.hits == ["/plain", "/via-tunnel"] and refusing.dialed == []
    await guard.close()
    await refusing.close()
