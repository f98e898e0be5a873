"""The feature state scores a request's shipments in one pass
(`FeatureState.append_sequence`) with the features they get when appended and
scored one at a time in declaration order, on a real (small) world whose traders,
phones, addresses and vehicles recur; the history store keeps such shipments once,
and forgets a state that took shipments whose storing failed."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from pipelines.features import load_history
from serving.history import HistoryStore
from serving.scoring import sequence_features
from tests.serving.test_batch_spread import LAST_BIT


def _split(full: History, n: int) -> tuple[History, pl.DataFrame, pl.DataFrame]:
    """The history before the last `n` shipments (in time), and those with their lines."""
    ships = full.shipments.sort("declared_at")
    cut = ships["declared_at"][ships.height - n]
    new = ships.filter(pl.col("declared_at") >= cut)
    items = full.items.join(new.select("shipment_id"), on="shipment_id", how="semi")
    return full.known_before(cut), new, items


def _later(new: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A copy of the last of `new` (its parties, its goods) an hour later."""
    after = new.tail(1).with_columns(
        pl.lit("SEQ-LATER").alias("shipment_id"),
        (pl.col("declared_at") + pl.duration(hours=1)).alias("declared_at"),
    )
    lines = items.filter(pl.col("shipment_id") == new["shipment_id"][-1]).with_columns(
        pl.lit("SEQ-LATER").alias("shipment_id"),
        (pl.col("item_id") + "-later").alias("item_id"),
    )
    return after, lines


def test_one_pass_gives_the_features_of_one_at_a_time(small_world: DataLayout) -> None:
    before, new, items = _split(load_history(small_world), 120)
    one_by_one = HistoryStore(before)
    rows = []
    for i in range(new.height):
        one = new[i : i + 1]
        lines = items.filter(pl.col("shipment_id") == one["shipment_id"][0])
        with one_by_one.scoring() as state:
            rows.append(build_features(one, lines, state))
        one_by_one.add_shipments(one, lines)
    expected = pl.concat(rows)
    together = HistoryStore(before)
    with together.scoring() as state:
        got = sequence_features(state, new, items)
    exact = [c for c in expected.columns if c not in LAST_BIT]
    assert_frame_equal(got.select(exact), expected.select(exact), check_exact=True)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-12, abs_tol=0)
    # the store keeps them once: a later shipment's features are the same from the
    # state fed one at a time
    together.add_shipments(new, items, held_by=state)
    after, lines = _later(new, items)
    with together.scoring() as again, one_by_one.scoring() as other:
        assert again is state  # (nothing queued for it again, nothing to rebuild)
        later = build_features(after, lines, again)
        assert_frame_equal(later, build_features(after, lines, other), rel_tol=1e-12)
    assert not together.rebuilding and together.state_current
    assert together.snapshot().shipments.height == one_by_one.snapshot().shipments.height


def test_a_state_that_took_unstored_shipments_is_dropped(small_world: DataLayout) -> None:
    before, new, items = _split(load_history(small_world), 40)
    store = HistoryStore(before)
    after, lines = _later(new, items)
    with store.scoring() as state:
        held = state.as_of
        sequence_features(state, new, items)
        assert state.as_of == new["declared_at"].max()
        # (the state counts them: the later copy of the last one sees it)
        taken = build_features(after, lines, state)
    unseen = build_features(after, lines, before)
    assert taken["consignee_shipments_30d"][0] > unseen["consignee_shipments_30d"][0]
    store.drop_state(state)  # (their storing failed: add_shipments never comes)
    with store.scoring() as fresh:
        assert fresh is not state and fresh.as_of == held
        assert_frame_equal(build_features(after, lines, fresh), unseen)
