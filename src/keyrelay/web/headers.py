"""The headers every page carries: a strict Content-Security-Policy (scripts and styles only from keyrelay's own
origin, never inline), no framing unless a connect session allows an origin, no referrer, no sniffing, no cache.
"""

from __future__ import annotations

from collections.abc import Iterable

HTML = b"text/html; charset=utf-8"


def csp(*, frame_ancestors: Iterable[str] = (), style_inline: bool = False, form_action: Iterable[str] = ()) -> str:
    """The policy. `style_inline` is for the vendored API-docs viewers only (ReDoc injects <style> elements).
    `form_action` adds where a form's answer may redirect (a connect page's OAuth provider)."""
    ancestors = " ".join(frame_ancestors) or "'none'"
    style = "'self' 'unsafe-inline'" if style_inline else "'self'"
    forms = " ".join(("'self'", *form_action))
    return (f"default-src 'none'; script-src 'self'; style-src {style}; img-src 'self' data:; font-src 'self'; "
            f"connect-src 'self'; form-action {forms}; base-uri 'none'; frame-ancestors {ancestors}")


def page_headers(*, length: int, frame_ancestors: Iterable[str] = (), style_inline: bool = False,
                 content_type: bytes = HTML, form_action: Iterable[str] = ()) -> list[tuple[bytes, bytes]]:
    ancestors = tuple(frame_ancestors)
    policy = csp(frame_ancestors=ancestors, style_inline=style_inline, form_action=form_action)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(length).encode()),
        (b"content-security-policy", policy.encode()),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"cross-origin-opener-policy", b"same-origin-allow-popups" if ancestors else b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if not ancestors:
        headers.append((b"x-frame-options", b"DENY"))
    return headers
