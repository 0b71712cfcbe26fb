"""Every page's security headers."""

from __future__ import annotations

from keyrelay.web.headers import csp, page_headers


def test_the_default_policy_allows_nothing_inline_and_no_framing() -> None:
    policy = csp()
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy and "base-uri 'none'" in policy
    headers = dict(page_headers(length=3))
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"content-length"] == b"3"


def test_allowed_ancestors_replace_deny_and_inline_styles_are_only_for_the_docs_viewers() -> None:
    headers = dict(page_headers(length=0, frame_ancestors=["https://app.example.com"]))
    assert b"frame-ancestors https://app.example.com" in headers[b"content-security-policy"]
    assert b"x-frame-options" not in headers
    assert "style-src 'self' 'unsafe-inline'" in csp(style_inline=True)
    assert "script-src 'self';" in csp(style_inline=True)
