"""The `keyrelay` console script, run for real in subprocesses against a data dir in tmp_path."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.canary import find, find_in_files, new_canary
from support.keyrelay import Admin, KeyrelayServer, make_settings

KEYRELAY = str(Path(sys.executable).parent / "keyrelay")
HTTP_CONFIG = json.dumps({"upstream_url": "http://127.0.0.1:9/v1"})


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        self.env.update({"KEYRELAY_DATA_DIR": str(data_dir), "KEYRELAY_UPSTREAM_ALLOW_CIDRS": "127.0.0.0/8"})

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([KEYRELAY, *args], input=input, capture_output=True, text=True, timeout=60,
                              env={**self.env, **(env or {})}, check=False)
        assert "Traceback" not in done.stderr, done.stderr
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        else:
            assert done.returncode != 0, (args, done.stdout)
        return done

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self(*args, **kw).stdout)

    def many(self, runs: list[tuple[list[str], str | None]]) -> list[tuple[int, str, str]]:
        """Run several invocations at once (each pays ~1 s of imports); (returncode, stdout, stderr) each."""
        procs = [subprocess.Popen([KEYRELAY, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=self.env, text=True) for args, _ in runs]
        out = []
        for p, (_, stdin) in zip(procs, runs, strict=True):
            o, e = p.communicate(stdin, timeout=120)
            assert "Traceback" not in e, e
            out.append((p.returncode, o, e))
        return out


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data")


def test_help_of_every_command_group_exits_0(cli: Cli) -> None:
    groups = [[], ["serve"], ["init"], ["workspaces"], ["sources"], ["sources", "add"], ["keys"], ["vault"], ["db"]]
    for group, (code, out, err) in zip(groups, cli.many([([*g, "--help"], None) for g in groups]), strict=True):
        assert code == 0 and "Usage: keyrelay" in out and not err, (group, err)
    assert not cli.data_dir.exists()  # --help touches nothing


def test_init_prints_the_bootstrap_credentials_once(cli: Cli) -> None:
    first = cli("init").stdout
    m = re.search(r"client_id:\s+(\S+)\nclient_secret:\s+(\S+)", first)
    assert m, first
    client_id, secret = m.groups()
    assert secret.startswith("krs_")
    second = cli("init").stdout
    assert "already initialised" in second and secret not in second and client_id not in second
    assert (cli.data_dir / "master.key").stat().st_mode & 0o777 == 0o600
    assert find_in_files([p for p in cli.data_dir.iterdir() if p.is_file()], [secret]) == []
    # the printed credentials work against a server on the same data dir
    with KeyrelayServer(make_settings(data_dir=cli.data_dir, admin_client_id=None,
                                      admin_client_secret=None)) as server:
        admin = Admin(server.url, client_id, secret)
        assert admin.get("/api/v1/workspaces").status_code == 200
        admin.close()


def test_init_with_operator_supplied_credentials_never_prints_the_secret(cli: Cli) -> None:
    secret = "operator-secret-" + "x" * 20
    env = {"KEYRELAY_ADMIN_CLIENT_ID": "ops", "KEYRELAY_ADMIN_CLIENT_SECRET": secret}
    done = cli("init", env=env)
    assert "ops" in done.stdout and secret not in done.stdout + done.stderr


def test_workspaces_create_and_list(cli: Cli) -> None:
    a = cli.json("workspaces", "create", "acme")
    assert a["name"] == "acme" and a["id"]
    cli.json("workspaces", "create", "globex")
    assert [w["name"] for w in cli.json("workspaces", "list")] == ["acme", "globex"]
    dup = cli("workspaces", "create", "acme", ok=False)
    assert "conflict" in dup.stderr


def test_sources_add_list_remove_with_secrets_from_stdin_and_env(cli: Cli) -> None:
    ws = cli.json("workspaces", "create", "acme")["id"]
    via_stdin, via_env = new_canary("stdin-"), new_canary("env-")
    done = cli("sources", "add", "--workspace", "acme", "--connector", "http", "--name", "Stdin API",
               "--config", HTTP_CONFIG, "--credentials-stdin",
               input=json.dumps({"bearer_token": via_stdin, "basic": {"username": "u", "password": via_stdin}}))
    assert find(done.stdout + done.stderr, [via_stdin]) == []
    first = json.loads(done.stdout)
    assert first["credentials"] == ["basic", "bearer_token"] and first["workspace_id"] == ws
    assert first["slug"] == "stdin-api"
    done = cli("sources", "add", "--workspace", ws, "--connector", "http", "--name", "Env API", "--slug", "env",
               "--config", HTTP_CONFIG, "--policy", json.dumps({"allowed_methods": ["GET"]}),
               "--credentials-env", "MY_CREDS", env={"MY_CREDS": json.dumps({"api_key": {"value": via_env}})})
    assert find(done.stdout + done.stderr, [via_env]) == []
    second = json.loads(done.stdout)
    assert second["credentials"] == ["api_key"] and second["policy"]["allowed_methods"] == ["GET"]

    listed = cli("sources", "list")
    assert find(listed.stdout, [via_stdin, via_env]) == []
    assert [s["id"] for s in json.loads(listed.stdout)] == [first["id"], second["id"]]
    assert [s["id"] for s in cli.json("sources", "list", "--workspace", "acme")] == [first["id"], second["id"]]
    files = [p for p in cli.data_dir.iterdir() if p.is_file()]
    assert find_in_files(files, [via_stdin, via_env]) == []

    assert first["id"] in cli("sources", "remove", first["id"]).stdout
    assert [s["id"] for s in cli.json("sources", "list")] == [second["id"]]
    gone = cli("sources", "remove", first["id"], ok=False)
    assert "not_found" in gone.stderr


def test_bad_source_input_is_a_clean_error(cli: Cli) -> None:
    cli("workspaces", "create", "acme")
    add = ["sources", "add", "--connector", "http", "--name", "x"]
    cases: list[tuple[list[str], str | None, str]] = [
        (["--workspace", "acme", "--config", "{bad"], None, "config is not valid JSON"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-stdin"], "{not json",
         "credentials is not valid JSON"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-env", "NOT_SET_ANYWHERE"], None,
         "NOT_SET_ANYWHERE is not set"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--policy", "[1"], None, "policy is not valid JSON"),
        (["--workspace", "acme", "--config", json.dumps({"upstream_url": "http://169.254.169.254/"})], None,
         "ssrf_blocked"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-stdin"], '{"basic": {"username": "u"}}',
         "credentials.basic"),
        (["--workspace", "nobody", "--config", HTTP_CONFIG], None, "not_found"),
    ]
    results = cli.many([([*add, *args], stdin) for args, stdin, _ in cases])
    for (args, _, message), (code, _out, err) in zip(cases, results, strict=True):
        assert code == 1 and message in err, (args, err)
    assert cli.json("sources", "list") == []


def test_keys_create_and_revoke(cli: Cli) -> None:
    ws = cli.json("workspaces", "create", "acme")["id"]
    key = cli.json("keys", "create", "--workspace", "acme", "--scopes", "proxy,logs", "--name", "agent",
                   "--expires-in-days", "3")
    assert key["key"].startswith("kr_") and key["workspace_id"] == ws and key["scopes"] == ["logs", "proxy"]
    assert key["expires_at"] and not key["revoked"]
    assert key["id"] in cli("keys", "revoke", key["id"]).stdout
    db = sqlite3.connect(cli.data_dir / "keyrelay.db")
    try:
        (revoked_at, digest), = db.execute("SELECT revoked_at, digest FROM api_keys WHERE id = ?", (key["id"],))
    finally:
        db.close()
    assert revoked_at is not None and key["key"] not in digest
    assert "not_found" in cli("keys", "revoke", "no-such-key", ok=False).stderr
    assert "unknown scope" in cli("keys", "create", "--workspace", "acme", "--scopes", "root", ok=False).stderr


def test_vault_rotate_reencrypts_and_keeps_credentials_usable(cli: Cli) -> None:
    cli("workspaces", "create", "acme")
    for i in range(2):
        cli("sources", "add", "--workspace", "acme", "--connector", "http", "--name", f"s{i}", "--config",
            HTTP_CONFIG, "--credentials-stdin", input=json.dumps({"bearer_token": f"t{i}", "inject_headers": {"X": "y"}}))
    assert "re-encrypted 4 credential field(s)" in cli("vault", "rotate").stdout
    assert "re-encrypted 4 credential field(s)" in cli("vault", "rotate").stdout  # decrypts every row again
    db = sqlite3.connect(cli.data_dir / "keyrelay.db")
    try:
        keys = dict(db.execute("SELECT id, status FROM vault_keys"))
        used = {r[0] for r in db.execute("SELECT DISTINCT key_id FROM source_secrets")}
    finally:
        db.close()
    active = [k for k, s in keys.items() if s == "active"]
    assert len(active) == 1 and used == set(active) and len(keys) == 2  # the first key was dropped


def test_wrong_master_key_is_a_clean_sealed_error(cli: Cli) -> None:
    cli("init")
    before = (cli.data_dir / "master.key").read_bytes()
    wrong, garbage = {"KEYRELAY_MASTER_KEY": "A" * 43 + "="}, {"KEYRELAY_MASTER_KEY": "garbage"}
    procs = [subprocess.Popen([KEYRELAY, "vault", "rotate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**cli.env, **e}) for e in (wrong, garbage)]
    (out1, err1), (out2, err2) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [1, 1]
    assert "sealed" in err1 and "base64" in err2 and "Traceback" not in err1 + err2
    assert "A" * 43 not in out1 + err1 and "garbage" not in out2 + err2  # key material is never echoed
    assert (cli.data_dir / "master.key").read_bytes() == before


def test_invalid_setting_is_a_clean_error(cli: Cli) -> None:
    done = cli("workspaces", "list", env={"KEYRELAY_UPSTREAM_ALLOW_CIDRS": "not-a-network"}, ok=False)
    assert "KEYRELAY_" in done.stderr or "setting" in done.stderr


def test_db_upgrade(cli: Cli) -> None:
    assert "up to date" in cli("db", "upgrade").stdout
    assert "up to date" in cli("db", "upgrade").stdout
    db = sqlite3.connect(cli.data_dir / "keyrelay.db")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
    assert {"workspaces", "sources", "source_secrets", "vault_keys", "alembic_version"} <= tables
    assert not (cli.data_dir / "master.key").exists()  # upgrading the schema creates no key
