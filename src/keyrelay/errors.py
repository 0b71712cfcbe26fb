"""The KeyrelayError tree: each error carries its HTTP status and a stable code (docs/errors.md).

Doors turn any of these into the one JSON error body (`http/render.py`). Messages are written for the
caller: they never contain a secret, a library's exception text, a file path or an internal address.
"""

from __future__ import annotations


class KeyrelayError(Exception):
    """Base of every error keyrelay reports to a caller."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None, field: str | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = (), constraint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.field = field
        self.constraint = constraint  # the kind of token constraint that refused the request (docs/errors.md)
        self.headers = headers  # response headers this error needs (e.g. WWW-Authenticate, Allow, Content-Range)

    def body(self, request_id: str | None = None) -> dict[str, object]:
        """The contract's error body: `{"error": {"code", "message", ...}}`."""
        err: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        if self.retry_after is not None:
            err["retry_after"] = self.retry_after
        if self.constraint is not None:
            err["constraint"] = self.constraint
        if request_id is not None:
            err["request_id"] = request_id
        return {"error": err}


class InvalidRequest(KeyrelayError):
    status, code = 400, "invalid_request"


class WrongSourceType(KeyrelayError):
    status, code = 400, "wrong_source_type"


class Unauthenticated(KeyrelayError):
    status, code = 401, "unauthenticated"


class Forbidden(KeyrelayError):
    status, code = 403, "forbidden"


class DestinationNotAllowed(KeyrelayError):
    status, code = 403, "destination_not_allowed"


class UpstreamRejected(KeyrelayError):
    """The upstream API refused the stored credentials (its 401/403) on a declarative action."""

    status, code = 403, "upstream_rejected"


class NotFound(KeyrelayError):
    status, code = 404, "not_found"


class MethodNotAllowed(KeyrelayError):
    status, code = 405, "method_not_allowed"


class Conflict(KeyrelayError):
    status, code = 409, "conflict"


class CredentialsRequired(KeyrelayError):
    """A change of where a source sends requests (its destination) without its credentials: a stored credential
    never follows a source to another host."""

    status, code = 409, "credentials_required"


class CredentialsUnusable(KeyrelayError):
    """The source's stored credentials do not decrypt for its current destination (moved, altered or stored
    under an older binding): nothing is injected."""

    status, code = 409, "credentials_unusable"


class ApprovalDenied(KeyrelayError):
    """An approver denied the parked request: nothing was sent upstream."""

    status, code = 403, "approval_denied"


class ApprovalNotPending(KeyrelayError):
    """A decision on an approval that was already decided the other way, or has expired."""

    status, code = 409, "approval_not_pending"


class ApprovalMismatch(KeyrelayError):
    """The decision named a request hash other than the parked request's, or the parked request no longer
    matches its hash: nothing is sent."""

    status, code = 409, "approval_mismatch"


class DestinationChanged(KeyrelayError):
    """An approved request whose source now points elsewhere than when it was parked: nothing is sent."""

    status, code = 409, "destination_changed"


class ApprovalExpired(KeyrelayError):
    """Nobody decided before the approval's timeout (or its kept response is gone): nothing was sent, or the
    response can no longer be fetched."""

    status, code = 410, "approval_expired"


class PayloadTooLarge(KeyrelayError):
    status, code = 413, "payload_too_large"


class UriTooLong(KeyrelayError):
    status, code = 414, "uri_too_long"


class RangeNotSatisfiable(KeyrelayError):
    status, code = 416, "range_not_satisfiable"


class SsrfBlocked(KeyrelayError):
    status, code = 422, "ssrf_blocked"


class Unprocessable(KeyrelayError):
    """A well-formed request naming something that does not exist in a definition (stream, entity, action)."""

    status, code = 422, "unprocessable"


class RateLimited(KeyrelayError):
    status, code = 429, "rate_limited"


class HeadersTooLarge(KeyrelayError):
    status, code = 431, "headers_too_large"


class UpstreamUnreachable(KeyrelayError):
    status, code = 502, "upstream_unreachable"


class UpstreamAuthFailed(KeyrelayError):
    status, code = 502, "upstream_auth_failed"


class OutcomeUnknown(KeyrelayError):
    """An approved request was being sent when its keyrelay instance stopped: it may or may not have reached the
    upstream, and it is never sent a second time."""

    status, code = 502, "outcome_unknown"


class Sealed(KeyrelayError):
    status, code = 503, "sealed"


class Unavailable(KeyrelayError):
    """A dependency keyrelay needs to serve safely (database, request log) is down: fail closed."""

    status, code = 503, "unavailable"


class UpstreamTimeout(KeyrelayError):
    status, code = 504, "upstream_timeout"


class InternalError(KeyrelayError):
    """An unexpected failure. The message is fixed; details go to the server log only."""

    status, code = 500, "internal_error"


ALL_ERRORS: tuple[type[KeyrelayError], ...] = (
    InvalidRequest, WrongSourceType, Unauthenticated, Forbidden, DestinationNotAllowed, UpstreamRejected, NotFound,
    MethodNotAllowed, Conflict, CredentialsRequired, CredentialsUnusable, PayloadTooLarge, UriTooLong,
    RangeNotSatisfiable, SsrfBlocked, Unprocessable, RateLimited, HeadersTooLarge, UpstreamUnreachable,
    UpstreamAuthFailed, Sealed, Unavailable, UpstreamTimeout, InternalError, ApprovalDenied, ApprovalNotPending,
    ApprovalMismatch, DestinationChanged, ApprovalExpired, OutcomeUnknown,
)
ERRORS_BY_CODE: dict[str, type[KeyrelayError]] = {e.code: e for e in ALL_ERRORS}
