"""Reading: content types, headers and exact ranges straight from the stores."""

from __future__ import annotations

import ipaddress

import pytest

from keyrelay.errors import NotFound, RangeNotSatisfiable
from keyrelay.files import reading
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Credentials
from support.storage import BACKENDS, Storage, make_source

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
DATA = bytes(range(256)) * 8


@pytest.mark.parametrize("key,stored,want", [
    ("a.txt", None, "text/plain"), ("a.pdf", "binary/octet-stream", "application/pdf"),
    ("a.bin", "application/x-custom", "application/x-custom"), ("noext", "", "application/octet-stream"),
    ("a.json", "application/octet-stream", "application/json"), ("x", "bad\nvalue", "application/octet-stream"),
])
def test_content_type(key: str, stored: object, want: str) -> None:
    assert reading.content_type(key, stored) == want


@pytest.mark.parametrize("backend", BACKENDS)
async def test_ranged_and_whole_reads(storage: Storage, backend: str) -> None:
    storage.put(backend, "rd/root/f.csv", DATA, "text/csv")
    spec = storage.source(backend, prefix="rd/root")
    fs = await StoreFactory(allow=LOOPBACK, local_roots=()).open(make_source(backend, spec["config"]),
                                                                   Credentials(spec["credentials"]))
    whole = await reading.open_file(fs, "f.csv", range_header=None, max_span=100)
    assert whole.status == 200 and whole.length == len(DATA) and whole.body is not None
    assert b"".join([c async for c in whole.body]) == DATA
    headers = dict(whole.headers)
    assert headers[b"content-type"] == b"text/csv" and headers[b"content-length"] == str(len(DATA)).encode()
    part = await reading.open_file(fs, "f.csv", range_header="bytes=-10", max_span=100)
    assert part.status == 206 and part.body is not None and b"".join([c async for c in part.body]) == DATA[-10:]
    assert dict(part.headers)[b"content-range"] == f"bytes {len(DATA) - 10}-{len(DATA) - 1}/{len(DATA)}".encode()
    head = await reading.open_file(fs, "f.csv", range_header="bytes=0-", max_span=100, head_only=True)
    assert head.status == 206 and head.length == 100 and head.body is None
    with pytest.raises(RangeNotSatisfiable):
        await reading.open_file(fs, "f.csv", range_header=f"bytes={len(DATA)}-", max_span=100)
    with pytest.raises(NotFound):
        await reading.open_file(fs, "missing.csv", range_header=None, max_span=100)
