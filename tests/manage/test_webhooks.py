"""Webhooks (manage/webhooks.py) on the real store and vault, delivered through the guarded upstream client to a
real receiver, with a clock the test moves: signatures a receiver can verify (and replays it can refuse),
retries with backoff, every attempt logged, endpoints behind the SSRF guard."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

from keyrelay.errors import InvalidRequest, SsrfBlocked
from keyrelay.manage.webhooks import CONNECT_EVENTS, backoff, check_url, sign, verify
from support.connect import Parts, assembled
from support.fakes.base import FakeApi


class Receiver(FakeApi):
    """An operator's webhook endpoint: answers 200 (or what `fail_next` says) and records what arrived."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/keyrelay", self.hook)
        app.router.add_post("/moved", self.moved)

    async def hook(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.url}/hooks/keyrelay")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Parts]:
    async with assembled(tmp_path) as parts:
        yield parts


# --- signatures --------------------------------------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"connection.created","data":{}}'


def test_a_signature_verifies_within_the_replay_window_only() -> None:
    header = sign("whsec_x", 1_800_000_000, BODY)
    assert header.startswith("t=1800000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("whsec_x", header, BODY, now=1_800_000_000 + 299)
    assert verify("whsec_x", header, BODY, now=1_800_000_000 - 299)
    assert not verify("whsec_x", header, BODY, now=1_800_000_000 + 301)  # a replay, later
    assert not verify("whsec_x", header, BODY, now=1_800_000_000 - 301)


@pytest.mark.parametrize("header,body,secret", [
    (sign("whsec_x", 1_800_000_000, BODY), BODY + b" ", "whsec_x"),  # tampered body
    (sign("whsec_x", 1_800_000_000, BODY), BODY, "whsec_y"),  # another endpoint's secret
    (sign("whsec_x", 1_800_000_000, BODY).replace("t=1800000000", "t=1800000001"), BODY, "whsec_x"),  # new stamp
    ("v1=" + sign("whsec_x", 1_800_000_000, BODY).split("v1=")[1], BODY, "whsec_x"),  # no timestamp
    ("t=abc,v1=00", BODY, "whsec_x"),
    ("", BODY, "whsec_x"),
])
def test_a_signature_that_does_not_match_is_refused(header: str, body: bytes, secret: str) -> None:
    assert not verify(secret, header, body, now=1_800_000_000)


def test_one_matching_v1_among_several_is_enough() -> None:
    good = sign("whsec_x", 1_800_000_000, BODY)
    assert verify("whsec_x", f"t=1800000000,v1={'0' * 64},{good.split(',')[1]}", BODY, now=1_800_000_000)


@pytest.mark.parametrize("url,ok", [
    ("https://hooks.example.com/keyrelay", True), ("https://hooks.example.com/k?token=abc", True),
    ("https://hooks.example.com", True), ("https://hooks.example.com/k#x", False),
    ("https://u:p@hooks.example.com/k", False), ("ftp://hooks.example.com/k", False), ("hooks.example.com", False),
    ("https://hooks.example.com/k?a b", False),
])
def test_endpoint_urls_follow_the_base_url_rules(url: str, ok: bool) -> None:
    if ok:
        assert check_url(url).startswith("https://hooks.example.com/")
    else:
        with pytest.raises(InvalidRequest):
            check_url(url)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempts in range(1, 12):
        want = min(30.0 * 2 ** (attempts - 1), 3600.0)
        for _ in range(20):
            assert 0.8 * want <= backoff(attempts, 30.0) <= 1.2 * want


# --- the service ---------------------------------------------------------------------------------------------------

async def test_an_endpoint_is_created_with_a_secret_shown_once_and_stored_sealed(p: Parts,
                                                                                 receiver: Receiver) -> None:
    hooks = p.webhooks()
    hook, secret = await hooks.create({"url": receiver.url + "/hooks/keyrelay", "events": ["connection.created"]})
    assert secret.startswith("whsec_") and secret not in repr(hook)
    async with p.engine.connect() as conn:
        rows = "".join(repr(tuple(r)) for r in await conn.execute(sa.text("SELECT * FROM webhooks")))
    assert hook.id in rows and secret not in rows and secret[6:] not in rows
    assert [h.id for h in await hooks.list_webhooks()] == [hook.id]


@pytest.mark.parametrize("body,field", [
    ({"url": "https://x.example/k", "events": ["nope"]}, "events"),
    ({"url": "https://x.example/k", "events": []}, "events"),
    ({"url": "javascript:alert(1)", "events": ["connection.created"]}, "url"),
    ({"url": "https://x.example/k", "events": ["connection.created"], "secret": "mine"}, "secret"),
])
async def test_bad_endpoint_input_names_the_field(p: Parts, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        await p.webhooks().create(body)
    assert err.value.field == field


@pytest.mark.parametrize("url", ["http://10.0.0.5/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:8080/hook"])
async def test_an_endpoint_at_a_forbidden_address_is_refused(p: Parts, url: str) -> None:
    with pytest.raises(SsrfBlocked) as err:
        await p.webhooks().create({"url": url, "events": list(CONNECT_EVENTS)})
    assert err.value.field == "url"


async def test_a_delivery_is_signed_and_logged(p: Parts, receiver: Receiver) -> None:
    hooks = p.webhooks()
    hook, secret = await hooks.create({"url": receiver.url + "/hooks/keyrelay?tenant=1",
                                       "events": list(CONNECT_EVENTS)})
    assert await hooks.publish("connection.created", {"source_id": "src-1", "workspace_id": "ws-1"}) == 1
    assert await hooks.deliver_due() == 1
    [got] = receiver.requests
    assert got.raw_path == "/hooks/keyrelay?tenant=1"
    assert verify(secret, got.headers["Keyrelay-Signature"], got.body, now=p.clock.now)
    event = json.loads(got.body)
    assert (event["type"], event["data"], got.headers["Keyrelay-Event"]) == \
        ("connection.created", {"source_id": "src-1", "workspace_id": "ws-1"}, "connection.created")
    assert got.headers["Keyrelay-Event-Id"] == event["id"] and event["created_at"].endswith("Z")
    [d] = await hooks.deliveries(hook.id)
    assert (d.status, d.attempts, d.last_status, d.delivered_at) == ("delivered", 1, 200, p.clock.now)
    assert await hooks.deliver_due() == 0  # delivered once


async def test_a_failed_delivery_is_retried_with_backoff_then_given_up(p: Parts, receiver: Receiver) -> None:
    hooks = p.webhooks(retry_base_seconds=30.0, max_attempts=3)
    hook, secret = await hooks.create({"url": receiver.url + "/hooks/keyrelay", "events": ["connection.deleted"]})
    receiver.fail_next = [(500, {}, {"error": "down"}), (503, {}, {"error": "down"})]
    await hooks.publish("connection.deleted", {"source_id": "src-1"})
    start = p.clock.now
    assert await hooks.deliver_due() == 1
    [d] = await hooks.deliveries(hook.id)
    assert (d.status, d.attempts, d.last_status) == ("pending", 1, 500)
    assert start + 24 <= d.next_attempt_at <= start + 36
    assert await hooks.deliver_due() == 0  # not due yet
    p.clock.now = d.next_attempt_at
    assert await hooks.deliver_due() == 1
    [d] = await hooks.deliveries(hook.id)
    assert (d.status, d.attempts, d.last_status) == ("pending", 2, 503)
    assert p.clock.now + 48 <= d.next_attempt_at <= p.clock.now + 72
    p.clock.now = d.next_attempt_at
    assert await hooks.deliver_due() == 1
    [d] = await hooks.deliveries(hook.id)
    assert (d.status, d.attempts, d.last_status) == ("delivered", 3, 200)
    bodies = {r.body for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(bodies) == 1  # the same event each time, freshly signed
    assert all(verify(secret, r.headers["Keyrelay-Signature"], r.body, now=p.clock.now) for r in receiver.requests[-1:])

    receiver.fail_next = [(500, {}, {})] * 3
    await hooks.publish("connection.deleted", {"source_id": "src-2"})
    for _ in range(3):
        p.clock.now += 10_000
        await hooks.deliver_due()
    latest = (await hooks.deliveries(hook.id))[0]
    assert (latest.status, latest.attempts) == ("failed", 3)


async def test_a_redirect_is_a_failure_and_is_not_followed(p: Parts, receiver: Receiver) -> None:
    hooks = p.webhooks()
    hook, _ = await hooks.create({"url": receiver.url + "/moved", "events": ["connection.created"]})
    await hooks.publish("connection.created", {})
    await hooks.deliver_due()
    assert [r.raw_path for r in receiver.requests] == ["/moved"]
    [d] = await hooks.deliveries(hook.id)
    assert (d.status, d.last_status) == ("pending", 302)


async def test_only_subscribed_endpoints_get_an_event(p: Parts, receiver: Receiver) -> None:
    hooks = p.webhooks()
    await hooks.create({"url": receiver.url + "/hooks/keyrelay", "events": ["connection.needs_reauth"]})
    assert await hooks.publish("connection.created", {}) == 0
    assert await hooks.publish("connection.needs_reauth", {}) == 1
    with pytest.raises(ValueError, match="unknown webhook event"):
        await hooks.publish("approval.requested", {})
    extended = p.webhooks(events=(*CONNECT_EVENTS, "approval.requested"))  # another feature's events
    assert await extended.publish("approval.requested", {"approval_id": "a1"}) == 0


async def test_the_worker_delivers_emitted_events_off_the_request_path(p: Parts, receiver: Receiver) -> None:
    hooks = p.webhooks(poll_seconds=5.0)
    await hooks.create({"url": receiver.url + "/hooks/keyrelay", "events": ["connect_session.expired"]})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    stop = asyncio.Event()
    worker = asyncio.create_task(hooks.run(stop, tick=tick))
    try:
        hooks.emit("connect_session.expired", {"connect_session_id": "cs-1"})  # returns at once
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert json.loads(receiver.requests[0].body)["data"] == {"connect_session_id": "cs-1"}
        assert ticks >= 1
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
