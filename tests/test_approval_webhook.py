"""The approval webhook adapter (approval_webhook.py): signatures a receiver can verify (and forgeries it can
refuse), delivery through the guarded egress to a real loopback receiver, retries after failures, nothing sent
to a forbidden address, a bounded queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from keyrelay.approval_webhook import SignedWebhook, sign, verify
from keyrelay.egress.upstream import UpstreamClient
from support.fakes.base import FakeApi

SECRET = "whsec-unit-9d1"


class Receiver(FakeApi):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/approvals", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    import ipaddress

    upstream = UpstreamClient(allow=(ipaddress.ip_network("127.0.0.0/8"),), max_connections=4)
    yield upstream
    await upstream.close()


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body, now = b'{"type":"approval.requested"}', 1_800_000_000
    header = sign(SECRET, now, body)
    assert verify(SECRET, header, body, now=now + 299)
    assert not verify(SECRET, header, body + b" ", now=now)
    assert not verify("other-secret", header, body, now=now)
    assert not verify(SECRET, header, body, now=now + 301)  # a replay after the window
    assert not verify(SECRET, header.replace("t=", "t=1"), body, now=now)
    assert not verify(SECRET, "v1=" + header.split("v1=")[1], body, now=now)  # no timestamp


async def _delivered(receiver: Receiver, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(receiver.requests) < count:
        assert time.monotonic() < deadline, "not delivered in time"
        await asyncio.sleep(0.02)


async def test_events_are_delivered_signed_and_retried_after_a_failure(receiver: Receiver,
                                                                       client: UpstreamClient) -> None:
    receiver.fail_next = [(500, {}, {"error": "busy"}), (503, {}, {"error": "busy"})]
    hook = SignedWebhook(url=receiver.url + "/hooks/approvals", secret=SECRET, upstream=client, clock=time.time,
                         retry_seconds=0.05)
    stop = asyncio.Event()
    worker = asyncio.ensure_future(hook.run(stop))
    try:
        assert await hook.publish("approval.requested", {"approval": {"id": "apv_1"}}) == 1
        await _delivered(receiver, 3)
    finally:
        stop.set()
        await worker
    attempts = receiver.requests
    assert len(attempts) == 3 and len({a.headers["Keyrelay-Event-Id"] for a in attempts}) == 1
    last = attempts[-1]
    assert verify(SECRET, last.headers["Keyrelay-Signature"], last.body, now=time.time())
    event = json.loads(last.body)
    assert event["type"] == "approval.requested" and event["data"] == {"approval": {"id": "apv_1"}}
    assert last.headers["Keyrelay-Event"] == "approval.requested" and event["id"].startswith("evt_")


async def test_nothing_is_sent_to_an_address_the_guard_refuses(receiver: Receiver) -> None:
    guarded = UpstreamClient(allow=(), max_connections=2)  # loopback is not public: refused by the SSRF guard
    hook = SignedWebhook(url=receiver.url + "/hooks/approvals", secret=SECRET, upstream=guarded, clock=time.time)
    try:
        assert not await hook._attempt("approval.requested", "evt_1", b"{}")
    finally:
        await guarded.close()
    assert receiver.requests == []


async def test_the_queue_is_bounded(client: UpstreamClient, receiver: Receiver) -> None:
    import keyrelay.approval_webhook as module

    hook = SignedWebhook(url=receiver.url + "/hooks/approvals", secret=SECRET, upstream=client, clock=time.time)
    hook._queue = asyncio.Queue(2)
    assert [await hook.publish("approval.requested", {}) for _ in range(3)] == [1, 1, 0]
    assert module._QUEUE_MAX >= 1000
