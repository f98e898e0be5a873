"""UAT round 2, DS F17 and the code tables of categorical extras in batch.

- F17: `caravan evaluate` (and `caravan train`, see
  tests/pipelines/test_train_no_valid_positive.py) print the evaluation's notes under
  the metric table (why the figures are empty: no finding in the test window), and
  the score plot of a window without findings raises no numpy warning.
- `caravan score` and `caravan evaluate` read a version's categorical extras with the
  code tables stored with that version, not with the tables features/ was built
  with: when the two differ (features/ rebuilt after raw/extras/codes.json was lost,
  so the codes were given afresh), the same version scores every shipment as before
  and its evaluation is the same.

A small imported world: the example export (1,500 declarations) whose customs regime
carries the signal (a third of the regime-51 declarations have a seizure)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_contracts.settings import DataLayout
from tests.conftest import ROOT, caravan
from tests.serving.test_uat2_extras import _later_export

EXAMPLE = ROOT / "examples" / "byo"


def _export(tmp: Path) -> Path:
    """The example export, with seizures on a third of the regime-51 declarations
    (every line of a declaration carries its result)."""
    rows = pl.read_csv(EXAMPLE / "declarations.csv", separator=";", infer_schema=False)
    number = pl.col("DECL_ID").str.slice(1).cast(pl.Int64)
    seized = (pl.col("REGIME") == "51") & (number % 3 == 0)
    rows = rows.with_columns(
        pl.when(seized).then(pl.lit("SEIZURE")).otherwise(pl.col("RESULT")).alias("RESULT")
    )
    path = tmp / "declarations.csv"
    rows.write_csv(path, separator=";")
    return path


@pytest.fixture(scope="module")
def regimes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export imported, validated, its features built, version 1 trained."""
    from pipelines.features import run_features
    from pipelines.importer import run_import
    from pipelines.modelling import run_train
    from pipelines.validate import run_validate

    tmp = tmp_path_factory.mktemp("regimes")
    layout = DataLayout(tmp / "data")
    run_import(layout, EXAMPLE / "mapping.yaml", [_export(tmp)])
    run_validate(layout, gx=False)
    run_features(layout)
    run = run_train(layout)
    assert run.version == "1" and run.evaluation.n_positive > 0
    return layout.root


def _copy(root: Path, tmp_path: Path) -> DataLayout:
    shutil.copytree(root, tmp_path / "data")
    return DataLayout(tmp_path / "data")


# --------------------------------------------------------------------------- F17


def test_evaluate_prints_the_notes_under_the_table_without_warnings(
    regimes: Path, tmp_path: Path
) -> None:
    from models.assess import registry

    layout = _copy(regimes, tmp_path)
    result = caravan("evaluate", "--version", "1", data=layout.root)
    # a census export: the note that says so, under the table
    assert "Note: every shipment of the test window was inspected" in result.stdout
    assert result.stdout.index("Note:") > result.stdout.index("capacity")
    assert "no inspection of the test window found anything" not in result.stdout

    # the same window without any finding (the outcomes recorded as no finding)
    tags = registry(layout).version("1").tags
    start = pl.lit(tags["test_from"]).str.to_datetime(time_zone="UTC")
    path = layout.validated / "outcomes.parquet"
    outcomes = pl.read_parquet(path)
    in_window = outcomes["inspected_at"] >= outcomes.select(start).item()
    assert outcomes.filter(in_window)["finding"].any()
    outcomes = outcomes.with_columns(
        pl.when(in_window).then(False).otherwise(pl.col("finding")).alias("finding"),
        pl.when(in_window)
        .then(None)
        .otherwise(pl.col("finding_category"))
        .alias("finding_category"),
    )
    outcomes.write_parquet(path)
    result = caravan("evaluate", "--version", "1", data=layout.root)
    said = " ".join(result.stdout.split())
    assert (
        "Note: no inspection of the test window found anything: recall is undefined and "
        "this version cannot be compared with another on it" in said
    )
    assert "RuntimeWarning" not in result.stderr and "invalid value" not in result.stderr
    report = json.loads(
        (layout.reports / "evaluation" / "v1" / "evaluation.json").read_text(encoding="utf-8")
    )
    assert report["n_positive"] == 0


