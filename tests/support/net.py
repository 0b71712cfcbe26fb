"""Helpers for the test servers: loopback ports and child processes we own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it). Another process may take it before a child
    binds it: start children with `wait_listening`, which tells our child's listener from anyone else's, and
    retry with a new port when the child could not bind (servers in this process bind port 0 instead)."""
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


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes of TCP listeners (IPv4 or IPv6) on local `port`."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def owns_listener(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether `proc` (or a process of its group: children started with `start_new_session=True`) listens on
    `port`, as opposed to some other process that took the port first."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                pgid = int(f.read().rsplit(")", 1)[1].split()[2])
            if pgid != proc.pid and int(entry) != proc.pid:
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in wanted for fd in fds):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Wait until `proc` itself listens on `port` (True), or exits, e.g. because the port was taken (False);
    TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if owns_listener(proc, port):
            return True
        time.sleep(0.02)
    raise TimeoutError(f"process {proc.pid} did not listen on port {port} within {timeout}s")
