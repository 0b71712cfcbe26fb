"""A throw-away redis-server for tests, on 127.0.0.1:<free port>, no persistence."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Self

from .net import free_port, read_tail, stop_child, wait_listening, wait_port


class RedisServer:
    """`with RedisServer() as r:` start redis-server; `r.url` for clients; stopped on exit."""

    def __init__(self, host: str = "127.0.0.1", start_timeout: float = 30.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "redis-server not found; run ./scripts/test or: apt-get install -y redis-server"
            )
        self.exe = exe
        self.host = host
        self.start_timeout = start_timeout
        self.port = 0
        self.dir = ""
        self.log_path = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="keyrelay-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        try:
            for _attempt in range(3):  # a free port can be taken before redis binds it
                if self._launch():
                    return
            raise RuntimeError(f"redis-server did not start:\n{read_tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        self.port = free_port(self.host)
        cmd = [
            self.exe, "--port", str(self.port), "--bind", self.host, "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._proc = proc
        try:
            listening = wait_listening(proc, self.port, self.start_timeout)  # ours, not whoever took the port
        except TimeoutError:
            raise TimeoutError(f"redis-server not ready after {self.start_timeout}s:\n{read_tail(self.log_path)}") \
                from None
        if not listening:
            self._proc = None
            return False
        wait_port(self.host, self.port, timeout=self.start_timeout)
        return True

    def stop(self) -> None:
        if self._proc is not None:
            stop_child(self._proc)
            self._proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""
