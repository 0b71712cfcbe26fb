"""The live check Connect runs before it stores credentials (docs/connect.md): one real call to the upstream.

The call is the action the definition declares under `check:`, or else the first list action that needs no
parameter, asked for one record (as Airbyte's `check()` does). It runs through the pipeline like any other
action (`Relay.probe`): the same URL building, injection, SSRF guard, timeouts and redaction; an upstream refusal
comes back as the KeyrelayError the execute route would answer, carrying the upstream's (redacted) message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.connectors import engine, paging, params
from keyrelay.connectors.execute import find_action
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import (
    KeyrelayError,
    NotFound,
    RateLimited,
    SsrfBlocked,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from keyrelay.model import ById, Caller, Credentials, Door, Inbound, Scope, Source
from keyrelay.pipeline.relay import ConnectorFacts, Exchange, Relay, Reply
from keyrelay.pipeline.resolve import Resolved

CHECK_PAGE_SIZE = 1


@dataclass(frozen=True)
class Check:
    entity: str
    action: str
    params: Mapping[str, Any] = field(default_factory=dict)


def check_of(spec: ConnectorSpec) -> Check | None:
    """The declared check, else the first list action whose parameters all have values (None: no check)."""
    declared = spec.raw.get("check")
    if isinstance(declared, Mapping):
        return Check(declared["entity"], declared["action"], dict(declared.get("params") or {}))
    for ent in spec.entities.values():
        act = ent.actions.get("list")
        if act is not None and not any(p.required and p.default is None for p in act.params.values()):
            return Check(ent.name, "list")
    return None


async def run_check(relay: Relay, spec: ConnectorSpec, check: Check, *, caller: Caller, source: Source,
                    credentials: Mapping[str, Any], auth: Mapping[str, Any]) -> None:
    """Call the check action with `credentials` (shaped for `auth`, the definition's mapping or {} for generic
    kinds) against `source`, which need not be stored. Raises the upstream's refusal as a KeyrelayError."""
    _, act = find_action(spec, check.entity, check.action)
    values = params.check_params(act, check.params, config=source.config)
    placed = params.place(act, values)
    size = paging.size_param(act.pagination, CHECK_PAGE_SIZE)
    if size is not None:
        name, location, value = size
        if location == "query":
            placed.query.append((name, str(value)))
        else:
            params.set_nested(placed.body, name, value)
    inbound = Inbound(door=Door.CONNECT, method="POST", path=f"/connect/check/{spec.name}", authorization=None,
                      source=ById(source.id), scope=Scope.EXECUTE)

    async def work(ex: Exchange) -> Reply:
        await engine.call(ex, inbound, act, placed)
        return Reply()

    facts = ConnectorFacts(spec.kind, spec.default_base_url, auth)
    try:
        await relay.probe(inbound, caller, Resolved(source, Credentials(dict(credentials))), facts, work)
    except KeyrelayError as err:
        raise type(err)(explain(err, spec.title), retry_after=err.retry_after) from None


def explain(err: KeyrelayError, title: str) -> str:
    """The check's failure for the person who typed the credentials: what happened, then the upstream's own
    reason (already redacted by the pipeline)."""
    _, sep, detail = err.message.partition("): ")
    reason = f": {detail}" if sep and detail else ""
    if isinstance(err, UpstreamRejected):
        return f"{title} refused these credentials{reason}"
    if isinstance(err, NotFound):
        return f"{title} found nothing to check with these details{reason}"
    if isinstance(err, RateLimited):
        return f"{title} is limiting requests right now; try again in a minute{reason}"
    if isinstance(err, SsrfBlocked):
        return "The address to check is not allowed"
    if isinstance(err, UpstreamUnreachable | UpstreamTimeout):
        return f"{title} could not be reached to check these credentials; try again later"
    return f"{title} did not accept the check: {err.message}"
