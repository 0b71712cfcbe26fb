"""Response shaping for execute: select/exclude dot paths and truncation of long strings."""

from __future__ import annotations

from typing import Any

from keyrelay.connectors import extract

TRUNCATE_AT = 200
MARK = "... [truncated]"


def shape(record: Any, *, select: list[str] | None, exclude: list[str] | None) -> Any:
    """`select_fields` wins over `exclude_fields`."""
    if select:
        return extract.pick(record, select)
    if exclude:
        return extract.drop(record, exclude)
    return record


def truncate(value: Any) -> Any:
    if isinstance(value, str) and len(value) > TRUNCATE_AT:
        return value[:TRUNCATE_AT] + MARK
    if isinstance(value, dict):
        return {k: truncate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [truncate(v) for v in value]
    return value
