"""The static assets pages use, by name: keyrelay's own (in `web/static/`) and the vendored API-docs viewers
(from the `fastapi-offline` package). Only names in this table are ever served."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

_OWN = ("keyrelay.css", "favicon.svg", "docs.js", "redoc.js", "connect.css", "connect.js", "console.css",
        "console.js")
_VENDOR = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
ASSETS: dict[str, tuple[str, str]] = {
    **{name: ("keyrelay.web", f"static/{name}") for name in _OWN},
    **{f"vendor/{name}": ("fastapi_offline", f"static/{name}") for name in _VENDOR},
}
TYPES = {"js": b"text/javascript; charset=utf-8", "css": b"text/css; charset=utf-8", "svg": b"image/svg+xml"}


@cache
def read(name: str) -> bytes | None:
    where = ASSETS.get(name)
    if where is None:
        return None
    package, path = where
    try:
        return resources.files(package).joinpath(path).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return None


@cache
def version(name: str) -> str:
    """A short digest of the asset, so its URL changes whenever its bytes do (it can be cached for a year)."""
    return hashlib.sha256(read(name) or b"").hexdigest()[:10]


def content_type(name: str) -> bytes:
    return TYPES.get(name.rsplit(".", 1)[-1], b"application/octet-stream")
