"""Auto-paging: lazy (one request per page, only when iterated), follows positions to the end, and refuses a
server that repeats a position instead of looping. Sync and async, against a scripted peer."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay_client import FileInfo, UnexpectedResponse
from support.scripted import Reply, ScriptedServer, Seen

ROUTE = "/api/v1/sonar/files/src-1/list/"


def page(names: list[str], token: str | None) -> Reply:
    files: list[dict[str, Any]] = [{"path": n, "size": 1, "last_modified": "2030-01-01T00:00:00Z"} for n in names]
    return Reply(200, {"files": files, **({"next_page_token": token} if token else {})})


def by_token(pages: dict[str | None, Reply]) -> Any:
    def answer(seen: Seen) -> Reply:
        token = seen.path.partition("page_token=")[2].partition("&")[0] or None
        return pages[token]

    return answer


def test_every_page_is_followed_lazily(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", ROUTE, by_token({None: page(["a", "b"], "t1"), "t1": page(["c"], "t2"), "t2": page([], None)}))
    kr = connect(scripted.url, token="krw_t")
    listing = kr.files.list("src-1")
    assert scripted.requests == []  # nothing until iterated
    first = next(iter(listing))
    assert isinstance(first, FileInfo) and first.path == "a"
    assert len(scripted.seen("GET", ROUTE)) == 1  # only the page that was needed
    assert [f.path for f in listing] == ["a", "b", "c"]
    assert [len(p.items) for p in listing.pages()] == [2, 1, 0]


def test_a_repeated_position_is_refused(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", ROUTE, by_token({None: page(["a"], "same"), "same": page(["b"], "same")}))
    kr = connect(scripted.url, token="krw_t")
    with pytest.raises(UnexpectedResponse, match="same page position twice"):
        list(kr.files.list("src-1"))
    assert len(scripted.seen("GET", ROUTE)) == 2


def test_page_size_and_token_are_sent_as_query_parameters(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("GET", ROUTE + "reports/", by_token({None: page(["reports/a"], "t1"), "t1": page([], None)}))
    list(connect(scripted.url, token="krw_t").files.list("src-1", "reports/", page_size=7))
    assert [r.path for r in scripted.requests] == [ROUTE + "reports/?limit=7",
                                                   ROUTE + "reports/?page_token=t1&limit=7"]
