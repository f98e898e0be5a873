"""Dates and date-times in text inputs (CSV, NDJSON) are read row by row.

Polars' `str.to_datetime()` without a format infers one format from the first value
of the column: one row without a time zone (or with one, among rows without) made
every other row unreadable, and the odd row was read as UTC. Each value is now read
on its own; a date-time without a time zone is rejected saying so, and a date in
any other form than YYYY-MM-DD is rejected, not guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data_contracts.readers import read_input
from data_contracts.schemas import SHIPMENTS
from data_contracts.validate import TableResult, validate_tables
from tests import factories as f

UTC = dt.UTC
NEEDS_ZONE = (
    "needs a time zone (e.g. 'Z' for UTC or '+05:00'); a date-time without one is ambiguous"
)

# declared_at text -> the instant it must be read as (UTC)
READABLE: dict[str, dt.datetime] = {
    "2024-03-15T09:30:00Z": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15 09:30:00Z": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15t09:30:00z": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T09:30Z": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T09:30:00+00:00": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T14:30:00+05:00": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15 14:30:00+0500": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T14:30:00+05": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T06:00:00-03:30": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
    "2024-03-15T01:15:30.25-08:00": dt.datetime(2024, 3, 15, 9, 15, 30, 250000, tzinfo=UTC),
    # Polars' write_csv of a UTC column, Python's isoformat(), a time zone's midnight
    "2024-03-15T09:30:00.123456+0000": dt.datetime(2024, 3, 15, 9, 30, 0, 123456, tzinfo=UTC),
    "2024-03-15 09:30:00.123456+00:00": dt.datetime(2024, 3, 15, 9, 30, 0, 123456, tzinfo=UTC),
    "2024-03-15T00:30:00+09:00": dt.datetime(2024, 3, 14, 15, 30, tzinfo=UTC),
    "2024-03-14T23:59:59.999999-01:00": dt.datetime(2024, 3, 15, 0, 59, 59, 999999, tzinfo=UTC),
    "  2024-03-15T09:30:00Z ": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
}
NAIVE = ("2024-03-15T09:30:00", "2024-03-15 09:30", "2024-03-15T09:30:00.5")
UNREADABLE = (
    "15/03/2024 09:30:00Z",
    "03/15/2024 09:30",
    "2024-02-30T09:30:00Z",
    "2024-03-15T25:30:00+05:00",
    "yesterday",
)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _rows(declared: list[str], **changes: str) -> list[dict[str, str]]:
    """One valid shipment (as text) per declared_at value, S-0000, S-0001, ..."""
    return [
        {
            **{k: _text(v) for k, v in f.shipment(shipment_id=f"S-{i:04d}").items()},
            "declared_at": text,
            **changes,
        }
        for i, text in enumerate(declared)
    ]


def _validate(path: Path, rows: list[dict[str, str]]) -> TableResult:
    frame = pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String))
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:  # (an empty text is null in JSON)
        frame.with_columns(pl.all().replace("", None)).write_ndjson(path)
    return validate_tables({"shipments": read_input([path], SHIPMENTS)}).tables["shipments"]


def _accepted(result: TableResult, column: str = "declared_at") -> dict[str, Any]:
    return dict(result.accepted.select("shipment_id", column).iter_rows())


def _rejected(result: TableResult) -> dict[str, tuple[str, str]]:
    q = result.quarantine
    return {s: (r, m) for s, r, m in q.select("shipment_id", "_rule", "_message").iter_rows()}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_each_date_time_is_judged_on_its_own(tmp_path: Path, seed: int, suffix: str) -> None:
    texts = [*READABLE, *NAIVE, *UNREADABLE]
    random.Random(seed).shuffle(texts)
    result = _validate(tmp_path / f"shipments{suffix}", _rows(texts))

    by_id = {f"S-{i:04d}": text for i, text in enumerate(texts)}
    accepted, rejected = _accepted(result), _rejected(result)
    assert {by_id[s]: at for s, at in accepted.items()} == READABLE
    assert sorted(by_id[s] for s in rejected) == sorted([*NAIVE, *UNREADABLE])
    for sid, (rule, message) in rejected.items():
        assert rule == "type:declared_at", (by_id[sid], rule)
        if by_id[sid] in NAIVE:
            assert message == f"declared_at '{by_id[sid]}' {NEEDS_ZONE}"
        else:
            assert message == (
                f"declared_at '{by_id[sid]}' could not be read as a date-time with its offset "
                "(e.g. 2024-03-05T08:15:00+05:00)"
            ), by_id[sid]
    assert result.accepted.schema["declared_at"] == pl.Datetime("us", "UTC")


@pytest.mark.parametrize("naive_at", [0, 150, 299])
def test_one_row_without_a_time_zone_rejects_that_row_only(tmp_path: Path, naive_at: int) -> None:
    """The review's case: 300 rows with `Z`, one without (first, middle or last)."""
    declared = ["2024-03-15T08:20:00Z"] * 300
    declared[naive_at] = "2024-03-15T08:20:00"
    result = _validate(tmp_path / "shipments.csv", _rows(declared))

    assert result.accepted.height == 299
    assert set(result.accepted["declared_at"]) == {dt.datetime(2024, 3, 15, 8, 20, tzinfo=UTC)}
    sid = f"S-{naive_at:04d}"
    assert _rejected(result) == {
        sid: ("type:declared_at", f"declared_at '2024-03-15T08:20:00' {NEEDS_ZONE}")
    }
    record = result.quarantine.filter(pl.col("shipment_id") == sid)["_raw_record"][0]
    assert json.loads(record)["declared_at"] == "2024-03-15T08:20:00"


