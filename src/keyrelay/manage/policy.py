"""Validation of a source's policy (docs/security.md: source policy), with connector-dependent defaults."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.headers import validate_forward_list

_METHOD = re.compile(r"[A-Z]{1,16}")
# a path pattern: absolute, printable ASCII without spaces, `?` or `#`; `*` matches within a segment, `**` across
_PATH_PATTERN = re.compile(r"/[!-~]{0,511}")
_ACTION_PATTERN = re.compile(r"(\*|[A-Za-z0-9_-]{1,64})\.(\*|[A-Za-z0-9_-]{1,64})")
READ_ONLY_METHODS = ["GET", "HEAD"]


class ApprovalIn(BaseModel):
    """`policy.approval` (docs/approvals.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    methods: list[str] | None = Field(None, min_length=1, max_length=16)
    paths: list[str] | None = Field(None, min_length=1, max_length=32)
    entities_actions: list[str] | None = Field(None, min_length=1, max_length=64)
    timeout_seconds: float | int = Field(3600, ge=10, le=7 * 86_400)


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    allowed_methods: list[str] | None = Field(None, max_length=16)
    forward_headers: list[str] | None = Field(None, max_length=64)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    timeout_seconds: float | int = Field(30, gt=0, le=300)
    max_body_bytes: int | None = Field(None, ge=0, le=1024**3)
    allow_writes: bool = False
    cache_ttl_seconds: int | None = Field(None, ge=0, le=86_400)
    allow_body_on_safe_methods: bool = False
    approval: ApprovalIn | None = None
    mode: Literal["enforce", "observe"] = "enforce"


def field_of(err: ValidationError, prefix: str) -> InvalidRequest:
    """Translate pydantic's first error into our error naming the field (no input value echoed)."""
    first = err.errors()[0]
    path = ".".join([prefix, *(str(p) for p in first["loc"])])
    return InvalidRequest(f"Invalid {path}: {first['msg']}", field=path)


def check_policy(data: Any, *, catalog_api: bool, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and normalise; defaults: every method for `http`, GET/HEAD for catalog API connectors."""
    merged = dict(current or {})
    if data is not None:
        if not isinstance(data, dict):
            raise InvalidRequest("policy must be an object", field="policy")
        merged.update(data)
    try:
        pol = PolicyIn.model_validate(merged)
    except ValidationError as err:
        raise field_of(err, "policy") from None
    out = pol.model_dump()
    if pol.allowed_methods is not None:
        methods = [m.upper() for m in pol.allowed_methods]
        if not all(_METHOD.fullmatch(m) for m in methods):
            raise InvalidRequest("Invalid policy.allowed_methods: not an HTTP method", field="policy.allowed_methods")
        out["allowed_methods"] = sorted(set(methods))
    elif catalog_api:
        out["allowed_methods"] = READ_ONLY_METHODS
    if pol.forward_headers is not None:
        out["forward_headers"] = sorted(validate_forward_list(pol.forward_headers))
    out["timeout_seconds"] = float(pol.timeout_seconds)
    if pol.approval is not None:
        out["approval"] = _approval(pol.approval)
    return out


def _approval(rule: ApprovalIn) -> dict[str, Any]:
    """Normalise an approval rule; one that could match nothing is refused."""
    if rule.methods is None and rule.paths is None and rule.entities_actions is None:
        raise InvalidRequest("policy.approval needs methods, paths or entities_actions", field="policy.approval")
    out: dict[str, Any] = {"methods": None, "paths": None, "entities_actions": None,
                           "timeout_seconds": float(rule.timeout_seconds)}
    if rule.methods is not None:
        methods = [m.upper() for m in rule.methods]
        if not all(_METHOD.fullmatch(m) for m in methods):
            raise InvalidRequest("Invalid policy.approval.methods: not an HTTP method",
                                 field="policy.approval.methods")
        out["methods"] = sorted(set(methods))
    if rule.paths is not None:
        if not all(_PATH_PATTERN.fullmatch(p) and not set(p) & set("?#") for p in rule.paths):
            raise InvalidRequest("Invalid policy.approval.paths: each must start with '/' and hold no spaces, "
                                 "'?' or '#'", field="policy.approval.paths")
        out["paths"] = sorted(set(rule.paths))
    if rule.entities_actions is not None:
        if not all(_ACTION_PATTERN.fullmatch(a) for a in rule.entities_actions):
            raise InvalidRequest("Invalid policy.approval.entities_actions: each is 'entity.action' ('*' for "
                                 "any)", field="policy.approval.entities_actions")
        out["entities_actions"] = sorted(set(rule.entities_actions))
    return out
