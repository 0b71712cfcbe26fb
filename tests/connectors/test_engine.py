"""Request building and upstream error mapping of the connector engine (pure functions)."""

from __future__ import annotations

from keyrelay.connectors.definition import Action
from keyrelay.connectors.engine import request_for, upstream_error
from keyrelay.connectors.params import Placed
from keyrelay.errors import NotFound, RateLimited, Unprocessable


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
