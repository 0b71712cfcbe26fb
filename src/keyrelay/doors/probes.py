"""`GET /healthz` (the process is up), `GET /readyz` (it can serve safely: docs/errors.md) and `GET /metrics`
(Prometheus text), as plain ASGI. Load balancers and scrapers probe every worker; answering them does not load
the admin framework (app.py builds it with the first route that needs it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keyrelay.errors import KeyrelayError, MethodNotAllowed
from keyrelay.http.asgi import AsgiScope, Receive, Send
from keyrelay.http.render import JSON, dumps, send_error

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def is_probe(path: str) -> bool:
    return path in PATHS


class ProbesDoor:
    def __init__(self, *, ready: Callable[[], Awaitable[None]], metrics: Callable[[], bytes],
                 metrics_content_type: str) -> None:
        self._ready = ready
        self._metrics = metrics
        self._metrics_type = metrics_content_type.encode()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        try:
            if scope["method"] != "GET":
                raise MethodNotAllowed(f"Method {scope['method']} is not allowed on this route",
                                       headers=((b"allow", b"GET"),))
            content_type = JSON.encode()
            if path == "/healthz":
                body = dumps({"status": "ok"})
            elif path == "/readyz":
                await self._ready()  # raises the 503 (or `sealed`) that says what is wrong
                body = dumps({"status": "ready"})
            else:
                body, content_type = self._metrics(), self._metrics_type
        except KeyrelayError as err:
            await send_error(send, err, scope.get("state", {}).get("request_id"))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
