"""The documentation is checked against the code: settings, error codes, header defaults, scripts and links."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from keyrelay.errors import ALL_ERRORS
from keyrelay.pipeline.headers import DEFAULT_FORWARD
from keyrelay.settings import Settings
from keyrelay_client import config as sdk_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
ENV_NAME = re.compile(r"KEYRELAY_[A-Z0-9_]*[A-Z0-9]")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# the Python SDK's own variables (docs/sdk.md), read by the client, not the server
SDK_ENV = {sdk_config.ENV_URL, sdk_config.ENV_CLIENT_ID, sdk_config.ENV_CLIENT_SECRET, sdk_config.ENV_API_KEY,
           sdk_config.ENV_TOKEN}


def read(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row, header and separator rows included."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            rows.append([c.strip() for c in line[1:-1].split("|")])
    return rows


def env_names() -> dict[str, str]:
    """`KEYRELAY_<FIELD>` -> field name, for every Settings field."""
    return {"KEYRELAY_" + name.upper(): name for name in Settings.model_fields}


def settings_rows() -> dict[str, list[str]]:
    rows = {}
    for cells in table_rows(read(DOCS / "settings.md")):
        m = re.fullmatch(r"`(KEYRELAY_[A-Z0-9_]+)`", cells[0])
        if m:
            rows[m.group(1)] = cells
    return rows


def test_every_setting_has_a_row_in_settings_md() -> None:
    rows = settings_rows()
    missing = sorted(set(env_names()) - set(rows))
    assert not missing, (
        f"docs/settings.md has no table row for {', '.join(missing)}: add `| `NAME` | default | meaning |` "
        "for each Settings field"
    )


def test_settings_md_documents_only_real_settings() -> None:
    known = set(env_names())
    text = read(DOCS / "settings.md")
    unknown = sorted(set(ENV_NAME.findall(text)) - known)
    assert not unknown, f"docs/settings.md documents {', '.join(unknown)}, which Settings does not have"


def test_settings_md_defaults_match_settings() -> None:
    rows = settings_rows()
    wrong = []
    for env, name in env_names().items():
        if env not in rows or len(rows[env]) < 3:
            continue
        default = Settings.model_fields[name].default
        cell = rows[env][1]
        if default is None:
            ok, want = "unset" in cell, "'unset'"
        elif default == "":
            ok, want = "empty" in cell, "'empty'"
        elif isinstance(default, Path):
            ok, want = str(default) in cell, repr(str(default))
        else:
            ok, want = f"`{default}`" in cell, f"`{default}`"
        if not ok:
            wrong.append(f"{env}: default cell {cell!r} should contain {want}")
    assert not wrong, "docs/settings.md defaults are out of date:\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_docs_mention_only_real_settings(doc: Path) -> None:
    unknown = sorted(set(ENV_NAME.findall(read(doc))) - set(env_names()) - SDK_ENV)
    assert not unknown, f"{doc.relative_to(ROOT)} mentions {', '.join(unknown)}, which Settings does not have"


def error_rows() -> dict[str, str]:
    """Documented error code -> status cell, from docs/errors.md's `| status | `code` | when |` table."""
    rows = {}
    for cells in table_rows(read(DOCS / "errors.md")):
        if len(cells) >= 3 and re.fullmatch(r"\d{3}", cells[0]):
            m = re.fullmatch(r"`([a-z_]+)`", cells[1])
            if m:
                rows[m.group(1)] = cells[0]
    return rows


def test_every_error_code_is_documented_with_its_status() -> None:
    rows = error_rows()
    problems = []
    for err in ALL_ERRORS:
        if err.code not in rows:
            problems.append(f"{err.code} ({err.__name__}, {err.status}) has no row")
        elif rows[err.code] != str(err.status):
            problems.append(f"{err.code} is documented as {rows[err.code]}, but {err.__name__}.status is {err.status}")
    assert not problems, "docs/errors.md is out of date:\n" + "\n".join(problems)


def test_errors_md_documents_only_real_codes() -> None:
    codes = {err.code for err in ALL_ERRORS}
    unknown = sorted(set(error_rows()) - codes)
    assert not unknown, f"docs/errors.md documents {', '.join(unknown)}, which keyrelay.errors.ALL_ERRORS lacks"


def test_security_md_lists_the_default_forward_headers() -> None:
    text = read(DOCS / "security.md")
    missing = sorted(h for h in DEFAULT_FORWARD if f"`{h}`" not in text)
    assert not missing, (
        f"docs/security.md does not list {', '.join(missing)} from pipeline/headers.py DEFAULT_FORWARD"
    )


