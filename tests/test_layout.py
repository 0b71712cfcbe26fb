"""The layout rules are checked, not remembered (docs/architecture.md: one test file per module).

* Every module under `src/keyrelay/` has a test file of its own, mirroring its path (`pipeline/relay.py` ->
  `tests/pipeline/test_relay.py`; a package's `__init__.py` with code -> `tests/<parent>/test_<package>.py`), or
  is listed in `COVERED_ELSEWHERE` with the test files that exercise it, each of which must import it.
* Docstrings and comments cite only documents that exist in this repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "keyrelay"
TESTS = ROOT / "tests"

# module (path under src/keyrelay) -> test files (under tests/) that exercise it; each must import the module
COVERED_ELSEWHERE: dict[str, tuple[str, ...]] = {
    # runs the CLI when imported: test_cli.py imports it with `--help` and checks it is the same CLI
    "__main__.py": ("test_cli.py",),
    # Protocols only, no behaviour: the pipeline test types its in-memory sink as `LogSink`; every real
    # implementation (stores, vault, request log) has its own test file
    "ports.py": ("pipeline/test_relay.py",),
    # the error table (status + code per class) is checked against docs/errors.md; each error's use is tested
    # where it is raised
    "errors.py": ("test_docs.py",),
    # a dataclass only (what the routes receive): the runtime builds it, the routes' tests read it
    "http/services.py": ("test_runtime.py",),
    # table definitions only: the migrations must create exactly these tables
    "store/tables.py": ("store/test_engine.py",),
    # the MCP door is one package, driven over MCP (SDK client and the official inspector) in test_mcp.py,
    # which checks the listed tools against these definitions and the file tools' limits
    "doors/mcp/tools.py": ("doors/test_mcp.py",),
    "doors/mcp/files.py": ("doors/test_mcp.py",),
    "doors/mcp/server.py": ("doors/test_mcp.py",),
}


def _modules() -> list[Path]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if "migrations" in rel.parts:
            continue
        if rel.name == "__init__.py" and (rel.parent == Path(".") or not _has_code(path)):
            continue  # the package's own __init__ holds only its version
        out.append(rel)
    return out


def _has_code(path: Path) -> bool:
    """More than a docstring and imports."""
    tree = ast.parse(path.read_text())
    return any(not isinstance(node, ast.Import | ast.ImportFrom) and not (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in tree.body)


def _own_test(rel: Path) -> Path:
    if rel.name == "__init__.py":
        return TESTS / rel.parent.parent / f"test_{rel.parent.name}.py"
    return TESTS / rel.parent / f"test_{rel.stem}.py"


def _dotted(rel: Path) -> str:
    parts = ["keyrelay", *rel.with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(test_file: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(test_file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("rel", _modules(), ids=str)
def test_every_module_has_a_test_file_or_is_listed_as_covered_elsewhere(rel: Path) -> None:
    if _own_test(rel).exists():
        assert str(rel) not in COVERED_ELSEWHERE, f"{rel} has its own test file: drop it from COVERED_ELSEWHERE"
        return
    covering = COVERED_ELSEWHERE.get(str(rel))
    assert covering, f"{rel} has no test file ({_own_test(rel).relative_to(ROOT)}) and is not listed as covered"
    for name in covering:
        test_file = TESTS / name
        assert test_file.exists(), f"{name}, listed as covering {rel}, does not exist"
        dotted = _dotted(rel)
        assert any(i == dotted or i.startswith(dotted + ".") for i in _imports(test_file)), \
            f"{name} is listed as covering {rel} but does not import {dotted}"


def test_the_covered_elsewhere_list_names_only_existing_modules() -> None:
    known = {str(rel) for rel in _modules()}
    assert set(COVERED_ELSEWHERE) <= known, set(COVERED_ELSEWHERE) - known


_CITATION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
_VAGUE = re.compile(r"\b(seed \d{3}|[Bb]ars? \d+|[Rr]ules? \d+|Appendix [A-D])\b")


@pytest.mark.parametrize("rel", [*_modules(), Path("store/migrations/env.py")], ids=str)
def test_source_cites_only_documents_that_exist_in_the_repository(rel: Path) -> None:
    text = (SRC / rel).read_text()
    for cited in _CITATION.findall(text):
        assert (ROOT / cited).exists(), f"{rel} cites {cited}, which is not in the repository"
    vague = _VAGUE.findall(text)
    assert not vague, f"{rel} cites {vague}: name the document in the repository (e.g. docs/security.md)"
