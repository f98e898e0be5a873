"""Ingest applies the contracts' row rules (the same code as `caravan validate`), over
HTTP on SQLite and PostgreSQL: each rejected row is reported with its field and
reason, the accepted ones are stored exactly once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select

from data_contracts.readers import from_frame
from data_contracts.schemas import CONTRACTS
from data_contracts.validate import validate_tables
from serving.auth import Role
from serving.orm import AuditLog, Item, Score, Shipment
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
    headers = api.headers(Role.officer)

    r = api.client.post(f"{API}/travellers/batch", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == ["IR-TR0"]
    fields = {(e["index"], e["field"]) for e in body["errors"]}
    assert fields == {(1, "departure_at"), (2, "route_countries")}
    assert all(e["reason"] for e in body["errors"])
    single = api.client.post(f"{API}/travellers", json=records[1], headers=headers)
    assert single.status_code == 422
    assert single.json()["detail"][0]["loc"] == ["body", "departure_at"]
    assert "after departure_at" in single.json()["detail"][0]["msg"]
