"""`inject_headers` (pipeline/inject/static.py): operator-configured headers, every value treated as a secret."""

from __future__ import annotations

from keyrelay.pipeline.inject import injection_for, static


def test_every_configured_header_is_added_and_its_value_redacted() -> None:
    out = static.inject({"X-Tenant": "t-1", "X-Version": 2})  # type: ignore[dict-item]
    assert out == {"headers": [("X-Tenant", "t-1"), ("X-Version", "2")], "secrets": ["t-1", 2]}
    inj = injection_for({"inject_headers": {"X-Tenant": "t-1", "X-Version": 2}})
    assert [s.reveal() for s in inj.secrets] == ["t-1", "2"]  # every value is redacted as the text sent
