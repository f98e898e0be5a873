"""The batch's network sweeps (features.network): the component sizes of one pass
on integer ids (`_swept_sizes`) equal a fresh `Components` union-find's
(`networkx.utils.UnionFind`, the path before and the online one), and the monthly
BFS layers on the plain adjacency of `Hops` equal those on a networkx `Graph`
(the code before, kept here), on random graphs with repeated edges, edges and
queries of one instant, nodes on no edge, null nodes and unsorted inputs."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import polars as pl
import pytest
from networkx import Graph

from features import network

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
KINDS = ("p|", "t|", "e|", "a|", "r|")


def _node(rng: random.Random, count: int) -> str:
    return rng.choice(KINDS) + str(rng.randrange(count))


def _edges(seed: int, n: int, nodes: int, hours: int) -> pl.DataFrame:
    """Random edges a < b with times (ties included), in no order, repeats kept."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        u, v = _node(rng, nodes), _node(rng, nodes)
        if u == v:
            continue
        a, b = min(u, v), max(u, v)
        rows.append((a, b, T0 + dt.timedelta(hours=rng.randrange(hours))))
    if rows:
        rows += rng.sample(rows, k=min(len(rows), n // 10))  # (the same edge again)
    return pl.DataFrame(
        rows, schema={"a": pl.String, "b": pl.String, "t": pl.Datetime("us", "UTC")}, orient="row"
    )


def _queries(seed: int, n: int, nodes: int, hours: int) -> pl.DataFrame:
    rng = random.Random(seed)
    party = [
        None if rng.random() < 0.05 else "p|" + str(rng.randrange(nodes + 20)) for _ in range(n)
    ]
    times = [T0 + dt.timedelta(hours=rng.randrange(-2, hours + 2)) for _ in range(n)]
    return pl.DataFrame(
        {"party": party, "t": times}, schema={"party": pl.String, "t": pl.Datetime("us", "UTC")}
    )


def _sizes_before(edges: pl.DataFrame, queries: pl.DataFrame) -> np.ndarray:
    """`_component_sizes` as it was: a `Components` (networkx's UnionFind) sweep."""
    q = queries.select(pl.col("party").alias("node"), "t").with_row_index("__q").sort("t", "__q")
    sizes = network.Components(edges).sweep(q["node"].to_list(), network._epoch_us(q["t"]))
    out = pl.Series("size", sizes, dtype=pl.Int64)
    return q.select("__q").with_columns(out).sort("__q")["size"].to_numpy()


@pytest.mark.parametrize(
    ("seed", "n_edges", "nodes", "hours"),
    [(1, 0, 10, 5), (2, 5, 4, 2), (3, 300, 40, 30), (4, 3000, 400, 200), (5, 4000, 60, 10)],
)
def test_swept_sizes_equal_the_union_find(seed: int, n_edges: int, nodes: int, hours: int) -> None:
    edges = _edges(seed, n_edges, nodes, hours)
    queries = _queries(seed + 100, 2000, nodes, hours)
    got = network._component_sizes(edges, queries)
    want = _sizes_before(edges, queries)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)
    if n_edges >= 3000:
        assert want.max() > 5  # (components did merge)


def test_swept_sizes_of_queries_between_and_at_edge_times() -> None:
    # a chain p0 - t0 - p1 - a0 - p2 growing one edge an hour; queries at, between
    # and after the edges' instants (an edge counts only strictly before)
    chain = [("p|0", "t|0"), ("p|1", "t|0"), ("a|0", "p|1"), ("a|0", "p|2")]
    edges = pl.DataFrame(
        {
            "a": [a for a, _ in chain],
            "b": [b for _, b in chain],
            "t": [T0 + dt.timedelta(hours=h) for h in range(len(chain))],
        },
        schema={"a": pl.String, "b": pl.String, "t": pl.Datetime("us", "UTC")},
    )
    times = [T0 + dt.timedelta(minutes=30 * k) for k in range(10)]
    queries = pl.DataFrame(
        {"party": ["p|2", "p|0", None, "p|9", "t|0"] * 2, "t": times},
        schema={"party": pl.String, "t": pl.Datetime("us", "UTC")},
    )
    got = network._component_sizes(edges, queries)
    assert np.array_equal(got, _sizes_before(edges, queries))
    assert got.tolist() == [1, 1, 0, 1, 2, 1, 2, 0, 1, 3]


class _GraphHops(network.Hops):
    """`Hops` as it was: the graph in a networkx `Graph` (its adjacency read by
    the same search)."""

    def __init__(self, edges: pl.DataFrame, flagged: pl.DataFrame):
        super().__init__(edges, flagged)
        self.graph = Graph()
        self.adj = self.graph.adj  # type: ignore[assignment]

    def _link(self, us: list[str], vs: list[str]) -> None:
        self.graph.add_edges_from(zip(us, vs, strict=True))

    def _add_node(self, node: str) -> None:
        self.graph.add_node(node)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hops_equal_those_on_a_networkx_graph(seed: int) -> None:
    rng = random.Random(seed)
    edges = _edges(seed, 3000, 300, 24 * 200).sort("t", "a", "b")
    flagged = (
        pl.DataFrame(
            {
                "node": ["p|" + str(rng.randrange(320)) for _ in range(40)],
                "t": [T0 + dt.timedelta(hours=rng.randrange(24 * 200)) for _ in range(40)],
            },
            schema={"node": pl.String, "t": pl.Datetime("us", "UTC")},
        )
        .sort("t")
        .unique("node", keep="first", maintain_order=True)
    )
    new, old = network.Hops(edges, flagged), _GraphHops(edges, flagged)
    months = [dt.datetime(2024, m, 1, tzinfo=dt.UTC) for m in range(1, 13)]
    deepest = 0
    for month in [*months, months[-1]]:
        got, want = dict(new.at(month)), dict(old.at(month))
        assert got == want
        assert list(got) == list(want)  # (the same order of discovery too)
        deepest = max(deepest, *want.values(), 0)
    assert deepest >= 2
    # the same neighbours, in the same order
    graph_adj = old.graph.adj
    assert list(new.adj) == list(graph_adj)
    assert all(list(new.adj[v]) == list(graph_adj[v]) for v in new.adj)
