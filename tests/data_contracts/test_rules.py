"""Each contract rule rejects its bad row and accepts its good twin."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from data_contracts.readers import from_frame
from data_contracts.validate import ValidationResult, validate_tables
from tests import factories as f


def run(
    shipments: list[dict[str, Any]] | None = None,
    items: list[dict[str, Any]] | None = None,
    travellers: list[dict[str, Any]] | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> ValidationResult:
    tables = {
        "shipments": shipments if shipments is not None else [f.shipment()],
        "items": items if items is not None else [f.item()],
        "travellers": travellers if travellers is not None else [f.traveller()],
        "outcomes": outcomes if outcomes is not None else [f.outcome()],
    }
    return validate_tables(
        {t: from_frame(f.frame(t, rows), _contract(t)) for t, rows in tables.items()}
    )


def _contract(table: str) -> Any:
    from data_contracts.schemas import CONTRACTS

    return CONTRACTS[table]


def test_good_rows_are_all_accepted() -> None:
    result = run()
    for name, table in result.tables.items():
        assert table.quarantine.height == 0, (name, table.quarantine.to_dicts())
        assert table.accepted.height == 1


BAD_SHIPMENTS = [
    ({"origin_country": "UK"}, "country:origin_country"),
    ({"dispatch_country": "XX"}, "country:dispatch_country"),
    ({"transit_countries": ["KZ", "SU"]}, "country:transit_countries"),
    ({"invoice_currency": "RUR"}, "currency:invoice_currency"),
    ({"gross_mass_kg": 0.0}, "positive:gross_mass_kg"),
    ({"gross_mass_kg": -5.0}, "positive:gross_mass_kg"),
    ({"invoice_amount": float("nan")}, "positive:invoice_amount"),
    ({"package_count": 0}, "positive:package_count"),
    (
        {"expected_arrival_at": dt.datetime(2024, 3, 14, tzinfo=dt.UTC)},
        "date_order:expected_arrival_at",
    ),
    ({"consignee_name": None}, "required:consignee_name"),
    ({"consignee_name": "   "}, "required:consignee_name"),
    ({"mode": "camel"}, "enum:mode"),
    ({"office_code": "khorgos"}, "pattern:office_code"),
    ({"consignee_phone": "call me"}, "pattern:consignee_phone"),
    ({"consignee_email": "nobody"}, "pattern:consignee_email"),
    ({"shipment_id": "bad id with spaces"}, "pattern:shipment_id"),
    ({"declaration_ref": "x" * 65}, "max_length:declaration_ref"),
]


@pytest.mark.parametrize(("change", "rule"), BAD_SHIPMENTS, ids=[r for _, r in BAD_SHIPMENTS])
def test_shipment_rule_rejects_bad_row_and_accepts_twin(change: dict[str, Any], rule: str) -> None:
    good = f.shipment(shipment_id="S-GOOD")
    bad = f.shipment(**change)
    bad_id = bad["shipment_id"]
    items = [f.item(), f.item(item_id="S-GOOD-1", shipment_id="S-GOOD")]
    result = run(shipments=[bad, good], items=items, outcomes=[])
    q = result.tables["shipments"].quarantine
    assert q.height == 1
    assert q["_rule"][0] == rule
    assert q["shipment_id"][0] == bad_id
    assert q["_message"][0]
    assert result.tables["shipments"].accepted["shipment_id"].to_list() == ["S-GOOD"]


BAD_ITEMS = [
    ({"hs_code": "93051"}, "hs_format:hs_code"),
    ({"hs_code": "12-3456"}, "hs_format:hs_code"),
    ({"hs_code": "84672900001"}, "hs_format:hs_code"),
    ({"hs_code": "770000"}, "hs_chapter:hs_code"),
    ({"hs_code": "0012345678"}, "hs_chapter:hs_code"),
    ({"description": "parts"}, "vague_description:description"),
    ({"description": "Spare parts"}, "vague_description:description"),
    ({"description": "GIFT"}, "vague_description:description"),
    ({"description": "see invoice"}, "vague_description:description"),
    ({"description": "General cargo"}, "vague_description:description"),
    ({"description": "goods"}, "vague_description:description"),
    ({"description": "запчасти"}, "vague_description:description"),
    ({"description": "Подарок"}, "vague_description:description"),
    ({"description": "образцы"}, "vague_description:description"),
    ({"description": "товар"}, "vague_description:description"),
    ({"description": "см. инвойс"}, "vague_description:description"),
    ({"quantity": 0.0}, "positive:quantity"),
    ({"net_mass_kg": -1.0}, "positive:net_mass_kg"),
    ({"value": 0.0}, "positive:value"),
    ({"value": float("inf")}, "positive:value"),  # (a CSV's "inf")
    ({"quantity_unit": "BOX"}, "enum:quantity_unit"),
    ({"origin_country": "SU"}, "country:origin_country"),
    ({"shipment_id": "S-404"}, "parent_missing:shipment_id"),
]


@pytest.mark.parametrize(("change", "rule"), BAD_ITEMS, ids=[r for _, r in BAD_ITEMS])
def test_item_rule_rejects_bad_row_and_accepts_twin(change: dict[str, Any], rule: str) -> None:
    shipments = [f.shipment(), f.shipment(shipment_id="S-GOOD")]
    bad = f.item(**change)
    good = f.item(item_id="S-GOOD-1", shipment_id="S-GOOD")
    result = run(shipments=shipments, items=[bad, good], outcomes=[])
    q = result.tables["items"].quarantine
    assert q["_rule"].to_list() == [rule]
    assert result.tables["items"].accepted["item_id"].to_list() == ["S-GOOD-1"]


@pytest.mark.parametrize(
    "text",
    [
        "Spare parts for tractors MTZ-82",
        "Запасные части для тракторов МТЗ",
        "steel bolts M8x40",
        "подарочные наборы чая",
        "auto parts: brake pads for Toyota Camry",
        "Gift wrapping paper",
    ],
)
def test_specific_descriptions_are_not_vague(text: str) -> None:
    result = run(items=[f.item(description=text)], outcomes=[])
    assert result.tables["items"].quarantine.height == 0


BAD_OUTCOMES = [
    ({"selection_probability": 0.0}, "probability:selection_probability"),
    ({"selection_probability": 1.5}, "probability:selection_probability"),
    ({"finding": True}, "finding_category:finding_category"),
    ({"finding_category": "firearms"}, "finding_category:finding_category"),
    ({"shipment_id": "S-404"}, "parent_missing:shipment_id"),
    ({"inspected_at": dt.datetime(2024, 3, 1, tzinfo=dt.UTC)}, "date_order:inspected_at"),
    ({"selection_method": "hunch"}, "enum:selection_method"),
    ({"quantity_seized": -2.0}, "non_negative:quantity_seized"),
]


@pytest.mark.parametrize(("change", "rule"), BAD_OUTCOMES, ids=[r for _, r in BAD_OUTCOMES])
def test_outcome_rule_rejects_bad_row_and_accepts_twin(change: dict[str, Any], rule: str) -> None:
    bad = f.outcome(**change)
    good = f.outcome(
        outcome_id="O-GOOD",
        finding=True,
        finding_category="parts",
        quantity_seized=12.0,
        seized_unit="PCE",
    )
    result = run(outcomes=[bad, good])
    q = result.tables["outcomes"].quarantine
    assert q["_rule"].to_list() == [rule]
    assert result.tables["outcomes"].accepted["outcome_id"].to_list() == ["O-GOOD"]


BAD_TRAVELLERS = [
    ({"date_of_birth": dt.date(2025, 1, 1)}, "date_order:departure_at"),
    ({"booked_at": dt.datetime(2024, 3, 11, tzinfo=dt.UTC)}, "date_order:departure_at"),
    ({"nationality": "XX"}, "country:nationality"),
    ({"route_countries": ["UZ"]}, "route_mismatch:route_countries"),
    ({"document_number": None}, "required:document_number"),
    ({"contact_email": "not-an-email"}, "pattern:contact_email"),
    ({"baggage_kg": -3.0}, "non_negative:baggage_kg"),
    # a required list holds one value or more (an empty route passed: review)
    ({"route": [], "route_countries": []}, "required:route"),
]


@pytest.mark.parametrize(("change", "rule"), BAD_TRAVELLERS, ids=[r for _, r in BAD_TRAVELLERS])
def test_traveller_rule_rejects_bad_row_and_accepts_twin(change: dict[str, Any], rule: str) -> None:
    bad = f.traveller(**change)
    good = f.traveller(traveller_record_id="T-GOOD")
    result = run(travellers=[bad, good])
    q = result.tables["travellers"].quarantine
    assert q["_rule"].to_list() == [rule]
    assert result.tables["travellers"].accepted["traveller_record_id"].to_list() == ["T-GOOD"]


def test_duplicate_id_keeps_the_first_row_only() -> None:
    first = f.shipment()
    again = f.shipment(gross_mass_kg=999.0)
    result = run(shipments=[first, again])
    ships = result.tables["shipments"]
    assert ships.accepted["gross_mass_kg"].to_list() == [1250.0]
    assert ships.quarantine["_rule"].to_list() == ["unique:shipment_id"]
    assert ships.quarantine["_source_row"].to_list() == [1]


def test_rejected_line_rejects_its_declaration_and_its_other_lines() -> None:
    items = [f.item(), f.item(item_id="S-0001-2", line_no=2, description="gift")]
    result = run(items=items)
    ships = result.tables["shipments"].quarantine
    assert ships["_rule"].to_list() == ["child_rejected:items"]
    assert "line 2" in ships["_message"][0] and "gift" in ships["_message"][0]
    q = result.tables["items"].quarantine.sort("line_no")
    assert q["_rule"].to_list() == ["parent_rejected:shipment_id", "vague_description:description"]
    assert result.tables["outcomes"].quarantine["_rule"].to_list() == [
        "parent_rejected:shipment_id"
    ]
    for table in result.tables.values():
        assert table.accepted.height == 0 or table.name == "travellers"


def test_a_row_breaking_two_rules_lists_both_and_names_the_first() -> None:
    result = run(shipments=[f.shipment(origin_country="UK", invoice_currency="RUR")])
    q = result.tables["shipments"].quarantine
    assert q["_rule"][0] == "country:origin_country"
    assert set(q["_rules"][0]) >= {"country:origin_country", "currency:invoice_currency"}
    assert "'UK'" in q["_message"][0]


def test_accepted_rows_have_the_contract_schema_with_enums() -> None:
    from data_contracts.schemas import CONTRACTS

    result = run()
    for name, table in result.tables.items():
        assert table.accepted.schema == CONTRACTS[name].polars_schema
    assert isinstance(result.tables["shipments"].accepted.schema["mode"], pl.Enum)


def test_every_row_ends_up_in_exactly_one_place() -> None:
    ships = [
        f.shipment(shipment_id=f"S-{i}", origin_country="UK" if i % 3 == 0 else "CN")
        for i in range(30)
    ]
    items = [f.item(item_id=f"I-{i}", shipment_id=f"S-{i % 35}") for i in range(60)]
    result = run(shipments=ships, items=items, outcomes=[])
    for table, rows_in in (("shipments", 30), ("items", 60)):
        t = result.tables[table]
        assert t.accepted.height + t.quarantine.height == rows_in
        if table == "items":
            ids = set(t.accepted["item_id"]) | set(t.quarantine["item_id"])
            assert len(ids) == rows_in


def test_an_exact_copy_of_a_goods_line_does_not_reject_its_declaration() -> None:
    """An export that repeats a row byte for byte (review of stop 24): the copy is set
    aside saying so, the declaration, its first line and its outcome are kept."""
    line = f.item()
    other = f.item(item_id="I-0002", line_no=2)
    result = run(shipments=[f.shipment()], items=[line, other, line])
    items = result.tables["items"]
    assert items.accepted["item_id"].to_list() == ["S-0001-1", "I-0002"]
    assert result.tables["shipments"].accepted.height == 1
    assert result.tables["outcomes"].accepted.height == 1
    assert items.quarantine["_rule"].to_list() == ["unique:item_id"]
    assert items.quarantine["_message"][0] == (
        "item_id 'S-0001-1' repeats an earlier row exactly (<memory>, _source_row 0): "
        "that row is kept"
    )
    # a different line under a used id is a bad line: named, and its declaration rejected
    changed = f.item(item_id="I-0002", line_no=2, quantity=5.0)
    result = run(shipments=[f.shipment()], items=[line, other, changed])
    assert result.tables["shipments"].accepted.height == 0
    q = result.tables["items"].quarantine.filter(pl.col("_rule") == "unique:item_id")
    assert q["_message"].to_list() == [
        "item_id 'I-0002' was already used by an earlier row (<memory>, _source_row 1)"
    ]


def test_a_repeat_of_a_rejected_row_says_so() -> None:
    """The earlier row holding the id was itself rejected: no row of the id is
    accepted, and the message says what to do."""
    bad = f.shipment(origin_country="YU")
    fixed = f.shipment()
    ships = run(shipments=[bad, fixed]).tables["shipments"]
    assert ships.accepted.height == 0
    message = ships.quarantine.sort("_source_row")["_message"][1]
    assert message.startswith(
        "shipment_id 'S-0001' was already used by an earlier row (<memory>, _source_row 0), "
        "itself rejected (country:origin_country)"
    ), message
    assert "remove that row" in message
