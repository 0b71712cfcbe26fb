"""The upstream client (egress/upstream.py) against a real loopback upstream: retries only idempotent requests
whose body can be replayed, at most MAX_RETRIES of them, with backoff inside the deadline; `Retry-After` on a 429
is honoured when it fits the deadline; nothing is retried once the response has begun (its bytes may already be
on their way to the agent); no redirects followed, no headers added.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from keyrelay.egress import upstream as upstream_module
from keyrelay.egress.upstream import MAX_RETRIES, UpstreamClient
from keyrelay.errors import KeyrelayError, UpstreamTimeout, UpstreamUnreachable
from keyrelay.model import Outbound
from support.upstream import FakeUpstream

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(allow=LOOPBACK, max_connections=8)
    yield c
    await c.close()


def _out(url: str, *, method: str = "GET", idempotent: bool | None = None, body: object = None,
         timeout: float = 10.0, headers: tuple[tuple[str, str], ...] = ()) -> Outbound:
    return Outbound(method=method, url=url, headers=headers, body=body,  # type: ignore[arg-type]
                    timeout_seconds=timeout, idempotent=method in ("GET", "HEAD") if idempotent is None else idempotent)


def _flaky(up: FakeUpstream, **query: object) -> str:
    args = "&".join(f"{k}={v}" for k, v in {"key": uuid.uuid4().hex, **query}.items())
    return f"{up.url}/flaky?{args}"


async def test_an_idempotent_request_is_retried_past_a_passing_5xx(client: UpstreamClient,
                                                                   upstream: FakeUpstream) -> None:
    sent = await client.send(_out(_flaky(upstream, fail=2, status=503)))
    assert sent.response.status == 200
    assert (await sent.response.read()).endswith(b'"attempt": 2}')
    sent.response.release()
    assert len(upstream.requests) == 3


async def test_retries_are_bounded_and_the_last_answer_is_returned(client: UpstreamClient,
                                                                   upstream: FakeUpstream) -> None:
    sent = await client.send(_out(upstream.url + "/status/502"))
    assert sent.response.status == 502
    sent.response.release()
    assert len(upstream.requests) == 1 + MAX_RETRIES


@pytest.mark.parametrize("status", [500, 501, 400, 404])
async def test_other_statuses_are_never_retried(client: UpstreamClient, upstream: FakeUpstream, status: int) -> None:
    sent = await client.send(_out(_flaky(upstream, fail=1, status=status)))
    assert sent.response.status == status
    sent.response.release()
    assert len(upstream.requests) == 1


async def test_a_post_is_not_retried(client: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client.send(_out(_flaky(upstream, fail=1), method="POST", body=b"{}"))
    assert sent.response.status == 503
    sent.response.release()
    assert len(upstream.requests) == 1


async def test_a_post_marked_idempotent_with_a_replayable_body_is_retried(client: UpstreamClient,
                                                                          upstream: FakeUpstream) -> None:
    sent = await client.send(_out(_flaky(upstream, fail=1), method="POST", idempotent=True, body=b"{}"))
    assert sent.response.status == 200
    sent.response.release()
    assert [r.body for r in upstream.requests] == [b"{}", b"{}"]  # the same bytes, sent again


async def test_a_streamed_body_is_never_replayed(client: UpstreamClient, upstream: FakeUpstream) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part one,"
        yield b"part two"

    sent = await client.send(_out(_flaky(upstream, fail=1), method="PUT", idempotent=True, body=body()))
    assert sent.response.status == 503  # it cannot be sent twice: the upstream's answer comes back as it is
    sent.response.release()
    assert [r.body for r in upstream.requests] == [b"part one,part two"]


async def test_retry_after_on_a_429_is_honoured(client: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client.send(_out(_flaky(upstream, fail=1, status=429, retry_after=1)))
    assert sent.response.status == 200
    sent.response.release()
    first, second = upstream.requests
    assert second.at - first.at >= 0.95  # waited the second it was told to (loop timers may fire a hair early)


async def test_a_429_without_a_usable_retry_after_is_returned_at_once(client: UpstreamClient,
                                                                      upstream: FakeUpstream) -> None:
    for value in (None, "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5"):
        upstream.clear()
        query = {"fail": 1, "status": 429} | ({} if value is None else {"retry_after": value.replace(" ", "%20")})
        sent = await client.send(_out(_flaky(upstream, **query)))
        assert sent.response.status == 429, value
        sent.response.release()
        assert len(upstream.requests) == 1, value


async def test_a_retry_after_past_the_deadline_is_not_waited_for(client: UpstreamClient,
                                                                upstream: FakeUpstream) -> None:
    started = time.monotonic()
    sent = await client.send(_out(_flaky(upstream, fail=1, status=429, retry_after=30), timeout=5))
    assert sent.response.status == 429
    sent.response.release()
    assert len(upstream.requests) == 1 and time.monotonic() - started < 4


async def test_a_broken_connection_is_retried_for_an_idempotent_request(client: UpstreamClient,
                                                                        upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamUnreachable):
        await client.send(_out(upstream.url + "/garbage"))  # not HTTP at all, every time
    assert len(upstream.requests) == 1 + MAX_RETRIES


async def test_a_broken_connection_is_not_retried_for_a_post(client: UpstreamClient, upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamUnreachable):
        await client.send(_out(upstream.url + "/garbage", method="POST", body=b"x"))
    assert len(upstream.requests) == 1


async def test_backoff_never_runs_past_the_deadline(client: UpstreamClient, upstream: FakeUpstream,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "_jittered", lambda attempt: 60.0)  # a backoff far past the deadline
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # refused at once rather than after sleeping past the deadline
        await client.send(_out(upstream.url + "/garbage", timeout=10.0))
    assert time.monotonic() - started < 10.0  # sleeping the backoff would take 60 s
    assert len(upstream.requests) == 1


async def test_nothing_is_retried_once_the_response_has_begun(client: UpstreamClient,
                                                             upstream: FakeUpstream) -> None:
    sent = await client.send(_out(upstream.url + "/reset"))  # headers and some body, then the connection dies
    assert sent.response.status == 200
    with pytest.raises(KeyrelayError):
        async for _ in sent.response.chunks():
            pass
    sent.response.release()
    assert len(upstream.requests) == 1


async def test_a_slow_upstream_times_out_at_the_deadline(client: UpstreamClient, upstream: FakeUpstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await client.send(_out(upstream.url + "/slow?delay=10", timeout=0.3))  # a deliberately slow peer
    assert time.monotonic() - started < 3
    assert len(upstream.requests) == 1


async def test_redirects_are_returned_and_no_header_is_added(client: UpstreamClient, upstream: FakeUpstream) -> None:
    sent = await client.send(_out(upstream.url + "/redirect?to=/echo", headers=(("X-Only", "1"),)))
    assert sent.response.status == 302 and sent.response.header(b"location") == b"/echo"
    sent.response.release()
    [seen] = upstream.requests
    names = {k.lower() for k, _ in seen.headers}
    assert "x-only" in names and not names & {"accept-encoding", "cookie", "user-agent", "authorization"}


async def test_post_form_is_sent_once_and_read_whole(client: UpstreamClient, upstream: FakeUpstream) -> None:
    status, body = await client.post_form(_flaky(upstream, fail=1), {"grant_type": "refresh_token"},
                                          timeout_seconds=5)
    assert status == 503 and b'"attempt": 0' in body  # a refresh token may be single-use: never sent twice
    [seen] = upstream.requests
    assert seen.body == b"grant_type=refresh_token"
    assert seen.header("Content-Type") == "application/x-www-form-urlencoded"
    with pytest.raises(KeyrelayError):
        await client.post_form(upstream.url + "/big?size=100000", {}, timeout_seconds=5, max_bytes=1000)
