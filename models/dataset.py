"""Training data: inspected shipments with their labels, inverse-propensity
weights from the recorded selection probabilities, and a split by time."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from data_contracts.schemas import ARMS_CATEGORIES
from features.build import model_columns


class Target(StrEnum):
    ARMS = "arms"  # firearms, parts, ammunition or explosives found
    ANY_FINDING = "any-finding"


LABEL = "label"
WEIGHT = "weight"
MAX_WEIGHT = 100.0  # inverse-propensity weights are clipped: a 1% draw counts 100 times


def labels(outcomes: pl.DataFrame, target: Target) -> pl.DataFrame:
    """One row per inspected shipment: label, selection probability and method.

    A shipment inspected more than once is positive if any inspection found
    something; its selection probability is that of its first selection.
    """
    hit = pl.col("finding")
    if target is Target.ARMS:
        hit = hit & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES)
    return (
        outcomes.sort("inspected_at", "outcome_id")
        .group_by("shipment_id", maintain_order=True)
        .agg(
            hit.fill_null(False).any().cast(pl.Int8).alias(LABEL),
            pl.col("selection_probability").first(),
            pl.col("selection_method").cast(pl.String).first(),
            pl.col("inspected_at").first(),
        )
    )


def labelled(features: pl.DataFrame, outcomes: pl.DataFrame, target: Target) -> pl.DataFrame:
    """Features of inspected shipments with label and weight, in time order. An
    outcome whose shipment has no feature row is not in it: `without_features` lists
    them (training refuses or reports them, see `pipelines.modelling.run_train`)."""
    return (
        features.join(labels(outcomes, target), on="shipment_id", how="inner")
        .with_columns((1.0 / pl.col("selection_probability")).clip(1.0, MAX_WEIGHT).alias(WEIGHT))
        .sort("declared_at", "shipment_id")
    )


def without_features(
    features: pl.DataFrame, outcomes: pl.DataFrame, target: Target
) -> pl.DataFrame:
    """The inspected shipments (one row each, with their label) whose outcomes
    `labelled` cannot use because features/ holds no row for the shipment."""
    return labels(outcomes, target).join(
        features.select("shipment_id"), on="shipment_id", how="anti"
    )


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def windows(self) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        return {
            name: (frame["declared_at"].min(), frame["declared_at"].max())  # type: ignore[misc]
            for name, frame in (("train", self.train), ("valid", self.valid), ("test", self.test))
        }


def time_split(
    frame: pl.DataFrame,
    *,
    until: dt.datetime | None = None,
    valid_share: float = 0.15,
    test_share: float = 0.20,
) -> Split:
    """Split by declaration time: the oldest shipments train, the next validate,
    the newest test. No shuffling across time."""
    if until is not None:
        inspected = frame.select(pl.col("declared_at").min()).row(0)
        frame = frame.filter(pl.col("declared_at") < until)
        if frame.height < 50:
            first = f"{inspected[0]:%Y-%m-%d}" if inspected[0] is not None else "none"
            raise ValueError(
                f"only {frame.height} inspected shipments declared before --until "
                f"{until:%Y-%m-%d} (the first inspected shipment was declared {first}): "
                "too few to train on; give a later date"
            )
    frame = frame.sort("declared_at", "shipment_id")
    n = frame.height
    if n < 50:
        raise ValueError(f"only {n} inspected shipments: too few to train on")
    t_valid = frame["declared_at"][int(n * (1 - valid_share - test_share))]
    t_test = frame["declared_at"][int(n * (1 - test_share))]
    return Split(
        frame.filter(pl.col("declared_at") < t_valid),
        frame.filter((pl.col("declared_at") >= t_valid) & (pl.col("declared_at") < t_test)),
        frame.filter(pl.col("declared_at") >= t_test),
    )


def matrix(frame: pl.DataFrame, columns: list[str] | None = None) -> np.ndarray:
    """The model's input matrix (float64, NaN for missing), columns in registry order."""
    cols = columns or model_columns()
    return frame.select([pl.col(c).cast(pl.Float64).fill_nan(None) for c in cols]).to_numpy()


def data_hash(frame: pl.DataFrame) -> str:
    """A fingerprint of the training data (ids, times, labels, weights)."""
    digest = hashlib.sha256()
    hashes = frame.select("shipment_id", "declared_at", LABEL, WEIGHT).hash_rows(seed=0)
    digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()[:16]
