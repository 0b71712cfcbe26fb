"""The FastAPI routes' responses (http/responses.py): every error has the contract's body and headers, nothing
unexpected leaks its details, a validation error names the field but never the value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.testclient import TestClient

from keyrelay.errors import RateLimited
from keyrelay.http.responses import install_error_handlers, json_response


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


def test_json_response_is_compact_utf8_json() -> None:
    r = json_response({"name": "café", "n": [1, 2]}, status=201, headers={"location": "/x"})
    assert r.status_code == 201 and r.body == '{"name":"café","n":[1,2]}'.encode()
    assert r.headers["content-type"] == "application/json" and r.headers["location"] == "/x"
