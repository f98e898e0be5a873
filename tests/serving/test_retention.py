"""Retention of traveller records: old journeys are purged from the database and the
validated layer, recent ones kept, the purge audited; too short a period refused."""

from __future__ import annotations

import datetime as dt
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
