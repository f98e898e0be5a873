"""A model early stopping cut to a handful of trees learnt next to nothing: its
training says so (review of stop 24: an any-finding model of 1 tree became the
challenger without a word). Tiny hand-made windows with known answers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from features.build import model_columns
from models.dataset import LABEL, WEIGHT, Split
from models.train import FEW_TREES, TrainConfig, fit

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _window(n: int, offset: int, *, flipped: bool, seed: int) -> pl.DataFrame:
    """Shipments whose first feature decides the label (or, `flipped`, its opposite);
    the other features are noise."""
    rng = np.random.default_rng(seed)
    names = model_columns()
    x = rng.normal(size=(n, len(names)))
    label = (x[:, 0] > 1.0) if not flipped else (x[:, 0] < -1.0)
    return pl.DataFrame(
        {
            "shipment_id": [f"S-{offset + i}" for i in range(n)],
            "declared_at": [START + dt.timedelta(hours=offset + i) for i in range(n)],
            **{name: x[:, j] for j, name in enumerate(names)},
            LABEL: label.astype(np.int8),
            WEIGHT: np.ones(n),
        }
    )


@pytest.mark.parametrize("flipped", [False, True])
def test_a_model_of_a_few_trees_says_so(flipped: bool) -> None:
    """The validation window follows the training window's pattern (many trees, no
    note) or its opposite (what the model learns makes validation worse at once)."""
    split = Split(
        _window(2000, 0, flipped=False, seed=1),
        _window(600, 5000, flipped=flipped, seed=2),
        _window(600, 9000, flipped=flipped, seed=3),
    )
    trained = fit(split, TrainConfig(), columns=model_columns()[:5], categorical=[])
    assert trained.best_iteration < FEW_TREES  # (one threshold: learnt at once)
    if not flipped:  # ... and ranks the validation window well: nothing to say
        assert trained.stopping.note is None
        return
    note = trained.stopping.note or ""
    assert f"early stopping kept {trained.best_iteration} tree" in note
    assert "scores nearly every shipment alike" in note and "validation 2025-" in note
    assert "for random selection" in note


def test_until_before_the_data_names_the_first_inspected_shipment() -> None:
    from models.dataset import time_split

    frame = _window(200, 0, flipped=False, seed=4)
    with pytest.raises(ValueError) as refused:
        time_split(frame, until=START + dt.timedelta(hours=10))
    said = str(refused.value)
    assert "only 10 inspected shipments declared before --until 2025-01-01" in said
    assert "first inspected shipment was declared 2025-01-01" in said
    assert time_split(frame, until=START + dt.timedelta(hours=100)).train.height > 0
