"""`inject_headers`: static headers the operator configured, added to every upstream request."""

from __future__ import annotations

from typing import Any


def inject(value: dict[str, str]) -> dict[str, Any]:
    headers = [(str(k), str(v)) for k, v in value.items()]
    return {"headers": headers, "secrets": [v for _, v in headers]}
