"""JSON parsing with a depth bound, for every JSON keyrelay reads from an agent or an upstream.

`json.loads` raises `RecursionError` (not a `ValueError`) on deeply nested input, and code that walks a parsed
value recursively (schema validation, shaping, re-encoding) can fail the same way on values the parser accepted.
So every entry point parses with `loads` here: input nested deeper than `MAX_DEPTH` raises `TooDeep`, a
`ValueError` like any other malformed JSON, and the caller answers 400 (agent input) or 502 (an upstream's
answer), never 500 (docs/security.md: bounded everything).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 128  # arrays and objects inside one another; far beyond what an API payload needs


class TooDeep(ValueError):
    """JSON nested deeper than the bound."""


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing (TooDeep) input nested deeper than `max_depth`; other errors are ValueErrors too."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise TooDeep(f"JSON is nested more than {max_depth} levels deep") from None
    if not within(value, max_depth):
        raise TooDeep(f"JSON is nested more than {max_depth} levels deep")
    return value


def within(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether an already parsed value nests at most `max_depth` arrays/objects (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > max_depth:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return True
