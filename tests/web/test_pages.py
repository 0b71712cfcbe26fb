"""Templates autoescape everything and refuse undefined names."""

from __future__ import annotations

import jinja2
import pytest

from keyrelay.web.pages import environment, render, static_url


def test_values_are_escaped() -> None:
    html = environment().from_string("<p>{{ name }}</p>").render(name="<img src=x onerror=alert(1)>")
    assert html == "<p>&lt;img src=x onerror=alert(1)&gt;</p>"


def test_an_undefined_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ missing }}").render()


def test_static_urls_are_versioned_and_only_for_known_assets() -> None:
    assert static_url("keyrelay.css").startswith("/static/keyrelay.css?v=")
    with pytest.raises(KeyError):
        static_url("../secret")
    assert b"<title>keyrelay</title>" in render("landing.html", base_url="http://127.0.0.1:1")
