"""The two thin transports: run an operation (`keyrelay_client.calls`) on httpx, sync or async.

Both do the same four things, in the same order: send a `Call`, turn a network failure or an error status into a
`KeyrelayError`, ask the `RetryPolicy` whether and when to try again (sleeping through the injected `sleep`), and
hand the response (or throw the error) back into the operation. Everything else lives in the operations.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import httpx

from keyrelay_client.calls import Call, Operation
from keyrelay_client.errors import (
    ConnectionFailed,
    KeyrelayError,
    RequestTimeout,
    UnexpectedResponse,
    error_from_response,
)
from keyrelay_client.retry import RetryPolicy

T = TypeVar("T")
log = logging.getLogger("keyrelay_client")
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def network_error(exc: httpx.RequestError, request: httpx.Request) -> tuple[KeyrelayError, bool]:
    """The error for a failed exchange, and whether the request may have reached keyrelay."""
    where = f"{request.method} {request.url.path} at {request.url.host}:{request.url.port or ''}".rstrip(":")
    sent = not isinstance(exc, _NOT_SENT)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"Timed out ({type(exc).__name__}) on {where}"), sent
    if isinstance(exc, httpx.DecodingError):
        return UnexpectedResponse(f"The body could not be decoded on {where}"), sent
    return ConnectionFailed(f"Connection failed ({type(exc).__name__}) on {where}"), sent


def _log_retry(call: Call, error: KeyrelayError, delay: float, attempt: int, policy: RetryPolicy) -> None:
    log.info("retrying %s %s after %s in %.2f s (attempt %d of %d)", call.method, call.path.split("?")[0],
             error.code, delay, attempt + 1, policy.attempts)


class SyncRunner:
    def __init__(self, client: httpx.Client, retry: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self.client = client
        self.retry = retry
        self.sleep = sleep

    def run(self, op: Operation[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    response = self.send(call)
                except KeyrelayError as err:
                    call = op.throw(err)
                else:
                    call = op.send(response)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    def send(self, call: Call) -> httpx.Response:
        """The response to `call` (2xx), after retries; its body read, or streamed into `call.sink`."""
        with self.open(call, buffer=call.sink is None) as response:
            if call.sink is None:
                return response
            call.sink.open(response)
            complete = False
            try:
                for chunk in response.iter_bytes():
                    call.sink.write(chunk)
                complete = True
            except httpx.RequestError as exc:
                raise network_error(exc, response.request)[0] from None
            finally:
                call.sink.close(complete=complete)
            return response

    @contextmanager
    def open(self, call: Call, *, buffer: bool = False) -> Iterator[httpx.Response]:
        """A 2xx response to `call`, closed on exit. Retried until its headers arrive, or with `buffer` until its
        whole body is read; otherwise its body is still to be streamed."""
        attempt = 1
        while True:
            request = call.request(self.client)
            try:
                response = self.client.send(request, stream=True)
                if buffer and response.is_success:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.RequestError as exc:
                error, sent = network_error(exc, request)
            except KeyrelayError as err:  # raised by the auth flow: the token fetch failed, nothing was sent
                error, sent = err, False
            else:
                if response.is_success:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                try:
                    response.read()
                except httpx.RequestError as exc:
                    error, sent = network_error(exc, request)
                else:
                    error, sent = error_from_response(response.status_code, response.headers, response.content), True
                finally:
                    response.close()
            delay = self.retry.delay(attempt, error, retry_safe=call.retry_safe, sent=sent)
            if delay is None:
                raise error
            _log_retry(call, error, delay, attempt, self.retry)
            self.sleep(delay)
            attempt += 1


class AsyncRunner:
    def __init__(self, client: httpx.AsyncClient, retry: RetryPolicy, sleep: Callable[[float], Awaitable[Any]]) -> None:
        self.client = client
        self.retry = retry
        self.sleep = sleep

    async def run(self, op: Operation[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    response = await self.send(call)
                except KeyrelayError as err:
                    call = op.throw(err)
                else:
                    call = op.send(response)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    async def send(self, call: Call) -> httpx.Response:
        async with self.open(call, buffer=call.sink is None) as response:
            if call.sink is None:
                return response
            call.sink.open(response)
            complete = False
            try:
                async for chunk in response.aiter_bytes():
                    call.sink.write(chunk)
                complete = True
            except httpx.RequestError as exc:
                raise network_error(exc, response.request)[0] from None
            finally:
                call.sink.close(complete=complete)
            return response

    @asynccontextmanager
    async def open(self, call: Call, *, buffer: bool = False) -> AsyncIterator[httpx.Response]:
        attempt = 1
        while True:
            request = call.request(self.client)
            try:
                response = await self.client.send(request, stream=True)
                if buffer and response.is_success:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.RequestError as exc:
                error, sent = network_error(exc, request)
            except KeyrelayError as err:
                error, sent = err, False
            else:
                if response.is_success:
                    try:
                        yield response
                    finally:
                        await response.aclose()
                    return
                try:
                    await response.aread()
                except httpx.RequestError as exc:
                    error, sent = network_error(exc, request)
                else:
                    error, sent = error_from_response(response.status_code, response.headers, response.content), True
                finally:
                    await response.aclose()
            delay = self.retry.delay(attempt, error, retry_safe=call.retry_safe, sent=sent)
            if delay is None:
                raise error
            _log_retry(call, error, delay, attempt, self.retry)
            await self.sleep(delay)
            attempt += 1
