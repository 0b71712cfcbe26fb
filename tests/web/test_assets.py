"""The asset table: only listed names are served, with their content types and content-derived versions."""

from __future__ import annotations

from keyrelay.web import assets


def test_only_listed_names_are_read() -> None:
    assert assets.read("keyrelay.css")
    assert assets.read("../pages.py") is None
    assert assets.read("static/keyrelay.css") is None


def test_versions_follow_the_bytes_and_types_follow_the_suffix() -> None:
    assert len(assets.version("keyrelay.css")) == 10
    assert assets.version("keyrelay.css") != assets.version("docs.js")
    assert assets.content_type("docs.js").startswith(b"text/javascript")
    assert assets.content_type("vendor/swagger-ui.css").startswith(b"text/css")
