"""Validation of a source's policy (docs/security.md: source policy), with connector-dependent defaults."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.headers import validate_forward_list

_METHOD = re.compile(r"[A-Z]{1,16}")
READ_ONLY_METHODS = ["GET", "HEAD"]


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
    return out
