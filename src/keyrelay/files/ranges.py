"""The `Range` header of a file read: exactly one `bytes` range, bounded by `KEYRELAY_MAX_RANGE_BYTES`.

Accepted forms (RFC 9110 section 14.1.2): `bytes=a-b`, `bytes=a-` and `bytes=-n`. The decisions keyrelay makes
where the RFC leaves a choice (also in docs/files.md):

* several ranges (`bytes=0-1,5-9`) -> 416 `range_not_satisfiable`: keyrelay never builds multipart bodies;
* a range that does not parse, another unit, or `a > b` -> 400 `invalid_request` (not silently ignored, so
  an agent never receives a whole object it did not ask for);
* a range starting at or after the end of the object (or any range on an empty object, or `bytes=-0`) -> 416
  with `Content-Range: bytes */<size>`;
* a range longer than the maximum span -> clamped to the maximum: the answer is a 206 whose `Content-Range`
  names the bytes actually sent, and the agent asks again for the rest. Every accepted range is therefore a
  single range of at most the maximum span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keyrelay.errors import InvalidRequest, RangeNotSatisfiable

_SPEC = re.compile(r"(\d{0,19})-(\d{0,19})")
HEADER_MAX = 256


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """What the agent asked for: `first`/`last` inclusive; `suffix` for `bytes=-n`."""

    first: int | None = None
    last: int | None = None
    suffix: int | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A resolved range: `start` inclusive, `end` exclusive, within an object of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


class Unsatisfiable(RangeNotSatisfiable):
    """A 416 that knows the object size, for the `Content-Range: bytes */size` header."""

    def __init__(self, message: str, size: int | None) -> None:
        super().__init__(message, headers=() if size is None else ((b"content-range", f"bytes */{size}".encode()),))
        self.size = size


def parse(header: str | None) -> RangeSpec | None:
    """Parse the `Range` header value (None when absent)."""
    if header is None:
        return None
    text = header.strip()
    if len(text) > HEADER_MAX:
        raise InvalidRequest("Range header is too long", field="Range")
    unit, sep, ranges = text.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise InvalidRequest("Range must be of the form bytes=a-b, bytes=a- or bytes=-n", field="Range")
    parts = [p.strip() for p in ranges.split(",")]
    if len(parts) > 1:
        raise Unsatisfiable("Only one byte range per request is supported", None)
    match = _SPEC.fullmatch(parts[0])
    if match is None or match.group(0) == "-":
        raise InvalidRequest("Range must be of the form bytes=a-b, bytes=a- or bytes=-n", field="Range")
    first, last = match.group(1), match.group(2)
    if not first:
        return RangeSpec(suffix=int(last))
    spec = RangeSpec(first=int(first), last=int(last) if last else None)
    if spec.last is not None and spec.first is not None and spec.last < spec.first:
        raise InvalidRequest("Range end is before its start", field="Range")
    return spec


def resolve(spec: RangeSpec, size: int, max_span: int) -> Span:
    """The exact bytes to send for `spec` on an object of `size` bytes; clamps to `max_span`."""
    if spec.suffix is not None:
        if spec.suffix == 0 or size == 0:
            raise Unsatisfiable("Range is outside the file", size)
        length = min(spec.suffix, size, max_span)
        return Span(size - length, size, size)
    start = spec.first or 0
    if start >= size:
        raise Unsatisfiable("Range is outside the file", size)
    end = size if spec.last is None else min(spec.last + 1, size)
    return Span(start, min(end, start + max_span), size)
