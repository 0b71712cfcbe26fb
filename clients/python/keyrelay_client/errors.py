"""Errors: one class per error code of keyrelay's docs/errors.md, plus the client's own.

Every error keyrelay produces has the body `{"error": {"code", "message", "request_id", "field"?,
"retry_after"?, "constraint"?}}`; the Airbyte-compatible routes use `{"errors": [{"message", "userPresentableMessage",
"code"}]}` instead. `error_from_response` reads both and picks the class for the code. A code this version does
not know maps to `ClientError` (4xx) or `ServerError` (5xx), keeping the code it received, so new server codes
never break `except ClientError`.

`NetworkError` (`ConnectionFailed`, `RequestTimeout`) means no answer arrived. `UsageError` and its subclasses are
raised before anything is sent: the client was configured or called wrongly.

Messages never contain a credential: keyrelay's own never do (docs/errors.md), and the client's name the
setting or parameter at fault, never its value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalMismatch",
    "ApprovalNotPending",
    "ClientError",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "CredentialsRequired",
    "CredentialsUnusable",
    "DestinationChanged",
    "DestinationNotAllowed",
    "Forbidden",
    "HeadersTooLarge",
    "InternalError",
    "InvalidParameter",
    "InvalidRequest",
    "KeyrelayError",
    "LookupFailed",
    "MethodNotAllowed",
    "NetworkError",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RateLimited",
    "RequestTimeout",
    "Sealed",
    "ServerError",
    "SsrfBlocked",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedResponse",
    "UnknownAction",
    "UnknownEntity",
    "Unprocessable",
    "UpstreamAuthFailed",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "UriTooLong",
    "UsageError",
    "WrongSourceType",
    "error_from_response",
]


class KeyrelayError(Exception):
    """A call to keyrelay failed. `status` is None when no response arrived (a `NetworkError`)."""

    default_status: ClassVar[int | None] = None
    default_code: ClassVar[str] = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 request_id: str | None = None, retry_after: int | None = None, field: str | None = None,
                 constraint: str | None = None, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.default_status
        self.code = code or self.default_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.field = field
        self.constraint = constraint
        self.details: Mapping[str, Any] = dict(details or {})

    def __str__(self) -> str:
        where = f"{self.code}" if self.status is None else f"{self.status} {self.code}"
        tail = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{where}: {self.message}{tail}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r}, "
                f"request_id={self.request_id!r})")


class ClientError(KeyrelayError):
    """keyrelay refused the request (4xx)."""


class ServerError(KeyrelayError):
    """keyrelay or the upstream behind it failed (5xx)."""


class InvalidRequest(ClientError):
    default_status, default_code = 400, "invalid_request"


class WrongSourceType(ClientError):
    default_status, default_code = 400, "wrong_source_type"


class Unauthenticated(ClientError):
    default_status, default_code = 401, "unauthenticated"


class Forbidden(ClientError):
    """The credential lacks the scope (or, on admin routes, the `admin` power) the route needs, or a token
    constraint refused the request: `constraint` then names its kind (`sources`, `methods`, `budget`, ...)."""

    default_status, default_code = 403, "forbidden"


class UpstreamRejected(ClientError):
    default_status, default_code = 403, "upstream_rejected"


class DestinationNotAllowed(ClientError):
    default_status, default_code = 403, "destination_not_allowed"


class NotFound(ClientError):
    default_status, default_code = 404, "not_found"


class MethodNotAllowed(ClientError):
    default_status, default_code = 405, "method_not_allowed"


class Conflict(ClientError):
    default_status, default_code = 409, "conflict"


class CredentialsRequired(ClientError):
    """A source update moves the source to another destination without sending its `credentials` again."""

    default_status, default_code = 409, "credentials_required"


class CredentialsUnusable(ClientError):
    """The source's stored credentials do not decrypt for its current destination: an operator must store them
    again. Nothing was sent upstream."""

    default_status, default_code = 409, "credentials_unusable"


class ApprovalNotPending(ClientError):
    """A decision on an approval that was already decided the other way or has expired."""

    default_status, default_code = 409, "approval_not_pending"


class ApprovalMismatch(ClientError):
    """The parked request does not match the hash its approval (or the decision) names. Nothing was sent."""

    default_status, default_code = 409, "approval_mismatch"


class DestinationChanged(ClientError):
    """The source points elsewhere than when the request was parked. Nothing was sent: make the request again."""

    default_status, default_code = 409, "destination_changed"


class ApprovalExpired(ClientError):
    """Nobody decided the parked request in time; nothing was sent."""

    default_status, default_code = 410, "approval_expired"


class ApprovalDenied(ClientError):
    """An approver denied the parked request; nothing was sent."""

    default_status, default_code = 403, "approval_denied"


class PayloadTooLarge(ClientError):
    default_status, default_code = 413, "payload_too_large"


class UriTooLong(ClientError):
    default_status, default_code = 414, "uri_too_long"


class RangeNotSatisfiable(ClientError):
    default_status, default_code = 416, "range_not_satisfiable"


class SsrfBlocked(ClientError):
    default_status, default_code = 422, "ssrf_blocked"


class Unprocessable(ClientError):
    default_status, default_code = 422, "unprocessable"


class RateLimited(ClientError):
    """`retry_after` holds the seconds to wait (also sent as the `Retry-After` header)."""

    default_status, default_code = 429, "rate_limited"


class HeadersTooLarge(ClientError):
    default_status, default_code = 431, "headers_too_large"


class InternalError(ServerError):
    default_status, default_code = 500, "internal_error"


class UpstreamUnreachable(ServerError):
    default_status, default_code = 502, "upstream_unreachable"


class UpstreamAuthFailed(ServerError):
    default_status, default_code = 502, "upstream_auth_failed"


class OutcomeUnknown(ServerError):
    """An approved request was being sent when its keyrelay instance stopped: it may or may not have reached the
    upstream, and keyrelay never sends it again. Check the upstream before retrying."""

    default_status, default_code = 502, "outcome_unknown"


class Sealed(ServerError):
    default_status, default_code = 503, "sealed"


class Unavailable(ServerError):
    default_status, default_code = 503, "unavailable"


class UpstreamTimeout(ServerError):
    default_status, default_code = 504, "upstream_timeout"


class UnexpectedResponse(KeyrelayError):
    """keyrelay (or something in front of it) answered in a shape this client cannot read."""

    default_code = "unexpected_response"


class NetworkError(KeyrelayError):
    """No answer arrived: the connection failed or timed out."""


class ConnectionFailed(NetworkError):
    default_code = "connection_failed"


class RequestTimeout(NetworkError):
    default_code = "timeout"


CODES: Mapping[str, type[KeyrelayError]] = {cls.default_code: cls for cls in (
    InvalidRequest, WrongSourceType, Unauthenticated, Forbidden, UpstreamRejected, DestinationNotAllowed, NotFound,
    MethodNotAllowed, Conflict, CredentialsRequired, CredentialsUnusable, ApprovalDenied, ApprovalNotPending,
    ApprovalMismatch, DestinationChanged, ApprovalExpired, PayloadTooLarge, UriTooLong, RangeNotSatisfiable,
    SsrfBlocked, Unprocessable, RateLimited, HeadersTooLarge, InternalError, UpstreamUnreachable, UpstreamAuthFailed,
    OutcomeUnknown, Sealed, Unavailable, UpstreamTimeout,
)}


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> KeyrelayError:
    """The error for a keyrelay response with a 4xx/5xx status (or any status the caller did not expect)."""
    found = _error_object(body)
    code = found.get("code") if isinstance(found.get("code"), str) else None
    message = found.get("message") if isinstance(found.get("message"), str) else None
    request_id = found.get("request_id") if isinstance(found.get("request_id"), str) else None
    field = found.get("field") if isinstance(found.get("field"), str) else None
    constraint = found.get("constraint") if isinstance(found.get("constraint"), str) else None
    retry_after = _seconds(found.get("retry_after"))
    lowered = {k.lower(): v for k, v in headers.items()}
    if retry_after is None:
        retry_after = _seconds(lowered.get("retry-after"))
    cls = CODES.get(code or "") or _family(status)
    return cls(message or f"HTTP {status} without a keyrelay error body", status=status, code=code,
               request_id=request_id or lowered.get("x-request-id"), retry_after=retry_after, field=field,
               constraint=constraint, details=found)


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    error = data.get("error")
    if isinstance(error, dict):
        return error
    errors = data.get("errors")  # the Airbyte-compatible routes
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = dict(errors[0])
        if not isinstance(first.get("message"), str) and isinstance(first.get("userPresentableMessage"), str):
            first["message"] = first["userPresentableMessage"]
        return first
    return {}


def _seconds(value: Any) -> int | None:
    """A non-negative whole number of seconds (`Retry-After` may also be an HTTP date: ignored here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _family(status: int) -> type[KeyrelayError]:
    if 400 <= status < 500:
        return ClientError
    if 500 <= status < 600:
        return ServerError
    return UnexpectedResponse


# --- the client's own: raised before anything is sent ---------------------------------------------------------


class UsageError(Exception):
    """The client was configured or called wrongly; nothing was sent."""


class ConfigurationError(UsageError, ValueError):
    """A missing or contradictory setting (base URL, credentials)."""


class LookupFailed(UsageError, LookupError):
    """A name the client resolves (a workspace name, a connector's source) matches nothing, or more than one."""


class UnknownEntity(UsageError, AttributeError):
    """A connector facade was asked for an entity its connector does not have."""


class UnknownAction(UsageError, AttributeError):
    """An entity of a connector facade was asked for an action it does not have."""


class InvalidParameter(UsageError, TypeError):
    """A connector action was called with an unknown, missing or mistyped parameter."""
