"""Connector docs for agents (connectors/skilldocs.py): ids, the outline, the whole document or one section."""

from __future__ import annotations

import pytest

from keyrelay.connectors.skilldocs import OVERVIEW, build, connector_name, docs_id, outline
from keyrelay.errors import Unprocessable
from support.pipeline import shared_catalog

STRIPE = shared_catalog()["stripe"]


def test_a_docs_id_names_its_connector_and_nothing_else() -> None:
    assert connector_name(docs_id(STRIPE)) == "stripe"
    assert connector_name("skill:stripe") is None


def test_the_outline_has_the_overview_then_every_entity() -> None:
    ids = [s["id"] for s in outline(STRIPE)]
    assert ids[0] == OVERVIEW and ids[1:] == [f"entity:{name}" for name in STRIPE.entities]


def test_the_whole_document_covers_every_entity_and_carries_warnings() -> None:
    doc = build(STRIPE, warnings=["w1"])
    assert doc["id"] == "connector:stripe" and doc["metadata"]["warnings"] == ["w1"] and "section_id" not in doc
    text = " ".join(str(block.get("text", "")) for block in doc["content"])
    for name in STRIPE.entities:
        assert name in text


def test_one_section_is_just_that_entity() -> None:
    doc = build(STRIPE, "entity:customers")
    assert doc["section_id"] == "entity:customers"
    text = " ".join(str(block.get("text", "")) for block in doc["content"])
    assert "customers" in text and "invoices" not in text


def test_an_unknown_section_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(Unprocessable, match="overview") as err:
        build(STRIPE, "entity:nope")
    assert err.value.field == "section"
