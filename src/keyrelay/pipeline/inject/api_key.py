"""`api_key`: a key in a header (default `Authorization`, optional prefix) or in a query parameter."""

from __future__ import annotations

from typing import Any

from keyrelay.pipeline.inject.reveal import plain


def inject(value: dict[str, Any]) -> dict[str, Any]:
    key = plain(value["value"])
    if value.get("query_param"):
        return {"query": [(plain(value["query_param"]), key)], "secrets": [value["value"]]}
    header = plain(value.get("header") or "Authorization")
    return {"headers": [(header, plain(value.get("prefix", "")) + key)], "secrets": [value["value"]]}
