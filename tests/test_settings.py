"""Settings (settings.py): the only reader of KEYRELAY_* environment variables; invalid values fail at start."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from keyrelay.settings import Settings


@pytest.fixture(autouse=True)
def _no_keyrelay_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are defaults only without the caller's own KEYRELAY_* variables."""
    import os

    for name in [n for n in os.environ if n.startswith("KEYRELAY_")]:
        monkeypatch.delenv(name)


def test_values_come_from_keyrelay_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEYRELAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEYRELAY_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("KEYRELAY_UPSTREAM_ALLOW_CIDRS", "10.1.0.0/16, 127.0.0.0/8")
    monkeypatch.setenv("KEYRELAY_MASTER_KEY", "c2VjcmV0")
    monkeypatch.setenv("MAX_BODY_BYTES", "1")  # unprefixed: ignored
    s = Settings()
    assert s.data_dir == tmp_path and s.max_body_bytes == 2048
    assert s.allow_networks == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("127.0.0.0/8"))
    assert "c2VjcmV0" not in repr(s) and s.master_key is not None


def test_the_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'keyrelay.db'}" and s.is_sqlite
    assert s.key_file == tmp_path / "master.key"
    pg = Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://u@127.0.0.1/db")
    assert not pg.is_sqlite and pg.resolved_database_url.startswith("postgresql")


def test_lists_are_split_and_trimmed() -> None:
    s = Settings(local_roots="/a, /b/c ,", mcp_allowed_origins="https://x.test, ", mcp_allowed_hosts="h1,h2")
    assert s.local_root_paths == (Path("/a"), Path("/b/c"))
    assert s.mcp_origins == ("https://x.test",) and s.mcp_hosts == ("h1", "h2")
    assert Settings().allow_networks == () and Settings().local_root_paths == ()


@pytest.mark.parametrize("field,value", [
    ("upstream_allow_cidrs", "10.0.0.1/8"),  # host bits set: strict
    ("upstream_allow_cidrs", "not-a-network"),
    ("local_roots", "relative/dir"),
    ("max_body_bytes", 0),
    ("workspace_max_concurrency", 0),
    ("log_level", "LOUD"),
    ("log_flush_seconds", 0),
])
def test_invalid_values_fail_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]
