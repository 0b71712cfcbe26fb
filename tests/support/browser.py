"""Debian's chromium driven by Playwright (`executable_path`; Playwright never downloads a browser here).

    with browser_page() as page:          # a fresh context (own cookies) per call
        page.goto(url)

Screenshots for the docs: `page.screenshot(path=...)`. The browser runs headless with networking limited to
what the test asks for (no background requests to the internet).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

CHROMIUM = os.environ.get("KEYRELAY_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """One headless chromium for a test module (start it in a module-scoped fixture: it takes ~1 s)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def page_in(b: Any, *, viewport: dict[str, int] = DESKTOP, **context: Any) -> Iterator[Any]:
    """A page in a fresh browser context; console errors (e.g. a CSP violation) are collected in `page.errors`."""
    ctx = b.new_context(viewport=viewport, **context)
    page = ctx.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    try:
        yield page
    finally:
        ctx.close()
