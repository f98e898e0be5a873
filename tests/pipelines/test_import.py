"""Bring your own declarations: the example export runs through the whole pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from data_contracts.settings import DataLayout
from tests.conftest import ROOT, caravan, caravan_in_process

EXAMPLE = ROOT / "examples" / "byo"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("byo"))
    caravan(
        "import",
        str(EXAMPLE / "declarations.csv"),
        "--mapping",
        str(EXAMPLE / "mapping.yaml"),
        data=layout.root,
    )
    # (the same commands in process; other tests run them as `caravan` subprocesses)
    caravan_in_process("validate", "--no-gx", data=layout.root)
    caravan_in_process("features", data=layout.root)
    return layout


def test_export_is_mapped_onto_the_contracts(imported: DataLayout) -> None:
    source = pl.read_csv(EXAMPLE / "declarations.csv", separator=";", infer_schema=False)
    ships = pl.read_parquet(imported.validated / "shipments.parquet")
    items = pl.read_parquet(imported.validated / "items.parquet")
    outcomes = pl.read_parquet(imported.validated / "outcomes.parquet")
    assert ships.height == source["DECL_ID"].n_unique()
    assert items.height == source.height
    assert outcomes.height == ships.height  # every declaration was inspected
    assert (outcomes["selection_probability"] == 1.0).all()
    assert (
        outcomes["finding"].sum()
        == source.filter(pl.col("RESULT") == "SEIZURE")["DECL_ID"].n_unique()
    )
    assert set(ships["mode"].cast(pl.String).unique()) <= {
        "road",
        "rail",
        "air",
        "post",
        "express",
        "sea",
    }
    # Not in the export: left empty, never made up.
    assert ships["expected_arrival_at"].null_count() == ships.height
    absent = json.loads((imported.raw / "absent.json").read_text())
    assert "expected_arrival_at" in absent["shipments"]


def test_features_without_inputs_are_left_out_and_extras_kept(imported: DataLayout) -> None:
    meta = json.loads((imported.features / "feature_set.json").read_text())
    assert meta["unavailable"]["lead_time_hours"] == "shipments.expected_arrival_at"
    assert meta["unavailable"]["traveller_trips_180d"] == "travellers"
    assert meta["extras"]["categorical"] == {"extra_REGIME": ["40", "51"]}
    feats = pl.read_parquet(imported.features / "features.parquet")
    assert feats["extra_DUTY_PAID"].null_count() == 0


def test_training_uses_what_exists_and_evaluation_says_all_were_inspected(
    imported: DataLayout, tmp_path: Path
) -> None:
    layout = DataLayout(tmp_path / "copy")
    shutil.copytree(imported.root, layout.root)
    result = caravan("train", "--json", data=layout.root)
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    notes = summary["evaluation"]["notes"]
    assert any("every shipment of the test window was inspected" in n for n in notes)
    ev = summary["evaluation"]
    assert ev["n_random_share"] == ev["n_inspected"]
    from models.registry import Registry

    booster, _ = Registry(layout.mlflow_db, layout.mlflow_artifacts).load(summary["version"])
    names = set(booster.feature_name())
    assert "extra_REGIME" in names and "extra_DUTY_PAID" in names
    assert "lead_time_hours" not in names and "traveller_trips_180d" not in names
