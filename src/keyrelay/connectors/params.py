"""Typed action parameters: validate what the agent sent and place each value in the upstream request."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from keyrelay.connectors.definition import Action, Param
from keyrelay.errors import Unprocessable

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
    "object": (dict,),
}
MAX_STRING = 8192


@dataclass
class Placed:
    path: str  # still relative to the base URL, values percent-encoded
    query: list[tuple[str, str]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


def check_value(p: Param, value: Any) -> Any:
    kinds = _PY_TYPES[p.type]
    if isinstance(value, bool) and p.type in ("integer", "number"):
        raise Unprocessable(f"Parameter '{p.name}' must be of type {p.type}", field=f"params.{p.name}")
    if p.type == "integer" and isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)  # agents often send numbers as strings
    if p.type == "array" and isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]  # one value where a list is expected
    if not isinstance(value, kinds):
        raise Unprocessable(f"Parameter '{p.name}' must be of type {p.type}", field=f"params.{p.name}")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise Unprocessable(f"Parameter '{p.name}' is too long", field=f"params.{p.name}")
    if p.enum is not None and any(v not in p.enum for v in (value if isinstance(value, list) else [value])):
        allowed = ", ".join(map(str, p.enum))
        raise Unprocessable(f"Parameter '{p.name}' must be one of: {allowed}", field=f"params.{p.name}")
    if isinstance(value, int | float) and not isinstance(value, bool) and _out_of_range(p, value):
        raise Unprocessable(f"Parameter '{p.name}' is out of range", field=f"params.{p.name}")
    return value


def _out_of_range(p: Param, value: float) -> bool:
    return (p.minimum is not None and value < p.minimum) or (p.maximum is not None and value > p.maximum)


def check_params(action: Action, given: Mapping[str, Any], *, config: Mapping[str, Any] | None = None,
                 ignore_unknown: bool = False) -> dict[str, Any]:
    """Validated params; unknown (unless ignored) or missing ones -> 422 naming them and listing the valid ones.

    A param the agent leaves out takes its declared `default`, where `{field}` names a field of the source's
    config (e.g. a GitHub source configured with an owner).
    """
    given = {k: v for k, v in given.items() if v is not None}
    for name, p in action.params.items():
        if name not in given and p.default is not None:
            value = _default(p.default, config or {})
            if value is not None:
                given[name] = value
    unknown = [] if ignore_unknown else sorted(set(given) - set(action.params))
    if unknown:
        valid = ", ".join(sorted(action.params)) or "(none)"
        raise Unprocessable(f"Unknown parameter '{unknown[0]}' for {action.name}; valid parameters: {valid}",
                            field=f"params.{unknown[0]}")
    out: dict[str, Any] = {}
    for name, p in action.params.items():
        if name not in given:
            if p.required:
                raise Unprocessable(f"Missing required parameter '{name}'", field=f"params.{name}")
            continue
        out[name] = check_value(p, given[name])
    return out


def _default(value: Any, config: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return config.get(value[1:-1])
    return value


def set_nested(body: dict[str, Any], dotted: str, value: Any) -> None:
    """`variables.owner` -> body["variables"]["owner"] (GraphQL variables, nested JSON bodies)."""
    parts = dotted.split(".")
    node = body
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _wire(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_wire(v) for v in value)
    return str(value)


def _query_pairs(name: str, value: Any) -> list[tuple[str, str]]:
    """An object in the query string is sent deepObject style: `{"gte": 1}` as `name[gte]=1` (Stripe)."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() if v is not None for pair in _query_pairs(f"{name}[{k}]", v)]
    return [(name, _wire(value))]


def place(action: Action, values: Mapping[str, Any]) -> Placed:
    """Substitute path params (each a single encoded segment) and sort the rest into query and body.

    Params declared `in: none` are validated but never sent (e.g. a `limit` that Airbyte clients send to an
    API without a page size).
    """
    path = action.path
    placed = Placed(path="", query=[(k, _wire(v)) for k, v in action.static_query.items()],
                    body=copy.deepcopy(dict(action.static_body)))
    for name, value in values.items():
        p = action.params[name]
        if p.location == "none":
            continue
        if p.location == "path":
            path = path.replace("{" + p.upstream + "}", quote(_wire(value), safe=""))
        elif p.location == "query" and p.explode and isinstance(value, list):
            placed.query.extend((p.upstream, _wire(v)) for v in value)  # `keys=A&keys=B` (Jira, Stripe `ids[]`)
        elif p.location == "query":
            placed.query.extend(_query_pairs(p.upstream, value))
        else:
            set_nested(placed.body, p.upstream, value)
    placed.path = path
    return placed
