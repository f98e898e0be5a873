"""The batch's shortcuts give the values of the plain computation, on a generated
world: the goods reference z-scores asked once per distinct (key, month) pair,
and the hops to an arms finding with the queries grouped by month in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from data_contracts.settings import DataLayout
from features import goods, network
from features.context import History, Params, party_keys
from pipelines.features import load_history


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    return load_history(small_world)


def test_reference_z_per_distinct_pair_equals_per_line(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = Params()
    ref = goods.Reference.build(history.shipments, history.items, params)
    lines = goods._line_frame(history.shipments, history.items, params)
    queries = lines.select(*goods.KEYS, "__month")
    asked, rows = goods._distinct_pairs(queries, "hs6_origin")
    # Lines repeat their pairs: far fewer questions than lines.
    assert rows is not None and asked.height < queries.height // 2
    for value in goods.VALUES:
        column = lines.get_column(value)
        args = (queries, column.to_numpy(), column.is_not_null().to_numpy(), ref, value, params)
        z, scored = goods._reference_z(*args)
        with monkeypatch.context() as m:  # every line asked as it is
            m.setattr(goods, "DISTINCT_MIN_LINES", queries.height)
            z_line, scored_line = goods._reference_z(*args)
        assert scored.sum() > 100
        np.testing.assert_array_equal(scored, scored_line)
        np.testing.assert_array_equal(z, z_line)  # (NaN in the same places)


def test_hops_grouped_by_month_equal_the_sorted_walk(history: History) -> None:
    keyed = party_keys(history.shipments)
    tables = network.Tables(keyed, history.outcomes)
    assert tables.flagged.height > 0
    queries = network.mentions(keyed).slice(0, 2 * keyed.height)
    nodes = queries.get_column("party").to_list()
    months = queries.get_column("t").dt.truncate("1mo")
    grouped = network._hops_to_arms(network.Hops(tables.edges, tables.flagged), nodes, months)
    walked = network._hops_to_arms(
        network.Hops(tables.edges, tables.flagged), nodes, months.to_list()
    )
    assert (grouped <= network.MAX_HOPS).sum() > 10  # some parties are near a finding
    np.testing.assert_array_equal(grouped, walked)
