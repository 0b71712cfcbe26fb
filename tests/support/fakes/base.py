"""A real aiohttp application served on 127.0.0.1 in its own thread, recording every request it gets."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


class FakeApi:
    """Subclasses add routes in `routes()`; `self.requests` lists what arrived; `fail_next` injects errors."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.fail_next: list[tuple[int, dict[str, str], Any]] = []  # (status, headers, json body)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        return True

    def refused(self, request: web.Request) -> web.Response | None:
        """An answer the API gives before it looks at credentials (e.g. GitHub without a User-Agent), or None."""
        return None

    def unauthorized(self) -> web.Response:
        return web.json_response({"error": "unauthorized"}, status=401)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        if self.fail_next:
            status, headers, payload = self.fail_next.pop(0)
            return web.json_response(payload, status=status, headers=headers)
        if (refusal := self.refused(request)) is not None:
            return refusal
        if not self.authorized(request):
            return self.unauthorized()
        result: web.StreamResponse = await handler(request)
        return result

    def __enter__(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application(middlewares=[self._middleware])
            self.routes(app)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
