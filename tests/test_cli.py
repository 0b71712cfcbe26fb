"""The `keyrelay` console script, run for real in subprocesses against a data dir in tmp_path.

Each invocation pays ~1 s of imports, so independent invocations run side by side (`Cli.many`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.canary import find, find_in_files, new_canary
from support.console import ConsoleClient, csrf_of
from support.keyrelay import Admin, KeyrelayServer, make_settings

KEYRELAY = str(Path(sys.executable).parent / "keyrelay")
HTTP_CONFIG = json.dumps({"upstream_url": "http://127.0.0.1:9/v1"})
Run = tuple[list[str], str | None, dict[str, str] | None]  # args, stdin, extra environment


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        self.env.update({"KEYRELAY_DATA_DIR": str(data_dir), "KEYRELAY_UPSTREAM_ALLOW_CIDRS": "127.0.0.0/8"})

    def many(self, runs: list[Run]) -> list[subprocess.CompletedProcess[str]]:
        """Start every invocation, then collect them; stderr never holds a traceback."""
        procs = [subprocess.Popen([KEYRELAY, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env={**self.env, **(env or {})}, text=True)
                 for args, _, env in runs]
        done = []
        for p, (args, stdin, _) in zip(procs, runs, strict=True):
            out, err = p.communicate(stdin, timeout=120)
            assert "Traceback" not in err, err
            done.append(subprocess.CompletedProcess([KEYRELAY, *args], p.returncode, out, err))
        return done

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.many([(list(args), input, env)])[0]
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        else:
            assert done.returncode != 0, (args, done.stdout)
        return done

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self(*args, **kw).stdout)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "keyrelay.db")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data")


def test_help_of_every_command_group_exits_0(cli: Cli) -> None:
    groups = [[], ["workspaces"], ["sources"], ["keys"], ["vault"], ["db"]]
    results = cli.many([([*g, "--help"], None, None) for g in groups])
    for group, done in zip(groups, results, strict=True):
        assert done.returncode == 0 and "Usage: keyrelay" in done.stdout and not done.stderr, (group, done.stderr)
    top = results[0].stdout
    for command in ("serve", "init", "workspaces", "sources", "keys", "vault", "db"):
        assert re.search(rf"^\s+{command}\s", top, re.M), command
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


def test_init_with_operator_credentials_and_bad_settings(cli: Cli) -> None:
    secret = "operator-secret-" + "x" * 20
    ops, bad_setting = cli.many([
        (["init"], None, {"KEYRELAY_ADMIN_CLIENT_ID": "ops", "KEYRELAY_ADMIN_CLIENT_SECRET": secret}),
        (["workspaces", "list"], None, {"KEYRELAY_UPSTREAM_ALLOW_CIDRS": "not-a-network",
                                        "KEYRELAY_DATA_DIR": str(cli.data_dir) + "-other"}),
    ])
    assert ops.returncode == 0 and "ops" in ops.stdout and secret not in ops.stdout + ops.stderr
    assert bad_setting.returncode == 1 and "KEYRELAY_" in bad_setting.stderr


def test_workspaces_sources_and_vault_rotate(cli: Cli) -> None:
    cli("init")  # the database exists before concurrent invocations start
    acme, globex = (json.loads(d.stdout) for d in cli.many([(["workspaces", "create", "acme"], None, None),
                                                            (["workspaces", "create", "globex"], None, None)]))
    assert acme["name"] == "acme" and acme["id"] and globex["name"] == "globex"

    via_stdin, via_env = new_canary("stdin-"), new_canary("env-")
    listed, dup, added_stdin, added_env = cli.many([
        (["workspaces", "list"], None, None),
        (["workspaces", "create", "acme"], None, None),
        (["sources", "add", "--workspace", "acme", "--connector", "http", "--name", "Stdin API", "--config",
          HTTP_CONFIG, "--credentials-stdin"],
         json.dumps({"bearer_token": via_stdin, "basic": {"username": "u", "password": via_stdin}}), None),
        (["sources", "add", "--workspace", acme["id"], "--connector", "http", "--name", "Env API", "--slug", "env",
          "--config", HTTP_CONFIG, "--policy", json.dumps({"allowed_methods": ["GET"]}),
          "--credentials-env", "MY_CREDS"], None, {"MY_CREDS": json.dumps({"api_key": {"value": via_env}})}),
    ])
    assert sorted(w["name"] for w in json.loads(listed.stdout)) == ["acme", "globex"]
    assert dup.returncode == 1 and "conflict" in dup.stderr
    for done, canary in ((added_stdin, via_stdin), (added_env, via_env)):
        assert done.returncode == 0, done.stderr
        assert find(done.stdout + done.stderr, [canary]) == []
    first, second = json.loads(added_stdin.stdout), json.loads(added_env.stdout)
    assert first["credentials"] == ["basic", "bearer_token"] and first["workspace_id"] == acme["id"]
    assert first["slug"] == "stdin-api" and first["config"] == json.loads(HTTP_CONFIG)
    assert second["credentials"] == ["api_key"] and second["policy"]["allowed_methods"] == ["GET"]

    every, of_acme, of_globex, rotated = cli.many([(["sources", "list"], None, None),
                                                   (["sources", "list", "--workspace", "acme"], None, None),
                                                   (["sources", "list", "--workspace", "globex"], None, None),
                                                   (["vault", "rotate"], None, None)])
    assert find(every.stdout + of_acme.stdout, [via_stdin, via_env]) == []
    assert {s["id"] for s in json.loads(every.stdout)} == {first["id"], second["id"]}
    assert {s["id"] for s in json.loads(of_acme.stdout)} == {first["id"], second["id"]}
    assert json.loads(of_globex.stdout) == []
    # rotation decrypted and re-encrypted every field (3 of them) under one new key
    assert "re-encrypted 3 credential field(s)" in rotated.stdout
    with cli.db() as db:
        keys = dict(db.execute("SELECT id, status FROM vault_keys"))
        used = {r[0] for r in db.execute("SELECT DISTINCT key_id FROM source_secrets")}
    db.close()
    active = [k for k, s in keys.items() if s == "active"]
    assert len(active) == 1 and used == set(active) and len(keys) == 2
    assert find_in_files([p for p in cli.data_dir.iterdir() if p.is_file()], [via_stdin, via_env]) == []

    assert first["id"] in cli("sources", "remove", first["id"]).stdout
    remaining, again = cli.many([(["sources", "list"], None, None), (["sources", "remove", first["id"]], None, None)])
    assert [s["id"] for s in json.loads(remaining.stdout)] == [second["id"]]
    assert again.returncode == 1 and "not_found" in again.stderr


def test_bad_source_input_is_a_clean_error(cli: Cli) -> None:
    cli("workspaces", "create", "acme")
    add = ["sources", "add", "--connector", "http", "--name", "x"]
    cases: list[tuple[list[str], str | None, str]] = [
        (["--workspace", "acme", "--config", "{bad"], None, "config is not valid JSON"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-stdin"], "{not json",
         "credentials is not valid JSON"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-env", "NOT_SET_ANYWHERE"], None,
         "NOT_SET_ANYWHERE is not set"),
        (["--workspace", "acme", "--config", json.dumps({"upstream_url": "http://169.254.169.254/"})], None,
         "ssrf_blocked"),
        (["--workspace", "acme", "--config", HTTP_CONFIG, "--credentials-stdin"], '{"basic": {"username": "u"}}',
         "credentials.basic"),
        (["--workspace", "nobody", "--config", HTTP_CONFIG], None, "not_found"),
    ]
    results = cli.many([([*add, *args], stdin, None) for args, stdin, _ in cases])
    for (args, _, message), done in zip(cases, results, strict=True):
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
    with cli.db() as db:
        assert db.execute("SELECT count(*) FROM sources").fetchone() == (0,)
    db.close()


def test_keys_create_and_revoke(cli: Cli) -> None:
    ws = cli.json("workspaces", "create", "acme")["id"]
    created, bad_scope = cli.many([
        (["keys", "create", "--workspace", "acme", "--scopes", "proxy,logs", "--name", "agent",
          "--expires-in-days", "3"], None, None),
        (["keys", "create", "--workspace", "acme", "--scopes", "root"], None, None),
    ])
    key = json.loads(created.stdout)
    assert key["key"].startswith("kr_") and key["workspace_id"] == ws and key["scopes"] == ["logs", "proxy"]
    assert key["expires_at"] and not key["revoked"]
    assert bad_scope.returncode == 1 and "unknown scope" in bad_scope.stderr
    revoked, unknown = cli.many([(["keys", "revoke", key["id"]], None, None),
                                 (["keys", "revoke", "no-such-key"], None, None)])
    assert revoked.returncode == 0 and key["id"] in revoked.stdout
    assert unknown.returncode == 1 and "not_found" in unknown.stderr
    with cli.db() as db:
        (revoked_at, digest), = db.execute("SELECT revoked_at, digest FROM api_keys WHERE id = ?", (key["id"],))
    db.close()
    assert revoked_at is not None and key["key"] not in digest


def test_applications_rotate_secret_and_revoke_offline(cli: Cli) -> None:
    """The way back in after losing the bootstrap secret: rotate it offline; the old one and its tokens stop."""
    first = cli("init").stdout
    found = re.search(r"client_id:\s+(\S+)\nclient_secret:\s+(\S+)", first)
    assert found
    client_id, old_secret = found.groups()
    settings = make_settings(data_dir=cli.data_dir, admin_client_id=None, admin_client_secret=None)
    with KeyrelayServer(settings) as kr:
        old_token = Admin(kr.url, client_id, old_secret).token
    listed, rotated, unknown = cli.many([(["applications", "list"], None, None),
                                         (["applications", "rotate-secret", client_id], None, None),
                                         (["applications", "rotate-secret", "kr_app_nope"], None, None)])
    apps = json.loads(listed.stdout)
    assert [a["client_id"] for a in apps] == [client_id] and not apps[0]["revoked"]
    assert old_secret not in listed.stdout and "secret" not in json.dumps(apps)
    new_secret = json.loads(rotated.stdout)["client_secret"]
    assert new_secret.startswith("krs_") and new_secret != old_secret and new_secret not in rotated.stderr
    assert unknown.returncode == 1 and "not_found" in unknown.stderr
    with KeyrelayServer(settings) as kr:
        assert httpx.post(kr.url + "/api/v1/applications/token",
                          json={"client_id": client_id, "client_secret": old_secret}).status_code == 401
        assert httpx.get(kr.url + "/api/v1/workspaces", headers={"Authorization": f"Bearer {old_token}"}
                         ).status_code == 401
        assert Admin(kr.url, client_id, new_secret).get("/api/v1/workspaces").status_code == 200
    revoked = cli("applications", "revoke", client_id)
    assert client_id in revoked.stdout
    again = cli("applications", "rotate-secret", client_id, ok=False)
    assert "revoked" in again.stderr
    assert json.loads(cli("applications", "list").stdout)[0]["revoked"] is True
    with KeyrelayServer(settings) as kr:
        assert httpx.post(kr.url + "/api/v1/applications/token",
                          json={"client_id": client_id, "client_secret": new_secret}).status_code == 401


def test_wrong_master_key_is_a_clean_sealed_error(cli: Cli) -> None:
    cli("init")
    before = (cli.data_dir / "master.key").read_bytes()
    wrong, garbage = cli.many([(["vault", "rotate"], None, {"KEYRELAY_MASTER_KEY": "A" * 43 + "="}),
                               (["vault", "rotate"], None, {"KEYRELAY_MASTER_KEY": "garbage"})])
    assert wrong.returncode == garbage.returncode == 1
    assert "sealed" in wrong.stderr and "base64" in garbage.stderr
    assert "A" * 43 not in wrong.stdout + wrong.stderr  # key material is never echoed
    assert "garbage" not in garbage.stdout + garbage.stderr
    assert (cli.data_dir / "master.key").read_bytes() == before


def test_db_upgrade(cli: Cli) -> None:
    assert "up to date" in cli("db", "upgrade").stdout
    assert "up to date" in cli("db", "upgrade").stdout
    with cli.db() as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert {"workspaces", "sources", "source_secrets", "vault_keys", "alembic_version"} <= tables
    assert not (cli.data_dir / "master.key").exists()  # upgrading the schema creates no key


def test_python_dash_m_keyrelay_runs_the_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             ) -> None:
    """`python -m keyrelay` (keyrelay/__main__.py) is the same CLI as the console script."""
    monkeypatch.setattr(sys, "argv", ["keyrelay", "--help"])
    monkeypatch.delitem(sys.modules, "keyrelay.__main__", raising=False)
    with pytest.raises(SystemExit) as done:
        import keyrelay.__main__  # noqa: F401 - importing it runs the CLI
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "workspaces" in out


def test_applications_create_and_narrow_keys_offline(cli: Cli) -> None:
    ws = cli.json("workspaces", "create", "acme")["id"]
    made = cli("applications", "create", "--name", "agent", "--workspaces", "acme", "--scopes", "execute,logs")
    star = cli("applications", "create", "--name", "all", "--workspaces", "*", "--scopes", "proxy")
    unknown_ws = cli("applications", "create", "--name", "x", "--workspaces", "nowhere", "--scopes", "proxy", ok=False)
    bad_scope = cli("applications", "create", "--name", "x", "--workspaces", "acme", "--scopes", "root", ok=False)
    narrow = cli("keys", "create", "--workspace", "acme", "--scopes", "proxy",
                 "--constraints", '{"methods": ["GET"], "budget": {"requests": 5, "per": "day"}}')
    bad_narrow = cli("keys", "create", "--workspace", "acme", "--constraints", '{"methods": "GET"}', ok=False)
    app = json.loads(made.stdout)
    assert app["workspaces"] == [ws] and app["scopes"] == ["execute", "logs"]
    assert app["client_secret"].startswith("krs_")
    assert json.loads(star.stdout)["workspaces"] == "*"
    assert unknown_ws.returncode == 1 and "not_found" in unknown_ws.stderr
    assert bad_scope.returncode == 1 and "unknown scope" in bad_scope.stderr
    key = json.loads(narrow.stdout)
    assert key["constraints"]["methods"] == ["GET"] and key["constraints"]["budget"] == {"requests": 5, "per": "day"}
    assert bad_narrow.returncode == 1 and "constraints.methods" not in bad_narrow.stdout
    assert "invalid_request" in bad_narrow.stderr
    listed = json.loads(cli("applications", "list").stdout)
    assert {a["name"] for a in listed} == {"bootstrap admin", "agent", "all"}
    assert app["client_secret"] not in json.dumps(listed)
    with cli.db() as db:
        (digest,), = db.execute("SELECT secret_digest FROM applications WHERE client_id = ?", (app["client_id"],))
    db.close()
    assert app["client_secret"] not in digest


def test_console_link_prints_a_link_that_signs_in_once(cli: Cli) -> None:
    cli("init")
    none = cli("console-link", "--application", "kr_app_unknown", ok=False)
    assert "not_found" in none.stderr
    out = cli("console-link", "--url", "https://keyrelay.example/").stdout
    link = re.search(r"https://keyrelay\.example/console/link\?token=(krl_[A-Za-z0-9_-]{43})\n", out)
    assert link, out
    assert "bootstrap admin" in out and "works once, within 5 minute(s)" in out
    db = b"".join(p.read_bytes() for p in cli.data_dir.glob("keyrelay.db*"))
    assert link.group(1).encode() not in db  # stored as a digest only
    with KeyrelayServer(make_settings(data_dir=cli.data_dir, admin_client_id=None,
                                      admin_client_secret=None)) as server:
        for status in (303, 401):  # once
            c = ConsoleClient(server.url)
            path = f"/console/link?token={link.group(1)}"
            r = c.http.post(path, data={"csrf": csrf_of(c.get(path).text, None)})
            assert r.status_code == status
