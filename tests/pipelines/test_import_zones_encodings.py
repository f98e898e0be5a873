"""`caravan import` of exports as Central Asian systems write them (review of stop
24): local times without an offset, Windows-1251 text, ISO dates without a
`date_format`, blank lines. Real files through the real command line, then
`caravan validate`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from data_contracts.settings import DataLayout
from tests.conftest import caravan_in_process
from tests.pipelines.test_import_uat import HEADER, MAPPING, _row

UTC = dt.UTC
# A consignee on a national list, as a 1C export writes it (cp1251).
CONSIGNEE = "ИП Жумабаева Айгуль"


def _mapping(tmp_path: Path, **top: Any) -> Path:
    mapping = json.loads(json.dumps(MAPPING))
    for key, value in top.items():
        if value is None:
            mapping.pop(key, None)
        else:
            mapping[key] = value
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    return path


def _export(tmp_path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    csv = tmp_path / "export.csv"
    csv.write_bytes(("\n".join([HEADER, *rows]) + "\n").encode(encoding))
    return csv


def _import(layout: DataLayout, csv: Path, mapping: Path) -> Any:
    return caravan_in_process(
        "import", str(csv), "--mapping", str(mapping), data=layout.root, check=False
    )


def _validated(layout: DataLayout, table: str) -> pl.DataFrame:
    caravan_in_process("validate", "--no-gx", data=layout.root)
    return pl.read_parquet(layout.validated / f"{table}.parquet")


def _quarantined(layout: DataLayout, table: str) -> pl.DataFrame:
    return pl.read_parquet(layout.quarantine / f"{table}.parquet")


def test_local_times_are_read_in_the_mappings_zone(tmp_path: Path) -> None:
    """Bishkek is UTC+6: 23:30 on 16 January there is 17:30 UTC, the same day; the
    inspection's zone may be given on its column."""
    csv = _export(
        tmp_path,
        [_row("Z1", Lodged="16/01/2024 23:30", Checked="17/01/2024 01:15")],
    )
    mapping = json.loads(json.dumps(MAPPING))
    mapping["timezone"] = "Asia/Bishkek"
    mapping["outcomes"]["columns"]["inspected_at"] = {
        "column": "Checked",
        "timezone": "Asia/Tashkent",
    }
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    layout = DataLayout(tmp_path / "d")
    assert _import(layout, csv, path).returncode == 0
    ships = _validated(layout, "shipments")
    assert ships["declared_at"].to_list() == [dt.datetime(2024, 1, 16, 17, 30, tzinfo=UTC)]
    outcomes = pl.read_parquet(layout.validated / "outcomes.parquet")
    assert outcomes["inspected_at"].to_list() == [dt.datetime(2024, 1, 16, 20, 15, tzinfo=UTC)]


def test_a_format_without_offset_or_zone_is_refused_naming_the_column(tmp_path: Path) -> None:
    csv = _export(tmp_path, [_row("Z2")])
    layout = DataLayout(tmp_path / "d")
    result = _import(layout, csv, _mapping(tmp_path, timezone=None))
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, said
    assert "shipments.columns.declared_at" in said and "timezone" in said, said
    assert not (layout.raw / "shipments").exists()
    # an offset in the format needs no zone
    with_offset = _export(tmp_path, [_row("Z2", Lodged="11/01/2024 09:39 +0500")])
    fmt = "%d/%m/%Y %H:%M %z"
    mapping = json.loads(json.dumps(MAPPING))
    mapping.pop("timezone")
    mapping["shipments"]["columns"]["declared_at"] = {"column": "Lodged", "date_format": fmt}
    mapping["outcomes"]["columns"]["inspected_at"] = {"column": "Checked", "timezone": "UTC"}
    path = tmp_path / "offset.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    assert _import(layout, with_offset, path).returncode == 0
    declared = _validated(layout, "shipments")["declared_at"].to_list()
    assert declared == [dt.datetime(2024, 1, 11, 4, 39, tzinfo=UTC)]


