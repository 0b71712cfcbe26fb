"""Range parsing and resolution: one range, bounded span, 416 outside the object."""

from __future__ import annotations

import pytest

from keyrelay.errors import InvalidRequest, RangeNotSatisfiable
from keyrelay.files import ranges

SIZE, MAX = 1000, 100


@pytest.mark.parametrize("header,span", [
    ("bytes=0-9", (0, 10)), ("bytes=990-", (990, 1000)), ("bytes=-5", (995, 1000)), ("bytes=0-", (0, 100)),
    ("bytes=950-5000", (950, 1000)), ("bytes=10-500", (10, 110)), ("bytes=-5000", (900, 1000)),
    ("Bytes = 5-5", (5, 6)), ("bytes=999-999", (999, 1000)),
])
def test_accepted_ranges_are_single_and_bounded(header: str, span: tuple[int, int]) -> None:
    spec = ranges.parse(header)
    assert spec is not None
    got = ranges.resolve(spec, SIZE, MAX)
    assert (got.start, got.end) == span and got.length <= MAX
    assert got.content_range() == f"bytes {span[0]}-{span[1] - 1}/{SIZE}"


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=0-1,3-4", "bytes=1-2, 5-"])
def test_unsatisfiable_ranges_are_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        spec = ranges.parse(header)
        assert spec is not None
        ranges.resolve(spec, SIZE, MAX)
    assert info.value.status == 416


@pytest.mark.parametrize("header", ["items=0-1", "bytes=5-1", "bytes=", "bytes=-", "bytes=a-b", "0-1", "bytes=1-2-3",
                                    "bytes=" + "9" * 300])
def test_malformed_ranges_are_400(header: str) -> None:
    with pytest.raises(InvalidRequest):
        ranges.parse(header)


def test_absent_header_and_empty_objects() -> None:
    assert ranges.parse(None) is None
    for header in ("bytes=0-", "bytes=-1"):
        spec = ranges.parse(header)
        assert spec is not None
        with pytest.raises(ranges.Unsatisfiable) as info:
            ranges.resolve(spec, 0, MAX)
        assert info.value.size == 0