@pytest.mark.parametrize("script", ["./scripts/serve", "./scripts/test"])
def test_readme_quickstart_names_the_scripts(script: str) -> None:
    assert script in read(README), f"README.md does not mention {script}"
    path = ROOT / script
    assert path.is_file(), f"{script} is missing"
    assert os.access(path, os.X_OK), f"{script} is not executable"


def slugs(text: str) -> set[str]:
    """GitHub-style anchors of the markdown headings in `text`."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            title = m.group(1).strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def local_links(doc: Path) -> list[tuple[str, Path, str]]:
    """(link as written, target file, anchor) for every relative link in `doc`."""
    found = []
    for target in LINK.findall(read(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        found.append((target, path, anchor))
    return found


def test_readme_links_to_docs_exist() -> None:
    links = [(t, p, a) for t, p, a in local_links(README) if t.startswith("docs/")]
    assert links, "README.md links to no page under docs/"
    broken = [t for t, p, _ in links if not p.is_file()]
    assert not broken, f"README.md links to missing files: {', '.join(broken)}"


@pytest.mark.parametrize("doc", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken = []
    for target, path, anchor in local_links(doc):
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in slugs(path.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {', '.join(broken)}"


def cli_commands() -> list[str]:
    """Every leaf command of the `keyrelay` CLI as typed, e.g. `keyrelay vault rotate`."""
    import click

    from keyrelay.cli import main

    out: list[str] = []

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")
        else:
            out.append(path)

    walk(main, "keyrelay")
    return out


def test_cli_md_covers_every_command() -> None:
    text = read(DOCS / "cli.md")
    lines = text.splitlines()

    def example(c: str) -> bool:
        pattern = re.compile(rf"(^|\s){re.escape(c)}(\s|$)")
        return any(pattern.search(line) for line in lines if not line.startswith(("#", "|")))

    missing = [c for c in cli_commands() if f"`{c}" not in text or not example(c)]
    assert not missing, f"docs/cli.md lacks a section heading or example for: {', '.join(missing)}"


def test_approvals_md_documents_every_approval_route() -> None:
    """Each route of doors/approvals.py appears in docs/approvals.md's routes table as `METHOD /path` (path
    parameters by any name)."""
    from fastapi.routing import APIRoute

    from keyrelay.doors.approvals import router

    text = read(DOCS / "approvals.md")
    documented = {re.sub(r"\{[^}]+\}", "{}", m) for m in re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]+)`", text)}
    documented |= {d.split(" ", 1)[0] + " " + d.split(" ", 1)[1].rsplit("/", 1)[0] + "/{}" for d in documented
                   if d.endswith("/approve")}  # `.../approve`, `.../deny` written once
    missing = []
    for route in router.routes:
        assert isinstance(route, APIRoute)
        for method in route.methods:
            if f"{method} {re.sub(r'{[^}]+}', '{}', route.path)}" not in documented:
                missing.append(f"{method} {route.path}")
    assert not missing, f"docs/approvals.md does not document {', '.join(sorted(missing))}"


_ROUTE = re.compile(r"\b((?:GET|POST|PUT|PATCH|DELETE|HEAD)(?:\|(?:GET|POST|PUT|PATCH|DELETE|HEAD))*) (/[^\s`),;]*)")


def _documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path with parameters as `{}`) for every `METHOD /path` (or `GET|DELETE /path`) in the docs."""
    found = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for m in _ROUTE.finditer(doc.read_text().replace("\\|", "|")):
            for method in m.group(1).split("|"):
                found.add((method, re.sub(r"\{[^}]+\}", "{}", m.group(2).split("?")[0])))
    return found


def test_every_route_is_documented() -> None:
    """Each operation of the OpenAPI document, and each route of the plain-ASGI doors, appears in README.md or
    docs/ as `METHOD /path` (README's "Routes" lists them all)."""
    from keyrelay.app import build_api

    documented = _documented_routes()
    routes = [(method.upper(), path) for path, ops in build_api().openapi()["paths"].items() for method in ops]
    routes += [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
               ("POST", "/api/v1/sonar/apis/{source_id}/request"), ("GET", "/api/{workspace_id}/proxy/{slug}/{tail}"),
               ("GET", "/api/v1/sonar/files/{source_id}/list/{prefix}"),
               ("HEAD", "/api/v1/sonar/files/{source_id}/get/{path}")]
    missing = [f"{m} {p}" for m, p in routes if (m, re.sub(r"\{[^}]+\}", "{}", p)) not in documented]
    assert not missing, f"routes missing from README.md and docs/: {missing}"

