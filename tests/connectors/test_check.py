"""The live check (connectors/check.py): which call each connector makes, and that the call goes through the
pipeline (a real keyrelay's relay) to a fake API, asks for one record, is logged once, and explains a refusal
without the secret."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.connectors.check import Check, check_of, explain, run_check
from keyrelay.connectors.spec import load_catalog
from keyrelay.errors import (
    KeyrelayError,
    NotFound,
    RateLimited,
    SsrfBlocked,
    UpstreamRejected,
    UpstreamUnreachable,
)
from keyrelay.model import ALL_SCOPES, Caller, CallerKind, Policy, Source
from support.fakes.github import TOKEN as GITHUB_TOKEN
from support.fakes.github import FakeGitHub
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer

CATALOG = load_catalog()
WORKSPACE = "ws-check"
CALLER = Caller(kind=CallerKind.WORKSPACE, id="connect:test", workspace_id=WORKSPACE, scopes=ALL_SCOPES)


@pytest.mark.parametrize("name,check", [
    ("stripe", Check("customers", "list")), ("hubspot", Check("contacts", "list")),
    ("github", Check("viewer", "get")), ("jira", Check("projects", "list")),
    ("zendesk-support", Check("tickets", "list")), ("shopify", Check("customers", "list")),
    ("salesforce", Check("accounts", "list")), ("http", None),
])
def test_each_connector_has_its_check(name: str, check: Check | None) -> None:
    assert check_of(CATALOG[name]) == check


def _source(connector: str, base_url: str) -> Source:
    return Source(id="", workspace_id=WORKSPACE, connector=connector, name=connector, slug=connector,
                  config={"base_url": base_url}, policy=Policy(timeout_seconds=10), status="active",
                  credential_fields=(), created_at=0.0, updated_at=0.0)


def _check(kr: KeyrelayServer, connector: str, base_url: str, credentials: dict[str, Any]) -> None:
    spec = CATALOG[connector]
    check = check_of(spec)
    assert kr.app.runtime is not None and check is not None
    kr.run(run_check(kr.app.runtime.relay, spec, check, caller=CALLER, source=_source(connector, base_url),
                     credentials=credentials, auth=spec.auth))


def _logs(admin: Admin) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in admin.get("/api/v1/logs").json()["data"] if e["door"] == "connect"]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_a_good_key_passes_with_one_call_for_one_record(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        _check(kr, "stripe", stripe.url, {"api_key": API_KEY})
        [seen] = stripe.requests
    assert (seen.method, seen.raw_path) == ("GET", "/v1/customers?limit=1")
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    [entry] = _logs(admin)
    assert (entry["status"], entry["path"], entry["connector"], entry["source_id"]) == \
        (200, "/connect/check/stripe", "stripe", None)
    assert entry["caller"] == "connect:test"


def test_a_refused_key_explains_the_upstreams_reason_without_the_key(kr: KeyrelayServer, admin: Admin) -> None:
    wrong = "sk_test_wrong_0123456789abcdef"
    with FakeStripe() as stripe, pytest.raises(UpstreamRejected) as err:
        _check(kr, "stripe", stripe.url, {"api_key": wrong})
    assert err.value.message == "Stripe refused these credentials: Invalid API Key provided: sk_test_****"
    assert wrong not in err.value.message
    [entry] = _logs(admin)
    assert (entry["status"], entry["error_code"]) == (403, "upstream_rejected")


def test_a_declared_check_runs_the_declared_action(kr: KeyrelayServer) -> None:
    with FakeGitHub() as github:
        _check(kr, "github", github.url, {"token": GITHUB_TOKEN})
        [seen] = github.requests
    assert (seen.method, seen.raw_path) == ("POST", "/graphql") and b"viewer" in seen.body


def test_a_check_never_reaches_a_forbidden_address(tmp_path: Path) -> None:
    from support.keyrelay import make_settings

    with KeyrelayServer(make_settings(data_dir=tmp_path, upstream_allow_cidrs="")) as strict, \
            FakeStripe() as stripe, pytest.raises(SsrfBlocked):
        _check(strict, "stripe", stripe.url, {"api_key": API_KEY})
    assert stripe.requests == []


@pytest.mark.parametrize("err,text", [
    (UpstreamRejected("The upstream API refused the stored credentials (401): Bad credentials"),
     "GitHub refused these credentials: Bad credentials"),
    (UpstreamRejected("The upstream API refused the stored credentials (403)"), "GitHub refused these credentials"),
    (NotFound("The upstream API found no such object (404): Not Found"),
     "GitHub found nothing to check with these details: Not Found"),
    (RateLimited("The upstream API rate limit was hit (429)"), "GitHub is limiting requests right now"),
    (SsrfBlocked("Upstream address is not allowed"), "The address to check is not allowed"),
    (UpstreamUnreachable("Upstream host could not be resolved"), "GitHub could not be reached"),
])
def test_failures_are_explained_for_the_person_at_the_form(err: KeyrelayError, text: str) -> None:
    assert explain(err, "GitHub").startswith(text)


def test_the_check_of_a_stored_source_is_logged_under_its_id(kr: KeyrelayServer, admin: Admin) -> None:
    with FakeStripe() as stripe:
        spec = CATALOG["stripe"]
        src = _source("stripe", stripe.url)
        stored = Source(**{**{f: getattr(src, f) for f in src.__slots__}, "id": "src-being-reconnected"})
        assert kr.app.runtime is not None
        kr.run(run_check(kr.app.runtime.relay, spec, Check("customers", "list"), caller=CALLER, source=stored,
                         credentials={"api_key": API_KEY}, auth=spec.auth))
    [entry] = _logs(admin)
    assert entry["source_id"] == "src-being-reconnected"
    assert httpx.get(kr.url + "/healthz").status_code == 200
