"""The request API: `{method, url, headers?, body?}` relayed to a source's API and answered as the envelope
`{status_code, headers, response_body, body}` (docs/security.md: the request API). Two doors use it: the HTTP
route (`doors/sonar.py`) and the MCP tool `apis_make_request` (`doors/mcp/tools.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from keyrelay import boundedjson
from keyrelay.errors import InvalidRequest
from keyrelay.model import ById, Door, Inbound, Url
from keyrelay.pipeline.headers import headers_from_mapping
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.relay import Relay

RESPONSE_MAX = 16 * 1024 * 1024
_METHOD = re.compile(r"[A-Za-z]{1,16}")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    url: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None


def parse_request(raw: bytes) -> Call:
    """A call from the request API's JSON body, with errors naming the field."""
    try:
        data = boundedjson.loads(raw)
    except boundedjson.TooDeep as err:
        raise InvalidRequest(f"Malformed JSON body: {err}", field="body") from None
    except ValueError:
        raise InvalidRequest("Malformed JSON body", field="body") from None
    return parse_fields(data)


def parse_fields(data: Any) -> Call:
    """The same, from an already decoded object (the request API's body, or MCP tool arguments)."""
    if not isinstance(data, dict):
        raise InvalidRequest("Body must be a JSON object", field="body")
    if not boundedjson.within(data):
        raise InvalidRequest(f"The request is nested more than {boundedjson.MAX_DEPTH} levels deep", field="body")
    method, url, headers, body = data.get("method", "GET"), data.get("url"), data.get("headers"), data.get("body")
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise InvalidRequest("method must be an HTTP method name", field="method")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("url is required and must be a string", field="url")
    if headers is not None and not (isinstance(headers, dict)
                                    and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
        raise InvalidRequest("headers must be an object of strings", field="headers")
    payload: bytes | None = None
    if isinstance(body, str):
        payload = body.encode()
    elif body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return Call(method.upper(), url, headers_from_mapping(headers), payload)


def inbound(call: Call, *, door: Door, path: str, authorization: str | None, source_id: str,
            wait_seconds: float | None = None) -> Inbound:
    """The pipeline's view of one request-API call."""
    return Inbound(door=door, method=call.method, path=path, authorization=authorization,
                   source=ById(source_id), target=Url(call.url), headers=call.headers, body=call.body,
                   content_length=None if call.body is None else len(call.body), wait_seconds=wait_seconds)


def envelope(status: int, headers: list[tuple[bytes, bytes]], data: bytes, truncated: bool,
             redactor: Redactor | None = None) -> dict[str, Any]:
    """The envelope; `redactor` checks it as the agent gets it, after parsing (`body` is the parsed JSON, where an
    escape the byte-level redaction did not know would have turned back into the secret)."""
    merged: dict[str, str] = {}
    for k, v in headers:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    text = data.decode("utf-8", errors="replace")
    parsed: Any = None
    if data and not truncated:
        try:
            parsed = boundedjson.loads(data)
        except ValueError:  # not JSON, or nested too deeply: the text is still in `response_body`
            parsed = None
    out: dict[str, Any] = {"status_code": status, "headers": merged, "response_body": text, "body": parsed}
    if truncated:
        out["truncated"] = True
    return out if redactor is None else redactor.redact_json(out)


async def call(relay: Relay, request: Inbound) -> dict[str, Any]:
    """Relay one call; the upstream's answer (at most RESPONSE_MAX bytes, whole within the source's timeout)
    goes into the envelope. A call parked for approval answers `{"approval": {...}}` (docs/approvals.md)."""
    relayed = await relay.relay(request)
    if relayed.approval is not None:
        return {"approval": relayed.approval}
    data, truncated = await relayed.read(RESPONSE_MAX)
    return envelope(relayed.status, relayed.headers, data, truncated, relayed.redactor)
