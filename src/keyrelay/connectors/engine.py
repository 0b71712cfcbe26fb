"""Calls one declared action through the same pipeline as the HTTP doors, and reads its JSON answer.

The request is built from the definition (never from agent-chosen URLs, except a `next` URL that the upstream
itself returned, which must still lie under the source's base URL) and sent with `Exchange.send`, so
injection, SSRF guard, timeouts, redaction, rate limits and the request log are the same code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from keyrelay import boundedjson
from keyrelay.connectors import extract
from keyrelay.connectors.definition import Action
from keyrelay.connectors.params import Placed
from keyrelay.egress import destination
from keyrelay.errors import (
    KeyrelayError,
    NotFound,
    RateLimited,
    Unprocessable,
    UpstreamRejected,
    UpstreamUnreachable,
)
from keyrelay.model import Inbound, Tail, Target, Url
from keyrelay.pipeline import build
from keyrelay.pipeline.relay import Exchange

MAX_RESPONSE = 32 * 1024 * 1024
_MESSAGE_PATHS = ("error.message", "error_description", "message", "errors.0.message", "errors.0", "error",
                  "errorMessages.0", "0.message", "errors")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


def request_for(action: Action, placed: Placed, *, next_url: str | None) -> tuple[Target, bytes | None, dict[str, str]]:
    headers = {"accept": "application/json", **action.headers}  # the definition's defaults (lowercase names)
    payload: bytes | None = None
    if placed.body or (action.method in ("POST", "PUT", "PATCH") and action.body == "json"):
        if action.body == "form":
            payload = urlencode(_flatten(placed.body)).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        else:
            payload = json.dumps(placed.body, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
    if next_url is not None:
        return Url(next_url), payload, headers
    query = urlencode(placed.query)
    return Tail(placed.path.lstrip("/"), query), payload, headers


def _flatten(body: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe-style form encoding: nested objects as `a[b]=c`."""
    out: list[tuple[str, str]] = []
    for key, value in body.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            out.extend(_flatten(value, name))
        elif isinstance(value, list):  # `items[0][price]=...`
            out.extend(_flatten({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        elif value is not None:
            out.append((name, str(value)))
    return out


async def call(ex: Exchange, base: Inbound, action: Action, placed: Placed, *, next_url: str | None = None) -> Answer:
    """Send one request for `action` inside the exchange and return the parsed answer; upstream failures become
    KeyrelayErrors (the exchange records the upstream's own status beside the status keyrelay answers)."""
    if next_url is not None and next_url.startswith("/") and not next_url.startswith("//"):
        next_url = _origin(ex) + next_url  # a path from the upstream (Salesforce `nextRecordsUrl`)
    target, payload, headers = request_for(action, placed, next_url=next_url)
    inbound = Inbound(door=base.door, method=action.method, path=base.path, authorization=base.authorization,
                      source=base.source, scope=base.scope, target=target,
                      headers=tuple((k.encode(), v.encode()) for k, v in headers.items()), body=payload,
                      content_length=None if payload is None else len(payload))
    passed = await ex.send(inbound)
    data = await passed.read(MAX_RESPONSE)
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in passed.headers}
    body: Any = None
    if data:
        try:
            body = passed.redactor.redact_json(boundedjson.loads(data))  # escapes decode back to a secret
        except boundedjson.TooDeep:
            raise UpstreamUnreachable("Upstream answered with JSON nested too deeply to process") from None
        except ValueError:
            body = None
    if passed.status >= 400:
        raise upstream_error(passed.status, body, headers_out)
    if data and body is None:
        raise UpstreamUnreachable("Upstream answered with something that is not JSON")
    return Answer(passed.status, body, headers_out)


def _origin(ex: Exchange) -> str:
    default = ex.facts.default_base_url if ex.facts is not None else None
    return destination.parse_base_url(build.base_url_of(ex.source, default)).origin


def _retry_after(value: str) -> int:
    """Integer seconds from `Retry-After` (Shopify sends `2.0`); 60 when it is missing or an HTTP date."""
    try:
        seconds = float(value)
    except ValueError:
        return 60
    return math.ceil(seconds) if math.isfinite(seconds) else 60


def upstream_error(status: int, body: Any, headers: Mapping[str, str]) -> KeyrelayError:
    """The contract's mapping of an upstream failure; the upstream's own message is kept (already redacted)."""
    message = next((m for p in _MESSAGE_PATHS if isinstance(m := extract.get(body, p), str) and m), "")
    detail = f": {message[:300]}" if message else ""
    if status in (401, 403):
        return UpstreamRejected(f"The upstream API refused the stored credentials ({status}){detail}")
    if status == 404:
        return NotFound(f"The upstream API found no such object{detail}")
    if status == 429:
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
        retry = _retry_after(value)
        return RateLimited(f"The upstream API rate limit was hit{detail}", retry_after=max(1, min(retry, 3600)))
    if status < 500:
        return Unprocessable(f"The upstream API rejected the request ({status}){detail}")
    return UpstreamUnreachable(f"The upstream API failed ({status}){detail}")
