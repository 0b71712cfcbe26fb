"""Turn a storage library's exception into a KeyrelayError without ever repeating its text.

obstore's messages contain request URLs, bucket names and sometimes SAS query strings: they go nowhere. The
class (and, for generic errors, whether the text mentions a timeout) picks the code; the message is fixed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from keyrelay.errors import (
    KeyrelayError,
    NotFound,
    UpstreamAuthFailed,
    UpstreamTimeout,
    UpstreamUnreachable,
)

T = TypeVar("T")


def translate(exc: BaseException) -> KeyrelayError:
    from obstore import exceptions as ox  # loaded by now: the call that failed was obstore's

    if isinstance(exc, KeyrelayError):
        return exc
    if isinstance(exc, (FileNotFoundError, ox.NotFoundError, IsADirectoryError, NotADirectoryError)):
        return NotFound("File not found")
    if isinstance(exc, (ox.PermissionDeniedError, ox.UnauthenticatedError, PermissionError)):
        return UpstreamAuthFailed("The storage service refused the source's credentials")
    if isinstance(exc, TimeoutError) or "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
        return UpstreamTimeout("The storage service did not answer in time")
    return UpstreamUnreachable("The storage service could not be reached or gave an invalid answer")


def storage_error() -> type[BaseException]:
    """The base class of obstore's own errors (obstore is imported on first use: after a storage call failed, it
    is loaded already)."""
    from obstore import exceptions as ox

    return ox.BaseError


async def guarded(step: Awaitable[T]) -> T:
    """Await a storage call; any failure becomes a KeyrelayError."""
    try:
        return await step
    except (storage_error(), OSError, ValueError, RuntimeError) as exc:
        raise translate(exc) from None


async def guarded_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Iterate a storage byte stream; a failure part-way becomes a KeyrelayError."""
    try:
        async for chunk in chunks:
            yield chunk
    except (storage_error(), OSError, ValueError, RuntimeError) as exc:
        raise translate(exc) from None
