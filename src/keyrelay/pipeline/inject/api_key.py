"""`api_key`: a key in a header (default `Authorization`, optional prefix) or in a query parameter."""

from __future__ import annotations

from typing import Any


def inject(value: dict[str, str]) -> dict[str, Any]:
    key = value["value"]
    if value.get("query_param"):
        return {"query": [(value["query_param"], key)], "secrets": [key]}
    header = value.get("header") or "Authorization"
    return {"headers": [(header, value.get("prefix", "") + key)], "secrets": [key]}
