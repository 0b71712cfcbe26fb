"""`inject_headers`: static headers the operator configured, added to every upstream request."""

from __future__ import annotations

from typing import Any

from keyrelay.pipeline.inject.reveal import plain


def inject(value: dict[str, Any]) -> dict[str, Any]:
    headers = [(str(k), plain(v)) for k, v in value.items()]
    return {"headers": headers, "secrets": list(value.values())}
