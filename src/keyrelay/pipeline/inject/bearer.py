"""`bearer_token`: `Authorization: Bearer <token>`."""

from __future__ import annotations

from typing import Any

from keyrelay.pipeline.inject.reveal import plain


def inject(value: Any) -> dict[str, Any]:
    return {"headers": [("Authorization", f"Bearer {plain(value)}")], "secrets": [value]}
