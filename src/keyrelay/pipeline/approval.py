"""Approvals, the pure part (docs/approvals.md): which requests a source's `policy.approval` parks, what a parked
request is (the record that is sealed), the hash that binds an approval to it, and how approvals are shown.

A parked request holds what the agent sent after the header policy and before injection: method, target (a
gateway tail and query, or a request-API URL), the forwarded headers, the body, or an execute call, plus the
destination it was bound to (the upstream URL without anything keyrelay adds). Never a credential and never
the agent's token. `request_hash` is SHA-256 over a canonical form of all of it; the approval is bound to it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from keyrelay.egress import destination as dest
from keyrelay.errors import ApprovalMismatch, DestinationChanged
from keyrelay.model import Approval, ApprovalRule, ApprovalStatus, Inbound, Source, Tail, Target, Url
from keyrelay.pipeline import build

HTTP, EXECUTE = "http", "execute"
PARKED_KEY = "approval"  # a parked request's answer is exactly {"approval": {...}}
TERMINAL = frozenset({ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED})


@dataclass(frozen=True, slots=True)
class Parked:
    """A request as parked, and as it will run once approved."""

    kind: str  # HTTP (gateway, request API) or EXECUTE
    method: str
    path: str  # the upstream path: what `paths` patterns match
    destination: str  # what it is bound to: the upstream URL without injected parameters, or the base URL
    target: Target | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = field(default=None, repr=False)
    action: str | None = None  # execute: `entity.action`
    call: Mapping[str, Any] | None = None  # execute: entity, action, params, select_fields, exclude_fields

    def encode(self) -> bytes:
        target: dict[str, str] | None = None
        if isinstance(self.target, Tail):
            target = {"tail": self.target.path, "query": self.target.query}
        elif isinstance(self.target, Url):
            target = {"url": self.target.url}
        return json.dumps({
            "v": 1, "kind": self.kind, "method": self.method, "path": self.path, "destination": self.destination,
            "target": target, "headers": [list(h) for h in self.headers],
            "body": None if self.body is None else base64.b64encode(self.body).decode(), "action": self.action,
            "call": self.call,
        }, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Parked:
        d = json.loads(raw)
        t = d["target"]
        target: Target | None = None if t is None else Url(t["url"]) if "url" in t else Tail(t["tail"], t["query"])
        return cls(kind=d["kind"], method=d["method"], path=d["path"], destination=d["destination"], target=target,
                   headers=tuple((k, v) for k, v in d["headers"]),
                   body=None if d["body"] is None else base64.b64decode(d["body"]), action=d["action"],
                   call=d["call"])

    @property
    def body_bytes(self) -> int:
        return 0 if self.body is None else len(self.body)


def prefer_wait(value: str | None) -> float | None:
    """The `wait` preference of a `Prefer` header (RFC 7240: `Prefer: wait=10`), in seconds; None if absent."""
    if not value:
        return None
    for pref in value.split(","):
        name, _, rest = pref.strip().partition("=")
        if name.strip().lower() == "wait":
            seconds = rest.partition(";")[0].strip().strip('"')
            return float(seconds) if seconds.isdigit() and len(seconds) <= 6 else None
    return None


def is_parked(answer: Mapping[str, Any]) -> bool:
    """Whether a door's answer is a parked request's (202) rather than a result."""
    return set(answer) == {PARKED_KEY}


def request_hash(p: Parked) -> str:
    """SHA-256 (hex) of the canonical request: kind, method, destination, headers (names lowercased, in order),
    the body's own SHA-256, and an execute call's fields."""
    canon = {"kind": p.kind, "method": p.method, "destination": p.destination,
             "headers": [[k.lower(), v] for k, v in p.headers],
             "body": None if p.body is None else hashlib.sha256(p.body).hexdigest(), "call": p.call}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_hash(p: Parked, expected: str) -> None:
    """The parked request must still be the one its approval was bound to."""
    if not hmac.compare_digest(request_hash(p), expected):
        raise ApprovalMismatch("The parked request does not match the request its approval was bound to; "
                               "nothing was sent")


def base_destination(source: Source, default_base_url: str | None) -> str:
    """What a request without its own target (an execute call) is bound to: the source's base URL."""
    base = dest.parse_base_url(build.base_url_of(source, default_base_url))
    return base.origin + base.path


