"""A scripted HTTP/1.1 server on 127.0.0.1 that answers each route with the replies queued for it.

For behaviour a real keyrelay does not show on demand, or not yet: an error status with `Retry-After`, a body in
another shape, routes still being built, a peer that drops the connection or never answers. It is a real socket
server (stdlib `http.server` in a thread): the client under test speaks HTTP to it over loopback.

    with ScriptedServer() as peer:
        peer.on("GET", "/api/v1/workspaces", Reply(503), Reply(200, {"data": []}))  # then the last one repeats
        ...
        peer.requests[-1].headers["authorization"]
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # raw body instead of `json`
    drop: bool = False  # close the connection without answering
    cut: int | None = None  # send only this many body bytes (after the full Content-Length), then close
    stall: bool = False  # with `cut`: keep the connection open, silent, instead of closing it
    hang: bool = False  # never answer (until the server stops)


Script = Reply | Callable[[Seen], Reply]


class ScriptedServer:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._routes: dict[tuple[str, str], list[Script]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def on(self, method: str, path: str, *replies: Script) -> None:
        """Queue `replies` for `method path` (path without the query); the last one answers every later request."""
        with self._lock:
            self._routes[(method, path)] = list(replies)

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path.split("?")[0] == path]

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            queue = self._routes.get((seen.method, seen.path.split("?")[0]))
            if not queue:
                return Reply(404, {"error": {"code": "not_found", "message": "No such route", "request_id": "x"}})
            script = queue.pop(0) if len(queue) > 1 else queue[0]
        return script(seen) if callable(script) else script

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = server._next(seen)
                if reply.hang:
                    server._stop.wait(60)
                if reply.drop or reply.hang:
                    self.close_connection = True
                    return
                data = reply.body if reply.body is not None else (
                    b"" if reply.json is None else json.dumps(reply.json).encode())
                self.send_response(reply.status)
                if reply.body is None and reply.json is not None:
                    self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if reply.cut is not None:
                    self.wfile.write(data[:reply.cut])
                    self.wfile.flush()
                    if reply.stall:
                        server._stop.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
