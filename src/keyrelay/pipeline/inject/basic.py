"""`basic`: HTTP basic authentication (RFC 7617)."""

from __future__ import annotations

import base64
from typing import Any


def inject(value: dict[str, str]) -> dict[str, Any]:
    user, password = value.get("username", ""), value["password"]
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"headers": [("Authorization", f"Basic {token}")], "secrets": [password],
            "basic": [(user, password)]}
