#!/usr/bin/env python3
"""What importing keyrelay's server costs in memory: RSS after each import, in the order `keyrelay serve` loads
them, and which heavy packages ended up loaded (goal 4 in docs/performance.md).

    .venv/bin/python bench/imports.py                          # the working tree's src/
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/imports.py  # another tree (A/B of a change)
    .venv/bin/python bench/imports.py pydantic sqlalchemy ...  # your own order (each import's increment)

Each run is a fresh interpreter (this script re-executes itself); RSS is read from /proc/self/status. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys

SERVE = ["click", "keyrelay.settings", "keyrelay.store.engine", "keyrelay.cli", "uvloop", "uvicorn",
         "keyrelay.server", "keyrelay.app"]
HEAVY = ["fastapi", "starlette", "alembic", "mako", "pygments", "obstore", "limits", "jinja2", "mcp", "sqlalchemy",
         "pydantic", "pydantic_settings", "cryptography", "jsonschema", "yaml", "authlib", "prometheus_client"]

PROBE = """
import importlib, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
start = prev = rss()
print(f"{'interpreter':40s} {start:7.1f} MB")
for name in sys.argv[2:]:
    importlib.import_module(name)
    now = rss()
    print(f"{name:40s} +{now - prev:6.1f} MB")
    prev = now
print(f"{'total':40s} {prev:7.1f} MB")
print("loaded:", ", ".join(m for m in sys.argv[1].split(",") if m in sys.modules) or "none of the heavy ones")
"""


def main() -> int:
    env = dict(os.environ)
    if not env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    order = sys.argv[1:] or SERVE
    return subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), *order], env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