def test_the_score_plot_of_a_window_without_findings_warns_nothing(tmp_path: Path) -> None:
    from models.report import plot_scores

    scores = np.random.default_rng(3).uniform(1e-5, 0.9, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning (e.g. 0/0 of numpy) fails
        bars = plot_scores(scores, np.zeros(200), tmp_path / "scores.png")
    assert bars.counts == {"no finding": 200, "finding": 0}
    assert (tmp_path / "scores.png").stat().st_size > 0


# --------------------------------------------------------------------------- code tables


def test_score_and_evaluate_use_the_versions_own_code_tables(regimes: Path, tmp_path: Path) -> None:
    from models.assess import read_features, registry
    from models.dataset import matrix
    from models.train import predict
    from pipelines.features import run_features
    from pipelines.importer import run_import
    from pipelines.modelling import run_evaluate, run_score
    from pipelines.validate import run_validate
    from serving.scoring import UNSEEN_CODE

    layout = _copy(regimes, tmp_path)
    booster, mv = registry(layout).load("1")
    assert json.loads(mv.tags["extras"])["categorical"] == {"extra_REGIME": ["40", "51"]}
    assert booster.feature_importance("split")[booster.feature_name().index("extra_REGIME")] > 0
    before = run_score(layout, "1").scores.select("shipment_id", "probability")
    evaluated = run_evaluate(layout, "1")[0].to_json()

    # the code tables kept beside the extras are lost, and a later export brings a
    # new regime: features/ gives the codes afresh (sorted: "10", "40", "51"), so
    # "40" now has the code "51" had when version 1 was trained
    (layout.raw / "extras" / "codes.json").unlink()
    (layout.features / "feature_set.json").unlink()
    run_import(layout, EXAMPLE / "mapping.yaml", [_later_export(tmp_path, "10")])
    run_validate(layout, gx=False)
    run_features(layout)
    meta = json.loads((layout.features / "feature_set.json").read_text())
    assert meta["extras"]["categorical"] == {"extra_REGIME": ["10", "40", "51"]}
    # (read with features/'s codes, version 1 would score the earlier shipments otherwise)
    feats = read_features(layout)
    names = list(booster.feature_name())
    raw = feats.select("shipment_id", pl.Series("p", predict(booster, matrix(feats, names))))
    moved = before.join(raw, on="shipment_id")
    assert (moved["probability"] != moved["p"]).sum() > 100

    after = run_score(layout, "1")
    same = before.join(after.scores, on="shipment_id", suffix="_after")
    assert same.height == before.height == 1500
    assert np.array_equal(same["probability"].to_numpy(), same["probability_after"].to_numpy())
    # the new regime is a category version 1 never saw, coded as serving codes it
    vectors = pl.read_parquet(after.folder / "feature_vectors.parquet")
    new = vectors.filter(pl.col("shipment_id").str.starts_with("N"))
    assert new.height == 30 and new["extra_REGIME"].unique().to_list() == [UNSEEN_CODE]
    old = vectors.join(before.select("shipment_id"), on="shipment_id", how="semi")
    assert sorted(old["extra_REGIME"].unique().to_list()) == [1, 2]

    again = run_evaluate(layout, "1")[0].to_json()
    for key in ("n_inspected", "n_positive", "pr_auc", "brier", "at_capacity"):
        assert again[key] == evaluated[key], key
    # a promotion's side-by-side assessment reads each version with its own codes too
    from models.assess import evaluation_window
    from models.promotion import _assess

    window = evaluation_window(layout, mv.tags, feats)
    compared = _assess(layout, "1", window, feats, None).evaluation.to_json()
    for key in ("n_inspected", "n_positive", "pr_auc", "brier"):
        assert compared[key] == evaluated[key], key


def test_features_that_do_not_record_their_codes_are_refused_by_score(
    regimes: Path, tmp_path: Path
) -> None:
    layout = _copy(regimes, tmp_path)
    meta_path = layout.features / "feature_set.json"
    meta = json.loads(meta_path.read_text())
    meta["extras"]["categorical"] = {}
    meta_path.write_text(json.dumps(meta))
    result = caravan("score", "--version", "1", data=layout.root, check=False)
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "model version 1 reads extra_REGIME with its own code table" in said
    assert "run `caravan features` again" in said
    assert not (layout.scores / "runs").exists()
