"""The pages a first-time visitor finds: `GET /` (what this server is and where to go next), the API reference at
`/docs` (Swagger UI) and `/redoc`, and `/static/...`, the assets shipped in the package (the vendored API-docs
viewers come from the `fastapi-offline` package: no CDN, so the pages work on an offline host).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from keyrelay.errors import NotFound
from keyrelay.web import assets
from keyrelay.web.headers import page_headers
from keyrelay.web.pages import render

router = APIRouter(include_in_schema=False)

def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _page(body: bytes, *, style_inline: bool = False) -> Response:
    resp = Response(body)
    resp.raw_headers = page_headers(length=len(body), style_inline=style_inline)
    return resp


@router.get("/")
async def landing(request: Request) -> Response:
    return _page(render("landing.html", base_url=base_url(request)))


@router.get("/docs")
async def swagger(request: Request) -> Response:
    return _page(render("docs.html", spec_url="/openapi.json"), style_inline=True)


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    return _page(render("redoc.html", spec_url="/openapi.json"), style_inline=True)


@router.get("/static/{name:path}")
async def static(name: str, v: str | None = None) -> Response:
    data = assets.read(name)
    if data is None:
        raise NotFound("No such file")
    resp = Response(data)
    resp.raw_headers = [
        (b"content-type", assets.content_type(name)), (b"content-length", str(len(data)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"public, max-age=31536000, immutable" if v else b"public, max-age=300"),
    ]
    return resp
