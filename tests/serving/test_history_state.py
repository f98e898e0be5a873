"""The service scores new shipments against a feature state kept up to date by
appends; it must give the features a batch over the same history gives."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from features.state import FeatureState
from pipelines.features import load_history
from serving.history import HistoryStore
from tests.conftest import ROOT, count_screenings


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


def _window(full: History, start: float, end: float) -> History:
    times = full.shipments["declared_at"].sort()
    a, b = times[int(times.len() * start)], times[int(times.len() * end)]
    ships = full.shipments.filter(pl.col("declared_at").is_between(a, b, closed="left"))
    return History(
        ships.sort("declared_at"),
        full.items.join(ships.select("shipment_id"), on="shipment_id", how="semi"),
        full.outcomes.filter(pl.col("inspected_at").is_between(a, b, closed="left")),
        full.travellers.filter(pl.col("departure_at").is_between(a, b, closed="left")),
    )


def _record(store: HistoryStore, rows: History, parts: int) -> None:
    """Add `rows` to the store in `parts` calls per kind, as requests would."""
    ships = rows.shipments
    for chunk in ships.iter_slices(max(1, ships.height // parts)):
        store.add_shipments(chunk, rows.items.join(chunk.select("shipment_id"), on="shipment_id"))
    store.add_travellers(rows.travellers)
    store.add_outcomes(rows.outcomes)


def test_rows_recorded_between_scorings_reach_the_next_one_exactly_once(
    small_world: DataLayout,
) -> None:
    full = load_history(small_world)
    start = _window(full, 0.0, 0.8)
    later = _window(full, 0.8, 0.9)
    assert later.shipments.height > 3 and later.outcomes.height > 0
    built = HistoryStore(start)
    with built.scoring():  # the state exists: later rows wait for the next scoring
        pass
    unbuilt = HistoryStore(start)  # no state yet: it is built with them
    for store in (built, unbuilt):
        _record(store, later, parts=4)
        with store.scoring() as state:
            fresh = FeatureState.build(store.snapshot())
            assert state.history.shipments.height == fresh.history.shipments.height
            assert state.history.outcomes.height == fresh.history.outcomes.height
            for mine, theirs in zip(state.tables(), fresh.tables(), strict=True):
                assert_frame_equal(mine.rows().sort(mine.order), theirs.rows().sort(mine.order))
            new = _window(full, 0.9, 0.92).shipments.head(3)
            items = full.items.join(new.select("shipment_id"), on="shipment_id", how="semi")
            assert_frame_equal(
                build_features(new, items, state),
                build_features(new, items, fresh),
                check_exact=False,
                rel_tol=1e-9,
                abs_tol=1e-9,
            )


def test_a_background_rebuild_screens_only_names_new_since_on_its_own_index(
    small_world: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild in the background (`_built(..., private_index=True)`) starts from a
    copy of the names the serving state's index has screened: it screens only
    names new since, and what it screens stays out of the serving index."""
    from data_contracts.loaders.national import load_national_csv
    from serving.history import _built

    entries = load_national_csv(
        ROOT / "data_contracts" / "reference" / "national_watchlist_example.csv", "KZ-demo"
    )
    full = load_history(small_world)
    history = History(full.shipments, full.items, full.outcomes, full.travellers, entries)
    serving = _built(history)
    assert serving.watch_index is not None
    held = dict(serving.watch_index.memo)
    assert len(held) > 100  # (the history's party names, primed)

    screened = count_screenings(monkeypatch)
    rebuilt = _built(history, private_index=True)
    assert screened == []
    assert rebuilt.watch_index is not None
    assert rebuilt.watch_index.memo == held
    assert rebuilt.watch_index.memo is not serving.watch_index.memo

    newcomer = "Zhetysu Novel Freight LLP"
    ship = full.shipments.head(1).with_columns(
        pl.lit("S-NEW-1").alias("shipment_id"), pl.lit(newcomer).alias("consignee_name")
    )
    grown = History(
        pl.concat([full.shipments, ship]), full.items, full.outcomes, full.travellers, entries
    )
    again = _built(grown, private_index=True)
    assert screened == [[newcomer]]
    assert again.watch_index is not None
    assert any(key[0] == newcomer for key in again.watch_index.memo)
    assert not any(key[0] == newcomer for key in serving.watch_index.memo)
    assert dict(serving.watch_index.memo) == held
