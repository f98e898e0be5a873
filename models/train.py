"""LightGBM training: deterministic, early-stopped on the validation period,
weighted by inverse selection propensity."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from features.build import categorical_columns, model_columns
from features.registry import specs
from models.dataset import LABEL, WEIGHT, Split, matrix


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = 8  # chosen with explanation cost in mind (see benchmarks/)
    min_data_in_leaf: int = 30
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_rounds: int = 500
    early_stopping_rounds: int = 50
    num_threads: int = 2

    def params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "metric": ["average_precision", "binary_logloss"],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "monotone_constraints": [s.monotone for s in specs()],
            "monotone_constraints_method": "advanced",
            "verbose": -1,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trained:
    booster: lgb.Booster
    best_iteration: int
    feature_names: list[str]


def fit(split: Split, config: TrainConfig | None = None) -> Trained:
    config = config or TrainConfig()
    names = model_columns()
    cats = categorical_columns()

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
    booster = lgb.train(
        config.params(),
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)
        ],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    # Keep only the trees up to the best iteration: the stored model is what scores.
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return Trained(trimmed, best, names)


def predict(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(x))
