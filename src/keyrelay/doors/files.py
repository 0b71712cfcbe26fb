"""The file routes, as plain ASGI:

* `GET /api/v1/sonar/files/{source_id}/list/{prefix}?page_token=&limit=` -> `{files, next_page_token?}`
* `GET|HEAD /api/v1/sonar/files/{source_id}/get/{path}` -> the bytes, streamed; one `Range` honoured.

The path is taken from `raw_path` and decoded once by `keyrelay.files.paths` (inside the pipeline, so a bad path
is refused after the caller is authenticated, and logged). Nothing the agent sends besides the path, `Range`
and the two query parameters reaches the store: no agent header is ever forwarded or signed.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from keyrelay.errors import InvalidRequest, KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.files import listing
from keyrelay.files.service import FileRequest, FileService
from keyrelay.http.asgi import AsgiScope, ClientGone, Receive, Send, header, send_relayed
from keyrelay.http.render import dumps, send_error
from keyrelay.model import Door

PREFIX = "/api/v1/sonar/files/"
_ROUTE = re.compile(rb"/api/v1/sonar/files/([A-Za-z0-9_-]{1,64})/(list|get)(?:/(.*))?", re.DOTALL)


def is_files(path: str) -> bool:
    return path.startswith(PREFIX)


def _query(scope: AsgiScope) -> tuple[str | None, int]:
    try:
        query = parse_qs(scope["query_string"].decode("ascii"), strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("Malformed query string") from None
    token = query.get("page_token", [None])[-1]
    raw_limit = query.get("limit", [str(listing.LIMIT_DEFAULT)])[-1]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= listing.LIMIT_MAX:
        raise InvalidRequest(f"limit must be an integer from 1 to {listing.LIMIT_MAX}", field="limit")
    return token or None, int(raw_limit)


class FilesDoor:
    def __init__(self, files: FileService) -> None:
        self._files = files

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        started = False
        try:
            match = _ROUTE.fullmatch(raw)
            if match is None:
                raise NotFound("No such route")
            action, rest, method = match.group(2), (match.group(3) or b"").decode("latin-1"), scope["method"]
            req = FileRequest(door=Door.FILES, method=method[:16], path=raw.decode("latin-1"),
                              authorization=header(scope, b"authorization"), source_id=match.group(1).decode())
            if method not in ("GET", "HEAD") or (action == b"list" and method != "GET"):
                allow = b"GET" if action == b"list" else b"GET, HEAD"
                await self._files.refuse(req, MethodNotAllowed(f"Method {method[:16]} is not allowed on this route",
                                                               headers=((b"allow", allow),)))
            if action == b"list":
                token, limit = _query(scope)
                page = await self._files.list(req, rest, raw=True, page_token=token, limit=limit)
                body = {k: v for k, v in page.value.items() if v is not None}
                data = dumps(body)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(data)).encode()), (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body", "body": data})
                return
            opened = await self._files.read(req, rest, range_header=header(scope, b"range"),
                                            head_only=method == "HEAD")
            started = True
            await send_relayed(opened, receive, send)
        except ClientGone:
            return
        except KeyrelayError as err:
            if not started:
                await send_error(send, err, scope.get("state", {}).get("request_id"))
