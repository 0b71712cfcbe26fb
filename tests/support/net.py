"""Helpers for the test servers: loopback ports and child processes we own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until `host:port` accepts a TCP connection, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s ({last})")


def stop_child(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a child started with `start_new_session=True`: SIGTERM to its process
    group, wait up to `grace` seconds, then SIGKILL the group. Never kills by name."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # pgid == pid thanks to start_new_session
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def read_tail(path: str, limit: int = 4000) -> str:
    """The last `limit` characters of a log file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")
