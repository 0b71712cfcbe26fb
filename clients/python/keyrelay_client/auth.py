"""Bearer authentication as `httpx.Auth`, so every client the SDK builds (including `Keyrelay.http()`'s) sends it.

`ApplicationAuth` turns client credentials into application tokens (`POST /api/v1/applications/token`; they
live 900 s), caches one, and fetches the next before the cached one expires: at most `renew_before` seconds
early, and never earlier than half its lifetime. One fetch at a time per auth object (a lock per kind of
caller), so concurrent requests share one token. If keyrelay answers `401 unauthenticated` to a request made
with a cached token (revoked, or the server's token store was reset), the token is dropped and the request sent
once more with a fresh one, provided its body can be sent again.

Time comes from the injected `clock` (seconds, monotonic), so tests move it instead of waiting.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Callable, Generator

import httpx

from keyrelay_client.errors import UnexpectedResponse, error_from_response

TOKEN_PATH = "/api/v1/applications/token"  # noqa: S105 - a route


class BearerAuth(httpx.Auth):
    """A fixed bearer credential: an API key or a token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


class ApplicationAuth(httpx.Auth):
    """Application tokens from client credentials, cached and renewed before expiry."""

    def __init__(self, base_url: httpx.URL, client_id: str, client_secret: str, *,
                 clock: Callable[[], float], renew_before: float = 60.0) -> None:
        self._url = base_url.copy_with(path=base_url.path.rstrip("/") + TOKEN_PATH)
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._renew_before = renew_before
        self._token: str | None = None
        self._renew_at = 0.0
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"ApplicationAuth(client_id={self._client_id!r})"

    # --- the shared rules ---------------------------------------------------------------------------------------

    def _cached(self) -> str | None:
        return self._token if self._token is not None and self._clock() < self._renew_at else None

    def _token_request(self) -> httpx.Request:
        body = json.dumps({"client_id": self._client_id, "client_secret": self._client_secret}).encode()
        return httpx.Request("POST", self._url, content=body, headers={"Content-Type": "application/json"})

    def _accept(self, response: httpx.Response) -> str:
        """Store the token of a token response (or raise its error); the response body is already read."""
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.headers, response.content)
        try:
            found = json.loads(response.content)
            token, lifetime = found["access_token"], found["expires_in"]
        except (ValueError, TypeError, KeyError):
            raise UnexpectedResponse("The token response has no access_token and expires_in",
                                     status=response.status_code) from None
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise UnexpectedResponse("The token response has no access_token and expires_in",
                                     status=response.status_code)
        self._token = token
        self._renew_at = self._clock() + lifetime - min(self._renew_before, lifetime / 2)
        return token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = None

    @staticmethod
    def _authorized(request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    @staticmethod
    def _rejected(request: httpx.Request, response: httpx.Response) -> bool:
        """keyrelay's own 401 (not an upstream's, passed through by the gateway), on a request we can resend."""
        if response.status_code != 401 or not isinstance(request.stream, httpx.ByteStream):
            return False
        return error_from_response(401, response.headers, response.content).code == "unauthenticated"

    # --- the two ways to drive them -----------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        for attempt in (1, 2):
            with self._thread_lock:
                token = self._cached()
                if token is None:
                    fetched = yield self._token_request()
                    fetched.read()
                    token = self._accept(fetched)
            response = yield self._authorized(request, token)
            if attempt == 2 or response.status_code != 401:
                return
            response.read()
            if not self._rejected(request, response):
                return
            with self._thread_lock:
                self._forget(token)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        for attempt in (1, 2):
            async with self._async_lock:
                token = self._cached()
                if token is None:
                    fetched = yield self._token_request()
                    await fetched.aread()
                    token = self._accept(fetched)
            response = yield self._authorized(request, token)
            if attempt == 2 or response.status_code != 401:
                return
            await response.aread()
            if not self._rejected(request, response):
                return
            async with self._async_lock:
                self._forget(token)

