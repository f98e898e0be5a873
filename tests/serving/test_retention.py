"""Retention of traveller records: old journeys are purged from the database and the
validated layer, recent ones kept, the purge audited; too short a period refused."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from data_contracts.schemas import TRAVELLERS
from serving import orm as m
from serving.retention import RetentionError, cutoff_for, purge_travellers
from serving.services import verify_audit
from tests.conftest import caravan, caravan_in_process

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _record(rid: str, departed: dt.datetime) -> m.Traveller:
    payload = {"traveller_record_id": rid, "surname": "Abdullaev", "departure_at": departed}
    return m.Traveller(
        traveller_record_id=rid,
        payload={k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in payload.items()},
        content_hash=rid,
    )


def test_old_journeys_are_purged_and_the_purge_audited(db_session: Session) -> None:
    days = [10, 200, 364, 366, 900]
    for d in days:
        db_session.add(_record(f"T{d}", NOW - dt.timedelta(days=d)))
    db_session.commit()
    removed = purge_travellers(db_session, cutoff_for(365, NOW), "dpo")
    assert removed == 2
    left = set(db_session.scalars(select(m.Traveller.traveller_record_id)))
    assert left == {"T10", "T200", "T364"}
    n, result, _ = verify_audit(db_session)
    assert result.ok and n >= 1
    last = db_session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq.desc())).first()
    assert last is not None and last.kind == "traveller_purge" and last.actor == "dpo"
    assert last.payload["records"] == 2
    assert "Abdullaev" not in str(last.payload)  # the purge names no one


def test_retention_shorter_than_the_feature_window_is_refused() -> None:
    with pytest.raises(RetentionError, match="shorter than the 180-day"):
        cutoff_for(90, NOW)
    assert cutoff_for(180, NOW) == NOW - dt.timedelta(days=180)


def test_cli_purges_database_and_validated_layer(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC)
    departures = [today - dt.timedelta(days=d) for d in (5, 250, 400)]
    frame = pl.DataFrame(
        {
            "traveller_record_id": ["A", "B", "C"],
            "departure_at": departures,
        }
    ).cast({"departure_at": TRAVELLERS.polars_schema["departure_at"]})
    (tmp_path / "validated").mkdir()
    frame.write_parquet(tmp_path / "validated" / "travellers.parquet")
    refused = caravan_in_process("travellers", "purge", "--days", "30", data=tmp_path, check=False)
    assert refused.returncode == 2 and "--days" in refused.stderr
    done = caravan("travellers", "purge", "--days", "300", "--by", "dpo", data=tmp_path)
    assert "1 in" in done.stdout
    kept = pl.read_parquet(tmp_path / "validated" / "travellers.parquet")
    assert kept["traveller_record_id"].to_list() == ["A", "B"]
    audit = caravan_in_process("audit", "verify", data=tmp_path)  # (in process: same command)
    assert "intact" in audit.stdout


def test_validation_never_brings_back_what_the_purge_erased(tmp_path: Path) -> None:
    """Review of stop 24: `caravan validate` rebuilt validated/travellers.parquet from
    raw/ and every purged record came back; Caravan's own copies of stored records in
    raw/ (written from the database) kept them too."""
    from tests import factories as f

    today = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def journey(rid: str, days: int, **changes: object) -> dict[str, object]:
        departed = today - dt.timedelta(days=days)
        return f.traveller(
            traveller_record_id=rid,
            booked_at=departed - dt.timedelta(days=3),
            departure_at=departed,
            **changes,
        )

    raw = tmp_path / "raw"
    for folder in ("shipments", "travellers"):
        (raw / folder).mkdir(parents=True)
    f.frame("shipments", [f.shipment()]).write_parquet(raw / "shipments" / "s.parquet")
    # as received from the administration: two old journeys (one invalid), one recent
    received = [journey("OLD", 400), journey("OLD-BAD", 420, nationality="YU"), journey("NEW", 5)]
    f.frame("travellers", received).write_parquet(raw / "travellers" / "pnr.parquet")
    # Caravan's copy of records stored over the API
    served = [journey("API-OLD", 500), journey("API-NEW", 10)]
    f.frame("travellers", served).write_parquet(raw / "travellers" / "api-export-1.parquet")
    caravan_in_process("validate", "--no-gx", data=tmp_path)
    assert pl.read_parquet(tmp_path / "validated" / "travellers.parquet").height == 4

    done = caravan_in_process("travellers", "purge", "--days", "300", "--by", "dpo", data=tmp_path)
    said = " ".join(done.stdout.split())
    assert "2 in" in said and "1 in Caravan's copies" in said, said
    copy = pl.read_parquet(raw / "travellers" / "api-export-1.parquet")
    assert copy["traveller_record_id"].to_list() == ["API-NEW"]

    again = caravan_in_process("validate", "--json", "--no-gx", data=tmp_path)
    ids = pl.read_parquet(tmp_path / "validated" / "travellers.parquet")["traveller_record_id"]
    assert sorted(ids) == ["API-NEW", "NEW"]
    quarantined = pl.read_parquet(tmp_path / "quarantine" / "travellers.parquet")
    assert quarantined.height == 0  # (OLD-BAD is erased, not quarantined)
    assert json.loads(again.stdout)["left_out_under_retention"] == {"travellers": 2}
    audit = caravan_in_process("audit", "verify", data=tmp_path)
    assert "intact" in audit.stdout
