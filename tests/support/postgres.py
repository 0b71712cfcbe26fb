"""A throw-away PostgreSQL server for tests (Debian's /usr/lib/postgresql/*/bin).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
system user (created by the Debian package). We switch user in the child itself
(`subprocess.Popen(user=..., group=...)`, the same as `runuser -u postgres`)
because runuser keeps a watching parent that, on SIGTERM, waits 2 s and then
SIGKILLs the postmaster. As a normal user everything runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from typing import Any, Self

from .net import free_port, owns_listener, read_tail, stop_child

INSTALL_HINT = "run ./scripts/test (it installs them) or: apt-get install -y postgresql"


def find_bindir() -> str:
    """The newest /usr/lib/postgresql/N/bin that has initdb (or $KEYRELAY_PG_BINDIR)."""
    override = os.environ.get("KEYRELAY_PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    for d in candidates:
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres")):
            return d
    raise RuntimeError(f"PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")


class PostgresServer:
    """`with PostgresServer() as pg:` initdb + start on 127.0.0.1:<free port>, stop + delete on exit."""

    user = "postgres"

    def __init__(self, host: str = "127.0.0.1", start_timeout: float = 60.0) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.bindir = find_bindir()
        self.port = 0
        self.base = ""
        self.log_path = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}

    # --- life cycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.base = tempfile.mkdtemp(prefix="keyrelay-pg-")
        self.log_path = os.path.join(self.base, "postgres.log")
        try:
            self._prepare_owner()
            self._initdb()
            for attempt in range(3):  # a free port can be taken before we bind it
                if self._launch():
                    return
                if attempt == 2 or "could not bind" not in read_tail(self.log_path):
                    break
            raise RuntimeError(f"PostgreSQL did not start:\n{read_tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            stop_child(self._proc, grace=15.0)
            self._proc = None
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = ""

    def _prepare_owner(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no '{self.user}' user; {INSTALL_HINT}"
            ) from None
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HOME": self.base, "LC_ALL": "C"}
        return subprocess.Popen(cmd, cwd=self.base, env=env, stdin=subprocess.DEVNULL, **self._run_as, **kw)

    def _initdb(self) -> None:
        locale = "C.UTF-8" if os.path.isdir("/usr/lib/locale/C.utf8") else "C"
        cmd = [
            f"{self.bindir}/initdb", "-D", os.path.join(self.base, "data"), "-U", self.user,
            "-A", "trust", "-E", "UTF8", f"--locale={locale}", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        proc = self._popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed ({proc.returncode}):\n{out.decode(errors='replace')}")

    def _launch(self) -> bool:
        """Start the postmaster on a fresh port; True once it accepts queries."""
        self.port = free_port(self.host)
        settings = {
            "listen_addresses": self.host, "unix_socket_directories": self.base,
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "200", "shared_buffers": "64MB", "log_min_messages": "warning",
        }  # fmt: skip
        cmd = [f"{self.bindir}/postgres", "-D", os.path.join(self.base, "data"), "-p", str(self.port)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self._proc = self._popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self._wait_ready()

    def _wait_ready(self) -> bool:
        import psycopg

        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if not owns_listener(self._proc, self.port):  # not yet, or another process took the port
                time.sleep(0.02)
                continue
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.02)
        raise TimeoutError(f"PostgreSQL not ready after {self.start_timeout}s:\n{read_tail(self.log_path)}")

    # --- what tests use -----------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq/psycopg connection URL."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        """An SQLAlchemy URL for the asyncpg driver."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def pg_dump(self, dbname: str, *args: str) -> bytes:
        """Plain-SQL dump of `dbname` by the pg_dump matching the server; extra pg_dump args allowed."""
        cmd = [
            f"{self.bindir}/pg_dump", "-h", self.host, "-p", str(self.port), "-U", self.user,
            "--no-password", *args, dbname,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return done.stdout
