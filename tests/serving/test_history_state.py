"""The service scores new shipments against a feature state kept up to date by
appends; it must give the features a batch over the same history gives."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from pipelines.features import load_history
from serving.history import HistoryStore


def test_appended_state_scores_like_a_fresh_history(small_world: DataLayout) -> None:
    full = load_history(small_world)
    ships = full.shipments.sort("declared_at")
    cut = ships["declared_at"][int(ships.height * 0.9)]
    store = HistoryStore(full.known_before(cut))
    new = ships.filter(pl.col("declared_at") >= cut).head(6)
    seen = full.known_before(cut)
    for i in range(new.height):
        one = new[i : i + 1]
        items = full.items.filter(pl.col("shipment_id") == one["shipment_id"][0])
        with store.scoring() as state:
            online = build_features(one, items, state)
        batch = build_features(one, items, seen)
        assert_frame_equal(online, batch, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
        store.add_shipments(one, items)
        seen = History(
            pl.concat([seen.shipments, one]),
            pl.concat([seen.items, items]),
            seen.outcomes,
            seen.travellers,
            seen.watchlist,
        )
    assert store.snapshot().shipments.height == seen.shipments.height
