"""`bearer_token`: `Authorization: Bearer <token>`."""

from __future__ import annotations

from typing import Any


def inject(value: str) -> dict[str, Any]:
    return {"headers": [("Authorization", f"Bearer {value}")], "secrets": [value]}
