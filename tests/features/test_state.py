"""The feature state (features.state): online queries against a state built once
give the batch's numbers; appending rows equals rebuilding; restricting a table
to the query's keys changes no answer."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from networkx import Graph, bfs_layers
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import network, timeline
from features.build import build_features, online_features
from features.context import History
from features.state import FeatureState, StateError
from features.timeline import AsOfTable, FirstSeen, as_of_query
from pipelines.features import load_history

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    return load_history(small_world)


@pytest.fixture(scope="module")
def state(history: History) -> FeatureState:
    return FeatureState.build(history).warm()


def _same(left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert_frame_equal(left, right, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def _cut(history: History, share: float) -> dt.datetime:
    times = history.shipments["declared_at"].sort()
    at: dt.datetime = times[int(times.len() * share)]
    return at


def _between(history: History, start: dt.datetime, end: dt.datetime) -> History:
    ships = history.shipments.filter(pl.col("declared_at").is_between(start, end, closed="left"))
    return History(
        ships.sort("declared_at", "shipment_id"),
        history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi"),
        history.outcomes.filter(pl.col("inspected_at").is_between(start, end, closed="left")),
        history.travellers.filter(pl.col("departure_at").is_between(start, end, closed="left")),
        history.watchlist,
    )


def _items_of(history: History, ships: pl.DataFrame) -> pl.DataFrame:
    return history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")


def _with_shipments(past: History, history: History, ships: pl.DataFrame) -> History:
    """``past`` with ``ships`` and their goods lines (taken from ``history``) added."""
    return History(
        pl.concat([past.shipments, ships]),
        pl.concat([past.items, _items_of(history, ships)]),
        past.outcomes,
        past.travellers,
        past.watchlist,
    )


def test_state_queries_equal_the_batch(history: History, state: FeatureState) -> None:
    batch = build_features(history.shipments, history.items, state)
    _same(batch, build_features(history.shipments, history.items, history))
    sample = history.shipments.sample(40, seed=5)
    for i in range(sample.height):
        one = sample.slice(i, 1)
        got = build_features(one, _items_of(history, one), state)
        want = batch.filter(pl.col("shipment_id") == one["shipment_id"][0])
        _same(got, want)
    # Several at once, in any order.
    got = build_features(sample, _items_of(history, sample), state)
    want = batch.join(sample.select("shipment_id"), on="shipment_id", how="semi")
    _same(got.sort("shipment_id"), want.sort("shipment_id"))


def test_new_shipments_online_equal_a_batch_over_history_and_them(history: History) -> None:
    cut = _cut(history, 0.7)
    past = history.known_before(cut)
    new = _between(history, cut, cut + dt.timedelta(days=365 * 10)).shipments.head(6)
    state = FeatureState.build(past).warm()
    online = []
    for i in range(new.height):
        one = new.slice(i, 1)
        items = _items_of(history, one)
        online.append(online_features(one, items, state))
        state.append(one, items)  # ingested: the next one sees it
    combined = _with_shipments(past, history, new)
    batch = build_features(combined.shipments, combined.items, combined)
    want = new.select("shipment_id").join(batch, on="shipment_id", how="left")
    _same(pl.concat(online), want)


def test_append_equals_rebuild(history: History) -> None:
    cut, end = _cut(history, 0.6), _cut(history, 0.8)
    # Warm: the union-find and the BFS snapshot are kept up to date on append too.
    state = FeatureState.build(history.known_before(cut)).warm()
    step = (end - cut) / 3
    for k in range(3):
        part = _between(history, cut + k * step, cut + (k + 1) * step)
        state.append(part.shipments, part.items, part.outcomes, part.travellers)
    # What the state holds equals a state built on the combined history ...
    rebuilt = FeatureState.build(history.known_before(cut + 3 * step))
    for mine, theirs in zip(state.tables(), rebuilt.tables(), strict=True):
        order = mine.order
        _same(mine.rows().sort(order), theirs.rows().sort(order))
    edges = ["t", "a", "b"]
    _same(state.network.edges.sort(edges), rebuilt.network.edges.sort(edges))
    _same(state.network.flagged, rebuilt.network.flagged)
    assert state.as_of == rebuilt.as_of
    # ... and both answer alike, for shipments after it and for all of it.
    later = _between(history, cut + 3 * step, cut + 9 * step).shipments.head(30)
    for i in range(later.height):
        one = later.slice(i, 1)
        items = _items_of(history, one)
        _same(online_features(one, items, state), online_features(one, items, rebuilt))
    h = state.history
    _same(
        build_features(h.shipments, h.items, state),
        build_features(rebuilt.history.shipments, rebuilt.history.items, rebuilt),
    )


def test_online_refuses_shipments_before_the_state(history: History, state: FeatureState) -> None:
    early = history.shipments.sort("declared_at").head(1)
    with pytest.raises(StateError, match="as_of"):
        online_features(early, _items_of(history, early), state)
    heights = [t.height for t in state.tables()]
    with pytest.raises(StateError, match="declared"):
        state.append(early, _items_of(history, early))
    # An inspection recorded before the latest one of its parties: refused whole.
    last = history.outcomes.sort("inspected_at").tail(1)
    earlier = last.with_columns(
        pl.lit("O-EARLIER").alias("outcome_id"),
        pl.col("inspected_at") - dt.timedelta(days=365),
    )
    with pytest.raises(StateError, match="inspection"):
        state.append(outcomes=earlier)
    assert [t.height for t in state.tables()] == heights


def test_restricting_a_table_to_the_query_keys_is_exact(
    state: FeatureState, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = state.trader.seen["consignee"]
    full = table.frame()
    keys = full["consignee_key"].unique().sort().sample(50, seed=1)
    order = ["consignee_key", "declared_at"]
    assert_frame_equal(
        table.frame(keys).sort(order),
        full.filter(pl.col("consignee_key").is_in(keys.implode())).sort(order),
    )
    queries = state.keyed.select("consignee_key", "declared_at").sample(200, seed=2)
    queries = queries.vstack(
        pl.DataFrame(
            {"consignee_key": [None, "unknown"], "declared_at": [T0, T0]},
            schema=queries.schema,
        )
    )
    windows = {"30d": dt.timedelta(days=30)}
    restricted = [
        as_of_query(queries.slice(i, 1), "consignee_key", "declared_at", table,
                    windows=windows, prefix="c")
        for i in range(queries.height)
    ]  # fmt: skip
    monkeypatch.setattr(timeline, "RESTRICT_MAX_KEYS", -1)  # always the whole table
    whole = as_of_query(queries, "consignee_key", "declared_at", table, windows=windows, prefix="c")
    assert_frame_equal(pl.concat(restricted), whole)


def test_appended_rows_merge_with_the_last_time_of_their_key() -> None:
    events = pl.DataFrame(
        {"k": ["a", "a", "b"], "t": [T0, T0 + dt.timedelta(days=1), T0], "v": [1.0, 2.0, 4.0]}
    )
    table = AsOfTable.build(events, "k", "t", ["v"])
    more = pl.DataFrame(
        {"k": ["a", "c", "a"], "t": [T0 + dt.timedelta(days=1), T0, T0 + dt.timedelta(days=2)],
         "v": [8.0, 16.0, 32.0]}
    )  # fmt: skip
    table.append(more)
    rebuilt = AsOfTable.build(pl.concat([events, more]), "k", "t", ["v"])
    assert_frame_equal(table.frame(), rebuilt.frame())
    assert_frame_equal(table.frame(pl.Series(["a"])), rebuilt.frame().filter(pl.col("k") == "a"))
    with pytest.raises(ValueError, match="precede"):
        table.append(pl.DataFrame({"k": ["a"], "t": [T0], "v": [1.0]}))
    seen = FirstSeen.build(events, "k", "v", "t")
    seen.append(more)
    again = FirstSeen.build(pl.concat([events, more]), "k", "v", "t")
    # (appended rows follow the rows held: the same rows, each key's in time order)
    assert_frame_equal(seen.firsts.rows().sort("k", "v"), again.firsts.rows())
    assert_frame_equal(seen.counts.frame().sort("k", "t"), again.counts.frame())


def test_lookups_for_few_queries_equal_the_as_of_join(monkeypatch: pytest.MonkeyPatch) -> None:
    day = dt.timedelta(days=1)
    events = pl.DataFrame({"k": ["a", "a", "b"], "t": [T0, T0 + day, T0], "v": [1.0, 2.0, 4.0]})
    table = AsOfTable.build(events, "k", "t", ["v"])
    seen = FirstSeen.build(events, "k", "v", "t")
    # Appended rows wait beside the sorted ones; one replaces the row of its key and time.
    more = pl.DataFrame(
        {"k": ["a", "c", "a"], "t": [T0 + day, T0, T0 + 2 * day], "v": [8.0, 16.0, 32.0]}
    )
    table.append(more)
    seen.append(more)
    assert table.rows.extra is not None and table.rows.replaced
    us = dt.timedelta(microseconds=1)
    queries = pl.DataFrame(
        {
            "k": ["a", "a", "a", "a", "a", "b", "c", None, "zzz"],
            "t": [T0, T0 + day, T0 + day + us, T0 + 2 * day, T0 + 9 * day, T0 + day, T0 + us,
                  T0 + day, T0],
            "v": [1.0, 1.0, 8.0, 32.0, 2.0, 4.0, 16.0, 1.0, 1.0],
        }
    )  # fmt: skip
    windows = {"1d": day, "2d": 2 * day}
    looked_up = [
        timeline._as_of_values(queries.slice(i, 1), "k", "t", table, windows, "c")
        for i in range(queries.height)
    ]
    pairs = timeline._pair_values(queries, ("k", "v"), "t", seen)
    monkeypatch.setattr(timeline, "LOOKUP_MAX_QUERIES", -1)  # always the join
    joined = as_of_query(queries, "k", "t", table, windows=windows, prefix="c")
    assert all(f is not None for f in looked_up)
    assert_frame_equal(pl.concat([f.frame() for f in looked_up if f is not None]), joined)
    assert joined["c_n"].to_list() == [0, 1, 3, 3, 4, 1, 1, 0, 0]
    assert joined["c_v"].to_list()[:5] == [0.0, 1.0, 11.0, 11.0, 43.0]
    assert joined["c_v_1d"].to_list()[:5] == [0.0, 1.0, 10.0, 10.0, 0.0]
    assert pairs is not None
    want = timeline.pair_seen_query(queries, ("k", "v"), "t", seen)
    assert pairs == want.to_list() == [False, True, True, False, True, True, True,
                                                 False, False]  # fmt: skip


def test_monthly_hops_equal_a_bfs_from_scratch(state: FeatureState) -> None:
    edges, flagged = state.network.edges, state.network.flagged
    months = edges["t"].dt.truncate("1mo").unique().sort().to_list()
    hops = network.Hops(edges, flagged)
    deepest = 0
    for month in months[1::2]:
        got = dict(hops.at(month))
        graph = Graph()
        before = edges.filter(pl.col("t") < month)
        graph.add_edges_from(zip(before["a"].to_list(), before["b"].to_list(), strict=True))
        sources = flagged.filter(pl.col("t") < month)["node"].to_list()
        want: dict[str, int] = {}
        if sources:
            graph.add_nodes_from(sources)
            for depth, layer in enumerate(bfs_layers(graph, sources)):
                if depth > network.MAX_HOPS:
                    break
                want.update(dict.fromkeys(layer, depth))
        assert got == want
        deepest = max(deepest, *want.values(), 0)
    assert deepest == network.MAX_HOPS


def test_appended_rows_wait_at_most_max_tail_appends(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends queue their rows and join them to the state's frames when read or
    when `MAX_TAIL` wait (a service may never read them); either way the frames
    hold every row once."""
    from features import state as state_module

    monkeypatch.setattr(state_module, "MAX_TAIL", 2)
    cut = _cut(history, 0.8)
    state = FeatureState.build(history.known_before(cut))
    new = _between(history, cut, cut + dt.timedelta(days=365 * 10)).shipments.head(5)
    for i in range(new.height):
        one = new.slice(i, 1)
        state.append(one, _items_of(history, one))
        assert len(state._tail) < 2
    assert len(state._tail) == 1  # the fifth waits
    held = state.history.shipments
    assert held.height == history.known_before(cut).shipments.height + 5
    assert held["shipment_id"].n_unique() == held.height
    assert state.keyed.height == state.goods_frame.height == held.height


