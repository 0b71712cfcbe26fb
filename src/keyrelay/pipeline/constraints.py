"""Token constraints (docs/security.md: narrow tokens): parsing and storing a constraint set, deciding whether a
request satisfies a chain of them, and attenuation.

A token carries a chain of constraint sets: its own and each ancestor's, the root's first. A request must satisfy
every set; a set in observe mode lets a request it would refuse through (the refusal is only recorded). A child
token's chain is its parent's chain plus its own set, so a child can never accept what its parent refuses.

Kinds, each absent = no constraint of that kind:

* `sources`: source ids or slugs;
* `methods`: HTTP methods of every request sent upstream (gateway, request API, and each upstream call of an
  execute or stream query);
* `paths`: globs over the normalized path below the source's base URL (`*` within a segment, `**` across
  segments), checked on the same upstream requests;
* `actions`: `entity.action` (or `entity.*`) for execute and stream query (a stream is its `list` action);
* `expires_at`: the token stops working then;
* `budget`: `{requests, per: "hour" | "day" | null}`, counted by `pipeline/guard.py`;
* `max_body_bytes`: the largest request body sent upstream (a body of unknown length is refused).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from keyrelay.errors import InvalidRequest
from keyrelay.model import Budget, Constraints

KINDS = ("sources", "methods", "paths", "actions", "expires_at", "budget", "max_body_bytes")
PERIODS = {"hour": 3600, "day": 86400}
MAX_ITEMS = 64
MAX_DEPTH = 8  # at most this many attenuations below a root token
_METHOD = re.compile(r"[A-Z]{1,16}")
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}"
_ACTION = re.compile(rf"{_NAME}\.(?:{_NAME}|\*)")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(slots=True)
class Ask:
    """What a constraint looks at in one request (None: not known at this point of the pipeline)."""

    method: str | None = None
    path: str | None = None  # normalized, below the source's base URL, starting with "/"
    body_length: int | None = None
    has_body: bool = False
    action: str | None = None  # "entity.action"


# --- parsing and storing ---------------------------------------------------------------------------------------

def parse(data: Any, *, budget_key: str, now: float) -> Constraints:
    """A constraint set from an API or CLI body (every field optional; unknown fields refused)."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("constraints must be an object", field="constraints")
    unknown = sorted(set(data) - {*KINDS, "mode"})
    if unknown:
        raise InvalidRequest(f"Unknown constraint '{unknown[0]}'; known: {', '.join(KINDS)}, mode",
                             field=f"constraints.{unknown[0]}")
    expires = _expires(data.get("expires_at"), now)
    return Constraints(
        sources=_names(data, "sources", lambda s: 0 < len(s) <= 64),
        methods=_names(data, "methods", lambda s: bool(_METHOD.fullmatch(s)), upper=True),
        paths=_paths(data.get("paths")),
        actions=_names(data, "actions", lambda s: bool(_ACTION.fullmatch(s))),
        expires_at=expires,
        budget=_budget(data.get("budget"), budget_key),
        max_body_bytes=_size(data.get("max_body_bytes")),
        observe=_mode(data.get("mode")),
    )


def _names(data: Mapping[str, Any], kind: str, ok: Callable[[str], bool], *,
           upper: bool = False) -> frozenset[str] | None:
    value = data.get(kind)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InvalidRequest(f"constraints.{kind} must be a list of at most {MAX_ITEMS} strings",
                             field=f"constraints.{kind}")
    out = set()
    for item in value:
        if not isinstance(item, str) or not ok(item.upper() if upper else item):
            raise InvalidRequest(f"constraints.{kind} has an invalid entry", field=f"constraints.{kind}")
        out.add(item.upper() if upper else item)
    return frozenset(out)


