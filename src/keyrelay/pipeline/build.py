"""Steps 6-7: build the outbound request from validated parts, then inject the credential.

The destination is always the source's configured base URL; the agent only chooses a validated tail (gateway)
or a URL that must lie under the base (request API). Headers pass the allowlist before injection, and an
injected header always replaces an agent header of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from keyrelay.egress import destination
from keyrelay.errors import InvalidRequest
from keyrelay.model import Inbound, Outbound, Policy, Source, Url
from keyrelay.pipeline import headers
from keyrelay.pipeline.inject import Injection, injection_for, template
from keyrelay.pipeline.policy import SAFE_METHODS
from keyrelay.pipeline.redact import Redactor


@dataclass(frozen=True, slots=True)
class Prepared:
    """Per-source values computed once per cached resolution: base URL, injection and redactor."""

    base: destination.BaseUrl
    injection: Injection
    redactor: Redactor
    query_names: frozenset[str]
    header_names: frozenset[str]


def base_url_of(source: Source, default_base_url: str | None) -> str:
    """`upstream_url` (http), else a `base_url` override, else the connector's default (config placeholders)."""
    config: Mapping[str, Any] = source.config
    url = config.get("upstream_url") or config.get("base_url")
    if url is None and default_base_url is not None:
        url = template.render(default_base_url, config)
    if not isinstance(url, str):
        raise InvalidRequest("Source has no base URL configured")
    return url


def prepare(source: Source, credentials: Mapping[str, Any], *, default_base_url: str | None,
            auth: Mapping[str, Any] | None = None) -> Prepared:
    fields = template.credential_fields(auth or {}, credentials, source.config)
    injection = injection_for(fields)
    # the redactor's input: a review point, like the injectors (docs/security.md: secrets are a type)
    redactor = Redactor([s.reveal() for s in injection.secrets])
    for user, password in injection.basic:
        redactor.add_basic(user, password.reveal())
    return Prepared(
        base=destination.parse_base_url(base_url_of(source, default_base_url)), injection=injection,
        redactor=redactor, query_names=frozenset(n for n, _ in injection.query),
        header_names=injection.header_names,
    )


def forwarded_headers(inbound: Inbound, policy: Policy, prep: Prepared) -> list[tuple[str, str]]:
    """The agent's headers that pass the header policy, before injection (an injected name always wins)."""
    forward = policy.forward_headers
    if forward is None and isinstance(inbound.target, Url):
        # the request API forwards the headers the agent named, except the always-dropped set, unless the
        # source's policy narrows them with `forward_headers`
        headers.check_names(inbound.headers)
        forward = frozenset(name.decode("ascii") for name, _ in inbound.headers)
    picked = headers.request_headers(inbound.headers, forward)
    if prep.header_names:
        picked = [h for h in picked if h[0].lower() not in prep.header_names]
    return picked


def outbound_headers(inbound: Inbound, policy: Policy, prep: Prepared) -> list[tuple[str, str]]:
    picked = forwarded_headers(inbound, policy, prep)
    if prep.redactor.active or prep.injection.oauth2 is not None:
        # ask for the body uncompressed, so that redaction sees it as sent (pipeline/response.py)
        picked = [h for h in picked if h[0].lower() != "accept-encoding"]
        picked.append(("Accept-Encoding", "identity"))
    return picked + prep.injection.headers


def destination_url(inbound: Inbound, prep: Prepared) -> str:
    """The validated upstream URL of a request, without anything keyrelay injects (what an approval binds)."""
    target = inbound.target
    if isinstance(target, Url):
        return destination.match_request_url(target.url, prep.base, drop_query=prep.query_names)
    if target is None:
        raise InvalidRequest("The request names no upstream target")
    tail = destination.validate_tail(target.path)
    query = destination.validate_query(target.query, drop=prep.query_names)
    return destination.build_url(prep.base, tail, query)


def outbound_url(inbound: Inbound, prep: Prepared) -> str:
    return _with_query(destination_url(inbound, prep), prep.injection.query)


def _with_query(url: str, extra: Sequence[tuple[str, str]]) -> str:
    if not extra:
        return url
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in extra)


def build(inbound: Inbound, source: Source, prep: Prepared, *, body: Any) -> Outbound:
    hdrs = outbound_headers(inbound, source.policy, prep)
    if body is not None and not isinstance(body, bytes) and inbound.content_length is not None:
        hdrs.append(("Content-Length", str(inbound.content_length)))  # stream without chunking
    idempotent = inbound.method in SAFE_METHODS or any(n.lower() == "idempotency-key" for n, _ in hdrs)
    return Outbound(method=inbound.method, url=outbound_url(inbound, prep), headers=tuple(hdrs), body=body,
                    timeout_seconds=source.policy.timeout_seconds, idempotent=idempotent, pool_key=source.id)
