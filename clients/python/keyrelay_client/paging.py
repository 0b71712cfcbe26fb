"""Auto-paging iterators over any paged listing (files, stream query records, connector collections).

A `Pager` knows one listing: `page(position)` is the operation that fetches the page starting at `position`
(None: the first page) and says where the next one starts. `Paginator` and `AsyncPaginator` walk it lazily, one
request per page, until a page has no `next`. A server that hands back the position it was just given would make
that walk endless, so it is refused as an `UnexpectedResponse`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, Protocol, TypeVar

from keyrelay_client.calls import Operation
from keyrelay_client.errors import UnexpectedResponse
from keyrelay_client.models import Page
from keyrelay_client.runner import AsyncRunner, SyncRunner

T = TypeVar("T")


class Pager(Protocol[T]):
    def page(self, position: Any) -> Operation[Page[T]]: ...


def _advance(page: Page[Any], position: Any) -> Any:
    if page.next is not None and page.next == position:
        raise UnexpectedResponse("The server returned the same page position twice; stopping instead of looping")
    return page.next


class Paginator(Generic[T]):
    """Iterate over every item of every page: `for item in paginator`; or page by page: `paginator.pages()`."""

    def __init__(self, runner: SyncRunner, pager: Pager[T]) -> None:
        self._runner, self._pager = runner, pager

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.items

    def pages(self) -> Iterator[Page[T]]:
        position: Any = None
        while True:
            page = self._runner.run(self._pager.page(position))
            yield page
            position = _advance(page, position)
            if position is None:
                return

    def first_page(self) -> Page[T]:
        return self._runner.run(self._pager.page(None))


class AsyncPaginator(Generic[T]):
    """Iterate over every item of every page: `async for item in paginator`; or `paginator.pages()`."""

    def __init__(self, runner: AsyncRunner, pager: Pager[T]) -> None:
        self._runner, self._pager = runner, pager

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item

    async def pages(self) -> AsyncIterator[Page[T]]:
        position: Any = None
        while True:
            page = await self._runner.run(self._pager.page(position))
            yield page
            position = _advance(page, position)
            if position is None:
                return

    async def first_page(self) -> Page[T]:
        return await self._runner.run(self._pager.page(None))
