"""Shared fixtures. Servers are real processes/threads on 127.0.0.1 only.

`support` (tests/support/) is importable because tests/ has no __init__.py:
pytest puts tests/ on sys.path for this conftest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream

# Property tests: in CI (`.ci/run` sets CI=true) the same examples every run, so a red build is reproducible and
# never a dice roll; locally random examples, and a failure prints the blob that replays it (@reproduce_failure).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; tests create their own databases on it."""
    with PostgresServer() as pg:  # no skip: if it cannot start, the run fails loudly
        yield pg


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A fresh fake upstream API (aiohttp in its own thread) for each test."""
    with FakeUpstream() as up:
        yield up


# --- keyrelay app fixtures ---

import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from support.keyrelay import Admin, KeyrelayServer, make_settings  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Run a test on both storage backends: None is the embedded SQLite default, else a fresh PG database."""
    if request.param == "sqlite":
        yield None
        return
    pg: PostgresServer = request.getfixturevalue("postgres")
    name = "kr_" + uuid.uuid4().hex[:12]
    pg.create_database(name)
    yield pg.sqlalchemy_url(name)


@pytest.fixture
def kr_settings(tmp_path: Path) -> dict[str, Any]:
    """Overrides for the keyrelay under test; a test may change them before asking for `kr`."""
    return {"data_dir": tmp_path / "data"}


@pytest.fixture
def kr_clock(request: pytest.FixtureRequest) -> Callable[[], float] | None:
    """The clock of the keyrelay under test: None is the real one. A test whose outcome depends on the time of
    day (a per-minute rate limit) parametrizes this with a `support.pipeline.ManualClock` (or, indirectly, with
    the class: a new clock for each case)."""
    param = getattr(request, "param", None)
    return param() if isinstance(param, type) else param


@pytest.fixture
def kr_direct() -> bool:
    """Whether `kr` serves the gateway route on the server's direct path (the default) or through ASGI; modules of
    hostile-peer tests override it with both."""
    return True


@pytest.fixture
def kr(kr_settings: dict[str, Any], kr_clock: Callable[[], float] | None, kr_direct: bool) -> Iterator[KeyrelayServer]:
    """A live keyrelay (SQLite in tmp_path) on 127.0.0.1."""
    with KeyrelayServer(make_settings(**kr_settings), clock=kr_clock, direct=kr_direct) as server:
        yield server


@pytest.fixture
def admin(kr: KeyrelayServer) -> Iterator[Admin]:
    client = Admin(kr.url)
    yield client
    client.close()


# --- file sources: storage emulators (moto S3, Azurite, fake-gcs-server), one set for the whole run ---

from support.storage import Storage  # noqa: E402


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    """moto, Azurite and fake-gcs-server on 127.0.0.1, each behind a recording proxy; bucket `files` in each."""
    with Storage() as s:  # no skip: if an emulator cannot start, the run fails loudly
        yield s


@pytest.fixture
def emulators(storage: Storage) -> Storage:
    """The session's emulators with their request records cleared for this test."""
    storage.clear()
    return storage
