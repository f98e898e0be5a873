"""The two rules that keep the numbers honest, checked on a generated world:
point in time (nothing from after a shipment's declared_at reaches its features)
and one implementation (batch and online give the same values)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from pipelines.features import load_history

SAMPLE = 25


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    return load_history(small_world)


@pytest.fixture(scope="module")
def batch(history: History) -> pl.DataFrame:
    return build_features(history.shipments, history.items, history)


def _sample(history: History) -> pl.DataFrame:
    # Late shipments have the most history to leak from; take a spread, seeded.
    ships = history.shipments.sort("declared_at")
    late = ships.tail(ships.height // 2)
    return late.sample(SAMPLE, seed=3)


def test_features_use_only_what_was_known_before(history: History, batch: pl.DataFrame) -> None:
    for row in _sample(history).iter_rows(named=True):
        past = history.known_before(row["declared_at"])
        one = history.shipments.filter(pl.col("shipment_id") == row["shipment_id"])
        items = history.items.filter(pl.col("shipment_id") == row["shipment_id"])
        cut = build_features(one, items, past)
        full = batch.filter(pl.col("shipment_id") == row["shipment_id"])
        assert_frame_equal(cut, full, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_appending_future_rows_changes_no_past_feature(history: History) -> None:
    ships = history.shipments.sort("declared_at")
    cut_at = ships["declared_at"][ships.height * 2 // 3]
    past = history.known_before(cut_at)
    before = build_features(past.shipments, past.items, past)
    after = build_features(history.shipments, history.items, history).filter(
        pl.col("declared_at") < cut_at
    )
    assert_frame_equal(
        before.sort("shipment_id"),
        after.sort("shipment_id"),
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


def test_online_features_equal_batch_features(history: History, batch: pl.DataFrame) -> None:
    sample = _sample(history)
    for row in sample.iter_rows(named=True):
        one = sample.filter(pl.col("shipment_id") == row["shipment_id"])
        items = history.items.filter(pl.col("shipment_id") == row["shipment_id"])
        online = build_features(one, items, history)
        assert_frame_equal(
            online,
            batch.filter(pl.col("shipment_id") == row["shipment_id"]),
            check_exact=False,
            rel_tol=1e-9,
            abs_tol=1e-9,
        )


def test_features_are_informative_on_the_world(
    small_world: DataLayout, batch: pl.DataFrame
) -> None:
    truth = pl.read_parquet(small_world.truth / "truth.parquet")
    joined = batch.join(truth, on="shipment_id")
    bad, good = (joined.filter(pl.col("is_trafficking")), joined.filter(~pl.col("is_trafficking")))
    assert bad.height > 5
    # Traffickers' lines sit under the headings where parts hide and are undervalued
    # against what was known of the same goods before; their consignees are young.
    assert bad["hiding_heading_share"].mean() > good["hiding_heading_share"].mean()  # type: ignore[operator]
    assert bad["min_unit_value_z"].mean() < good["min_unit_value_z"].mean()  # type: ignore[operator]
    assert bad["consignee_days_since_first"].median() < good["consignee_days_since_first"].median()  # type: ignore[operator]
