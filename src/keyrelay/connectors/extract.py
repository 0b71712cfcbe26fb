"""Dot paths into JSON documents (`data`, `records.cursor`, `$.users`; "" or "$" is the whole document)."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def split(path: str) -> list[str]:
    path = path.strip()
    if path.startswith("$"):
        path = path[1:]
    return [p for p in path.split(".") if p]


def get(doc: Any, path: str, default: Any = None) -> Any:
    cur = doc
    for part in split(path):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


def pick(record: Any, paths: list[str]) -> Any:
    """Only the given keys or dot paths of a record (missing ones are left out)."""
    if not isinstance(record, dict):
        return record
    out: dict[str, Any] = {}
    for path in paths:
        if path in record:  # a literal top-level key (which may contain dots) before a dot path
            out[path] = record[path]
            continue
        parts = split(path)
        value = get(record, path, _MISSING)
        if value is _MISSING or not parts:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def drop(record: Any, paths: list[str]) -> Any:
    """The record without the given keys or dot paths."""
    if not isinstance(record, dict):
        return record
    out = _copy(record)
    for path in paths:
        if path in out:
            del out[path]
            continue
        parts = split(path)
        node = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        else:
            if isinstance(node, dict) and parts:
                node.pop(parts[-1], None)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
