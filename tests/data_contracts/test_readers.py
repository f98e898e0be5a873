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


def test_naive_parquet_datetimes_are_refused_saying_why(tmp_path: Path) -> None:
    """A Parquet date-time without a time zone is as ambiguous as one in text (an
    export in local time, UTC+5, would be taken five hours off): refused."""
    rows = [f.shipment(shipment_id="S-0001"), f.shipment(shipment_id="S-0002")]
    frame = pl.DataFrame(rows, schema=SHIPMENTS.raw_schema)
    naive = frame.head(1).with_columns(pl.col("declared_at").dt.replace_time_zone(None))
    zoned = frame.tail(1).with_columns(pl.col("declared_at").dt.convert_time_zone("Asia/Almaty"))
    naive.write_parquet(tmp_path / "a.parquet")
    zoned.write_parquet(tmp_path / "b.parquet")
    read = read_input([tmp_path / "a.parquet", tmp_path / "b.parquet"], SHIPMENTS)
    result = validate_tables({"shipments": read}).tables["shipments"]

    assert result.accepted["shipment_id"].to_list() == ["S-0002"]
    assert result.accepted["declared_at"].to_list() == frame.tail(1)["declared_at"].to_list()
    q = result.quarantine
    assert q["shipment_id"].to_list() == ["S-0001"]
    assert q["_rule"].to_list() == ["type:declared_at"]
    naive_text = naive["declared_at"][0].isoformat()
    assert q["_message"][0].startswith(f"declared_at '{naive_text}")
    assert "needs a time zone" in q["_message"][0]


def test_typed_values_are_cast_only_when_nothing_is_lost(tmp_path: Path) -> None:
    """JSON and Parquet carry types: 2.7 is not line 2, `true` is not a quantity of
    1, an integer identifier is its digits, a decimal is not an identifier."""
    from data_contracts.readers import from_frame

    def line(n: int, **changes: object) -> dict[str, object]:
        return {**f.item(item_id=f"I-{n}", shipment_id=f"S-000{n}"), **changes}

    # (one file per column type: Polars reads a column of numbers and text as text)
    files = {
        "lines": [line(1, line_no=2.7), line(2, line_no=3.0, net_mass_kg=12)],
        "flags": [line(3, quantity=True)],
        "codes": [line(4, hs_code=9305100000)],
        "decimal-codes": [line(5, hs_code=9305100000.0)],
    }
    paths = [tmp_path / f"{name}.ndjson" for name in files]
    for path, rows in zip(paths, files.values(), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ships = pl.DataFrame(
        [f.shipment(shipment_id=f"S-000{n}") for n in range(1, 6)], schema=SHIPMENTS.raw_schema
    )
    tables = {"items": read_input(paths, ITEMS), "shipments": from_frame(ships, SHIPMENTS)}
    result = validate_tables(tables).tables["items"]

    accepted = {r["item_id"]: r for r in result.accepted.iter_rows(named=True)}
    assert set(accepted) == {"I-2", "I-4"}
    assert accepted["I-2"]["line_no"] == 3 and accepted["I-2"]["net_mass_kg"] == 12.0
    assert accepted["I-4"]["hs_code"] == "9305100000"
    rules = dict(result.quarantine.select("item_id", "_rule").iter_rows())
    assert rules == {"I-1": "type:line_no", "I-3": "type:quantity", "I-5": "type:hs_code"}
    raw = {r["item_id"]: json.loads(r["_raw_record"]) for r in result.quarantine.to_dicts()}
    assert raw["I-1"]["line_no"] == 2.7 and raw["I-3"]["quantity"] is True


def test_a_number_in_a_date_time_column_is_not_an_epoch(tmp_path: Path) -> None:
    row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in f.shipment().items()}
    path = tmp_path / "shipments.ndjson"
    path.write_text(json.dumps({**row, "declared_at": 1732838400}) + "\n", encoding="utf-8")
    result = validate_tables({"shipments": read_input([path], SHIPMENTS)}).tables["shipments"]
    assert result.accepted.height == 0
    assert result.quarantine["_rule"].to_list() == ["type:declared_at"]


def test_an_unreadable_value_is_named_with_the_form_expected(tmp_path: Path) -> None:
    """Review of stop 24: "date_of_birth could not be read as a date" for 12.03.1985
    named neither the value nor the form expected."""
    from data_contracts.schemas import TRAVELLERS

    def text(value: object) -> str:
        if isinstance(value, list):
            return ";".join(value)
        return (
            ""
            if value is None
            else str(value.isoformat() if hasattr(value, "isoformat") else value)
        )

    rows = [
        {k: text(v) for k, v in f.traveller(traveller_record_id=rid).items()} | change
        for rid, change in (
            ("T-1", {"date_of_birth": "12.03.1985"}),
            ("T-2", {"baggage_kg": "40,5"}),
        )
    ]
    path = tmp_path / "travellers.csv"
    pl.DataFrame(rows).write_csv(path)
    q = validate_tables({"travellers": read_input([path], TRAVELLERS)}).tables["travellers"]
    messages = dict(q.quarantine.select("traveller_record_id", "_message").iter_rows())
    assert messages == {
        "T-1": "date_of_birth '12.03.1985' could not be read as a date (YYYY-MM-DD)",
        "T-2": "baggage_kg '40,5' could not be read as a number (with a decimal point, no "
        "thousands separator)",
    }
