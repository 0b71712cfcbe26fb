"""Request building and upstream error mapping of the connector engine (pure functions), and how the
definition's default headers meet the pipeline's header rules."""

from __future__ import annotations

import pytest

from keyrelay.connectors.definition import Action
from keyrelay.connectors.engine import request_for, upstream_error
from keyrelay.connectors.params import Placed
from keyrelay.connectors.spec import load_catalog
from keyrelay.errors import NotFound, RateLimited, Unprocessable
from keyrelay.model import ById, Door, Inbound, Policy, Source
from keyrelay.pipeline import build


def test_form_bodies_flatten_objects_and_lists_stripe_style() -> None:
    act = Action(name="create", method="POST", path="/v1/subscriptions", description="", record="", body="form",
                 params={})
    placed = Placed(path="/v1/subscriptions", body={"customer": "cus_1", "items": [{"price": "p1", "quantity": 2}],
                                                     "metadata": {"a": "b"}, "trial": True})
    _, payload, headers = request_for(act, placed, next_url=None)
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert payload == (b"customer=cus_1&items%5B0%5D%5Bprice%5D=p1&items%5B0%5D%5Bquantity%5D=2"
                       b"&metadata%5Ba%5D=b&trial=true")


def test_retry_after_is_whole_seconds_and_messages_come_from_known_shapes() -> None:
    err = upstream_error(429, {"errors": "Exceeded 2 calls per second"}, {"Retry-After": "2.0"})
    assert isinstance(err, RateLimited) and err.retry_after == 2 and "Exceeded 2 calls" in err.message
    assert isinstance(upstream_error(429, None, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}), RateLimited)
    sf = upstream_error(404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], {})
    assert isinstance(sf, NotFound) and "does not exist" in sf.message
    gong = upstream_error(400, {"requestId": "x", "errors": ["cursor is not valid"]}, {})
    assert isinstance(gong, Unprocessable) and "cursor is not valid" in gong.message


def test_requests_carry_the_definitions_default_headers() -> None:
    act = load_catalog()["github"].entities["issues"].actions["list"]
    _, _, headers = request_for(act, Placed(path="/graphql", body={"query": "{}"}), next_url=None)
    assert headers["user-agent"] == "keyrelay" and headers["x-github-api-version"] == "2022-11-28"
    assert headers["content-type"] == "application/json"
    _, _, paged = request_for(act, Placed(path="/graphql"), next_url="https://api.github.com/graphql")
    assert paged["user-agent"] == "keyrelay"


def _source(policy: Policy) -> Source:
    return Source(id="src_1", workspace_id="ws_1", connector="http", name="api", slug="api",
                  config={"upstream_url": "https://api.example.com"}, policy=policy, status="active",
                  credential_fields=("inject_headers",), created_at=0.0, updated_at=0.0)


@pytest.mark.parametrize("next_url", [None, "https://api.example.com/v1/items?page=2"])
def test_an_injected_credential_header_replaces_a_default_header_of_the_same_name(next_url: str | None) -> None:
    act = Action(name="list", method="GET", path="/v1/items", description="", records="", params={},
                 headers={"user-agent": "keyrelay", "x-github-api-version": "2022-11-28"})
    target, _, headers = request_for(act, Placed(path="/v1/items"), next_url=next_url)
    raw = tuple((k.encode(), v.encode()) for k, v in headers.items())
    inbound = Inbound(door=Door.EXECUTE, method="GET", path="/x", authorization=None, source=ById("src_1"),
                      target=target, headers=raw)
    source = _source(Policy())
    prep = build.prepare(source, {"inject_headers": {"User-Agent": "credential-agent/1.0"}},
                         default_base_url=None)
    sent = build.outbound_headers(inbound, source.policy, prep)
    agents = [v for k, v in sent if k.lower() == "user-agent"]
    assert agents == ["credential-agent/1.0"]
    assert ("x-github-api-version", "2022-11-28") in [(k.lower(), v) for k, v in sent]
