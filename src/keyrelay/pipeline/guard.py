"""Step 4b: a narrowed token's constraints and budgets (docs/security.md: narrow tokens).

Only tokens that carry constraints reach this step. It refuses with `403 forbidden` naming the constraint
(`"constraint": "<kind>"`) before anything is sent upstream, or, for a set in observe mode, lets the request
through and records the kind as `would_deny`. Budgets are counted last, once the request passed every other check
of the front half, against counters in the shared database (`BudgetStore`; store/budgets.py spends them from
leases reserved in blocks), so they are never exceeded across processes and instances.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keyrelay.egress import destination
from keyrelay.egress.destination import BaseUrl
from keyrelay.errors import Forbidden, Unavailable
from keyrelay.model import Budget, Caller, Constraints, Door, Inbound, Scope, Source, Tail
from keyrelay.pipeline.constraints import PERIODS, Ask, judge, normalize_path, refusal, source_ok
from keyrelay.pipeline.policy import has_body
from keyrelay.pipeline.record import Recorder
from keyrelay.ports import BudgetStore, Clock

_MESSAGES = {
    "sources": "This token may not use this source",
    "methods": "This token may not send this method",
    "paths": "This token may not reach this path",
    "actions": "This token may not run this action",
    "max_body_bytes": "This token may not send a body this large (or of unknown length)",
    "budget": "This token's request budget is spent",
}


_PLANS_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Plan:
    checks: bool  # some set constrains sources, methods, paths or body size
    enforced: tuple[Budget, ...]
    observed: tuple[Budget, ...]


def refused(kind: str) -> Forbidden:
    return Forbidden(_MESSAGES.get(kind, "This token's constraints refuse this request"), constraint=kind)


def upstream_path(inbound: Inbound, base: BaseUrl) -> str | None:
    """The normalized path below the source's base URL that this request would reach (validated as the build
    step validates it), or None when the request names no upstream target."""
    target = inbound.target
    if target is None:
        return None
    if isinstance(target, Tail):
        return normalize_path("/" + destination.validate_tail(target.path))
    url = destination.match_request_url(target.url, base)
    rest = url[len(base.origin) + len(base.path):].split("?", 1)[0]
    return normalize_path(rest or "/")


def window(budget_per: str | None, now: float) -> int:
    return 0 if budget_per is None else int(now // PERIODS[budget_per])


class ConstraintGuard:
    def __init__(self, budgets: BudgetStore | None, clock: Clock) -> None:
        self._budgets = budgets
        self._clock = clock
        self._plans: dict[int, tuple[tuple[Constraints, ...], _Plan]] = {}

    def admit(self, caller: Caller, inbound: Inbound, source: Source, base: Callable[[], BaseUrl],
              rec: Recorder) -> Awaitable[None] | None:
        """Sources, then the request itself when it is a passthrough (or a file read); then what the caller awaits
        to count its budgets (None: nothing to wait for)."""
        chain = caller.constraints
        plan = self._plan(chain)
        if plan.checks:
            ask: Ask | None = None
            if inbound.target is not None:
                ask = _ask(inbound, base())
            elif inbound.scope is Scope.FILES:  # a file read: nothing but GET or HEAD reaches storage
                ask = Ask(method=inbound.method if inbound.door is Door.FILES else "GET")

            def test(c: Constraints) -> str | None:
                if not source_ok(c, source.id, source.slug):
                    return "sources"
                return None if ask is None else refusal(c, ask)

            self._decide(chain, test, rec)
        if plan.enforced or plan.observed:
            return self._budgeted(plan, rec)
        return None

    def _plan(self, chain: tuple[Constraints, ...]) -> _Plan:
        """What a chain asks for, worked out once per chain (a cached token keeps its chain object)."""
        hit = self._plans.get(id(chain))
        if hit is not None and hit[0] is chain:
            return hit[1]
        plan = _Plan(checks=any(c.sources is not None or c.methods is not None or c.paths is not None
                                or c.max_body_bytes is not None for c in chain),
                     enforced=tuple(c.budget for c in chain if c.budget is not None and not c.observe),
                     observed=tuple(c.budget for c in chain if c.budget is not None and c.observe))
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[id(chain)] = (chain, plan)
        return plan

    def upstream(self, caller: Caller, inbound: Inbound, base: BaseUrl, rec: Recorder) -> None:
        """One request about to be sent upstream: its method, path and body size."""
        ask = _ask(inbound, base)
        self._decide(caller.constraints, lambda c: refusal(c, ask), rec)

    def action(self, caller: Caller, action: str, rec: Recorder) -> None:
        """An execute action or a stream (`entity.list`), before anything is sent."""
        ask = Ask(action=action)
        self._decide(caller.constraints, lambda c: refusal(c, ask), rec)

    @staticmethod
    def _decide(chain: tuple[Constraints, ...], test: Callable[[Constraints], str | None], rec: Recorder) -> None:
        kind, observed = judge(chain, test)
        if kind is not None:
            raise refused(kind)
        if observed is not None and rec.would_deny is None:
            rec.would_deny = observed

    def _budgeted(self, plan: _Plan, rec: Recorder) -> Awaitable[None] | None:
        """Count the chain's budgets from units this process holds (None: done), else what the caller awaits."""
        budgets = self._budgets
        if budgets is None:
            raise Unavailable("Request budgets cannot be counted in this process")
        now = self._clock()
        enforced = [(b.key, window(b.per, now), b.requests) for b in plan.enforced]
        observed = [(b.key, window(b.per, now), b.requests) for b in plan.observed]
        if enforced and not budgets.spend_here(enforced):
            return self._consume(budgets, enforced, observed, rec)  # enforced first: a refusal counts nothing
        if observed and not budgets.spend_here(observed):
            return self._consume(budgets, [], observed, rec)
        return None

    @staticmethod
    async def _consume(budgets: BudgetStore, enforced: list[tuple[str, int, int]],
                       observed: list[tuple[str, int, int]], rec: Recorder) -> None:
        if enforced and await budgets.consume(enforced) is not None:
            raise refused("budget")
        if observed and await budgets.consume(observed) is not None and rec.would_deny is None:
            rec.would_deny = "budget"


def _ask(inbound: Inbound, base: BaseUrl) -> Ask:
    body = inbound.body
    return Ask(method=inbound.method, path=upstream_path(inbound, base),
               body_length=len(body) if isinstance(body, bytes) else inbound.content_length,
               has_body=has_body(body, inbound.content_length))
