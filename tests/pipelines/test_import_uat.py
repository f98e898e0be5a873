"""`caravan import` of messy exports (acceptance findings): labels not spelled like
the mapping, unreadable dates and numbers, repeated and conflicting declaration
ids, files with the same name, a mapping without declared_at. Real files, the real
command line, then `caravan validate`: every row ends in validated/ or quarantine/
with its reason and its values as the export held them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from data_contracts.settings import DataLayout
from tests.conftest import ROOT, caravan, caravan_in_process

EXAMPLE = ROOT / "examples" / "byo"
HEADER = (
    "Ref,DeclNumber,Lodged,Post,Mode,Orig,Disp,Dest,ImporterTIN,Exporter,BrokerTIN,"
    "Gross,Invoice,Cur,HS,Goods,Qty,Unit,Net,LineVal,Found,Checked,Seized"
)
# One row per declaration, its own column names, "Found" is the label.
MAPPING: dict[str, Any] = {
    "name": "One row per declaration",
    "date_format": "%d/%m/%Y %H:%M",
    "timezone": "UTC",
    "shipments": {
        "columns": {
            "shipment_id": "Ref",
            "declaration_ref": "DeclNumber",
            "declared_at": "Lodged",
            "mode": {"column": "Mode", "values": {"R": "road", "A": "air"}},
            "office_code": "Post",
            "origin_country": "Orig",
            "dispatch_country": "Disp",
            "destination_country": "Dest",
            "consignee_id": "ImporterTIN",
            "consignee_name": "ImporterTIN",
            "consignor_name": "Exporter",
            "declarant_id": "BrokerTIN",
            "declarant_name": "BrokerTIN",
            "gross_mass_kg": "Gross",
            "invoice_amount": "Invoice",
            "invoice_currency": "Cur",
        }
    },
    "items": {
        "columns": {
            "item_id": {"template": "{Ref}-1"},
            "shipment_id": "Ref",
            "line_no": {"value": 1},
            "hs_code": "HS",
            "description": "Goods",
            "quantity": "Qty",
            "quantity_unit": "Unit",
            "net_mass_kg": "Net",
            "value": "LineVal",
            "origin_country": "Orig",
        }
    },
    "outcomes": {
        "columns": {
            "outcome_id": {"template": "{Ref}-insp"},
            "shipment_id": "Ref",
            "inspected_at": "Checked",
            "officer_id": {"value": "unknown"},
            "finding_category": "Seized",
        },
        "finding": {"column": "Found", "positive": ["Yes"]},
        "selection": "census",
    },
}


def _row(ref: str, **over: str) -> str:
    values = {
        "Ref": ref,
        "DeclNumber": f"N-{ref}",
        "Lodged": "11/01/2024 09:39",
        "Post": "KZ-ALMATY",
        "Mode": "R",
        "Orig": "RU",
        "Disp": "RU",
        "Dest": "KZ",
        "ImporterTIN": "970220457404",
        "Exporter": "Turon Textile",
        "BrokerTIN": "970220457404",
        "Gross": "288.6",
        "Invoice": "5643.8",
        "Cur": "RUB",
        "HS": "901839",
        "Goods": "syringes",
        "Qty": "12322.0",
        "Unit": "PCE",
        "Net": "258.97",
        "LineVal": "5643.8",
        "Found": "No",
        "Checked": "12/01/2024 15:39",
        "Seized": "",
    } | over
    return ",".join(values[c] for c in HEADER.split(","))


def _export(
    tmp_path: Path, rows: list[str], mapping: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    csv = tmp_path / "export.csv"
    csv.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping or MAPPING), encoding="utf-8")
    return csv, path


def _run(layout: DataLayout, files: list[Path], mapping: Path) -> None:
    """`caravan import` then `caravan validate`, in process (the same commands; tests
    below also run both as real `caravan` subprocesses)."""
    caravan_in_process("import", *map(str, files), "--mapping", str(mapping), data=layout.root)
    caravan_in_process("validate", "--no-gx", data=layout.root)


def _q(layout: DataLayout, table: str) -> pl.DataFrame:
    return pl.read_parquet(layout.quarantine / f"{table}.parquet")


def _ok(layout: DataLayout, table: str) -> pl.DataFrame:
    return pl.read_parquet(layout.validated / f"{table}.parquet")


def test_finding_values_are_matched_loosely_and_unknown_or_contradicting_ones_rejected(
    tmp_path: Path,
) -> None:
    declared = json.loads(json.dumps(MAPPING))
    declared["outcomes"]["finding"]["negative"] = ["No"]
    csv, mapping = _export(
        tmp_path,
        [
            _row("A1"),
            _row("A2", Found=" yes ", Seized="ammunition"),  # not spelled like "Yes"
            _row("A3", Found="Maybe"),  # neither declared value
            _row("A4", Found="no", Seized="ammunition"),  # a seizure recorded as "no"
        ],
        declared,
    )
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], mapping)
    ok = _ok(layout, "outcomes").sort("shipment_id")
    assert ok.select(
        "shipment_id", "finding", pl.col("finding_category").cast(pl.String)
    ).rows() == [
        ("A1", False, None),
        ("A2", True, "ammunition"),
    ]
    q = _q(layout, "outcomes").sort("shipment_id")
    assert q["shipment_id"].to_list() == ["A3", "A4"]
    maybe, contradiction = q.row(0, named=True), q.row(1, named=True)
    assert maybe["_rule"] == "type:finding"
    assert "Found 'Maybe'" in maybe["_message"] and "neither" in maybe["_message"]
    assert json.loads(maybe["_raw_record"])["finding"] == "Maybe"
    # the category is kept, so the contract's rule sees the contradiction
    assert contradiction["_rule"] == "finding_category:finding_category"
    assert contradiction["_message"] == "finding is false but finding_category is 'ammunition'"
    # every input row is in exactly one place
    assert _ok(layout, "outcomes").height + q.height == 4


def test_mapping_without_negative_values_still_reads_them_and_says_so(tmp_path: Path) -> None:
    csv, mapping = _export(tmp_path, [_row("B1"), _row("B2", Found="YES", Seized="ammunition")])
    layout = DataLayout(tmp_path / "d")
    result = caravan("import", str(csv), "--mapping", str(mapping), data=layout.root)
    assert "read as no finding" in result.stdout and "'No' (1)" in result.stdout
    caravan("validate", "--no-gx", data=layout.root)
    ok = _ok(layout, "outcomes").sort("shipment_id")
    assert ok["finding"].to_list() == [False, True]


def test_unreadable_dates_and_numbers_keep_their_text_and_say_why(tmp_path: Path) -> None:
    csv, mapping = _export(
        tmp_path,
        [
            _row("C1"),
            _row("C2", Lodged="31/02/2025 10:00"),  # no such day
            _row("C3", Lodged="2025-03-04 10:00"),  # another format than the mapping's
            _row("C4", Invoice="abc"),
        ],
    )
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], mapping)
    assert _ok(layout, "shipments")["shipment_id"].to_list() == ["C1"]
    q = {r["shipment_id"]: r for r in _q(layout, "shipments").iter_rows(named=True)}
    assert q["C2"]["_rule"] == "type:declared_at"
    assert q["C2"]["_message"] == (
        "declared_at '31/02/2025 10:00' does not match the date format %d/%m/%Y %H:%M"
    )
    assert json.loads(q["C2"]["_raw_record"])["declared_at"] == "31/02/2025 10:00"
    assert q["C3"]["_rule"] == "type:declared_at"
    assert json.loads(q["C3"]["_raw_record"])["declared_at"] == "2025-03-04 10:00"
    assert q["C4"]["_rule"] == "type:invoice_amount"
    assert q["C4"]["_message"] == "invoice_amount 'abc' is not a number"
    assert json.loads(q["C4"]["_raw_record"])["invoice_amount"] == "abc"
    # their goods lines and inspection results follow them, nothing is lost
    assert _q(layout, "items").height == 3 and _q(layout, "outcomes").height == 3


def test_a_repeated_declaration_id_does_not_reject_the_first_declaration(tmp_path: Path) -> None:
    csv, mapping = _export(
        tmp_path,
        [_row("E1"), _row("E2"), _row("E3"), _row("E2", DeclNumber="OTHER", Goods="pistols")],
    )
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], mapping)
    ships = _ok(layout, "shipments")
    assert sorted(ships["shipment_id"]) == ["E1", "E2", "E3"]
    assert ships.filter(pl.col("shipment_id") == "E2")["declaration_ref"].item() == "N-E2"
    items = _ok(layout, "items").filter(pl.col("shipment_id") == "E2")
    assert items["description"].to_list() == ["syringes"]
    assert _ok(layout, "outcomes").height == 3
    q = _q(layout, "shipments")
    assert q.select("shipment_id", "_rule").rows() == [("E2", "unique:shipment_id")]
    assert json.loads(q["_raw_record"][0])["declaration_ref"] == "OTHER"
    assert _q(layout, "items")["_rule"].to_list() == ["unique:item_id"]


def _example_subset(n_declarations: int) -> pl.DataFrame:
    source = pl.read_csv(EXAMPLE / "declarations.csv", separator=";", infer_schema=False)
    keep = source["DECL_ID"].unique(maintain_order=True).head(n_declarations)
    return source.filter(pl.col("DECL_ID").is_in(keep.implode()))


def test_a_conflicting_line_under_a_used_key_is_quarantined_not_merged(tmp_path: Path) -> None:
    source = _example_subset(20)
    first = source.filter(pl.col("DECL_ID") == "D0000000002").head(1)
    other = first.with_columns(
        pl.lit("99999/999999/9999999").alias("DECL_NO"),
        pl.lit("05.01.2024 10:00").alias("DECL_DATE"),
        pl.lit("11111111111111").alias("IMPORTER_INN"),
        pl.lit("99").alias("LINE_NO"),
        pl.lit("pistol barrels").alias("GOODS_DESC"),
        pl.lit("SEIZURE").alias("RESULT"),
    )
    csv = tmp_path / "declarations.csv"
    pl.concat([source, other]).write_csv(csv, separator=";")
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], EXAMPLE / "mapping.yaml")

    # the first declaration is kept whole and unchanged
    ships = _ok(layout, "shipments")
    assert ships.height == 20
    kept = ships.filter(pl.col("shipment_id") == "D0000000002")
    assert kept["declaration_ref"].item() == first["DECL_NO"].item()
    lines = _ok(layout, "items").filter(pl.col("shipment_id") == "D0000000002")
    assert "pistol barrels" not in lines["description"].to_list()
    assert lines.height == source.filter(pl.col("DECL_ID") == "D0000000002").height
    outcome = _ok(layout, "outcomes").filter(pl.col("shipment_id") == "D0000000002")
    assert outcome["finding"].to_list() == [False]

    # the second one is in quarantine with everything it held, and says why
    q = _q(layout, "shipments")
    assert q["_rule"].to_list() == ["unique:shipment_id"]
    assert "different declaration_ref, declared_at, consignee_id" in q["_message"][0]
    assert json.loads(q["_raw_record"][0])["declaration_ref"] == "99999/999999/9999999"
    qi = _q(layout, "items")
    assert qi["_rule"].to_list() == ["conflict:shipment_id"]
    assert json.loads(qi["_raw_record"][0])["description"] == "pistol barrels"
    qo = _q(layout, "outcomes")
    assert qo["_rule"].to_list() == ["conflict:shipment_id"]
    seizure = json.loads(qo["_raw_record"][0])
    assert seizure["finding"] is True and seizure["finding_category"] == "parts"


def test_lines_that_leave_header_columns_empty_do_not_conflict(tmp_path: Path) -> None:
    source = _example_subset(10)
    line = (pl.col("DECL_ID") == "D0000000002") & (pl.col("LINE_NO") == "2")
    source = source.with_columns(
        pl.when(line).then(pl.lit(None)).otherwise(pl.col("DECL_NO")).alias("DECL_NO")
    )
    csv = tmp_path / "declarations.csv"
    source.write_csv(csv, separator=";")
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], EXAMPLE / "mapping.yaml")
    assert _ok(layout, "shipments").height == 10
    assert _ok(layout, "items").height == source.height
    assert _q(layout, "shipments").height == 0 and _q(layout, "items").height == 0


def test_files_with_the_same_name_all_land_in_raw_once(tmp_path: Path) -> None:
    source = _example_subset(30)
    ids = source["DECL_ID"].unique(maintain_order=True)
    jan, feb = tmp_path / "jan" / "declarations.csv", tmp_path / "feb" / "declarations.csv"
    jan.parent.mkdir()
    feb.parent.mkdir()
    source.filter(pl.col("DECL_ID").is_in(ids.head(12).implode())).write_csv(jan, separator=";")
    source.filter(pl.col("DECL_ID").is_in(ids.tail(18).implode())).write_csv(feb, separator=";")
    mapping = EXAMPLE / "mapping.yaml"

    both = DataLayout(tmp_path / "both")
    _run(both, [jan, feb], mapping)
    assert _ok(both, "shipments").height == 30
    assert _ok(both, "items").height == source.height
    assert _ok(both, "outcomes").height == 30

    # one after the other, and the first file once more: still every row once
    apart = DataLayout(tmp_path / "apart")
    caravan("import", str(jan), "--mapping", str(mapping), data=apart.root)
    caravan_in_process("import", str(feb), "--mapping", str(mapping), data=apart.root)
    again = caravan("import", str(jan), "--mapping", str(mapping), data=apart.root)
    assert "replaces that import" in again.stdout
    caravan("validate", "--no-gx", data=apart.root)
    assert _ok(apart, "shipments").height == 30
    assert _q(apart, "shipments").height == 0
    assert len(list((apart.raw / "shipments").glob("*.parquet"))) == 2


def test_a_mapping_without_declared_at_is_refused(tmp_path: Path) -> None:
    partial = json.loads(json.dumps(MAPPING))
    del partial["shipments"]["columns"]["declared_at"]
    csv, mapping = _export(tmp_path, [_row("F1")], partial)
    layout = DataLayout(tmp_path / "d")
    result = caravan("import", str(csv), "--mapping", str(mapping), data=layout.root, check=False)
    assert result.returncode != 0
    assert "error: shipments.columns.declared_at: is required" in result.stdout + result.stderr
    assert not (layout.raw / "shipments").exists()


def test_train_without_features_is_a_one_line_error(tmp_path: Path) -> None:
    csv, mapping = _export(tmp_path, [_row("G1")])
    layout = DataLayout(tmp_path / "d")
    _run(layout, [csv], mapping)
    result = caravan("train", data=layout.root, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "features.parquet is missing" in output
