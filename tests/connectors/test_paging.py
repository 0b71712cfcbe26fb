"""Pagination strategies as pure functions."""

from __future__ import annotations

from keyrelay.connectors.definition import Pagination
from keyrelay.connectors.paging import next_state, position_param, size_param


def test_cursor_from_last_record_stops_when_has_more_is_false() -> None:
    p = Pagination(type="cursor", param="starting_after", next="last:id", has_more="has_more", size_param="limit")
    recs = [{"id": "a"}, {"id": "b"}]
    assert next_state(p, body={"has_more": True}, records=recs, headers={}, size=2, state={}) == {"cursor": "b"}
    assert next_state(p, body={"has_more": False}, records=recs, headers={}, size=2, state={}) is None
    assert position_param(p, {"cursor": "b"}) == ("starting_after", "query", "b")
    assert size_param(p, 500) == ("limit", "query", 100)


def test_cursor_from_a_body_path_in_the_body() -> None:
    p = Pagination(type="cursor", param="cursor", location="body", next="records.cursor")
    body = {"records": {"cursor": "c2"}}
    assert next_state(p, body=body, records=[1], headers={}, size=1, state={}) == {"cursor": "c2"}
    assert next_state(p, body={"records": {}}, records=[1], headers={}, size=1, state={}) is None
    assert position_param(p, {"cursor": "c2"}) == ("cursor", "body", "c2")


def test_link_header_and_next_url() -> None:
    link = Pagination(type="link_header")
    headers = {"link": '<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=9>; rel="last"'}
    assert next_state(link, body=[], records=[1], headers=headers, size=1, state={}) == {
        "url": "https://api.github.com/x?page=2"}
    assert next_state(link, body=[], records=[1], headers={}, size=1, state={}) is None
    nxt = Pagination(type="next_url", next="nextRecordsUrl")
    assert next_state(nxt, body={"nextRecordsUrl": "/q/2"}, records=[1], headers={}, size=1, state={}) == {
        "url": "/q/2"}


def test_offset_and_page_number() -> None:
    off = Pagination(type="offset", param="startAt", total="total")
    assert next_state(off, body={"total": 5}, records=[1, 2], headers={}, size=2, state={}) == {"offset": 2}
    assert next_state(off, body={"total": 5}, records=[1], headers={}, size=2, state={"offset": 4}) is None
    page = Pagination(type="page_number", param="page", start=1)
    assert position_param(page, {}) == ("page", "query", 1)
    assert next_state(page, body={}, records=[1, 2], headers={}, size=2, state={"page": 3}) == {"page": 4}
    assert next_state(page, body={}, records=[], headers={}, size=2, state={"page": 3}) is None


def test_link_relations_are_found_in_any_order() -> None:
    from keyrelay.connectors.paging import link

    value = '<https://s.myshopify.com/a?page_info=p>; rel="previous", <https://s.myshopify.com/a?page_info=n>; rel=next'
    assert link({"Link": value}, "next") == "https://s.myshopify.com/a?page_info=n"
    assert link({"link": value}, "previous") == "https://s.myshopify.com/a?page_info=p"
    assert link({}, "next") is None
