"""Tests compare opened credentials with what was stored: `revealed` turns every `Secret` in a value into its text
(only tests do this wholesale; the server reveals one value at a time where it injects it)."""

from __future__ import annotations

from typing import Any

from keyrelay.model import Secret


def revealed(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v) for v in value]
    return value
