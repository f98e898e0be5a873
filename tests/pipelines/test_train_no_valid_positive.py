"""UAT round 2, DS F19: a validation window without any positive for the target.

Early stopping follows average precision on the validation window; without a
positive there it is undefined and the first iteration "won" (a one-tree model,
registered silently). Now the number of trees is chosen on the validation log-loss
instead, and the command's output, the MLflow params and the model card say so,
naming the windows and their counts; a training window without any positive is
refused (nothing to learn), naming the windows and what to do.

The example export (examples/byo, 1,500 declarations, 7 seizures) is such a case:
none of its seizures falls in the validation window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from data_contracts.settings import DataLayout
from models.dataset import Split
from tests.conftest import ROOT, caravan

EXAMPLE = ROOT / "examples" / "byo"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example export imported, validated and its features built (not trained)."""
    from pipelines.features import run_features
    from pipelines.importer import run_import
    from pipelines.validate import run_validate

    layout = DataLayout(tmp_path_factory.mktemp("novalid") / "data")
    run_import(layout, EXAMPLE / "mapping.yaml", [EXAMPLE / "declarations.csv"])
    run_validate(layout, gx=False)
    run_features(layout)
    return layout.root


def _copy(example: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(example, root)
    return root


def _split(root: Path) -> Split:
    from models.dataset import Target, labelled, time_split

    layout = DataLayout(root)
    data = labelled(
        pl.read_parquet(layout.features / "features.parquet"),
        pl.read_parquet(layout.validated / "outcomes.parquet"),
        Target.ARMS,
    )
    return time_split(data)


def test_no_positive_in_the_validation_window_stops_on_log_loss_and_says_so(
    example: Path, tmp_path: Path
) -> None:
    root = _copy(example, tmp_path)
    split = _split(root)
    # the data as the finding describes it: findings in training and test, none in validation
    assert split.train["label"].sum() > 0 and split.test["label"].sum() > 0
    assert split.valid["label"].sum() == 0
    v_from = str(split.valid["declared_at"].min())[:10]
    v_to = str(split.valid["declared_at"].max())[:10]
    window = (
        f"the validation window ({v_from} to {v_to}, {split.valid.height:,} inspected "
        "shipments) holds no positive for arms"
    )

    result = caravan("train", data=root)
    # the output says it, with the windows and their counts and what to do
    assert "warning:" in result.stderr
    said = " ".join(result.stderr.split())
    assert window in said
    assert "chosen on the validation log-loss" in said
    assert f"validation {v_from} to {v_to}: {split.valid.height:,} inspected, 0 positive" in said
    assert "--until DATE" in said
    # the number of trees was chosen on a defined metric, not "the first iteration"
    trees = int(result.stdout.split("Model version 1 (")[1].split(" trees")[0])
    assert trees > 1, result.stdout
    # F17: the evaluation's notes are printed under the table
    assert "Note: every shipment of the test window was inspected" in result.stdout

    # the MLflow run records the rule
    from models.assess import registry

    reg = registry(DataLayout(root))
    mv = reg.version("1")
    params = reg.client().get_run(mv.run_id).data.params
    assert params["early_stopping_metric"] == "binary_logloss"
    assert params["early_stopping_note"].startswith(window)
    # and the model card (JSON and Markdown), as a known limit too
    folder = root / "reports" / "evaluation" / "v1"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["early_stopping"]["metric"] == "binary_logloss"
    assert card["early_stopping"]["note"].startswith(window)
    assert card["parameters"]["metric"] == "binary_logloss"
    assert any(limit.startswith(f"Early stopping: {window}") for limit in card["known_limits"])
    markdown = (folder / "model_card.md").read_text()
    assert f"- Early stopping: on binary_logloss of the validation window: {window}" in markdown
    assert "- Note: every shipment of the test window was inspected" in markdown


def test_a_training_window_without_any_positive_is_refused_naming_the_windows(
    example: Path, tmp_path: Path
) -> None:
    root = _copy(example, tmp_path)
    # the example's first seizure was declared on 8 December 2024
    result = caravan("train", "--until", "2024-12-01", data=root, check=False)
    assert result.returncode == 2  # the command line's error exit
    said = " ".join(result.stderr.split())
    assert "error: the training window holds no positive for arms" in said
    assert "training 2024-01-01 to" in said and "0 positive; validation" in said
    assert "; test 2024-" in said
    assert "a model cannot learn what a finding looks like" in said
    assert "--until DATE" in said and "--target any-finding" in said
    # nothing registered, no report
    assert not (root / "reports" / "evaluation" / "v1").exists()
    from models.assess import registry

    layout = DataLayout(root)
    assert not layout.mlflow_db.exists() or not registry(layout).versions()


def test_with_a_positive_in_the_validation_window_average_precision_stops(
    example: Path,
) -> None:
    from models.train import NoPositiveError, Stopping, stopping_rule

    split = _split(example)
    fallback = stopping_rule(split, "arms")
    assert fallback.metric == "binary_logloss" and fallback.note
    # one finding in the validation window: the usual rule, nothing to say
    valid = split.valid.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.lit(1, dtype=pl.Int8))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    with_finding = Split(split.train, valid, split.test)
    assert stopping_rule(with_finding, "arms") == Stopping("average_precision", None)
    # no finding in training: refused
    train = split.train.with_columns(pl.lit(0, dtype=pl.Int8).alias("label"))
    with pytest.raises(NoPositiveError, match="training window holds no positive for arms"):
        stopping_rule(Split(train, valid, split.test), "arms")
