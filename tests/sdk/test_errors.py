"""Errors: one class per documented code, both error body shapes, families for unknown codes, live mapping."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay_client import (
    ClientError,
    Conflict,
    CredentialsRequired,
    Forbidden,
    KeyrelayError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthenticated,
    UnexpectedResponse,
    Unprocessable,
    UpstreamTimeout,
)
from keyrelay_client.calls import Call
from keyrelay_client.errors import CODES, error_from_response
from support.keyrelay import KeyrelayServer

ERRORS_MD = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def documented_codes() -> dict[str, int]:
    rows = {}
    for line in ERRORS_MD.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|.*\|", line.strip())
        if m:
            rows[m.group(2)] = int(m.group(1))
    return rows


def body(**error: Any) -> bytes:
    return json.dumps({"error": error}).encode()


def test_every_documented_code_has_its_own_class_with_its_status() -> None:
    documented = documented_codes()
    assert len(documented) >= 20  # the table was found
    assert {code: cls.default_status for code, cls in CODES.items()} == documented
    assert len(set(CODES.values())) == len(CODES)


@pytest.mark.parametrize(("code", "status"), sorted(documented_codes().items()))
def test_a_documented_code_maps_to_its_class_and_family(code: str, status: int) -> None:
    err = error_from_response(status, {}, body(code=code, message="m", request_id="r1"))
    assert type(err) is CODES[code]
    assert isinstance(err, ClientError if status < 500 else ServerError)
    assert (err.status, err.code, err.message, err.request_id) == (status, code, "m", "r1")


def test_rate_limited_carries_retry_after_and_field() -> None:
    err = error_from_response(429, {"Retry-After": "12"}, body(code="rate_limited", message="slow down",
                                                                 request_id="abc", retry_after=12))
    assert isinstance(err, RateLimited) and err.retry_after == 12
    err = error_from_response(429, {"retry-after": "7"}, body(code="rate_limited", message="m"))
    assert err.retry_after == 7  # from the header when the body has none
    err = error_from_response(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"")
    assert err.retry_after is None  # dates are not read
    err = error_from_response(400, {}, body(code="invalid_request", message="bad", field="config.upstream_url"))
    assert err.field == "config.upstream_url" and err.details["field"] == "config.upstream_url"


def test_airbyte_shaped_body_is_understood() -> None:
    raw = json.dumps({"errors": [{"message": "Connector not found", "userPresentableMessage": "Connector not found",
                                  "code": "not_found"}]}).encode()
    err = error_from_response(404, {"X-Request-Id": "rid-9"}, raw)
    assert isinstance(err, NotFound)
    assert (err.message, err.request_id) == ("Connector not found", "rid-9")
    only_user_message = json.dumps({"errors": [{"userPresentableMessage": "Too many", "code": "rate_limited"}]})
    err = error_from_response(429, {"Retry-After": "3"}, only_user_message.encode())
    assert isinstance(err, RateLimited) and err.message == "Too many" and err.retry_after == 3


@pytest.mark.parametrize(("status", "family"), [(403, ClientError), (418, ClientError), (500, ServerError),
                                                (599, ServerError), (302, UnexpectedResponse)])
def test_unknown_codes_map_to_the_family_and_keep_their_code(status: int, family: type[KeyrelayError]) -> None:
    err = error_from_response(status, {}, body(code="budget_exhausted", message="Budget used up"))
    assert type(err) is family
    assert (err.code, err.message, err.status) == ("budget_exhausted", "Budget used up", status)


@pytest.mark.parametrize("raw", [b"", b"<html>Bad Gateway</html>", b"[1, 2]", b'{"error": "a string"}', b"\xff"])
def test_bodies_that_are_not_keyrelay_errors_still_give_an_error_without_echoing_them(raw: bytes) -> None:
    err = error_from_response(502, {"x-request-id": "from-header"}, raw)
    assert type(err) is ServerError and err.code == "error" and err.request_id == "from-header"
    assert "Bad Gateway" not in str(err) and err.message == "HTTP 502 without a keyrelay error body"


def test_str_and_repr_name_status_code_and_request_id() -> None:
    err = UpstreamTimeout("The upstream did not answer", status=504, request_id="r-1")
    assert str(err) == "504 upstream_timeout: The upstream did not answer (request_id r-1)"
    assert repr(err) == ("UpstreamTimeout(status=504, code='upstream_timeout', "
                         "message='The upstream did not answer', request_id='r-1')")
    assert str(KeyrelayError("no status")) == "error: no status"


# --- against a live keyrelay --------------------------------------------------------------------------------


def test_live_errors_map_to_their_classes(client: Any, workspace: dict[str, str], connect: Any,
                                          server: KeyrelayServer) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFound) as missing:
        client.workspaces.get(unknown)
    assert missing.value.status == 404 and len(missing.value.request_id or "") > 8

    with pytest.raises(Conflict) as dup:
        client.workspaces.create(workspace["name"])
    assert dup.value.field == "name"

    with pytest.raises(Unauthenticated):
        connect(server.url, api_key="kr_not_a_real_key").workspaces.list()


def test_live_unknown_entity_is_unprocessable(client: Any, workspace: dict[str, str], raw: Any) -> None:
    src = raw.source(workspace["id"], upstream_url="", connector="stripe", slug="stripe",
                     config={"base_url": "http://127.0.0.1:9"}, credentials={"api_key": "sk_test_x"})
    with pytest.raises(Unprocessable) as err:
        client.execute(src["id"], "nope", "list")
    assert "valid entities" in err.value.message and err.value.field == "entity"


def test_live_airbyte_route_error_is_read(server: KeyrelayServer) -> None:
    """The Airbyte-compatible routes answer `{"errors": [...]}`; the runner turns it into the right class."""
    from keyrelay_client import Keyrelay
    from support.keyrelay import ADMIN_ID, ADMIN_SECRET

    with Keyrelay(server.url, client_id=ADMIN_ID, client_secret=ADMIN_SECRET, env={}) as kr:
        with pytest.raises(NotFound) as err:
            kr._runner.send(Call("GET", f"/api/v1/integrations/connectors/{uuid.uuid4()}"))
        raw = httpx.get(server.url + f"/api/v1/integrations/connectors/{uuid.uuid4()}",
                        headers={"Authorization": "Bearer x"})
        assert "errors" in raw.json()  # the route really uses the Airbyte shape
    assert err.value.code == "not_found" and err.value.request_id


def test_live_moving_a_source_without_its_credentials_is_credentials_required(client: Any, workspace: dict[str, str],
                                                                            raw: Any) -> None:
    src = raw.source(workspace["id"], upstream_url="http://127.0.0.1:9/v1", credentials={"bearer_token": "sk-1"},
                     slug="moving")
    with pytest.raises(CredentialsRequired) as err:
        client.sources.update(src["id"], config={"upstream_url": "http://127.0.0.2:9/v1"})
    assert (err.value.status, err.value.field) == (409, "credentials")
    moved = client.sources.update(src["id"], config={"upstream_url": "http://127.0.0.2:9/v1"},
                                  credentials={"bearer_token": "sk-1"})
    assert moved.config["upstream_url"] == "http://127.0.0.2:9/v1"


def test_a_constraint_refusal_names_its_kind() -> None:
    err = error_from_response(403, {}, body(code="forbidden", message="Not one of this token's sources",
                                            constraint="sources"))
    assert isinstance(err, Forbidden) and err.constraint == "sources"
    assert error_from_response(403, {}, body(code="forbidden", message="m")).constraint is None
