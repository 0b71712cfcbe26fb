"""Every shipped connector definition loads, follows the format, and is internally consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from keyrelay.connectors.spec import CATALOG_DIR, SpecError, load_catalog, load_spec

FILES = sorted(CATALOG_DIR.glob("*.yaml"))
CATALOG = load_catalog()


def test_catalog_has_the_generic_http_connector() -> None:
    assert "http" in CATALOG and CATALOG["http"].kind == "api"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_definition_is_consistent(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    for ent in spec.entities.values():
        for act in ent.actions.values():
            where = f"{spec.name}.{ent.name}.{act.name}"
            placeholders = set(re.findall(r"\{([a-z_]+)\}", act.path))
            path_params = {p.upstream for p in act.params.values() if p.location == "path"}
            assert placeholders == path_params, where
            assert all(p.required for p in act.params.values() if p.location == "path"), where
            assert (act.records is None) != (act.record is None), f"{where}: exactly one of records/record"
            if act.pagination.type == "cursor":
                assert act.pagination.param and act.pagination.next, where
            for p in act.params.values():
                assert len(p.description) >= 10, f"{where}.{p.name}: describe it for an agent"


def test_definition_ids_are_unique() -> None:
    ids = [s.definition_id for s in CATALOG.values() if s.definition_id]
    assert len(ids) == len(set(ids))


def test_a_broken_definition_fails_at_load(tmp_path: Path) -> None:
    raw = yaml.safe_load((CATALOG_DIR / "stripe.yaml").read_text())
    raw["entities"]["customers"]["actions"]["list"]["pagination"]["type"] = "telepathy"
    bad = tmp_path / "stripe.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="pagination"):
        load_spec(bad)
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_catalog_api_connectors_declare_auth_and_base_url() -> None:
    for spec in CATALOG.values():
        if spec.is_catalog_api:
            assert spec.auth, spec.name
            assert spec.default_base_url and spec.default_base_url.startswith("https://"), spec.name
            assert spec.definition_id, spec.name
