"""The one error renderer (http/render.py) and the public views: every error has the contract's body and
headers, and no view carries a credential. (The FastAPI side of the same errors: test_responses.py.)"""

from __future__ import annotations

from typing import Any

import httpx

from keyrelay.errors import PayloadTooLarge, UpstreamTimeout
from keyrelay.http.render import error_headers, iso, send_error, source_view
from keyrelay.model import Policy, Source


def test_errors_that_refuse_an_unread_body_close_the_connection() -> None:
    assert (b"connection", b"close") in error_headers(PayloadTooLarge("big"), length=10)
    assert (b"connection", b"close") not in error_headers(UpstreamTimeout("slow"), length=10)


async def test_send_error_is_one_asgi_response_with_an_exact_length() -> None:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    await send_error(send, UpstreamTimeout("slow"), "rid-9", [(b"x-extra", b"1")])
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 504 and int(headers[b"content-length"]) == len(body["body"])
    assert headers[b"x-extra"] == b"1"
    doc = httpx.Response(504, content=body["body"]).json()
    assert doc["error"]["code"] == "upstream_timeout" and doc["error"]["request_id"] == "rid-9"


def test_a_source_view_lists_credential_names_only() -> None:
    src = Source(id="s", workspace_id="w", connector="http", name="n", slug="s", config={"upstream_url": "u"},
                 policy=Policy(allowed_methods=frozenset({"POST", "GET"})), status="active",
                 credential_fields=("bearer_token",), created_at=0, updated_at=1.5)
    view = source_view(src)
    assert view["credentials"] == ["bearer_token"] and view["policy"]["allowed_methods"] == ["GET", "POST"]
    assert view["created_at"] == "1970-01-01T00:00:00Z" and view["updated_at"] == "1970-01-01T00:00:01.500000Z"
    assert iso(None) is None