def test_without_date_format_dates_are_iso_with_their_offset(tmp_path: Path) -> None:
    csv = _export(
        tmp_path,
        [
            _row("I1", Lodged="2024-01-11T09:39:00+05:00", Checked="2024-01-12T10:00:00Z"),
            _row("I2", Lodged="2024-01-11 09:39", Checked="2024-01-12T10:00:00Z"),
            _row("I3", Lodged="11/01/2024 09:39", Checked="2024-01-12T10:00:00Z"),
        ],
    )
    layout = DataLayout(tmp_path / "d")
    assert _import(layout, csv, _mapping(tmp_path, date_format=None, timezone=None)).returncode == 0
    ships = _validated(layout, "shipments")
    assert ships.select("shipment_id", "declared_at").rows() == [
        ("I1", dt.datetime(2024, 1, 11, 4, 39, tzinfo=UTC))
    ]
    q = dict(_quarantined(layout, "shipments").select("shipment_id", "_message").iter_rows())
    assert q["I2"].startswith("declared_at '2024-01-11 09:39' needs a time zone"), q
    assert q["I3"].startswith("declared_at '11/01/2024 09:39' is not an ISO 8601"), q
    # with a zone, a time without an offset is in that zone (Tashkent: UTC+5)
    again = DataLayout(tmp_path / "again")
    zoned = _mapping(tmp_path, date_format=None, timezone="Asia/Tashkent")
    assert _import(again, csv, zoned).returncode == 0
    ships = _validated(again, "shipments").sort("shipment_id")
    assert ships.select("shipment_id", "declared_at").rows() == [
        ("I1", dt.datetime(2024, 1, 11, 4, 39, tzinfo=UTC)),
        ("I2", dt.datetime(2024, 1, 11, 4, 39, tzinfo=UTC)),
    ]


def test_a_cp1251_export_is_read_in_its_encoding(tmp_path: Path) -> None:
    csv = _export(tmp_path, [_row("E1", Exporter=CONSIGNEE, Goods="ружья")], encoding="cp1251")
    # read as UTF-8 (the default): the file is named with what to do, nothing written
    layout = DataLayout(tmp_path / "d")
    result = _import(layout, csv, _mapping(tmp_path))
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "Traceback" not in said, said
    assert str(csv) in said and "encoding: cp1251" in said, said
    assert not (layout.raw / "shipments").exists()
    # named in the mapping: read as written
    assert _import(layout, csv, _mapping(tmp_path, encoding="cp1251")).returncode == 0
    ships = _validated(layout, "shipments")
    assert ships["consignor_name"].to_list() == [CONSIGNEE]
    items = pl.read_parquet(layout.validated / "items.parquet")
    assert items["description"].to_list() == ["ружья"]


def test_text_a_lossy_reading_garbled_is_rejected(tmp_path: Path) -> None:
    """`utf8-lossy` reads the cp1251 name as U+FFFD marks: a name no screening can
    match is refused, with the reason."""
    csv = _export(tmp_path, [_row("E2", Exporter=CONSIGNEE)], encoding="cp1251")
    layout = DataLayout(tmp_path / "d")
    assert _import(layout, csv, _mapping(tmp_path, encoding="utf8-lossy")).returncode == 0
    assert _validated(layout, "shipments").height == 0
    q = _quarantined(layout, "shipments")
    assert q["_rule"].to_list() == ["text:consignor_name"]
    assert "U+FFFD" in q["_message"][0] and "cp1251" in q["_message"][0]


@pytest.mark.parametrize(("key", "value"), [("encoding", "cp1252x"), ("timezone", "Asia/Bishkekk")])
def test_an_unknown_encoding_or_zone_is_refused_naming_it(
    tmp_path: Path, key: str, value: str
) -> None:
    csv = _export(tmp_path, [_row("U1")])
    result = _import(DataLayout(tmp_path / "d"), csv, _mapping(tmp_path, **{key: value}))
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "Traceback" not in said, said
    assert key in said and repr(value) in said, said


def test_rows_without_any_value_are_left_out_and_counted(tmp_path: Path) -> None:
    empty = "," * (len(HEADER.split(",")) - 1)
    csv = _export(tmp_path, [_row("B1"), "", empty, _row("B2"), "  ,  ,"])
    layout = DataLayout(tmp_path / "d")
    result = _import(layout, csv, _mapping(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "3 row(s) without any value left out" in result.stdout, result.stdout
    assert sorted(_validated(layout, "shipments")["shipment_id"]) == ["B1", "B2"]
    q = layout.quarantine / "shipments.parquet"
    assert not q.exists() or pl.read_parquet(q).height == 0


def test_quarantine_names_the_row_of_the_export(tmp_path: Path) -> None:
    """Review of stop 24: quarantine pointed at the row of the intermediate Parquet
    file (0-based, after duplicates were merged), not at the export's row."""
    csv = _export(tmp_path, [_row("R1"), "", _row("R2"), _row("R3", Lodged="31/02/2025 10:00")])
    layout = DataLayout(tmp_path / "d")
    assert _import(layout, csv, _mapping(tmp_path)).returncode == 0
    _validated(layout, "shipments")
    q = _quarantined(layout, "shipments")
    assert q.select("shipment_id", "_export_row").rows() == [("R3", 5)]  # (header: row 1)
    assert _quarantined(layout, "items")["_export_row"].to_list() == [5]
