"""Reading inputs from files: types, columns, and unreadable files."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from data_contracts.readers import InputFileError, read_input
from data_contracts.schemas import ITEMS, SHIPMENTS
from data_contracts.validate import validate_tables
from tests import factories as f

ITEM_HEADER = ",".join(ITEMS.column_names)


def _item_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([ITEM_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_values_that_cannot_be_read_are_quarantined_with_the_original_text(
    tmp_path: Path,
) -> None:
    path = _item_csv(
        tmp_path / "items.csv",
        [
            "I-1,S-0001,1,8467290000,Electric drills,10,PCE,25.5,300,CN",
            "I-2,S-0001,2,8467290000,Electric drills,ten,PCE,25.5,300,CN",
            "I-3,S-0001,x,8467290000,Electric drills,10,PCE,25.5,300,CN",
        ],
    )
    items = read_input([path], ITEMS)
    ships = pl.DataFrame([f.shipment()], schema=SHIPMENTS.raw_schema)
    from data_contracts.readers import from_frame

    result = validate_tables({"items": items, "shipments": from_frame(ships, SHIPMENTS)})
    q = result.tables["items"].quarantine.sort("item_id")
    # The good line follows its declaration, which the two bad lines reject.
    assert q["_rule"].to_list() == ["parent_rejected:shipment_id", "type:quantity", "type:line_no"]
    assert json.loads(q["_raw_record"][1])["quantity"] == "ten"
    assert q["_source_row"].to_list() == [0, 1, 2]
    assert q["_source_file"][1] == str(path)
    assert q["quantity"].to_list() == [10.0, None, 10.0]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"items\.csv: file not found"):
        read_input([tmp_path / "items.csv"], ITEMS)


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    header = ITEM_HEADER.replace(",hs_code", "")
    path = tmp_path / "items.csv"
    path.write_text(header + "\nI-1,S-0001,1,Drills,10,PCE,25.5,300,CN\n")
    with pytest.raises(InputFileError, match=r"items\.csv: missing required column\(s\) 'hs_code'"):
        read_input([path], ITEMS)


def test_unexpected_column_names_file_and_column(tmp_path: Path) -> None:
    frame = pl.DataFrame([f.item()], schema=ITEMS.raw_schema).with_columns(colour=pl.lit("red"))
    path = tmp_path / "items.parquet"
    frame.write_parquet(path)
    with pytest.raises(InputFileError, match=r"items\.parquet: unexpected column\(s\) 'colour'"):
        read_input([path], ITEMS)


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shipments.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputFileError, match=r"shipments\.parquet: cannot be read"):
        read_input([path], SHIPMENTS)


def test_csv_lists_booleans_and_datetimes_are_parsed(tmp_path: Path) -> None:
    row = f.shipment()
    values = {
        **{k: ("" if v is None else str(v)) for k, v in row.items()},
        "declared_at": "2024-03-15T09:30:00Z",
        "expected_arrival_at": "2024-03-16 14:00:00+00:00",
        "transit_countries": "KZ; RU",
        "container_ids": "TGHU1234567",
        "seal_ids": "",
    }
    path = tmp_path / "shipments.csv"
    pl.DataFrame([values]).write_csv(path)
    frame = read_input([path], SHIPMENTS)
    assert frame["transit_countries"].to_list() == [["KZ", "RU"]]
    assert frame["seal_ids"].to_list() == [None]
    assert frame["declared_at"].dt.hour().to_list() == [9]
    assert not any(frame[c][0] for c in frame.columns if c.startswith("__type_error__"))


def test_naive_parquet_datetimes_are_taken_as_utc(tmp_path: Path) -> None:
    frame = pl.DataFrame([f.shipment()], schema=SHIPMENTS.raw_schema).with_columns(
        pl.col("declared_at").dt.replace_time_zone(None)
    )
    path = tmp_path / "shipments.parquet"
    frame.write_parquet(path)
    read = read_input([path], SHIPMENTS)
    assert read.schema["declared_at"] == pl.Datetime("us", "UTC")
    assert read["declared_at"][0].hour == 9
