"""Rendering pages: one Jinja2 environment for every template in `web/templates/`, autoescaping everything, and
strict about undefined names (a typo in a template is an error in the tests, not an empty string in a page)."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from keyrelay.web import assets

STATIC_PREFIX = "/static/"


def static_url(name: str) -> str:
    if name not in assets.ASSETS:
        raise KeyError(f"unknown asset {name!r}")
    return f"{STATIC_PREFIX}{name}?v={assets.version(name)}"


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("keyrelay.web", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["static_url"] = static_url
    return env


def render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode()
