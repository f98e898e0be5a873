"""LightGBM training: deterministic, early-stopped on the validation period,
weighted by inverse selection propensity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from features.build import categorical_columns, model_columns
from features.registry import specs
from models.dataset import LABEL, WEIGHT, Split, matrix

# What early stopping follows on the validation window: average precision (the
# ranking of findings), or, when that window holds no positive and average
# precision is undefined there, the log-loss (UAT2 DS F19).
RANKING_METRIC = "average_precision"
FALLBACK_METRIC = "binary_logloss"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    learning_rate: float = 0.05
    num_leaves: int = 31
    # Chosen with explanation cost in mind (benchmarks/bench_model.py): on 300k
    # worlds of seeds 7, 8 and 9, depth 6 caught as many at 5 % capacity as depth 8
    # or more (0.835/0.891/0.842 against 0.793/0.882/0.842) and explained 3x faster.
    max_depth: int = 6
    min_data_in_leaf: int = 30
    min_sum_hessian_in_leaf: float = 1e-3  # (LightGBM's default)
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_rounds: int = 500
    # Rounds without improvement on the validation window before training stops;
    # None: no early stopping, the model keeps all `max_rounds` trees (a model of a
    # set size, e.g. for measuring the cost of explanations at that size).
    early_stopping_rounds: int | None = 50
    num_threads: int = 2

    def params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "metric": [RANKING_METRIC, FALLBACK_METRIC],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "min_sum_hessian_in_leaf": self.min_sum_hessian_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "monotone_constraints_method": "intermediate",
            "verbose": -1,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Fewer trees than this chosen by early stopping: the model learnt next to nothing
# (review: an any-finding model of 1 tree became the challenger without a word).
FEW_TREES = 5


class NoPositiveError(ValueError):
    """The training window holds no positive for the target: nothing to learn."""


@dataclass(frozen=True)
class Stopping:
    """The rule that chose the number of trees: the validation metric early stopping
    followed, and, when it is not the usual one, why (stated in the command's output,
    the MLflow params and the model card)."""

    metric: str
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "note": self.note}

    def noting(self, note: str) -> Stopping:
        """The same rule with `note` added to what it says already."""
        return Stopping(self.metric, f"{self.note}; {note}" if self.note else note)


def _window_counts(split: Split) -> dict[str, tuple[str, str, int, int]]:
    """Per window: first and last declaration day, inspected shipments, positives."""
    out = {}
    for name, frame in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        first, last = (str(frame["declared_at"].min())[:10], str(frame["declared_at"].max())[:10])
        out[name] = (first, last, frame.height, int(frame[LABEL].sum()))
    return out


def _windows_text(counts: dict[str, tuple[str, str, int, int]]) -> str:
    label = {"train": "training", "valid": "validation", "test": "test"}
    return "; ".join(
        f"{label[k]} {a} to {b}: {n:,} inspected, {p:,} positive"
        for k, (a, b, n, p) in counts.items()
    )


def stopping_rule(split: Split, target: str = "the target") -> Stopping:
    """How early stopping chooses the number of trees for this split. Average
    precision on the validation window, the usual rule, is undefined when that window
    holds no positive (its first iteration would always "win": a one-tree model);
    then the validation log-loss, defined without positives, chooses it, and the
    note says so. A training window without any positive has nothing to learn:
    refused (NoPositiveError), naming the windows and their counts."""
    counts = _window_counts(split)
    advice = (
        "train when the windows hold findings: `--until DATE` moves the three windows "
        "(the oldest 65 %, the next 15 % and the newest 20 % of the inspected shipments "
        "declared before DATE), or add inspection outcomes"
        + ("; `--target any-finding` counts findings of every kind" if target == "arms" else "")
    )
    if counts["train"][3] == 0:
        raise NoPositiveError(
            f"the training window holds no positive for {target} ({_windows_text(counts)}): "
            f"a model cannot learn what a finding looks like; {advice}"
        )
    if counts["valid"][3] == 0:
        first, last, n, _ = counts["valid"]
        return Stopping(
            FALLBACK_METRIC,
            f"the validation window ({first} to {last}, {n:,} inspected shipments) holds no "
            f"positive for {target}: average precision is undefined there, so the number "
            "of trees was chosen on the validation log-loss (how low the model scores "
            "shipments without a finding), not on how it ranks findings; its ranking was "
            f"not checked before the test window ({_windows_text(counts)}). To stop on "
            f"average precision, {advice}",
        )
    return Stopping(RANKING_METRIC)


@dataclass(frozen=True)
class Trained:
    booster: lgb.Booster
    best_iteration: int
    feature_names: list[str]
    stopping: Stopping = Stopping(RANKING_METRIC)


def training_columns(
    frame: Any, extra_categorical: tuple[str, ...] = (), unavailable: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """The columns a model trains on: the registry's features and any extra columns
    (`extra_*`) that have at least one value, less the features whose inputs the
    data set does not have (`unavailable`): those are left out, not filled in."""
    candidates = [c for c in model_columns() if c not in unavailable]
    candidates += [c for c in frame.columns if c.startswith("extra_")]
    present = [c for c in candidates if frame[c].null_count() < frame.height]
    cats = [c for c in present if c in categorical_columns() or c in extra_categorical]
    return present, cats


def fit(
    split: Split,
    config: TrainConfig | None = None,
    columns: list[str] | None = None,
    categorical: list[str] | None = None,
    target: str = "the target",
) -> Trained:
    """Train on `split.train`, early-stopped on `split.valid` by `stopping_rule`
    (raises NoPositiveError when the training window holds no positive)."""
    config = config or TrainConfig()
    stopping = stopping_rule(split, target)
    names = columns or model_columns()
    cats = (
        categorical if categorical is not None else [c for c in categorical_columns() if c in names]
    )
    monotone = {s.name: s.monotone for s in specs()}

    def dataset(frame: Any, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            matrix(frame, names),
            label=frame[LABEL].to_numpy(),
            weight=frame[WEIGHT].to_numpy(),
            feature_name=names,
            categorical_feature=cats,
            reference=reference,
            free_raw_data=False,
        )

    train = dataset(split.train)
    valid = dataset(split.valid, reference=train)
    params = config.params()
    if stopping.metric != RANKING_METRIC:
        params["metric"] = [stopping.metric]
    callbacks: list[Callable[..., Any]] = []
    if config.early_stopping_rounds is not None:
        callbacks.append(
            lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)
        )
    else:
        note = f"early stopping off: the model keeps all {config.max_rounds} trees"
        stopping = stopping.noting(note)
    booster = lgb.train(
        {**params, "monotone_constraints": [monotone.get(n, 0) for n in names]},
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=callbacks,
    )
    # (without early stopping `best_iteration` is 0: every tree is kept)
    best = int(booster.best_iteration or booster.current_iteration())
    few = _few_trees_note(booster, best, split, stopping, config)
    if few:
        stopping = stopping.noting(few)
    # Keep only the trees up to the best iteration: the stored model is what scores.
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return Trained(trimmed, best, names, stopping)


def _few_trees_note(
    booster: lgb.Booster, best: int, split: Split, stopping: Stopping, config: TrainConfig
) -> str | None:
    """What to say when early stopping kept fewer than FEW_TREES trees and their
    ranking of the validation window is barely better than random selection (average
    precision under twice the window's weighted positive share, what random selection
    scores): the model learnt next to nothing. A few trees that rank well (a simple
    pattern) are not remarked on."""
    if best >= FEW_TREES or config.early_stopping_rounds is None:
        return None
    if stopping.metric != RANKING_METRIC:
        return None  # (no ranking measured: the fallback's note says so)
    precision = float(booster.best_score.get("valid", {}).get(RANKING_METRIC, float("nan")))
    weights = split.valid[WEIGHT].to_numpy()
    chance = float((weights * split.valid[LABEL].to_numpy()).sum() / weights.sum())
    if not precision < 2 * chance:
        return None
    return (
        f"early stopping kept {best} tree{'s' if best != 1 else ''}: the validation window's "
        f"average precision was best almost at once, at {precision:.3f}, against {chance:.3f} "
        "for random selection, so the features did not help there and the model scores nearly "
        f"every shipment alike ({_windows_text(_window_counts(split))}); compare its evaluation "
        "with random selection before promoting it"
    )


# Below this many rows, prediction runs on one thread: starting OpenMP threads for
# one shipment costs more than the trees (one-row predict measured here: 14.7 ms p50
# with all threads while Polars worked in the same process, 0.26 ms on one thread;
# the values are the same).
SMALL_BATCH = 256


def prediction_threads(rows: int) -> int:
    """LightGBM's `num_threads` for predicting `rows` rows (0: OpenMP's default)."""
    return 1 if rows < SMALL_BATCH else 0


def predict(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(x, num_threads=prediction_threads(len(x))))
