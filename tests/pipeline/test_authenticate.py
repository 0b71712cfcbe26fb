"""Step 1 (pipeline/authenticate.py) on the real access store: tokens are looked up by digest, expiry and
revocation are enforced, the positive cache bounds how stale a revocation can be, and caller ids are stable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyrelay.errors import Unauthenticated
from keyrelay.model import CallerKind, Scope
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.tokens import TokenHasher
from keyrelay.store.access import SqlAccessStore
from support.pipeline import Pipeline, assembled


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe


def _cached(p: Pipeline, seconds: float) -> Authenticator:
    return Authenticator(SqlAccessStore(p.engine), TokenHasher(b"k" * 32), p.clock, cache_seconds=seconds)


async def test_an_api_key_is_a_caller_with_its_scopes_and_a_stable_id(p: Pipeline) -> None:
    key, secret = await p.access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.LOGS}),
                                                name="k", expires_at=None)
    caller = await p.authenticator.authenticate(f"Bearer {secret}")
    assert (caller.kind, caller.id, caller.workspace_id, caller.scopes) == (
        CallerKind.API_KEY, f"key:{key.id}", p.workspace_id, frozenset({Scope.LOGS}))
    assert secret not in caller.id


async def test_unknown_malformed_and_differently_keyed_tokens_are_refused(p: Pipeline) -> None:
    other = Authenticator(SqlAccessStore(p.engine), TokenHasher(b"z" * 32), p.clock, cache_seconds=0)
    for auth, who in ((f"Bearer kr_{'a' * 43}", p.authenticator), ("Bearer nope", p.authenticator),
                      (p.auth, other)):  # a digest under another HMAC key finds nothing
        with pytest.raises(Unauthenticated):
            await who.authenticate(auth)


async def test_a_token_stops_working_at_its_expiry(p: Pipeline) -> None:
    _, secret = await p.access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.PROXY}),
                                              name="k", expires_at=p.clock.now + 10)
    cached = _cached(p, 3600)
    p.clock.advance(9.9)
    await cached.authenticate(f"Bearer {secret}")
    p.clock.advance(0.1)
    with pytest.raises(Unauthenticated, match="expired"):  # even while the lookup is cached
        await cached.authenticate(f"Bearer {secret}")


async def test_a_revocation_elsewhere_is_seen_once_the_cache_time_passes(p: Pipeline) -> None:
    key, secret = await p.access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.PROXY}),
                                                name="k", expires_at=None)
    cached = _cached(p, 1.0)
    await cached.authenticate(f"Bearer {secret}")
    await SqlAccessStore(p.engine).revoke_api_key(key.id, now=p.clock.now)  # another instance revoked it
    p.clock.advance(0.5)
    await cached.authenticate(f"Bearer {secret}")  # still cached: bounded staleness
    p.clock.advance(0.5)
    with pytest.raises(Unauthenticated, match="revoked"):
        await cached.authenticate(f"Bearer {secret}")


async def test_forget_all_makes_a_local_revocation_immediate(p: Pipeline) -> None:
    key, secret = await p.access.create_api_key(workspace_id=p.workspace_id, scopes=frozenset({Scope.PROXY}),
                                                name="k", expires_at=None)
    cached = _cached(p, 3600)
    await cached.authenticate(f"Bearer {secret}")
    await SqlAccessStore(p.engine).revoke_api_key(key.id, now=p.clock.now)
    cached.forget_all()
    with pytest.raises(Unauthenticated):
        await cached.authenticate(f"Bearer {secret}")
