"""Answers read into dataclasses: fields typed and checked, unknown fields kept, secrets kept out of sight."""

from __future__ import annotations

import datetime as dt

import pytest

from keyrelay_client import (
    ApiKey,
    ApplicationSecret,
    ConnectSession,
    LogEntry,
    NewApiKey,
    ScopedToken,
    Source,
    UnexpectedResponse,
    Workspace,
)

KEY = {"id": "k1", "workspace_id": "w1", "name": "agent", "scopes": ["logs", "proxy"], "hint": "kr_AbCd",
       "created_at": "2030-01-01T00:00:00Z", "expires_at": None, "revoked": False}


def test_workspace_reads_times_and_keeps_new_fields() -> None:
    ws = Workspace.from_json({"id": "w1", "name": "acme", "created_at": "2030-01-02T03:04:05Z", "tier": "gold"})
    assert ws.created_at == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert ws.raw["tier"] == "gold" and "tier" not in repr(ws)


def test_a_new_api_key_shows_its_key_only_as_a_field() -> None:
    new = NewApiKey.from_json({**KEY, "key": "kr_the_secret_key"})
    assert new.key == "kr_the_secret_key" and isinstance(new, ApiKey)
    assert "kr_the_secret_key" not in repr(new) and "key" not in new.raw
    assert ApiKey.from_json({**KEY, "key": "kr_the_secret_key"}).raw.get("key") is None


@pytest.mark.parametrize(("model", "data", "secret"), [
    (ScopedToken, {"token": "krw_tok", "expires_in": 1200, "workspace_id": "w"}, "krw_tok"),
    (ApplicationSecret, {"id": "a", "client_id": "kr_app", "client_secret": "krs_sec"}, "krs_sec"),
    (ConnectSession, {"id": "c", "token": "cs_tok", "url": "http://x/c", "expires_at": None}, "cs_tok"),
])
def test_one_time_secrets_stay_out_of_reprs(model: type, data: dict[str, object], secret: str) -> None:
    made = model.from_json(data)  # type: ignore[attr-defined]
    assert secret not in repr(made) and secret not in repr(getattr(made, "raw", {}))


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "acme"}, "id"), ({"id": 1, "name": "acme"}, "id"), ({"id": "w", "name": "a", "created_at": "soon"},
                                                                     "created_at"),
])
def test_a_malformed_answer_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(UnexpectedResponse, match=f"field '{field}'"):
        Workspace.from_json(data)


def test_source_and_log_entry() -> None:
    src = Source.from_json({"id": "s", "workspace_id": "w", "connector": "http", "name": "n", "slug": "n",
                            "status": "active", "config": {"upstream_url": "https://x"}, "credentials": ["basic"],
                            "policy": {}, "created_at": None, "updated_at": None})
    assert src.credentials == ["basic"] and src.config["upstream_url"] == "https://x"
    entry = LogEntry.from_json({"id": "e", "ts": "2030-01-01T00:00:00Z", "workspace_id": "w", "source_id": "s",
                                "door": "gateway", "method": "GET", "path": "/api/w/proxy/n/x", "status": 200,
                                "latency_ms": 1.5, "upstream_latency_ms": None, "bytes_in": 0, "bytes_out": 12,
                                "error_code": None, "error_message": None, "caller": "key:k", "connector": "http"})
    assert (entry.status, entry.bytes_out, entry.latency_ms, entry.upstream_latency_ms) == (200, 12, 1.5, None)