def _paths(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InvalidRequest(f"constraints.paths must be a list of at most {MAX_ITEMS} globs",
                             field="constraints.paths")
    out = []
    for item in value:
        if not isinstance(item, str) or not _valid_glob(item):
            raise InvalidRequest("constraints.paths: each glob starts with '/' and holds printable ASCII without "
                                 "'?', '#' or '\\\\'", field="constraints.paths")
        out.append(normalize_path(item))
    return tuple(dict.fromkeys(out))


def _valid_glob(s: str) -> bool:
    """Starts with '/', at most 512 printable ASCII characters, no '?', '#' or '\\', well-formed escapes."""
    return (s.startswith("/") and len(s) <= 512 and all(0x21 <= ord(ch) <= 0x7E for ch in s)
            and not any(ch in s for ch in "?#\\") and "***" not in s and not _BAD_ESCAPE.search(s))


def _expires(value: Any, now: float) -> float | None:
    if value is None:
        return None
    when: float
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest("constraints.expires_at must be an ISO-8601 time", field="constraints.expires_at") \
                from None
        if parsed.tzinfo is None:
            raise InvalidRequest("constraints.expires_at needs a time zone", field="constraints.expires_at")
        when = parsed.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        when = float(value)
    else:
        raise InvalidRequest("constraints.expires_at must be an ISO-8601 time", field="constraints.expires_at")
    if when <= now:
        raise InvalidRequest("constraints.expires_at must be in the future", field="constraints.expires_at")
    return when


def _budget(value: Any, key: str) -> Budget | None:
    if value is None:
        return None
    bad = InvalidRequest('constraints.budget must be {"requests": N >= 1, "per": "hour" | "day" | null}',
                         field="constraints.budget")
    if not isinstance(value, Mapping) or set(value) - {"requests", "per"}:
        raise bad
    n, per = value.get("requests"), value.get("per")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10**12:
        raise bad
    if per is not None and per not in PERIODS:
        raise bad
    return Budget(key=key, requests=n, per=per)


def _size(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**40:
        raise InvalidRequest("constraints.max_body_bytes must be an integer >= 0", field="constraints.max_body_bytes")
    return value


def _mode(value: Any) -> bool:
    if value in (None, "enforce"):
        return False
    if value == "observe":
        return True
    raise InvalidRequest("constraints.mode must be 'enforce' or 'observe'", field="constraints.mode")


def dump(c: Constraints) -> dict[str, Any]:
    """The stored form (JSON-ready; `expires_at` as a number, the budget with its counter key)."""
    out: dict[str, Any] = {}
    if c.sources is not None:
        out["sources"] = sorted(c.sources)
    if c.methods is not None:
        out["methods"] = sorted(c.methods)
    if c.paths is not None:
        out["paths"] = list(c.paths)
    if c.actions is not None:
        out["actions"] = sorted(c.actions)
    if c.expires_at is not None:
        out["expires_at"] = c.expires_at
    if c.budget is not None:
        out["budget"] = {"key": c.budget.key, "requests": c.budget.requests, "per": c.budget.per}
    if c.max_body_bytes is not None:
        out["max_body_bytes"] = c.max_body_bytes
    if c.observe:
        out["mode"] = "observe"
    return out


def load(data: Mapping[str, Any]) -> Constraints:
    """A stored set back (trusted: written by `dump`)."""
    b = data.get("budget")
    return Constraints(
        sources=None if data.get("sources") is None else frozenset(data["sources"]),
        methods=None if data.get("methods") is None else frozenset(data["methods"]),
        paths=None if data.get("paths") is None else tuple(data["paths"]),
        actions=None if data.get("actions") is None else frozenset(data["actions"]),
        expires_at=data.get("expires_at"),
        budget=None if b is None else Budget(key=b["key"], requests=b["requests"], per=b["per"]),
        max_body_bytes=data.get("max_body_bytes"),
        observe=data.get("mode") == "observe",
    )


def view(c: Constraints) -> dict[str, Any]:
    """The public form: as given (`expires_at` in ISO-8601, the budget without its counter key)."""
    out = dump(c)
    if c.expires_at is not None:
        out["expires_at"] = dt.datetime.fromtimestamp(c.expires_at, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    if c.budget is not None:
        out["budget"] = {"requests": c.budget.requests, "per": c.budget.per}
    out["mode"] = "observe" if c.observe else "enforce"
    return out


# --- matching --------------------------------------------------------------------------------------------------

def normalize_path(path: str) -> str:
    """One spelling per path: escapes of unreserved characters decoded, other escapes upper case, a leading '/'."""
    if "%" not in path:
        return path if path.startswith("/") else "/" + path

    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    out = _ESCAPE.sub(fix, path)
    return out if out.startswith("/") else "/" + out


def _glob(pattern: str) -> str:
    parts = re.split(r"(\*\*|\*)", pattern)
    return "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)


@lru_cache(maxsize=1024)
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for a whole list: `fullmatch` tries each alternative until one spans the path."""
    return re.compile("|".join(f"(?:{_glob(p)})" for p in patterns) or "(?!)")


def path_matches(patterns: Sequence[str], path: str) -> bool:
    return _globs(tuple(patterns)).fullmatch(path) is not None


def source_ok(c: Constraints, source_id: str, slug: str) -> bool:
    return c.sources is None or source_id in c.sources or slug in c.sources


def action_ok(c: Constraints, action: str) -> bool:
    if c.actions is None:
        return True
    entity = action.split(".", 1)[0]
    return action in c.actions or f"{entity}.*" in c.actions


def refusal(c: Constraints, ask: Ask) -> str | None:
    """The kind of the first constraint of `c` that `ask` breaks, or None."""
    if c.methods is not None and ask.method is not None and ask.method not in c.methods:
        return "methods"
    if c.paths is not None and ask.path is not None and not path_matches(c.paths, ask.path):
        return "paths"
    if c.max_body_bytes is not None and ask.has_body and (
            ask.body_length is None or ask.body_length > c.max_body_bytes):
        return "max_body_bytes"
    if ask.action is not None and not action_ok(c, ask.action):
        return "actions"
    return None


def judge(chain: Sequence[Constraints], test: Callable[[Constraints], str | None]) -> tuple[str | None, str | None]:
    """(the kind an enforcing set refuses by, the first kind an observing set would have refused by)."""
    observed = None
    for c in chain:
        kind = test(c)
        if kind is None:
            continue
        if not c.observe:
            return kind, observed
        observed = observed or kind
    return None, observed


def accepts(chain: Sequence[Constraints], ask: Ask, *, source_id: str, slug: str) -> bool:
    """Whether a request passes every enforcing set of `chain` (budgets and expiry aside)."""
    refused, _ = judge(chain, lambda c: None if source_ok(c, source_id, slug) else "sources")
    if refused is None:
        refused, _ = judge(chain, lambda c: refusal(c, ask))
    return refused is None


# --- attenuation -----------------------------------------------------------------------------------------------

def earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def chain_expiry(chain: Sequence[Constraints]) -> float | None:
    return earliest(*(c.expires_at for c in chain))


def child_expiry(parent_expires_at: float | None, child: Constraints, *, now: float,
                 expires_in: float | None) -> float | None:
    """A child expires no later than its parent, its own `expires_at`, or `now + expires_in`."""
    return earliest(parent_expires_at, child.expires_at, None if expires_in is None else now + expires_in)


def attenuate(chain: Sequence[Constraints], child: Constraints) -> tuple[Constraints, ...]:
    """A child's chain: every ancestor's set, then its own."""
    if len(chain) >= MAX_DEPTH + 1:
        raise InvalidRequest(f"A token can be attenuated at most {MAX_DEPTH} times", field="constraints")
    return (*chain, child)
