"""The `oauth2` credential's configuration: defaults, validation, and its place among the injected headers."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.inject import injection_for
from keyrelay.pipeline.oauth.config import parse
from support.upstream import FakeUpstream

SECRET = "client-secret-5d1e0c"


def _config(upstream: FakeUpstream, **kw: Any) -> dict[str, Any]:
    value = {"token_url": upstream.url + "/oauth/token", "client_id": "cid", "client_secret": SECRET,
             "grant_type": "client_credentials"}
    value.update(kw)
    return value


def test_parse_applies_defaults_and_rebuilds_the_token_url(upstream: FakeUpstream) -> None:
    cfg = parse(_config(upstream, scope="read"))
    assert (cfg.auth_method, cfg.header, cfg.prefix, cfg.scope) == ("client_secret_post", "Authorization",
                                                                   "Bearer ", "read")
    assert cfg.token_url == upstream.url + "/oauth/token"
    assert SECRET not in repr(cfg)
    assert parse(_config(upstream, prefix="")).prefix == ""
    assert parse(_config(upstream, client_id="other")).fingerprint != cfg.fingerprint


@pytest.mark.parametrize("change", [
    {"grant_type": "password"}, {"grant_type": "refresh_token"}, {"client_secret": ""},
    {"token_url": "https://user:pw@example.com/token"}, {"token_url": "ftp://example.com/t"},
    {"auth_method": "private_key_jwt"}, {"client_id": "a\r\nX-Injected: 1"},
])
def test_parse_refuses_incomplete_or_unsafe_configuration(upstream: FakeUpstream, change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(_config(upstream, **change))
    assert SECRET not in info.value.message


def test_oauth2_header_replaces_a_static_header_of_the_same_name(upstream: FakeUpstream) -> None:
    inj = injection_for({"inject_headers": {"Authorization": "static", "X-Tenant": "a"},
                         "oauth2": _config(upstream, refresh_token="rt-x", grant_type="refresh_token")})
    assert inj.headers == [("X-Tenant", "a")]
    assert inj.header_names == frozenset({"authorization", "x-tenant"})
    revealed = [s.reveal() for s in inj.secrets]
    assert inj.oauth2 is not None and SECRET in revealed and "rt-x" in revealed


