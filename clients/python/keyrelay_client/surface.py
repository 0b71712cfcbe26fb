"""Turn operations into the methods of the sync and async clients, so each method is written once.

An operations class (e.g. `admin.WorkspaceOps`) defines `create(self, name) -> Operation[Workspace]`. The sync
resource declares `create = blocking(WorkspaceOps.create)` and gets `create(name) -> Workspace`; the async one
declares `create = awaiting(WorkspaceOps.create)` and gets `async create(name) -> Workspace`. `paged` and
`apaged` do the same for operations that return a `Pager`. Signatures, docstrings and types carry over
(ParamSpec), so mypy and editors see the real parameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from keyrelay_client.calls import Operation
from keyrelay_client.paging import AsyncPaginator, Pager, Paginator
from keyrelay_client.runner import AsyncRunner, SyncRunner

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")


class SyncResource:
    """A group of sync methods: runs its operations object's operations on a `SyncRunner`."""

    def __init__(self, runner: SyncRunner, ops: Any) -> None:
        self._runner, self._ops = runner, ops


class AsyncResource:
    """A group of async methods: runs its operations object's operations on an `AsyncRunner`."""

    def __init__(self, runner: AsyncRunner, ops: Any) -> None:
        self._runner, self._ops = runner, ops


class _Method(Generic[P, R]):
    """A descriptor: bound to a resource, it is the operation run by that resource's runner. The bound method is
    built on first access and kept in the instance, like a `functools.cached_property`."""

    def __init__(self, op: Callable[Concatenate[Any, P], Any], bind: Callable[[Any, Any, tuple[Any, ...],
                                                                                dict[str, Any]], R]) -> None:
        self._op, self._bind = op, bind
        self._name = op.__name__
        sig = inspect.signature(op)
        self._signature = sig.replace(parameters=list(sig.parameters.values())[1:])  # without `self`
        self.__doc__ = op.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, obj: object, owner: type[Any]) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type[Any]) -> Self | Callable[P, R]:
        if obj is None:
            return self
        op, bind = self._op, self._bind

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return bind(obj, op, args, kwargs)

        functools.update_wrapper(call, op)
        del call.__wrapped__  # type: ignore[attr-defined]
        call.__signature__ = self._signature  # type: ignore[attr-defined]
        obj.__dict__[self._name] = call
        return call


def blocking(op: Callable[Concatenate[Any, P], Operation[T]]) -> _Method[P, T]:
    """A sync method that runs `op` and returns its result."""

    def bind(obj: SyncResource, op: Callable[..., Operation[T]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        return obj._runner.run(op(obj._ops, *args, **kwargs))

    return _Method(op, bind)


def awaiting(op: Callable[Concatenate[Any, P], Operation[T]]) -> _Method[P, Coroutine[Any, Any, T]]:
    """An async method that runs `op` and returns its result."""

    def bind(obj: AsyncResource, op: Callable[..., Operation[T]], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Coroutine[Any, Any, T]:
        return obj._runner.run(op(obj._ops, *args, **kwargs))

    return _Method(op, bind)


def paged(op: Callable[Concatenate[Any, P], Pager[T]]) -> _Method[P, Paginator[T]]:
    """A sync method returning a `Paginator` over the pages `op` describes (no request until iterated)."""

    def bind(obj: SyncResource, op: Callable[..., Pager[T]], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Paginator[T]:
        return Paginator(obj._runner, op(obj._ops, *args, **kwargs))

    return _Method(op, bind)


def apaged(op: Callable[Concatenate[Any, P], Pager[T]]) -> _Method[P, AsyncPaginator[T]]:
    """An async-iterable `AsyncPaginator` over the pages `op` describes (no request until iterated)."""

    def bind(obj: AsyncResource, op: Callable[..., Pager[T]], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> AsyncPaginator[T]:
        return AsyncPaginator(obj._runner, op(obj._ops, *args, **kwargs))

    return _Method(op, bind)
