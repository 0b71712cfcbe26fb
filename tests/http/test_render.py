"""The one error renderer (http/render.py) and the public views: every error has the contract's body and
headers, nothing unexpected leaks its details, a validation error names the field but never the value, and no
view carries a credential."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.testclient import TestClient

from keyrelay.errors import PayloadTooLarge, RateLimited, UpstreamTimeout
from keyrelay.http.render import error_headers, install_error_handlers, iso, send_error, source_view
from keyrelay.model import Policy, Source


class Body(BaseModel):
    name: str
    count: int


@pytest.fixture
def client() -> Iterator[TestClient]:
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/limited")
    async def limited() -> None:
        raise RateLimited("slow down", retry_after=7)

    @api.get("/crash")
    async def crash() -> None:
        raise RuntimeError("database password is hunter2")

    @api.post("/body")
    async def body(b: Body) -> dict[str, Any]:
        return b.model_dump()

    with TestClient(api, raise_server_exceptions=False) as c:
        yield c


def test_a_keyrelay_error_has_the_contract_body_and_headers(client: TestClient) -> None:
    r = client.get("/limited")
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and r.headers["cache-control"] == "no-store"
    err = r.json()["error"]
    assert (err["code"], err["message"], err["retry_after"]) == ("rate_limited", "slow down", 7)


def test_an_unexpected_error_is_a_fixed_500_without_its_details(client: TestClient) -> None:
    r = client.get("/crash")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "hunter2" not in r.text and "RuntimeError" not in r.text


def test_unknown_routes_and_methods_answer_in_the_contract_shape(client: TestClient) -> None:
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    r = client.delete("/limited")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("payload,field", [
    ({"name": "n", "count": "secret-value-1"}, "count"), ({"count": 1}, "name"),
])
def test_a_validation_error_names_the_field_but_not_the_value(client: TestClient, payload: dict[str, Any],
                                                              field: str) -> None:
    r = client.post("/body", json=payload)
    assert r.status_code == 400 and r.json()["error"]["field"] == field
    assert "secret-value-1" not in r.text


def test_malformed_json_is_named_as_such(client: TestClient) -> None:
    r = client.post("/body", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Malformed JSON body"


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
