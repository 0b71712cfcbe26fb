"""The request API route `POST /api/v1/sonar/apis/{source_id}/request`, as plain ASGI: the JSON body in, the
envelope out (`keyrelay/request_api.py` does the work)."""

from __future__ import annotations

import re

from keyrelay import request_api
from keyrelay.errors import KeyrelayError, MethodNotAllowed, NotFound
from keyrelay.http.asgi import AsgiScope, Receive, Send, header, read_body
from keyrelay.http.render import dumps, send_error
from keyrelay.model import Door
from keyrelay.pipeline import approval
from keyrelay.pipeline.relay import Relay

_PATH = re.compile(r"/api/v1/sonar/apis/([A-Za-z0-9_-]{1,64})/request")


def is_sonar(path: str) -> bool:
    return path.startswith("/api/v1/sonar/apis/")


class SonarDoor:
    def __init__(self, relay: Relay, *, max_body_bytes: int) -> None:
        self._relay = relay
        self._max_body = max_body_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            match = _PATH.fullmatch(scope["path"])
            if match is None:
                raise NotFound("No such route")
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"Method {scope['method']} is not allowed on this route",
                                       headers=((b"allow", b"POST"),))
            # the JSON wrapper adds a little to the forwarded body's own limit
            raw = await read_body(receive, scope, self._max_body * 2 + 65536)
            call = request_api.parse_request(raw)
            inbound = request_api.inbound(call, door=Door.SONAR, path=scope["path"],
                                          authorization=header(scope, b"authorization"), source_id=match.group(1),
                                          wait_seconds=approval.prefer_wait(header(scope, b"prefer")))
            answer = await request_api.call(self._relay, inbound)
            out = dumps(answer)
        except KeyrelayError as err:
            await send_error(send, err, scope.get("state", {}).get("request_id"))
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        status = 200
        if approval.is_parked(answer):  # parked for approval (docs/approvals.md)
            status = 202
            headers.append((b"location", str(answer["approval"]["poll_url"]).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})