def check_destination(inbound: Inbound, bound: str, source: Source, prep: build.Prepared,
                      default_base_url: str | None) -> None:
    """An approved request runs only to the destination it was parked for (its URL, or its source's base URL)."""
    now = base_destination(source, default_base_url) if inbound.target is None else \
        build.destination_url(inbound, prep)
    if not hmac.compare_digest(now.encode(), bound.encode()):
        raise DestinationChanged("The source now points somewhere other than when this request was parked; "
                                 "nothing was sent")


def upstream_path(url: str) -> str:
    return urlsplit(url).path or "/"


def matches(rule: ApprovalRule, *, method: str, path: str, action: str | None = None) -> bool:
    """Whether a request needs approval. `path` is the upstream path; it is compared decoded (a validated path
    holds no encoded `/`, so decoding cannot make segments), case-insensitively and without a trailing `/`, so
    spelling a path differently does not avoid the rule."""
    if action is not None and rule.entities_actions is not None and \
            any(_action_matches(p, action) for p in rule.entities_actions):
        return True
    if rule.methods is None and rule.paths is None:
        return False
    if rule.methods is not None and method not in rule.methods:
        return False
    if rule.paths is None:
        return True
    plain = unquote(path).lower()
    if len(plain) > 1:
        plain = plain.rstrip("/")
    return any(_pattern(p).fullmatch(plain) for p in rule.paths)


@functools.lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    """`**` matches anything, `*` anything within one segment, everything else itself (case-insensitive)."""
    text = pattern.lower()
    if len(text) > 1:
        text = text.rstrip("/")
    parts = [".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in re.split(r"(\*\*|\*)", text)]
    return re.compile("".join(parts))


def _action_matches(pattern: str, action: str) -> bool:
    want_entity, _, want_action = pattern.partition(".")
    entity, _, name = action.partition(".")
    return want_entity in ("*", entity) and want_action in ("*", name)


def context(approval_id: str, workspace_id: str, what: str, bound: str = "") -> Sequence[str]:
    """The associated data of an approval's sealed records: a record opens only for its own approval, workspace
    and role (`request`, bound to its hash, or `response`)."""
    return ("approval", approval_id, workspace_id, what, bound)


def agent_view(a: Approval, *, poll_url: str, approval_url: str | None) -> dict[str, Any]:
    """What the agent that parked the request sees."""
    out: dict[str, Any] = {"id": a.id, "status": a.status.value, "expires_at": iso(a.expires_at),
                           "poll_url": poll_url, "request_hash": a.request_hash}
    if approval_url is not None:
        out["approval_url"] = approval_url
    if a.status is ApprovalStatus.EXECUTED:
        out["upstream_status"] = a.upstream_status
    return out


def approver_view(a: Approval) -> dict[str, Any]:
    """What an approver sees: enough to decide, never the body, a header value or a query value."""
    return {
        "id": a.id, "status": a.status.value, "workspace_id": a.workspace_id, "source_id": a.source_id,
        "door": a.door, "method": a.method, "path": a.path, "action": a.action, "caller": a.caller,
        "request_hash": a.request_hash, "body_bytes": a.body_bytes, "created_at": iso(a.created_at),
        "expires_at": iso(a.expires_at), "decided_at": iso(a.decided_at), "decided_by": a.decided_by,
        "executed_at": iso(a.executed_at), "upstream_status": a.upstream_status, "error_code": a.error_code,
        "response_fetched": a.fetched_at is not None,
    }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")