def test_rows_with_a_time_zone_are_read_among_rows_without(tmp_path: Path) -> None:
    declared = ["2024-03-15 08:20:00"] * 20
    declared[7] = "2024-03-15T13:20:00+05:00"
    result = _validate(tmp_path / "shipments.csv", _rows(declared))

    assert _accepted(result) == {"S-0007": dt.datetime(2024, 3, 15, 8, 20, tzinfo=UTC)}
    reasons = set(_rejected(result).values())
    assert reasons == {("type:declared_at", f"declared_at '2024-03-15 08:20:00' {NEEDS_ZONE}")}


def test_each_naive_date_time_of_a_row_is_named(tmp_path: Path) -> None:
    rows = _rows(["2024-03-15T09:30:00", "2024-03-15T09:30:00Z"])
    rows[0]["expected_arrival_at"] = "2024-03-16T14:00:00"
    rows[1]["expected_arrival_at"] = "2024-03-16T14:00:00"
    result = _validate(tmp_path / "shipments.csv", rows)

    q = result.quarantine.sort("shipment_id")
    assert q["_rules"].to_list() == [
        ["type:declared_at", "type:expected_arrival_at"],
        ["type:expected_arrival_at"],
    ]
    assert q["_message"].to_list() == [
        f"declared_at '2024-03-15T09:30:00' {NEEDS_ZONE}",
        f"expected_arrival_at '2024-03-16T14:00:00' {NEEDS_ZONE}",
    ]


@pytest.mark.parametrize("order", ["as listed", "reversed", "shuffled"])
def test_dates_are_read_as_iso_only(tmp_path: Path, order: str) -> None:
    """A dd/mm/yyyy (or mm/dd/yyyy) date is rejected, not guessed, wherever it is."""
    births = ["01/02/1980", "1980-02-01", "13/02/1980", "1980-12-31", "02.01.1980", "1980-02-30"]
    births += ["19800201", "1980-2-1"]
    if order == "reversed":
        births.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(births)
    declared = ["2024-03-15T09:30:00Z"] * len(births)
    rows = [
        {**row, "consignee_birth_date": born}
        for row, born in zip(_rows(declared), births, strict=True)
    ]
    result = _validate(tmp_path / "shipments.csv", rows)

    by_id = {f"S-{i:04d}": born for i, born in enumerate(births)}
    accepted = _accepted(result, "consignee_birth_date")
    assert {by_id[s]: d for s, d in accepted.items()} == {
        "1980-02-01": dt.date(1980, 2, 1),
        "1980-12-31": dt.date(1980, 12, 31),
    }
    rejected = _rejected(result)
    assert sorted(by_id[s] for s in rejected) == sorted(
        ["01/02/1980", "13/02/1980", "02.01.1980", "1980-02-30", "19800201", "1980-2-1"]
    )
    assert {sid: reason for sid, reason in rejected.items()} == {
        sid: (
            "type:consignee_birth_date",
            f"consignee_birth_date '{by_id[sid]}' could not be read as a date (YYYY-MM-DD)",
        )
        for sid in rejected
    }


def test_problems_found_by_caravan_import_come_first(tmp_path: Path) -> None:
    """A row that already carries problems (`_import_errors`) keeps them first."""
    problem = {"rule": "type:package_count", "column": "package_count", "value": "forty"}
    problem["message"] = "package_count 'forty' is not a whole number"
    rows = _rows(["2024-03-15T09:30:00", "2024-03-15T09:30:00", "2024-03-15T09:30:00Z"])
    for row, errors in zip(rows, [json.dumps([problem]), None, None], strict=True):
        row["_import_errors"] = errors or ""
    result = _validate(tmp_path / "shipments.csv", rows)

    q = result.quarantine.sort("shipment_id")
    assert q["_rules"].to_list() == [
        ["type:package_count", "type:declared_at"],
        ["type:declared_at"],
    ]
    assert q["_message"].to_list() == [
        "package_count 'forty' is not a whole number",
        f"declared_at '2024-03-15T09:30:00' {NEEDS_ZONE}",
    ]
    assert _accepted(result) == {"S-0002": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC)}
