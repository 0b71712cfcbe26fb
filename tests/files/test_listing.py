"""Listing pages: offset tokens bound to source and prefix, keys relative to the root, odd keys skipped."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.files import listing
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Credentials
from support.storage import BACKENDS, Storage, make_source

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
KEYS = [f"lst/root/p/{i:02d}" for i in range(20)]
ODD = ["lst/root/p/05x%41"]  # not requestable (double-encoded), so never listed


@pytest.fixture(scope="module")
def tree(storage: Storage) -> Storage:
    for key in [*KEYS, *ODD, "lst/rootX/p/00", "lst/outside"]:
        storage.put_all(key, b"x")
    for backend in ("s3", "gcs"):  # Azure itself turns a backslash in a blob name into '/'
        storage.put(backend, "lst/root/p/05y\\z", b"x")
    return storage


async def pages(fs: Any, prefix: str, limit: int) -> list[list[str]]:
    out, token = [], None
    while True:
        page = await listing.list_page(fs, source_id="src-1", prefix=prefix, token=token, limit=limit)
        out.append([e.path for e in page.files])
        token = page.next_page_token
        if token is None:
            return out


@pytest.mark.parametrize("backend", BACKENDS)
async def test_pages_cover_every_key_once(tree: Storage, backend: str) -> None:
    spec = tree.source(backend, prefix="lst/root")
    fs = await StoreFactory(allow=LOOPBACK, local_roots=()).open(make_source(backend, spec["config"]),
                                                                   Credentials(spec["credentials"]))
    want = [k.removeprefix("lst/root/") for k in KEYS]
    assert await pages(fs, "p", 10) == [want[:10], want[10:]]  # an exact multiple ends without a token
    assert await pages(fs, "p", 7) == [want[:7], want[7:14], want[14:]]
    assert await pages(fs, "", 1000) == [want]  # nothing from rootX/ or outside
    assert await pages(fs, "nope", 5) == [[]]


def test_tokens_are_bound_to_source_and_prefix() -> None:
    token = listing.encode_token("src-1", "p", "p/03")
    assert listing.decode_token(token, "src-1", "p") == "p/03"
    for source, prefix in (("src-2", "p"), ("src-1", "q"), ("src-1", "")):
        with pytest.raises(InvalidRequest):
            listing.decode_token(token, source, prefix)
    outside, dotted = listing.encode_token("src-1", "p", "q/01"), listing.encode_token("src-1", "p", "p/../x")
    for bad in ("", "!!!", "e30", outside, dotted, "A" * 5000):
        with pytest.raises(InvalidRequest):
            listing.decode_token(bad, "src-1", "p")


def test_entry_views_and_etags() -> None:
    assert listing.quoted("abc") == '"abc"' and listing.quoted('"abc"') == '"abc"' and listing.quoted("") is None
    assert listing.quoted('W/"x"') == 'W/"x"' and listing.quoted(None) is None
