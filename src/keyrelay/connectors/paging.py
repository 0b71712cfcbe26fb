"""Pagination strategies: how to ask for a page, and where the next page's position comes from.

cursor       a cursor parameter (query or body) whose next value is a body path or `last:<field>` of the last
             record; optional `has_more` flag (Stripe, Gong, HubSpot, Zendesk cursor pagination)
link_header  the next page's URL from `Link: <...>; rel="next"` (GitHub REST, Shopify page_info)
next_url     the next page's URL (or path) from a body path (Salesforce nextRecordsUrl, Zendesk next_page)
offset       an offset parameter advanced by the page size (Jira startAt)
page_number  a page parameter advanced by one
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from keyrelay.connectors import extract
from keyrelay.connectors.definition import Pagination

_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([^";,]+)"?', re.IGNORECASE)


def link(headers: Mapping[str, str], rel: str) -> str | None:
    """The URL of relation `rel` in the `Link` response header (GitHub REST, Shopify), if any."""
    value = next((v for k, v in headers.items() if k.lower() == "link"), "")
    for url, rels in _LINK.findall(value):
        if rel.lower() in rels.lower().split():
            return str(url)
    return None


def size_param(p: Pagination, size: int) -> tuple[str, str, int] | None:
    """(name, location, value) of the page-size parameter, if the strategy has one."""
    if not p.size_param:
        return None
    return p.size_param, p.size_location, max(1, min(size, p.max_size))


def position_param(p: Pagination, state: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """(name, location, value) that asks for the page described by `state` (absent on the first page)."""
    if p.type == "cursor" and "cursor" in state:
        return p.param, p.location, state["cursor"]
    if p.type == "offset" and "offset" in state:
        return p.param, p.location, state["offset"]
    if p.type == "page_number":
        return p.param, p.location, state.get("page", p.start or 1)
    return None


def next_state(p: Pagination, *, body: Any, records: list[Any], headers: Mapping[str, str], size: int,
               state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where the next page is, or None at the end."""
    if p.type == "cursor":
        if p.has_more and extract.get(body, p.has_more) is not True:
            return None
        if p.next.startswith("last:"):
            value = extract.get(records[-1], p.next[5:]) if records else None
        else:
            value = extract.get(body, p.next)
        return {"cursor": value} if value not in (None, "") else None
    if p.type == "link_header":
        url = link(headers, "next")
        return {"url": url} if url else None
    if p.type == "next_url":
        value = extract.get(body, p.next)
        return {"url": value} if isinstance(value, str) and value else None
    if p.type == "offset":
        offset = int(state.get("offset", p.start)) + len(records)
        total = extract.get(body, p.total) if p.total else None
        if not records or len(records) < size or (isinstance(total, int) and offset >= total):
            return None
        return {"offset": offset}
    if p.type == "page_number":
        return {"page": int(state.get("page", p.start or 1)) + 1} if records and len(records) >= size else None
    return None
