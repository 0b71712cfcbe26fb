"""Opaque, signed page tokens bound to a source, a stream and the filters they were issued for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from keyrelay.errors import InvalidRequest

MAX_TOKEN = 4096


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()[:24]).decode()

    def issue(self, *, source_id: str, stream: str, filters: Mapping[str, Any], state: Mapping[str, Any]) -> str:
        body = {"s": source_id, "t": stream, "f": _digest(filters), "p": dict(state)}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def read(self, token: Any, *, source_id: str, stream: str, filters: Mapping[str, Any]) -> dict[str, Any]:
        """The pagination state in a token, or 400 if it was tampered with or issued for something else."""
        bad = InvalidRequest("page_token is invalid or belongs to another query", field="page_token")
        if not isinstance(token, str) or len(token) > MAX_TOKEN or "." not in token:
            raise bad
        data, _, sig = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        except ValueError:
            raise bad from None
        if not hmac.compare_digest(self._sign(payload), sig):
            raise bad
        body = json.loads(payload)
        if body.get("s") != source_id or body.get("t") != stream or body.get("f") != _digest(filters):
            raise bad
        state = body.get("p")
        if not isinstance(state, dict):
            raise bad
        return state
