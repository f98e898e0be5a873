"""Validation of a generated world through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from data_contracts.schemas import RAW_TABLES
from data_contracts.settings import DataLayout
from tests.conftest import caravan, caravan_in_process

CASCADES = ("parent_rejected:shipment_id", "child_rejected:items")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("cli-world"))
    caravan("generate", "--shipments", "3000", "--seed", "5", data=layout.root)
    caravan("validate", data=layout.root)
    return layout


def test_every_raw_row_is_accepted_or_quarantined_exactly_once(world: DataLayout) -> None:
    for table in RAW_TABLES:
        raw = pl.read_parquet(world.raw / f"{table}.parquet")
        ok = pl.read_parquet(world.validated / f"{table}.parquet")
        bad = pl.read_parquet(world.quarantine / f"{table}.parquet")
        assert ok.height + bad.height == raw.height, table
        id_col = ok.columns[0]
        # Accepted ids are unique, and every raw row position is in exactly one place.
        assert ok[id_col].n_unique() == ok.height
        assert bad["_source_row"].n_unique() == bad.height
        assert bad["_rule"].null_count() == 0 and bad["_message"].null_count() == 0


def test_quarantine_matches_the_generators_broken_rows(world: DataLayout) -> None:
    broken = pl.read_parquet(world.truth / "broken_rows.parquet")
    assert broken.height > 0
    ships = pl.read_parquet(world.raw / "shipments.parquet").with_row_index("row")
    items = pl.read_parquet(world.raw / "items.parquet").with_row_index("row")
    outcomes = pl.read_parquet(world.raw / "outcomes.parquet").with_row_index("row")
    # Declarations the generator broke, directly or through one of their lines. A
    # duplicate row's id belongs to the original declaration, which stays accepted.
    direct_ship_rows = broken.filter(
        (pl.col("table") == "shipments") & (pl.col("rule") != "unique:shipment_id")
    )["row_index"]
    broken_ships = set(
        ships.filter(pl.col("row").is_in(direct_ship_rows.cast(pl.UInt32).implode()))["shipment_id"]
    )
    bad_line_rows = broken.filter(
        (pl.col("table") == "items") & (pl.col("rule") != "parent_missing:shipment_id")
    )["row_index"].cast(pl.UInt32)
    broken_ships |= set(items.filter(pl.col("row").is_in(bad_line_rows.implode()))["shipment_id"])

    for table, frame in (
        ("shipments", ships),
        ("items", items),
        ("outcomes", outcomes),
        ("travellers", None),
    ):
        q = pl.read_parquet(world.quarantine / f"{table}.parquet")
        direct = q.filter(~pl.col("_rule").is_in(CASCADES))
        got = set(zip(direct["_source_row"].to_list(), direct["_rule"].to_list(), strict=True))
        expected = set(
            zip(
                broken.filter(pl.col("table") == table)["row_index"].to_list(),
                broken.filter(pl.col("table") == table)["rule"].to_list(),
                strict=True,
            )
        )
        assert got == expected, (table, sorted(got ^ expected)[:10])
        cascaded = q.filter(pl.col("_rule").is_in(CASCADES))
        if frame is not None and table != "shipments":
            # Lines and outcomes follow exactly the declarations that were rejected.
            followers = frame.filter(
                pl.col("shipment_id").is_in(list(broken_ships))
                & ~pl.col("row").is_in(direct["_source_row"].cast(pl.UInt32).implode())
            )
            assert set(cascaded["_source_row"].to_list()) == set(followers["row"].to_list()), table


def test_validating_again_gives_the_same_result(world: DataLayout, tmp_path: Path) -> None:
    copy = DataLayout(tmp_path / "again")
    shutil.copytree(world.raw, copy.raw)
    caravan("validate", "--no-gx", data=copy.root)
    caravan_in_process("validate", "--no-gx", data=copy.root)  # the same command, in process
    for table in RAW_TABLES:
        for folder in ("validated", "quarantine"):
            first = pl.read_parquet(world.root / folder / f"{table}.parquet")
            second = pl.read_parquet(copy.root / folder / f"{table}.parquet")
            # Source paths differ between the two directories; everything else is equal.
            if "_source_file" in first.columns:
                first, second = first.drop("_source_file"), second.drop("_source_file")
            assert first.equals(second), (folder, table)


def test_json_summary_and_gx_report(world: DataLayout, tmp_path: Path) -> None:
    copy = DataLayout(tmp_path / "json")
    shutil.copytree(world.raw, copy.raw)
    result = caravan("validate", "--json", data=copy.root)
    summary = json.loads(result.stdout)
    raw_rows = pl.read_parquet(copy.raw / "items.parquet").height
    items = summary["tables"]["items"]
    assert items["rows"] == raw_rows == items["accepted"] + items["quarantined"]
    assert sum(items["rules"].values()) == items["quarantined"]
    page = Path(summary["report"]).read_text()
    assert "vague_description:description" in page
    gx = json.loads((Path(summary["report"]).parent / "gx_results.json").read_text())
    vague = [o for o in gx if o["rule"] == "vague_description:description"]
    quarantined = pl.read_parquet(copy.quarantine / "items.parquet")
    flagged = quarantined.filter(pl.col("_rules").list.contains("vague_description:description"))
    assert vague and vague[0]["unexpected_count"] == flagged.height > 0


def test_missing_input_exits_non_zero_naming_the_file(tmp_path: Path) -> None:
    result = caravan("validate", data=tmp_path / "empty", check=False)
    assert result.returncode != 0
    assert "shipments" in result.stderr and "no shipments input found" in result.stderr


def test_wrong_columns_exit_non_zero_naming_file_and_column(
    world: DataLayout, tmp_path: Path
) -> None:
    copy = DataLayout(tmp_path / "wrong")
    shutil.copytree(world.raw, copy.raw)
    items = pl.read_parquet(copy.raw / "items.parquet").drop("hs_code")
    items.write_parquet(copy.raw / "items.parquet")
    result = caravan("validate", "--no-gx", data=copy.root, check=False)
    assert result.returncode == 2
    assert "items.parquet" in result.stderr and "'hs_code'" in result.stderr


def test_data_directory_from_the_environment(world: DataLayout, tmp_path: Path) -> None:
    copy = DataLayout(tmp_path / "env")
    shutil.copytree(world.raw, copy.raw)
    caravan("validate", "--no-gx", "--json", env={"CARAVAN_DATA": str(copy.root)})
    assert (copy.validated / "shipments.parquet").exists()
