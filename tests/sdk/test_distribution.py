"""The distribution: `pip install ./clients/python` into a clean virtualenv brings only the SDK and httpx's
small closure, and importing the SDK loads none of the server's stack.

It installs for real (about 10 s) from a copy of clients/python, with the package index pip is configured with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[2] / "clients" / "python"
# httpx and what it needs; nothing else may come with the SDK
ALLOWED = {"keyrelay-client", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio", "typing-extensions",
           "exceptiongroup"}
SERVER_STACK = ("keyrelay", "uvicorn", "starlette", "fastapi", "sqlalchemy", "alembic", "mcp", "pydantic", "aiohttp",
                "redis", "cryptography", "obstore")

PROBE = """
import importlib.metadata, json, sys
import keyrelay_client
from keyrelay_client import AsyncKeyrelay, Keyrelay
kr = Keyrelay("http://127.0.0.1:1", api_key="kr_probe", env={})
kr.close()
print(json.dumps({
    "dists": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
    "typed": (importlib.resources.files("keyrelay_client") / "py.typed").is_file(),
    "versions": [keyrelay_client.__version__, importlib.metadata.version("keyrelay-client")],
}))
"""


def normalise(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str] | bool]:
    root = tmp_path_factory.mktemp("dist")
    source = root / "keyrelay-client"
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--disable-pip-version-check", str(source)], check=True, timeout=180, capture_output=True)
    probe = subprocess.run([str(python), "-c", "import importlib.resources\n" + PROBE], check=True, timeout=60,
                           capture_output=True, text=True, cwd=root)
    found: dict[str, list[str] | bool] = json.loads(probe.stdout)
    return found


def test_a_clean_install_pulls_only_httpx_and_its_closure(clean_install: dict[str, list[str] | bool]) -> None:
    dists = {normalise(d) for d in clean_install["dists"]}  # type: ignore[union-attr]
    assert {"keyrelay-client", "httpx"} <= dists
    assert dists <= ALLOWED, f"unexpected distributions: {sorted(dists - ALLOWED)}"


def test_importing_the_sdk_loads_nothing_of_the_server(clean_install: dict[str, list[str] | bool]) -> None:
    modules = set(clean_install["modules"])  # type: ignore[arg-type]
    assert "keyrelay_client" in modules and "httpx" in modules
    assert not modules & set(SERVER_STACK)


def test_the_package_ships_its_type_marker_and_one_version(clean_install: dict[str, list[str] | bool]) -> None:
    assert clean_install["typed"] is True
    installed, declared = clean_install["versions"]  # type: ignore[misc]
    assert installed == declared
