"""Evaluate a registered model version on a test window rebuilt from the data directory.

One implementation for `caravan evaluate`, `caravan train` (its report) and
promotions (`models.promotion`): read the features and outcomes, rebuild the
test window a version was evaluated on, score it, and compute the honest
metrics of `models.evaluate`. Writing the report with its plots is the
pipeline's business; this module only reads.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from data_contracts.settings import DataLayout
from models.dataset import Target, labelled, matrix
from models.evaluate import Evaluation, evaluate
from models.registry import ModelVersion, Registry
from models.train import predict

FEATURES_FILE = "features.parquet"  # written by `caravan features`

# The scores of a rules-only policy over the window's shipments (for comparison), or None.
Baseline = Callable[[pl.DataFrame], np.ndarray | None]


class MissingInputError(FileNotFoundError):
    """An input of the evaluation is not there yet; the message says which command makes it."""


def registry(layout: DataLayout) -> Registry:
    return Registry(layout.mlflow_db, layout.mlflow_artifacts)


def read_features(layout: DataLayout) -> pl.DataFrame:
    path = layout.features / FEATURES_FILE
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run `caravan features` first")
    return pl.read_parquet(path)


def read_outcomes(layout: DataLayout) -> pl.DataFrame:
    path = layout.validated / "outcomes.parquet"
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run `caravan validate` first")
    return pl.read_parquet(path)


def read_truth(layout: DataLayout) -> pl.DataFrame | None:
    """The synthetic world's truth (None for real data)."""
    path = layout.truth / "truth.parquet"
    return pl.read_parquet(path) if path.exists() else None


def evaluation_window(
    layout: DataLayout, version_tags: dict[str, str], features: pl.DataFrame
) -> pl.DataFrame:
    """The inspected shipments of the test window a version was evaluated on, rebuilt
    from the current data (labelled for the version's target)."""
    missing = [k for k in ("test_from", "test_to") if k not in version_tags]
    if missing:
        raise ValueError(f"the version has no test window tags ({', '.join(missing)})")
    target = Target(version_tags.get("target", "arms"))
    data = labelled(features, read_outcomes(layout), target)
    start = dt.datetime.fromisoformat(version_tags["test_from"])
    end = dt.datetime.fromisoformat(version_tags["test_to"])
    return data.filter(pl.col("declared_at").is_between(start, end))


@dataclass(frozen=True)
class Assessment:
    """A version's evaluation with what was scored (the report's plots need it)."""

    evaluation: Evaluation
    booster: Any
    names: list[str]
    x_test: np.ndarray
    test_scores: np.ndarray
    labels: np.ndarray
    random_share: np.ndarray
    window: pl.DataFrame
    window_scores: np.ndarray
    truth: pl.DataFrame | None


def assess(
    booster: Any,
    version: str | None,
    test: pl.DataFrame,
    features: pl.DataFrame,
    truth: pl.DataFrame | None,
    baseline: Baseline | None = None,
) -> Assessment:
    """Score the test window's inspected shipments and every shipment of the window;
    evaluate (with the truth and the rules-only baseline when they exist)."""
    if test.height == 0:
        raise ValueError("the test window holds no inspected shipment")
    names = list(booster.feature_name())
    x_test = matrix(test, names)
    scores = predict(booster, x_test)
    start, end = test["declared_at"].min(), test["declared_at"].max()
    window = features.filter(pl.col("declared_at").is_between(start, end))
    window_scores = predict(booster, matrix(window, names))
    ev = evaluate(
        model_version=version,
        test=test,
        test_scores=scores,
        window_shipments=window,
        window_scores=window_scores,
        rules_scores=baseline(window) if (truth is not None and baseline) else None,
        truth=truth,
    )
    return Assessment(
        evaluation=ev,
        booster=booster,
        names=names,
        x_test=x_test,
        test_scores=scores,
        labels=test["label"].to_numpy().astype(float),
        random_share=(test["selection_method"] == "random").to_numpy(),
        window=window,
        window_scores=window_scores,
        truth=truth,
    )


class ExtrasCodingError(ValueError):
    """features/ cannot be given a model version's own codes of a categorical extra."""


def version_extras(layout: DataLayout, mv: ModelVersion) -> dict[str, Any]:
    """The extras (and code tables) model version `mv` was trained with, as recorded
    with it (tag, or the run's artifact for long tables): see features.inputs."""
    from features.inputs import model_extras

    reg = registry(layout)
    return model_extras(mv.tags, lambda path: reg.artifact_json(mv.run_id, path))


def with_model_codes(layout: DataLayout, features: pl.DataFrame, mv: ModelVersion) -> pl.DataFrame:
    """features/'s categorical extras re-coded with the code tables of the model
    version `mv` that reads them (`version_extras`), not with the tables
    features/ was built with (features/feature_set.json): the same value gets the
    code the model was trained with, 0 (missing) stays 0, and a value the model's
    table does not hold gets UNSEEN_CODE, as serving codes it. Batch scoring and
    evaluation therefore read a version's inputs as it was trained and as the API
    serves it, even when features/ was rebuilt with other tables (code tables lost
    with raw/extras/codes.json, a data directory from before they were kept).
    Raises ExtrasCodingError when features/ does not record its own tables."""
    from serving.scoring import UNSEEN_CODE

    version = mv.version
    tables = version_extras(layout, mv).get("categorical") or {}
    wanted = [n for n in tables if n in features.columns]
    if not wanted:
        return features
    path = layout.features / "feature_set.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    built = meta.get("extras", {}).get("categorical", {})
    columns = []
    for name in wanted:
        coded_with = built.get(name)
        if coded_with is None:
            raise ExtrasCodingError(
                f"model version {version} reads {name} with its own code table, but "
                "features/feature_set.json does not record the codes features/ has for "
                "it: run `caravan features` again"
            )
        own = [str(v) for v in tables[name]]
        if [str(v) for v in coded_with] == own:
            continue
        code = {v: i + 1 for i, v in enumerate(own)}
        recode = {0: 0, **{i + 1: code.get(str(v), UNSEEN_CODE) for i, v in enumerate(coded_with)}}
        columns.append(
            pl.col(name)
            .fill_null(0)
            .replace_strict(recode, default=UNSEEN_CODE, return_dtype=pl.Int32)
        )
    return features.with_columns(columns) if columns else features


def assess_version(
    layout: DataLayout,
    ref: str,
    *,
    window_of: str | None = None,
    baseline: Baseline | None = None,
    features: pl.DataFrame | None = None,
) -> tuple[Assessment, ModelVersion]:
    """Evaluate version `ref` (number or alias) on its own test window, or on the
    test window of version `window_of` (to compare two versions on the same data),
    reading `features` (default features/) with the version's own code tables of
    categorical extras (`with_model_codes`)."""
    reg = registry(layout)
    booster, mv = reg.load(ref)
    tags = reg.version(window_of).tags if window_of else mv.tags
    features = with_model_codes(layout, read_features(layout) if features is None else features, mv)
    test = evaluation_window(layout, tags, features)
    return assess(booster, mv.version, test, features, read_truth(layout), baseline), mv
