"""The parties' contact keys computed once per batch (features.state,
features.travellers): the traveller tables and the traveller family built from
the network's mentions (`network.mentions`) equal those computed from the
shipments themselves (the path before), on shipments in no order, with missing
names and contacts and repeated parties; and a batch through the state equals
the families run one by one without sharing them."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import network, travellers
from features.context import PARTY_ROLES, History, Params, party_keys
from features.names import shared_normalisation
from features.state import FeatureState
from pipelines.features import load_history


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    h = load_history(small_world)
    ships = h.shipments.sample(fraction=1.0, shuffle=True, seed=9).with_row_index("__i")
    # Missing names and contacts on some rows, and some rows' parties copied onto
    # others (repeated names, phones and addresses under other shipments).
    blank = pl.col("__i") % 17 == 3
    copied = pl.col("__i") % 13 == 5
    changes = []
    for role in PARTY_ROLES:
        for c in ("name", "phone", "email", "address"):
            col = pl.col(f"{role}_{c}")
            changes.append(
                pl.when(blank)
                .then(None)
                .when(copied)
                .then(col.shift(1))
                .otherwise(col)
                .cast(ships.schema[f"{role}_{c}"])
                .alias(f"{role}_{c}")
            )
    ships = ships.with_columns(changes).drop("__i")
    return History(ships, h.items, h.outcomes, h.travellers, h.watchlist)


def _same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert_frame_equal(got, want, check_exact=True)


@pytest.mark.parametrize("rows", [5, 40, 400, None])
def test_history_mentions_from_the_network_equal_their_own(history: History, rows: int) -> None:
    ships = party_keys(history.shipments if rows is None else history.shipments.head(rows))
    with shared_normalisation():
        for m in (network.mentions(ships), network._mentions(ships)):
            _same(travellers._history_mentions(ships, m), travellers._history_mentions(ships))


def test_tables_and_features_from_the_network_mentions(history: History) -> None:
    params = Params()
    keyed = party_keys(history.shipments)
    mentions = network.Tables(keyed, history.outcomes).mentions
    assert mentions is not None
    with shared_normalisation():
        shared = travellers.Tables(keyed, history.travellers, params, mentions)
    plain = travellers.Tables(keyed, history.travellers, params)
    for c in network.CONTACTS:
        _same(shared.shared[c].firsts.frame, plain.shared[c].firsts.frame)
        _same(shared.shared[c].counts.rows.frame, plain.shared[c].counts.rows.frame)
    got = travellers.prepare(keyed, shared, params, mentions)
    want = travellers.prepare(keyed, plain, params)
    _same(got, want)
    assert got.select(pl.exclude("shipment_id").sum()).row(0) != (0,) * (got.width - 1)


def test_a_batch_through_the_state_equals_the_families_unshared(history: History) -> None:
    params = Params()
    ships, items = history.shipments, history.items
    state = FeatureState.build(history, params)
    assert state.network.source is state.keyed  # (the batch reads the network's mentions)
    got = state.family_frames(ships, items)
    keyed = party_keys(ships)
    want_travellers = travellers.prepare(
        keyed, travellers.Tables(keyed, history.travellers, params), params
    )
    want_network = network.prepare(keyed, network.Tables(keyed, history.outcomes), params)
    _same(got[4], want_travellers)
    _same(got[5], want_network)
