"""Unique ids for requests and request-log rows: a random 64-bit prefix per process, then a counter.

Unique across instances and restarts (the prefix is random), cheap (no syscall per id), 32 hex characters
for the first 2^64 ids of a process. They are identifiers, not secrets: nothing is authorised by knowing one.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def new_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"


def from_this_process(value: str) -> bool:
    """Whether `new_id` of this process made `value`."""
    return value.startswith(_PREFIX)