def test_rows_appended_one_by_one_join_the_frames_in_order_once(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends one shipment at a time (by both appends), past
    several joins of the queue: the frames then equal those of a state built on
    the combined history, row for row, and the appended frames are left as the
    callers gave them (the queue stacks copies)."""
    from features import state as state_module

    monkeypatch.setattr(state_module, "MAX_TAIL", 3)
    cut = _cut(history, 0.7)
    state = FeatureState.build(history.known_before(cut))
    later = _between(history, cut, cut + dt.timedelta(days=365 * 10))
    ships = later.shipments.head(10)
    given: list[pl.DataFrame] = []
    for i in range(ships.height):
        one = ships.slice(i, 1)
        items = _items_of(history, one)
        given += [one, items, one.clone(), items.clone()]
        if i % 2:
            state.append_sequence(one, items)
        else:
            state.append(one, items)
    for caller, copy in zip(given[0::4], given[2::4], strict=True):
        assert_frame_equal(caller, copy)
        assert caller.n_chunks() == 1
    for caller, copy in zip(given[1::4], given[3::4], strict=True):
        assert_frame_equal(caller, copy)
    assert len(state._tail) == 10 % 3  # (this one waits for the next read)
    combined = _with_shipments(history.known_before(cut), history, ships)
    rebuilt = FeatureState.build(combined)
    for mine, theirs in (
        (state.history.shipments, rebuilt.history.shipments),
        (state.history.items, rebuilt.history.items),
        (state.keyed, rebuilt.keyed),
        (state.goods_frame, rebuilt.goods_frame),
    ):
        assert_frame_equal(mine, theirs)


def test_appended_rows_of_other_columns_are_refused_before_any_change(
    history: History,
) -> None:
    cut = _cut(history, 0.7)
    state = FeatureState.build(history.known_before(cut))
    before = [t.rows() for t in state.tables()]
    one = _between(history, cut, cut + dt.timedelta(days=3650)).shipments.head(1)
    items = _items_of(history, one)
    for ships, lines, field in (
        (one.with_columns(pl.col("gross_mass_kg").cast(pl.Float32)), items, "ships"),
        (one, items.drop("origin_country"), "items"),
    ):
        for append in (state.append, state.append_sequence):
            with pytest.raises(StateError, match=f"appended {field} do not have the columns"):
                append(ships, lines)
    assert len(state._tail) == 0
    for old, now in zip(before, (t.rows() for t in state.tables()), strict=True):
        assert_frame_equal(old, now)
    assert state.history.shipments.height == history.known_before(cut).shipments.height
