"""CSRF tokens for every state-changing form: an HMAC of the session's own id and the form's purpose, so a token
is useless outside the session (and the form) it was issued for, and needs no storage."""

from __future__ import annotations

import hashlib
import hmac


class Csrf:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, session_id: str, purpose: str) -> str:
        return hmac.new(self._key, f"{purpose}\x00{session_id}".encode(), hashlib.sha256).hexdigest()

    def valid(self, session_id: str, purpose: str, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(self.token(session_id, purpose), token)
