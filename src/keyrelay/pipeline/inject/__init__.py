"""Credential injection: one module per credential kind, applied in the order of `KINDS`.

Each kind turns its credential field into an `Injection`: headers to set (replacing any agent header of the
same name), query parameters to add (agent parameters of the same name are dropped first), and the exact
secret values the redaction step must scrub from responses. `oauth2` is dynamic: its injection carries the
parsed configuration and `pipeline/oauth/tokens.py` adds the current access token per request. Credential values
arrive as `Secret`s and are revealed only in `reveal.py`, `pipeline/oauth/` and the redactor's input
(`pipeline/build.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.model import Secret
from keyrelay.pipeline.inject import api_key, basic, bearer, static
from keyrelay.pipeline.inject.reveal import secret
from keyrelay.pipeline.oauth import config as oauth2
from keyrelay.pipeline.oauth.config import OAuth2Config


@dataclass(repr=False)
class Injection:
    """What to add to every request of a source. `headers` and `query` hold revealed values (they go on the wire
    as they are), so the `repr` shows names only; `secrets` (what the redactor scrubs) stay `Secret`s."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    query: list[tuple[str, str]] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    basic: list[tuple[str, Secret]] = field(default_factory=list)
    oauth2: OAuth2Config | None = None  # the header it sets is added per request

    def __repr__(self) -> str:
        return (f"Injection(header_names={[n for n, _ in self.headers]!r}, "
                f"query_names={[n for n, _ in self.query]!r}, oauth2={self.oauth2!r})")

    __str__ = __repr__

    @property
    def header_names(self) -> frozenset[str]:
        """Lower-case names of every header keyrelay sets (agent headers of these names are dropped)."""
        names = {n.lower() for n, _ in self.headers}
        if self.oauth2 is not None:
            names.add(self.oauth2.header.lower())
        return frozenset(names)

    def merge(self, other: Injection) -> None:
        names = {n.lower() for n, _ in other.headers}
        if other.oauth2 is not None:
            names.add(other.oauth2.header.lower())
            self.oauth2 = other.oauth2
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
    "oauth2": lambda v: Injection(**oauth2.inject(v)),
}


def injection_for(fields: Mapping[str, Any]) -> Injection:
    """Everything to inject for one source's decrypted credentials (unknown fields are ignored here)."""
    out = Injection()
    for name, kind in KINDS.items():
        if name in fields:
            out.merge(kind(fields[name]))
    out.secrets = [secret(s) for s in out.secrets]
    out.basic = [(user, secret(password)) for user, password in out.basic]
    return out
