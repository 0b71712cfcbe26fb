"""Credential injection: one module per credential kind, applied in the order of `KINDS`.

Each kind turns its credential field into an `Injection`: headers to set (replacing any agent header of the
same name), query parameters to add (agent parameters of the same name are dropped first), and the exact
secret values the redaction step must scrub from responses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.pipeline.inject import api_key, basic, bearer, static


@dataclass
class Injection:
    headers: list[tuple[str, str]] = field(default_factory=list)
    query: list[tuple[str, str]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list, repr=False)
    basic: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def merge(self, other: Injection) -> None:
        names = {n.lower() for n, _ in other.headers}
        self.headers = [h for h in self.headers if h[0].lower() not in names] + other.headers
        self.query += other.query
        self.secrets += other.secrets
        self.basic += other.basic


Kind = Callable[[Any], Injection]

# credential field -> injector; order matters: later kinds win on the same header name
KINDS: dict[str, Kind] = {
    "inject_headers": lambda v: Injection(**static.inject(v)),
    "basic": lambda v: Injection(**basic.inject(v)),
    "bearer_token": lambda v: Injection(**bearer.inject(v)),
    "api_key": lambda v: Injection(**api_key.inject(v)),
}


def injection_for(fields: Mapping[str, Any]) -> Injection:
    """Everything to inject for one source's decrypted credentials (unknown fields are ignored here)."""
    out = Injection()
    for name, kind in KINDS.items():
        if name in fields:
            out.merge(kind(fields[name]))
    return out
