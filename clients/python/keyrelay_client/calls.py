"""One keyrelay call described as data, and operations built from them.

An *operation* is a generator that yields `Call`s and receives each one's `httpx.Response`, then returns its
result. It never does I/O itself, so the same operation runs on `SyncRunner` and `AsyncRunner`
(`keyrelay_client.runner`): that is how `Keyrelay` and `AsyncKeyrelay` share every route, body and parsing
rule. A failed call is thrown into the operation as a `KeyrelayError`, which it may catch.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx

from keyrelay_client.errors import UnexpectedResponse

T = TypeVar("T")
Operation = Generator["Call", httpx.Response, T]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_NO_BODY: Any = object()


class Sink(Protocol):
    """Receives a streamed response body (e.g. a file being downloaded) chunk by chunk."""

    def open(self, response: httpx.Response) -> None: ...

    def write(self, chunk: bytes) -> None: ...

    def close(self, *, complete: bool) -> None: ...


@dataclass(frozen=True)
class Call:
    """One HTTP request to keyrelay. `path` is already percent-encoded (build it with `path()`).

    `idempotent` (default: by method, RFC 9110) decides whether a failure after the request may have been sent
    is retried. With a `sink`, the body streams into it instead of being read into memory.
    """

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = _NO_BODY
    headers: Mapping[str, str] | None = None
    idempotent: bool | None = None
    timeout: httpx.Timeout | None = None
    sink: Sink | None = None

    @property
    def retry_safe(self) -> bool:
        return self.method in IDEMPOTENT_METHODS if self.idempotent is None else self.idempotent

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        extra: dict[str, Any] = {}
        if self.json is not _NO_BODY:
            extra["content"] = json.dumps(self.json, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **(self.headers or {})}
        else:
            headers = dict(self.headers or {})
        if self.timeout is not None:
            extra["timeout"] = self.timeout
        params = None if self.params is None else {k: str(v) for k, v in self.params.items()}
        return client.build_request(self.method, self.path, params=params, headers=headers, **extra)


def path(*segments: str) -> str:
    """`/`-joined segments, each percent-encoded as one segment: `path("api", "v1", "sources", id)`."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def file_path(value: str) -> str:
    """A file path or prefix for the files routes: each `/`-separated segment percent-encoded."""
    return "/".join(quote(s, safe="") for s in value.split("/"))


def data(response: httpx.Response) -> Any:
    """The JSON body of a successful response."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise UnexpectedResponse(f"Expected a JSON body from {response.request.method} {response.request.url.path}",
                                 status=response.status_code,
                                 request_id=response.headers.get("x-request-id")) from None


def obj(response: httpx.Response) -> dict[str, Any]:
    """The JSON object body of a successful response."""
    found = data(response)
    if not isinstance(found, dict):
        raise UnexpectedResponse("Expected a JSON object", status=response.status_code,
                                 request_id=response.headers.get("x-request-id"))
    return found


def items(response: httpx.Response, key: str = "data") -> list[dict[str, Any]]:
    """The list of objects under `key` (admin lists are `{"data": [...]}`)."""
    found = obj(response).get(key)
    if not isinstance(found, list) or not all(isinstance(x, dict) for x in found):
        raise UnexpectedResponse(f"Expected a list of objects under '{key}'", status=response.status_code,
                                 request_id=response.headers.get("x-request-id"))
    return found
