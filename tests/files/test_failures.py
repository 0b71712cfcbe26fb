"""Storage errors become contract errors with fixed messages (never the library's text)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from obstore import exceptions as ox

from keyrelay.errors import KeyrelayError, NotFound
from keyrelay.files.failures import guarded, guarded_stream, translate


@pytest.mark.parametrize("exc,code", [
    (FileNotFoundError("s3://bucket/secret-key"), "not_found"), (ox.NotFoundError("x"), "not_found"),
    (ox.PermissionDeniedError("sig=SAS"), "upstream_auth_failed"),
    (ox.UnauthenticatedError("x"), "upstream_auth_failed"),
    (ox.GenericError("operation timed out http://10.0.0.1/x?sig=SAS"), "upstream_timeout"),
    (TimeoutError(), "upstream_timeout"),
    (ox.GenericError("connection refused http://10.0.0.1"), "upstream_unreachable"),
    (ValueError("odd"), "upstream_unreachable"),
])
def test_translate(exc: BaseException, code: str) -> None:
    err = translate(exc)
    assert err.code == code and "sig=" not in err.message and "10.0.0.1" not in err.message
    assert translate(NotFound("x")).code == "not_found"


async def test_guarded_wrappers() -> None:
    async def fail() -> None:
        raise ox.GenericError("boom http://10.0.0.1")

    with pytest.raises(KeyrelayError) as info:
        await guarded(fail())
    assert info.value.status == 502

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        raise ox.GenericError("reset")

    got = []
    with pytest.raises(KeyrelayError):
        async for c in guarded_stream(chunks()):
            got.append(c)
    assert got == [b"a"]
