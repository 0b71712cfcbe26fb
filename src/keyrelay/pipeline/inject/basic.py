"""`basic`: HTTP basic authentication (RFC 7617)."""

from __future__ import annotations

import base64
from typing import Any

from keyrelay.pipeline.inject.reveal import plain


def inject(value: dict[str, Any]) -> dict[str, Any]:
    user, password = plain(value.get("username", "")), value["password"]
    token = base64.b64encode(f"{user}:{plain(password)}".encode()).decode("ascii")
    return {"headers": [("Authorization", f"Basic {token}")], "secrets": [password], "basic": [(user, password)]}
