"""http/asgi.py: reading a whole request body is bounded by bytes, however the ASGI server splits it."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from keyrelay.errors import PayloadTooLarge
from keyrelay.http.asgi import read_body


def _receive(pieces: int, piece: bytes) -> Any:
    """An ASGI `receive` handing the body over in `pieces` messages of `piece`, each a new object (as uvicorn's
    `bytes(self.body)` makes one per message)."""
    sent = 0
    template = bytearray(piece)

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        if sent > pieces:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(template), "more_body": True}

    return receive


async def test_many_small_messages_are_held_in_one_buffer() -> None:
    """Two-byte messages would cost ~40 bytes each as separate objects: 200,000 of them ~8 MiB for 400 KB."""
    pieces = 200_000
    tracemalloc.start()
    try:
        body = await read_body(_receive(pieces, b"ab"), {"headers": []}, limit=10 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body == b"ab" * pieces
    assert peak < 3 * len(body), peak


@pytest.mark.parametrize(("pieces", "piece"), [(1, b"x" * 1000), (3, b"abc"), (0, b"")])
async def test_the_body_is_exact(pieces: int, piece: bytes) -> None:
    assert await read_body(_receive(pieces, piece), {"headers": []}, limit=4096) == piece * pieces


async def test_the_limit_counts_every_byte() -> None:
    assert await read_body(_receive(10, b"ab"), {"headers": []}, limit=20) == b"ab" * 10
    with pytest.raises(PayloadTooLarge):
        await read_body(_receive(11, b"ab"), {"headers": []}, limit=21)
