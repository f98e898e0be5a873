"""Ingest applies the contracts' row rules (the same code as `caravan validate`), over
HTTP on SQLite and PostgreSQL: each rejected row is reported with its field and
reason, the accepted ones are stored exactly once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from data_contracts.fields import Kind
from data_contracts.readers import from_frame
from data_contracts.schemas import CONTRACTS
from data_contracts.validate import validate_tables
from serving.auth import Role
from serving.intake import rule_breaches, screened, traveller_breaches
from serving.orm import AuditLog, Item, Score, Shipment
from serving.services import Prepared, prepare_shipment, prepare_traveller
from tests.serving.conftest import Api, Samples, payload

API = "/api/v1"


def _bad_rows(samples: Samples) -> dict[str, tuple[dict[str, Any], str, str]]:
    """id -> (record, field reported, word expected in the reason); each passes the
    pydantic checks and breaks one row rule."""
    vague = payload(samples, 1, "IR-VAGUE")
    vague["items"][0]["description"] = "see invoice"
    late = payload(samples, 2, "IR-DATES")
    late["expected_arrival_at"] = (
        dt.datetime.fromisoformat(late["declared_at"]) - dt.timedelta(hours=2)
    ).isoformat()
    blank = payload(samples, 3, "IR-BLANK")
    blank["consignee_name"] = "   "
    parts = payload(samples, 4, "IR-PARTS")
    parts["items"] = [*parts["items"][1:], {**parts["items"][0], "description": "запчасти"}]
    last = len(parts["items"]) - 1
    return {
        "IR-VAGUE": (vague, "items.0.description", "does not say what the goods are"),
        "IR-DATES": (late, "expected_arrival_at", "before declared_at"),
        "IR-BLANK": (blank, "consignee_name", "missing or blank"),
        "IR-PARTS": (parts, f"items.{last}.description", "does not say what the goods are"),
    }


def test_batch_reports_rule_breaches_and_stores_the_good_rows_once(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    bad = _bad_rows(samples)
    good = [payload(samples, 10 + i, f"IR-OK{i}") for i in range(4)]
    records = [good[0], *(r for r, _f, _w in bad.values()), *good[1:]]
    headers = api.headers(Role.analyst)

    # the same rows as files through batch validation are rejected too (one set of rules)
    ships = pl.DataFrame([_typed(r) for r, _f, _w in bad.values()], infer_schema_length=None)
    lines = pl.DataFrame(
        [_typed(line) for r, _f, _w in bad.values() for line in r["items"]],
        infer_schema_length=None,
    )
    batch = validate_tables(
        {
            "shipments": from_frame(ships.drop("items"), CONTRACTS["shipments"]),
            "items": from_frame(lines, CONTRACTS["items"]),
        }
    )
    assert batch.tables["shipments"].accepted.height == 0

    r = api.client.post(f"{API}/shipments/batch", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(s["shipment_id"] for s in body["stored"]) == [f"IR-OK{i}" for i in range(4)]
    reported = {(e["index"], e["field"]): e["reason"] for e in body["errors"]}
    for i, (_sid, (_rec, field, words)) in enumerate(bad.items(), start=1):
        assert words in reported[(i, field)], (field, reported)
    assert {e["index"] for e in body["errors"]} == {1, 2, 3, 4}

    again = api.client.post(f"{API}/shipments/batch", json={"records": records}, headers=headers)
    assert len(again.json()["unchanged"]) == 4 and again.json()["stored"] == []
    with api.app.state.session_factory() as session:
        ids = session.scalars(select(Shipment.shipment_id).order_by(Shipment.shipment_id)).all()
        assert ids == [f"IR-OK{i}" for i in range(4)]
        assert session.scalar(select(func.count()).select_from(Score)) == 4
        lines_stored = session.scalar(select(func.count()).select_from(Item))
        assert lines_stored == sum(len(g["items"]) for g in good)
        scores_audited = session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.kind == "score")
        )
        assert scores_audited == 4


def test_single_shipment_breaking_a_rule_is_refused_with_field(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    headers = api.headers(Role.officer)
    for record, field, words in _bad_rows(samples).values():
        r = api.client.post(f"{API}/shipments", json=record, headers=headers)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        expected = ["body", *(int(p) if p.isdigit() else p for p in field.split("."))]
        assert detail[0]["loc"] == expected and words in detail[0]["msg"], detail
    unknown_chapter = payload(samples, 5, "IR-HS")
    unknown_chapter["items"][0]["hs_code"] = "770000"  # chapter 77 is reserved in HS 2022
    r = api.client.post(f"{API}/shipments", json=unknown_chapter, headers=headers)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:4] == ["body", "items", 0, "hs_code"]
    with api.app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Shipment)) == 0


def _typed(record: dict[str, Any]) -> dict[str, Any]:
    """A JSON record with its timestamps as datetimes (as a file reader would give)."""
    out = dict(record)
    for key in ("declared_at", "expected_arrival_at"):
        if isinstance(out.get(key), str):
            out[key] = dt.datetime.fromisoformat(out[key])
    return out


def test_traveller_rules_over_http(world_api: Api, world: Path) -> None:
    api = world_api
    rows = pl.read_parquet(world / "validated" / "travellers.parquet").head(3).to_dicts()
    records = [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}
        for row in rows
    ]
    for i, r in enumerate(records):
        r["traveller_record_id"] = f"IR-TR{i}"
    departure = dt.datetime.fromisoformat(records[1]["departure_at"])
    records[1]["booked_at"] = (departure + dt.timedelta(days=1)).isoformat()
    records[2]["route_countries"] = [*records[2]["route_countries"], "KZ"]
    headers = api.headers(Role.analyst)  # the feed's role (officers may not post travellers)

    r = api.client.post(f"{API}/travellers/batch", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == ["IR-TR0"]
    fields = {(e["index"], e["field"]) for e in body["errors"]}
    assert fields == {(1, "booked_at"), (2, "route_countries")}  # the field that is wrong
    assert all(e["reason"] for e in body["errors"])
    single = api.client.post(f"{API}/travellers", json=records[1], headers=headers)
    assert single.status_code == 422
    assert single.json()["detail"][0]["loc"] == ["body", "booked_at"]
    assert "after departure_at" in single.json()["detail"][0]["msg"]


# --------------------------------------------------------------------------- single vs batch

# (where, field, value): shipment fields, or ("item", field, value) on the first goods line.
# Each passes the pydantic checks (those that do not are skipped) and may break a row
# rule; the odd characters are where Python's and Rust's regular expressions differ.
MUTATIONS: list[tuple[str, str, Any]] = [
    ("ship", "consignee_name", "   "),
    ("ship", "consignee_name", "\u00a0\u2003"),
    ("ship", "consignor_name", "\x1c"),
    ("ship", "consignor_name", "\t \u3000"),
    ("ship", "carrier_name", ""),
    ("ship", "consignee_name", "ACME \u0301"),
    ("ship", "expected_arrival_at", "2025-03-03T07:00:00+00:00"),
    ("ship", "expected_arrival_at", "2025-03-03T08:00:00+00:00"),
    ("ship", "origin_country", "XX"),
    ("ship", "transit_countries", ["KZ", "QQ"]),
    ("ship", "consignee_email", "ops@\u0430cme.kz"),
    ("ship", "consignee_email", "ops@acme"),
    ("ship", "consignee_phone", "+7 701 ABC"),
    ("item", "description", "see invoice"),
    ("item", "description", "запчасти"),
    ("item", "description", "Запчасти, 2 шт."),
    ("item", "description", "gift"),
    ("item", "description", "ТОВАР"),
    ("item", "description", "12345 / --"),
    ("item", "description", "\u00bd"),
    ("item", "description", "\u00b2"),
    ("item", "description", "parts \u0301"),
    ("item", "description", "g\u0131ft"),
    ("item", "description", "\u017fee invoice"),
    ("item", "description", "PARTS\n"),
    ("item", "description", "Spare parts for tractors, steel"),
    ("item", "description", "Патроны 7.62"),
    ("item", "hs_code", "770000"),
    ("item", "hs_code", "930\u066121"),
    ("item", "hs_code", "9305100000"),
    ("item", "origin_country", "ZZ"),
    ("item", "value", 0),
    ("item", "net_mass_kg", -1.0),
]


def _mutated(samples: Samples) -> list[Prepared]:
    out: list[Prepared] = []
    for k, (where, field, value) in enumerate(MUTATIONS):
        record = payload(samples, k, f"IR-M{k:02d}")
        if where == "ship":
            record[field] = value
        else:
            record["items"][0][field] = value
        try:
            out.append(prepare_shipment(record))
        except ValidationError:
            continue  # refused before the row rules
    return out


def test_single_record_path_and_batch_path_report_the_same_breaches(samples: Samples) -> None:
    """One record at a time (Python screen, then the Polars rules on what it flags)
    gives exactly the breaches, fields and messages of the batch path (Polars rules on
    all rows), on bad records and on good ones."""
    prepared = _mutated(samples) + [
        prepare_shipment(payload(samples, 40 + i, f"IR-G{i}")) for i in range(20)
    ]
    assert len(prepared) >= 40
    records = [p.record for p in prepared]
    lines = [p.submitted_items() for p in prepared]
    batch = rule_breaches(records, lines, screen=False)
    assert len({b.shipment for b in batch}) >= 14  # plenty of bad records
    for i, (record, ls) in enumerate(zip(records, lines, strict=True)):
        single = rule_breaches([record], [ls], screen=True)
        expected = [b for b in batch if b.shipment == i]
        assert [(b.field, b.rule, b.reason) for b in single] == [
            (b.field, b.rule, b.reason) for b in expected
        ], MUTATIONS[i] if i < len(MUTATIONS) else i
        # where the screen judges a record, it names exactly the rules that break
        ship_rules = {b.rule for b in expected if not b.field.startswith("items.")}
        found = screened(record, "shipments")
        assert found is None or found == ship_rules, (i, found, ship_rules)
        for j, line in enumerate(ls):
            line_rules = {b.rule for b in expected if b.field.startswith(f"items.{j}.")}
            found = screened(line, "items")
            assert found is None or found == line_rules, (i, j, found, line_rules)
    # the batch path chosen for many records is the same as the screened one
    screened_all = rule_breaches(records, lines, screen=True)
    assert screened_all == batch


def test_the_screen_passes_good_records_without_polars(samples: Samples) -> None:
    """Good records are judged clean by the screen itself (the fast path is taken)."""
    for i in range(len(samples[0])):
        p = prepare_shipment(payload(samples, i, f"IR-S{i:02d}"))
        assert screened(p.record, "shipments") == set(), i
        assert all(screened(line, "items") == set() for line in p.items), i
    assert screened({**p.record, "consignee_name": " "}, "shipments") == {"required:consignee_name"}


@pytest.mark.parametrize("screen", [True, False])
def test_traveller_single_and_batch_paths_agree(world: Path, screen: bool) -> None:
    rows = pl.read_parquet(world / "validated" / "travellers.parquet").head(6).to_dicts()
    raw = [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in r.items()} for r in rows
    ]
    departure = dt.datetime.fromisoformat(raw[1]["departure_at"])
    raw[1]["booked_at"] = (departure + dt.timedelta(days=1)).isoformat()
    raw[2]["route_countries"] = [*raw[2]["route_countries"], "KZ"]
    raw[3]["date_of_birth"] = (departure + dt.timedelta(days=2)).date().isoformat()
    blank = next(
        c.name
        for c in CONTRACTS["travellers"].columns
        if c.required and c.kind is Kind.STRING and not c.pattern
    )
    raw[4][blank] = " \u00a0 "
    records = [prepare_traveller(r)[0] for r in raw]
    batch = traveller_breaches(records, screen=False)
    assert {b.shipment for b in batch} == {1, 2, 3, 4}
    for i, record in enumerate(records):
        single = traveller_breaches([record], screen=screen)
        assert [(b.field, b.rule, b.reason) for b in single] == [
            (b.field, b.rule, b.reason) for b in batch if b.shipment == i
        ]
    assert screened(records[0], "travellers") == set()
    assert screened(records[1], "travellers") == {"date_order:departure_at"}
