"""Family 6: the network of parties around the shipment, point in time.

The graph's nodes are parties (`<role>_key` of features.context.party_keys),
phones, e-mails, addresses and road vehicles; each shipment adds, at its
declared_at, the edges consignor-consignee, every party to its phone, e-mail
and address, and the consignee to the vehicle (road only: a flight or a ship
carries everybody). Only the first occurrence of an edge matters.

Hubs. A broker's phone, a business centre's address or a big retailer would
join most of the country into one component, and so would a carrier's truck.
A node keeps only its first `HUB_LIMIT` neighbours (a vehicle `VEHICLE_LIMIT`)
in time order (ties by neighbour); an edge beyond that rank at either end is
ignored. The rank of an edge depends only on edges seen
no later than it, so the rule is point-in-time.

Features of a shipment declared at t, from edges strictly before t:

* component size: parties in the consignee's (and the consignor's)
  connected component through shared phones, e-mails and addresses (trade and
  vehicle edges percolate: with them one component holds most parties),
  counting the party itself (a new party: 1). Edges are
  added in time order to a union-find (online a `networkx.utils.UnionFind`; the
  batch's one pass, `_swept_sizes`, on integer ids) and each shipment reads
  its component just before the edges of instant t (one pass, all shipments);
* contact sharing: distinct other parties (any role) that used the consignee's
  or the consignor's phone, e-mail or address before t (the maximum);
* hops to arms: graph distance (every node counts as a hop: consignee to its
  consignor 1, to another party sharing its phone 2), capped at `MAX_HOPS`,
  from the consignee or consignor to a consignor or consignee of a shipment
  whose arms finding (firearms, parts, ammunition, explosives) was recorded.
  Computed on monthly snapshots: for shipments declared in a month, the graph
  and the findings known before that month's first instant (UTC), which is
  point-in-time correct and at most a month stale. `MAX_HOPS + 1` = none near.

Online (`Tables`, kept by `features.state.FeatureState`): the union-find holds
every identity edge before the latest shipment held, and the BFS layers of the
latest month read are kept. A shipment declared at or after the latest one
reads them (edges of that very instant are merged on a small overlay, never
into the shared union-find); an earlier shipment replays the edges from the
start, as the batch does. Appended shipments add their edges at the end, and
only the edges held at their ends are read: a new edge ranks after those,
except those of its very instant with a greater neighbour, which it pushes one
rank down (one pushed beyond the cap leaves the capped edges, and the
union-find's and the BFS's edges still to come). Nothing is recomputed over
all edges, except the BFS, on its next use, when an edge appended or pushed
out is of a month it has read already.

A few shipments (online calls, appends) are computed in Python (dicts, lists),
without the fixed cost of frame operations: the same values (see the tests).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import polars as pl
from networkx.utils import UnionFind

from data_contracts.schemas import ARMS_CATEGORIES
from features.context import PARTY_ROLES, History, Params
from features.names import normalise_name, normalise_names
from features.registry import Family, Wording, feature
from features.timeline import (
    FirstSeen,
    KeyedRows,
    distinct_columns,
    distinct_query,
    pair_seen_query,
    pair_seen_values,
)

F = Family.NETWORK
HUB_LIMIT = 20
# A truck serves many consignees of its carrier: only its first few link them.
VEHICLE_LIMIT = 5
MAX_HOPS = 4
CONTACTS = ("phone", "email", "address")
# Node prefixes: parties "p|", phones "t|", e-mails "e|", addresses "a|", vehicles "r|".
PREFIX = {"phone": "t|", "email": "e|", "address": "a|"}
# Inputs of at most this many shipments are computed in Python (lists, dicts)
# and framed once: the values of the frame operations, without their fixed cost
# per call (an online call or an append holds one shipment).
SMALL_MAX_SHIPMENTS = 32


def phone_key(phone: pl.Expr) -> pl.Expr:
    """Comparison key of a phone: its last 10 digits (folds +7 / 8 / 007 prefixes);
    null under 6 digits."""
    digits = phone.cast(pl.String).str.replace_all(r"\D", "")
    return pl.when(digits.str.len_chars() >= 6).then(digits.str.slice(-10))


def email_key(email: pl.Expr) -> pl.Expr:
    """Comparison key of an e-mail: trimmed, lower case; null when empty."""
    key = email.cast(pl.String).str.strip_chars().str.to_lowercase()
    return pl.when(key.str.len_chars() > 0).then(key)


def address_key(addresses: pl.Series) -> pl.Series:
    """Comparison key of an address: transliterated, punctuation-free tokens in
    written order (`features.names.normalise_names`; the order matters: house 13,
    office 39 is not house 39, office 13); null when nothing is left."""
    key = normalise_names(addresses.cast(pl.String))
    return pl.select(pl.when(key.str.len_chars() > 0).then(key).alias(addresses.name)).to_series()


def vehicle_key(ref: pl.Expr) -> pl.Expr:
    """Comparison key of a road vehicle's registration: upper-case letters and
    digits only (may be empty)."""
    return ref.str.to_uppercase().str.replace_all(r"[^0-9A-Z]", "")


# The same keys computed in Python, for small inputs. Only for ASCII strings,
# where Python and Polars agree on digits, white space and case (tests compare
# them); other strings go through the expressions.
_ASCII_SPACE = " \t\n\x0b\x0c\r"  # (Python's `str.strip` also strips \x1c-\x1f)
_NOT_DIGIT = re.compile(r"[^0-9]")
_NOT_VEHICLE = re.compile(r"[^0-9A-Z]")


def _phone_ascii(phone: str) -> str | None:
    """`phone_key` of an ASCII string."""
    digits = _NOT_DIGIT.sub("", phone)
    return digits[-10:] if len(digits) >= 6 else None


def _email_ascii(email: str) -> str | None:
    """`email_key` of an ASCII string."""
    return email.strip(_ASCII_SPACE).lower() or None


def _vehicle_ascii(ref: str) -> str:
    """`vehicle_key` of an ASCII string."""
    return _NOT_VEHICLE.sub("", ref.upper())


def _address_of(address: str) -> str | None:
    """`address_key` of one value."""
    return normalise_name(address) or None


def keys_of(
    values: list[str | None],
    expr: Callable[[pl.Expr], pl.Expr],
    ascii_key: Callable[[str], str | None],
    fits: Callable[[str], bool] = str.isascii,
) -> list[str | None]:
    """A comparison key expression `expr` over a few values: `ascii_key`, its
    twin in Python, computes it for the strings it `fits` (ASCII ones unless
    told), the expression for the others (rare: one frame operation); nulls
    stay null."""
    rest = [v for v in values if v is not None and not fits(v)]
    done: dict[str, str | None] = {}
    if rest:
        frame = pl.DataFrame({"v": rest}, schema={"v": pl.String})
        done = dict(zip(rest, frame.select(expr(pl.col("v"))).to_series().to_list(), strict=True))
    return [None if v is None else done[v] if v in done else ascii_key(v) for v in values]


def mentions(frame: pl.DataFrame) -> pl.DataFrame:
    """The shipments' party mentions (`frame` carries `<role>_key`): one row per
    shipment and role, `__row` (the shipment's row), role, party node, time `t`,
    and the comparison keys of its phone, e-mail and address. Computed once per
    query and shared with `features.travellers.prepare`."""
    if frame.height <= SMALL_MAX_SHIPMENTS:
        return _small_mentions(frame)
    return _mentions(frame)


def _mentions(frame: pl.DataFrame) -> pl.DataFrame:
    """Long frame of (row, role, party node, time, contact keys) over the three roles."""
    long = pl.concat(
        [
            frame.select(
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"),
                pl.lit(role, dtype=pl.String).alias("role"),
                ("p|" + pl.col(f"{role}_key").cast(pl.String)).alias("party"),
                pl.col("declared_at").alias("t"),
                pl.col(f"{role}_phone").alias("phone"),
                pl.col(f"{role}_email").alias("email"),
                pl.col(f"{role}_address").alias("address"),
            )
            for role in PARTY_ROLES
        ]
    )
    return long.with_columns(
        phone_key(pl.col("phone")).alias("phone"),
        email_key(pl.col("email")).alias("email"),
        address_key(long.get_column("address")),
    )


def _small_mentions(frame: pl.DataFrame) -> pl.DataFrame:
    """`_mentions` of a few shipments, in Python."""
    n = frame.height

    def values(column: str) -> list[str | None]:
        out: list[str | None] = []
        for role in PARTY_ROLES:
            values = frame.get_column(f"{role}_{column}")
            out += (values if values.dtype == pl.String else values.cast(pl.String)).to_list()
        return out

    times = frame.get_column("declared_at")
    return pl.DataFrame(
        [
            pl.Series("__row", list(range(n)) * len(PARTY_ROLES), dtype=pl.UInt32),
            pl.Series("role", [r for r in PARTY_ROLES for _ in range(n)], dtype=pl.String),
            pl.Series(
                "party", [None if k is None else "p|" + k for k in values("key")], dtype=pl.String
            ),
            pl.concat([times] * len(PARTY_ROLES)).alias("t"),
            pl.Series("phone", keys_of(values("phone"), phone_key, _phone_ascii), dtype=pl.String),
            pl.Series("email", keys_of(values("email"), email_key, _email_ascii), dtype=pl.String),
            pl.Series(
                "address",
                [None if a is None else _address_of(a) for a in values("address")],
                dtype=pl.String,
            ),
        ]
    )


def _raw_edges(history: pl.DataFrame, mentions: pl.DataFrame) -> pl.DataFrame:
    """Every edge occurrence (u, v, t) of the shipments (before dedupe and caps)."""
    hist = history.select(
        pl.col("declared_at").alias("t"),
        ("p|" + pl.col("consignor_key")).alias("consignor"),
        ("p|" + pl.col("consignee_key")).alias("consignee"),
        pl.when(pl.col("mode").cast(pl.String) == "road")
        .then("r|" + vehicle_key(pl.col("conveyance_ref")))
        .alias("vehicle"),
    )
    raw = [
        hist.select(pl.col("consignor").alias("u"), pl.col("consignee").alias("v"), "t"),
        hist.filter(pl.col("vehicle") != "r|").select(
            pl.col("consignee").alias("u"), pl.col("vehicle").alias("v"), "t"
        ),
    ]
    raw += [
        mentions.select(pl.col("party").alias("u"), (PREFIX[c] + pl.col(c)).alias("v"), "t")
        for c in CONTACTS
    ]
    return (
        pl.concat(raw)
        .drop_nulls()
        .filter(pl.col("u") != pl.col("v"))
        .select(pl.min_horizontal("u", "v").alias("a"), pl.max_horizontal("u", "v").alias("b"), "t")
        .group_by("a", "b")
        .agg(pl.col("t").min())
    )


def _first_edges(
    ships: pl.DataFrame, ship_mentions: pl.DataFrame, times: list[int]
) -> dict[tuple[str, str], int]:
    """`_raw_edges` in Python (for appends: a few shipments, no frame
    operations): (a, b) -> first time, a < b; `times`: the shipments' declared_at
    (physical values)."""
    firsts: dict[tuple[str, str], int] = {}

    def add(u: str | None, v: str | None, t: int) -> None:
        if u is not None and v is not None and u != v:
            edge = (u, v) if u < v else (v, u)
            if t < firsts.get(edge, t + 1):
                firsts[edge] = t

    def party(role: str) -> list[str | None]:
        return [None if k is None else "p|" + k for k in ships.get_column(f"{role}_key").to_list()]

    road = (ships.get_column("mode").cast(pl.String) == "road").to_list()
    refs = ships.get_column("conveyance_ref").to_list()
    refs = [r if on else None for r, on in zip(refs, road, strict=True)]
    vehicles = keys_of(refs, vehicle_key, _vehicle_ascii)
    trade = zip(times, party("consignor"), party("consignee"), vehicles, strict=True)
    for t, u, v, vehicle in trade:
        add(u, v, t)
        if vehicle:  # (an empty key links nothing)
            add(v, "r|" + vehicle, t)
    rows = ship_mentions.get_column("__row").to_list()
    parties = ship_mentions.get_column("party").to_list()
    for c in CONTACTS:
        values = ship_mentions.get_column(c).to_list()
        for row, u, value in zip(rows, parties, values, strict=True):
            add(u, None if value is None else PREFIX[c] + value, times[row])
    return firsts


def _capped(firsts: pl.DataFrame) -> pl.DataFrame:
    """Hub caps over first edge occurrences (see module doc); `trade` marks
    consignor-consignee edges; sorted by time."""
    edges = firsts.with_row_index("edge")
    ends = pl.concat(
        [
            edges.select("edge", pl.col("a").alias("node"), pl.col("b").alias("other"), "t"),
            edges.select("edge", pl.col("b").alias("node"), pl.col("a").alias("other"), "t"),
        ]
    ).sort("node", "t", "other")
    rank = ends.with_columns((pl.int_range(pl.len()).over("node") >= _limit()).alias("over"))
    kept = rank.group_by("edge").agg(pl.col("over").any()).filter(~pl.col("over"))
    return (
        edges.join(kept.select("edge"), on="edge", how="semi")
        .drop("edge")
        .with_columns(TRADE)
        .sort("t", "a", "b")
    )


TRADE = (pl.col("a").str.starts_with("p|") & pl.col("b").str.starts_with("p|")).alias("trade")
IDENTITY = (
    ~pl.col("trade") & ~pl.col("a").str.starts_with("r|") & ~pl.col("b").str.starts_with("r|")
)


class Components:
    """Union-find over identity edges swept in time order: after `advance(t)` it
    holds every edge strictly before t, and `size(node)` counts the parties of
    the node's component (a node never seen: 1 if a party)."""

    def __init__(self, edges: pl.DataFrame):
        e = edges.sort("t", "a", "b")
        self.eu, self.ev = e["a"].to_list(), e["b"].to_list()
        self.et = _epoch_us(e["t"])
        self.uf = UnionFind()
        self.parties: dict[str, int] = {}
        self.i = 0

    def _count(self, root: str, local: dict[str, int] | None = None) -> int:
        if local is not None and root in local:
            return local[root]
        return self.parties.get(root, int(root.startswith("p|")))

    def advance(self, t: int) -> None:
        eu, ev, et, uf, parties = self.eu, self.ev, self.et, self.uf, self.parties
        i, n = self.i, len(et)
        while i < n and et[i] < t:
            ru, rv = uf[eu[i]], uf[ev[i]]
            if ru != rv:
                total = self._count(ru) + self._count(rv)
                uf.union(ru, rv)
                parties[uf[ru]] = total
            i += 1
        self.i = i

    def sweep(self, nodes: list[str | None], times: list[int]) -> list[int]:
        """`advance(t)` then `size(node)` for each query, in time order (the batch;
        the same steps, inlined)."""
        eu, ev, et, uf, parties = self.eu, self.ev, self.et, self.uf, self.parties
        i, n = self.i, len(et)
        sizes: list[int] = []
        for node, t in zip(nodes, times, strict=True):
            while i < n and et[i] < t:
                ru, rv = uf[eu[i]], uf[ev[i]]
                if ru != rv:
                    total = parties.get(ru, int(ru.startswith("p|"))) + parties.get(
                        rv, int(rv.startswith("p|"))
                    )
                    uf.union(ru, rv)
                    parties[uf[ru]] = total
                i += 1
            if node is None:
                sizes.append(0)
            else:
                root = uf[node]
                sizes.append(parties.get(root, int(root.startswith("p|"))))
        self.i = i
        return sizes

    def size(self, node: str) -> int:
        return self._count(self.uf[node])

    def size_at(self, node: str, t: int) -> int:
        """`size` as of time t >= the last `advance`, without applying the edges
        in between (the state stays valid for other queries at its time): they
        are merged on a small overlay of roots."""
        pending = [
            (self.uf[self.eu[k]], self.uf[self.ev[k]])
            for k in range(self.i, len(self.et))
            if self.et[k] < t
        ]
        if not pending:
            return self.size(node)
        parent: dict[str, str] = {}
        local: dict[str, int] = {}

        def find(x: str) -> str:
            while x in parent:
                x = parent[x]
            return x

        for ru, rv in pending:
            a, b = find(ru), find(rv)
            if a != b:
                local[b] = self._count(a, local) + self._count(b, local)
                parent[a] = b
        return self._count(find(self.uf[node]), local)


def _swept_sizes(
    eu: list[str], ev: list[str], et: list[int], nodes: list[str | None], times: list[int]
) -> list[int]:
    """`Components(edges).sweep(nodes, times)` of a fresh union-find (edges (eu, ev)
    sorted by time et, queries in time order), on integer ids with union by size
    and path halving: the same components, so the same counts of parties, in
    a fraction of the time (the batch)."""
    index: dict[str, int] = {}
    parent: list[int] = []
    weight: list[int] = []  # nodes under a root
    parties: list[int] = []  # parties under a root

    def ids(values: list[str]) -> list[int]:
        out = []
        for v in values:
            k = index.get(v)
            if k is None:
                k = index[v] = len(parent)
                parent.append(k)
                weight.append(1)
                parties.append(int(v.startswith("p|")))
            out.append(k)
        return out

    a, b = ids(eu), ids(ev)
    i, n = 0, len(et)
    sizes: list[int] = []
    for node, t in zip(nodes, times, strict=True):
        while i < n and et[i] < t:
            x, y = a[i], b[i]
            while parent[x] != x:
                parent[x] = x = parent[parent[x]]
            while parent[y] != y:
                parent[y] = y = parent[parent[y]]
            if x != y:
                if weight[x] < weight[y]:
                    x, y = y, x
                parent[y] = x
                weight[x] += weight[y]
                parties[x] += parties[y]
            i += 1
        if node is None:
            sizes.append(0)
            continue
        k = index.get(node)
        if k is None:  # (never on an edge: alone)
            sizes.append(int(node.startswith("p|")))
            continue
        while parent[k] != k:
            parent[k] = k = parent[parent[k]]
        sizes.append(parties[k])
    return sizes


def _component_sizes(edges: pl.DataFrame, queries: pl.DataFrame) -> np.ndarray:
    """Parties in each query node's component from edges strictly before its time."""
    q = queries.select(pl.col("party").alias("node"), "t").with_row_index("__q").sort("t", "__q")
    e = edges.sort("t", "a", "b")
    sizes = _swept_sizes(
        e["a"].to_list(),
        e["b"].to_list(),
        _epoch_us(e["t"]),
        q["node"].to_list(),
        _epoch_us(q["t"]),
    )
    out = pl.Series("size", sizes, dtype=pl.Int64)
    return q.select("__q").with_columns(out).sort("__q")["size"].to_numpy()


class Hops:
    """Multi-source BFS layers from the flagged parties on monthly snapshots: `at(month)`
    (months non-decreasing) gives node -> hops for the graph and the findings
    known before the month's first instant.

    The graph only grows (edges and sources are added, never removed), so the
    distances only shrink: each month relaxes them from the new sources and the
    ends of the new edges (a bounded BFS), instead of a BFS over the whole graph.
    The result is the BFS's: every node within `MAX_HOPS` of a source, at its
    distance. The dict returned is updated in place by the next month."""

    def __init__(self, edges: pl.DataFrame, flagged: pl.DataFrame):
        # node -> its neighbours (a dict for their insertion order, as a
        # networkx Graph's adjacency keeps it, without its cost per edge)
        self.adj: dict[str, dict[str, None]] = {}
        self.e_a, self.e_b = edges["a"].to_list(), edges["b"].to_list()
        self.e_t = edges["t"].to_list()
        self.f_node, self.f_t = flagged["node"].to_list(), flagged["t"].to_list()
        self.i = self.j = 0
        self.sources: set[str] = set()
        self.month: dt.datetime | None = None
        self.layers: dict[str, int] = {}

    def at(self, month: dt.datetime) -> dict[str, int]:
        if self.month is not None and month < self.month:
            raise ValueError("monthly snapshots are read in time order")
        if month == self.month:
            return self.layers
        start, i = self.i, self.i
        while i < len(self.e_t) and self.e_t[i] < month:
            i += 1
        new_a, new_b = self.e_a[start:i], self.e_b[start:i]
        self._link(new_a, new_b)
        self.i = i
        layers = self.layers
        touched: list[str] = []
        while self.j < len(self.f_t) and self.f_t[self.j] < month:
            node = self.f_node[self.j]
            if node not in self.sources:
                self.sources.add(node)
                self._add_node(node)
                layers[node] = 0
                touched.append(node)
            self.j += 1
        if layers:
            touched += [v for v in (*new_a, *new_b) if v in layers]
            self._relax(touched)
        self.month = month
        return layers

    def _link(self, us: list[str], vs: list[str]) -> None:
        """Add the edges (us[k], vs[k]) to the adjacency, in order."""
        adj = self.adj
        for u, v in zip(us, vs, strict=True):
            ends = adj.get(u)
            if ends is None:
                ends = adj[u] = {}
            ends[v] = None
            ends = adj.get(v)
            if ends is None:
                ends = adj[v] = {}
            ends[u] = None

    def _add_node(self, node: str) -> None:
        self.adj.setdefault(node, {})

    def _relax(self, queue: list[str]) -> None:
        """Lower the distances of the neighbours of `queue`'s nodes, and onwards."""
        layers, adj = self.layers, self.adj
        k = 0
        while k < len(queue):
            node = queue[k]
            k += 1
            depth = layers[node] + 1
            if depth > MAX_HOPS:
                continue
            for other in adj[node]:
                if layers.get(other, MAX_HOPS + 1) > depth:
                    layers[other] = depth
                    queue.append(other)


def _hops_to_arms(
    hops: Hops, nodes: list[str | None], months: list[dt.datetime] | pl.Series
) -> np.ndarray:
    """Hops from each query node to a flagged party, on the snapshot of its
    month (`MAX_HOPS + 1`: none that near). `months`: each query's month, as a
    list or as a (non-null) series."""
    if isinstance(months, pl.Series):
        return _hops_by_month(hops, nodes, months)
    out = np.full(len(nodes), MAX_HOPS + 1, dtype=np.int64)
    month: dt.datetime | None = None
    layers: dict[str, int] = {}
    for k in sorted(range(len(nodes)), key=months.__getitem__):
        if months[k] != month:
            month = months[k]
            layers = hops.at(month)
        node = nodes[k]
        if node is not None and node in layers:
            out[k] = layers[node]
    return out


def _hops_by_month(hops: Hops, nodes: list[str | None], months: pl.Series) -> np.ndarray:
    """`_hops_to_arms` for many queries: the same snapshots read in the same
    order (months ascending), the queries grouped by month with numpy (a stable
    sort of the months' integers) instead of a sort of Python datetimes."""
    out = np.full(len(nodes), MAX_HOPS + 1, dtype=np.int64)
    if not len(nodes):
        return out
    codes = months.cast(pl.Int64).to_numpy()
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist()
    for start, stop in zip(starts, [*starts[1:], len(order)], strict=True):
        layers = hops.at(months[int(order[start])])
        for k in order[start:stop].tolist():
            node = nodes[k]
            if node is not None:
                hop = layers.get(node)
                if hop is not None:
                    out[k] = hop
    return out


def _flagged(outcomes: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """Party nodes (consignor, consignee) of shipments with an arms finding, by
    the time the finding was recorded, first time per party, in time order."""
    if outcomes.height <= SMALL_MAX_SHIPMENTS:
        return _small_flagged(outcomes, ships)
    arms = outcomes.filter(
        pl.col("finding") & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES)
    ).join(
        ships.select("shipment_id", "consignor_key", "consignee_key"),
        on="shipment_id",
    )
    long = pl.concat(
        [
            arms.select(
                ("p|" + pl.col(f"{r}_key")).alias("node"), pl.col("inspected_at").alias("t")
            )
            for r in ("consignor", "consignee")
        ]
    )
    return long.drop_nulls().group_by("node").agg(pl.col("t").min()).sort("t", "node")


def _small_flagged(outcomes: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """`_flagged` of a few outcomes, in Python (most hold no arms finding)."""
    found: dict[str, list[dt.datetime]] = {}
    for sid, finding, category, t in zip(
        outcomes.get_column("shipment_id").to_list(),
        outcomes.get_column("finding").to_list(),
        outcomes.get_column("finding_category").cast(pl.String).to_list(),
        outcomes.get_column("inspected_at").to_list(),
        strict=True,
    ):
        if finding and category in ARMS_CATEGORIES and sid is not None and t is not None:
            found.setdefault(sid, []).append(t)
    first: dict[str, dt.datetime] = {}
    if found:
        held = ships.filter(pl.col("shipment_id").is_in(list(found)))
        for role in ("consignor", "consignee"):
            keys = held.get_column(f"{role}_key").to_list()
            for sid, key in zip(held.get_column("shipment_id").to_list(), keys, strict=True):
                for t in found[sid] if key is not None else ():
                    node = "p|" + key
                    first[node] = min(t, first.get(node, t))
    rows = sorted((t, node) for node, t in first.items())
    schema = pl.Schema({"node": pl.String(), "t": outcomes.schema["inspected_at"]})
    return pl.DataFrame([(node, t) for t, node in rows], schema=schema, orient="row")


# The consignor and the consignee: the first two roles, so that their mentions
# lead those of `mentions`.
ROLES = PARTY_ROLES[:2]


assert set(ROLES) == {"consignor", "consignee"}


def _ends(raw: pl.DataFrame) -> pl.DataFrame:
    """Both ends of every edge: node, other, t."""
    return pl.concat(
        [
            raw.select(pl.col("a").alias("node"), pl.col("b").alias("other"), "t"),
            raw.select(pl.col("b").alias("node"), pl.col("a").alias("other"), "t"),
        ]
    )


def _limit() -> pl.Expr:
    """The cap of each `node` (see the module doc)."""
    return pl.when(pl.col("node").str.starts_with("r|")).then(VEHICLE_LIMIT).otherwise(HUB_LIMIT)


def _limit_of(node: str) -> int:
    """`_limit` of one node."""
    return VEHICLE_LIMIT if node.startswith("r|") else HUB_LIMIT


def _epoch_us(times: pl.Series) -> list[int]:
    """Microseconds since the epoch (`dt.epoch("us")`; for times held in
    microseconds, their physical values: a cast, without an expression's cost)."""
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_unit == "us":
        return times.cast(pl.Int64).to_list()
    return times.dt.epoch("us").to_list()


def _months(times: pl.Series) -> list[dt.datetime]:
    """The first instant of each time's month (`dt.truncate("1mo")`): for a few
    UTC or naive times, in Python (the same, without an expression's cost)."""
    zone = getattr(times.dtype, "time_zone", None)
    if times.len() <= 2 * SMALL_MAX_SHIPMENTS and zone in (None, "UTC"):
        start = {"day": 1, "hour": 0, "minute": 0, "second": 0, "microsecond": 0}
        return [t.replace(**start) for t in times.to_list()]
    return times.dt.truncate("1mo").to_list()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch(t: dt.datetime) -> int:
    """`_epoch_us` of one time."""
    epoch = _EPOCH if t.tzinfo is not None else _EPOCH.replace(tzinfo=None)
    return (t - epoch) // _MICROSECOND


def _frame(
    columns: tuple[str, ...], rows: Sequence[tuple[object, ...]], dtype: pl.DataType
) -> pl.DataFrame:
    """Rows of strings and a physical time `t` as a frame, `t` of `dtype`."""
    schema = {c: pl.Int64 if c == "t" else pl.String for c in columns}
    return pl.DataFrame(rows, schema=schema, orient="row").with_columns(pl.col("t").cast(dtype))


def _drop_pending(
    us: list[str], vs: list[str], ts: list[Any], start: int, gone: set[tuple[str, str]]
) -> bool:
    """Remove the edges `gone` from the parallel lists (us, vs, ts) at or after
    `start`, in place; False (nothing changed) when some are not there."""
    keep = [k for k in range(start, len(us)) if (us[k], vs[k]) not in gone]
    if len(us) - start - len(keep) != len(gone):
        return False
    values: list[Any]
    for values in (us, vs, ts):
        values[start:] = [values[k] for k in keep]
    return True


class Tables:
    """What this family reads of the history (see features.state): the contact
    first-seen tables, every edge's ends (first time, before the hub caps), the
    hub-capped edges, the findings, and, built on first use, the union-find and
    the monthly BFS as of the end of the history."""

    def __init__(self, ships: pl.DataFrame, outcomes: pl.DataFrame):
        mentions = _mentions(ships)
        # Kept for a batch over the same shipments (`prepare` reuses them).
        self.source: pl.DataFrame | None = ships
        self.mentions: pl.DataFrame | None = mentions
        self.contacts = {c: FirstSeen.build(mentions, c, "party", "t") for c in CONTACTS}
        self._raw: pl.DataFrame | None = _raw_edges(ships, mentions)
        self._ends: KeyedRows | None = None
        self.edges = _capped(self._raw)
        self.flagged = _flagged(outcomes, ships)
        self.latest: dt.datetime | None = ships["declared_at"].max() if ships.height else None  # type: ignore[assignment]
        self._components: Components | None = None
        self._hops: Hops | None = None

    def append(
        self,
        ships: pl.DataFrame,
        outcomes: pl.DataFrame,
        all_ships: pl.DataFrame,
        ship_mentions: pl.DataFrame | None = None,
        *,
        advance: bool = True,
    ) -> None:
        """Add shipments declared no earlier than those held (with `<role>_key`)
        and outcomes (`all_ships`: every shipment now held, for their keys).
        `ship_mentions`: `mentions(ships)` when the caller has it. `advance`
        False: the union-find stays where it was, its new edges still to come
        (`append_swept`)."""
        if ships.height:
            self.source = self.mentions = None  # (the batch frames no longer match)
            if ship_mentions is None:
                ship_mentions = mentions(ships)
            for c in CONTACTS:
                self.contacts[c].append(ship_mentions)
            times = ships.get_column("declared_at")
            physical = times.cast(self.ends.schema()["t"]).cast(pl.Int64).to_list()
            self._append_edges(_first_edges(ships, ship_mentions, physical))
            latest: dt.datetime = times.max()  # type: ignore[assignment]
            self.latest = latest if self.latest is None else max(self.latest, latest)
            if advance and self._components is not None:
                self._components.advance(_epoch(self.latest))
        if outcomes.height:
            self._append_flagged(_flagged(outcomes, all_ships))

    def append_swept(self, ships: pl.DataFrame, ship_mentions: pl.DataFrame) -> np.ndarray | None:
        """`append` of shipments (no outcomes) declared at or after the latest one
        held, in one call, answering on the way the component size of each of the
        first `len(ROLES) * ships.height` rows of `ship_mentions` (the consignor's
        then the consignee's, as `prepare` queries them) from the identity edges
        strictly before its time: each shipment reads the edges of the shipments
        of this call declared before it, as when they are appended one at a time
        (and as the batch's sweep reads them). None (appended all the same) when
        the union-find had to be dropped (an edge it held pushed beyond a cap):
        the caller then replays (`prepare` without the sizes)."""
        comp = self.components()  # (every identity edge before the latest held)
        self.append(ships, ships.clear(), ships, ship_mentions, advance=False)
        if self._components is not comp:
            return None
        n = ships.height
        queries = ship_mentions.slice(0, len(ROLES) * n)
        times = _epoch_us(queries.get_column("t"))
        order = sorted(range(len(times)), key=times.__getitem__)  # (stable: ties by row)
        nodes = queries.get_column("party").to_list()
        swept = comp.sweep([nodes[k] for k in order], [times[k] for k in order])
        sizes = np.zeros(len(times), dtype=np.int64)
        sizes[order] = swept
        if self.latest is not None:
            comp.advance(_epoch(self.latest))
        return sizes

    @property
    def ends(self) -> KeyedRows:
        """Both ends of every edge held (first time, before the caps), by node:
        built on the first append (a batch never needs it)."""
        if self._ends is None:
            assert self._raw is not None
            ends = _ends(self._raw).sort("node", "t", "other")
            self._ends = KeyedRows(ends, "node", ["node", "t", "other"], ["node", "other"])
            self._raw = None
        return self._ends

    def _append_edges(self, firsts: dict[tuple[str, str], int]) -> None:
        """Add edges (a, b) -> first time (physical, not earlier than those held)
        with exact hub caps, reading only the rows of their ends. An edge held
        keeps its time. A new edge ranks after the edges held at its ends, except
        those of its very instant with a greater neighbour: it pushes them down
        one rank, beyond the cap when they held its last place (they leave the
        capped edges)."""
        ends = self.ends
        held = {node: ends.key_values(node, "t") for edge in firsts for node in edge}

        def is_held(a: str, b: str) -> bool:  # (looked up at the end with fewer edges)
            if held[a].size > held[b].size:
                a, b = b, a
            return held[a].size > 0 and b in ends.key_list(a, "other")

        fresh = {edge: t for edge, t in firsts.items() if not is_held(*edge)}
        if not fresh:
            return
        new_at: dict[str, list[tuple[int, str]]] = {}
        for (a, b), t in fresh.items():
            new_at.setdefault(a, []).append((t, b))
            new_at.setdefault(b, []).append((t, a))
        over: set[tuple[str, str]] = set()  # new edges beyond the cap at an end
        pushed: dict[tuple[str, str], int] = {}  # held edges pushed beyond it
        for node, new in new_at.items():
            new.sort()
            times, limit = held[node], _limit_of(node)
            if times.size + len(new) <= limit:
                continue
            # Held edges not before the first new one (of its instant) interleave with them.
            tied = np.flatnonzero(times >= new[0][0]).tolist()
            others = cast("list[str]", ends.key_list(node, "other") if tied else [])
            merged = sorted(
                [(t, other, True) for t, other in new]
                + [(int(times[k]), others[k], False) for k in tied]
            )
            rank_held = times.size - len(tied)  # its rank before the new edges
            for rank, (t, other, is_new) in enumerate(merged, start=rank_held):
                edge = (node, other) if node < other else (other, node)
                if is_new and rank >= limit:
                    over.add(edge)
                elif not is_new:
                    if rank_held < limit <= rank:
                        pushed[edge] = t
                    rank_held += 1
        dtype = ends.schema()["t"]
        rows = sorted((node, t, other) for node, new in new_at.items() for t, other in new)
        ends.append(_frame(("node", "t", "other"), rows, dtype))
        if pushed:
            self._drop_edges(pushed)
        kept = sorted((t, a, b) for (a, b), t in fresh.items() if (a, b) not in over)
        if not kept:
            return
        added = _frame(("t", "a", "b"), kept, dtype).select("a", "b", "t", TRADE)
        self.edges = pl.concat([self.edges, added])
        if self._components is not None:
            identity = added.filter(IDENTITY)
            self._components.eu += identity["a"].to_list()
            self._components.ev += identity["b"].to_list()
            self._components.et += _epoch_us(identity["t"])
        hops = self._hops
        if hops is not None and hops.month is not None and added["t"].min() < hops.month:  # type: ignore[operator]
            self._hops = None  # the snapshot read already holds their month: rebuilt on use
        elif hops is not None:  # later than the snapshot read: taken with the next month
            hops.e_a += added["a"].to_list()
            hops.e_b += added["b"].to_list()
            hops.e_t += added["t"].to_list()

    def _drop_edges(self, pushed: dict[tuple[str, str], int]) -> None:
        """Remove edges (a, b) -> time (physical) from the capped edges, and from
        the union-find's and the BFS's edges to come (or drop the union-find or
        the BFS when it took one already). They are of the latest instants, held
        at the end of `edges` (in time order): only that tail is read."""
        first = pl.Series([min(pushed.values())], dtype=pl.Int64).cast(self.edges.schema["t"])
        start = int(self.edges.get_column("t").search_sorted(first, side="left")[0])
        tail = self.edges.slice(start)
        gone = pl.Series(
            [
                (a, b) in pushed
                for a, b in zip(tail["a"].to_list(), tail["b"].to_list(), strict=True)
            ],
            dtype=pl.Boolean,
        )
        if not gone.any():
            return
        self.edges = pl.concat([self.edges.head(start), tail.filter(~gone)])
        removed = tail.filter(gone)
        comp = self._components
        if comp is not None:
            identity = removed.filter(IDENTITY)
            edges = set(zip(identity["a"].to_list(), identity["b"].to_list(), strict=True))
            if not _drop_pending(comp.eu, comp.ev, comp.et, comp.i, edges):
                self._components = None  # rebuilt on use
        hops = self._hops
        if hops is not None:
            edges = set(zip(removed["a"].to_list(), removed["b"].to_list(), strict=True))
            if not _drop_pending(hops.e_a, hops.e_b, hops.e_t, hops.i, edges):
                self._hops = None  # rebuilt on use

    def _append_flagged(self, new: pl.DataFrame) -> None:
        if new.height == 0:
            return
        self.flagged = (
            pl.concat([self.flagged, new]).group_by("node").agg(pl.col("t").min()).sort("t", "node")
        )
        hops = self._hops
        if hops is None:
            return
        if hops.month is not None and new["t"].min() < hops.month:  # type: ignore[operator]
            self._hops = None  # the current snapshot changes: rebuilt on use
            return
        # Later findings: the sources taken so far stay; the rest is read anew.
        hops.f_node, hops.f_t = self.flagged["node"].to_list(), self.flagged["t"].to_list()
        month = hops.month
        hops.j = 0 if month is None else sum(1 for t in hops.f_t if t < month)

    def components(self) -> Components:
        """The union-find holding every identity edge before the latest shipment."""
        if self._components is None:
            comp = Components(self.edges.filter(IDENTITY))
            if self.latest is not None:
                comp.advance(_epoch(self.latest))
            self._components = comp
        return self._components

    def hops(self, month: dt.datetime) -> Hops:
        """The BFS snapshots, able to answer `month` and later ones."""
        if self._hops is None or (self._hops.month is not None and month < self._hops.month):
            self._hops = Hops(self.edges, self.flagged)
        return self._hops


def prepare(
    ships: pl.DataFrame,
    tables: Tables | History,
    params: Params,
    ship_mentions: pl.DataFrame | None = None,
    *,
    component_sizes: np.ndarray | None = None,
) -> pl.DataFrame:
    """Intermediate columns, one row per shipment in the order given:
    `__net_component` (largest of the consignee's and consignor's component, in
    parties), `__net_contact_parties` (most other parties behind one of their
    phones, e-mails or addresses), `__net_hops` (hops to an arms finding,
    `MAX_HOPS + 1` when none is that near).

    Shipments declared at or after the latest one `tables` holds read the
    union-find and the BFS kept at the end of the history; earlier ones replay
    the history's edges in time order (exact, as slow as a batch).
    `ship_mentions`: `mentions(ships)` when the caller has it. `component_sizes`:
    the sizes `Tables.append_swept` answered for these shipments (just appended:
    the kept BFS reads their months, as for shipments declared after the rest)."""
    del params
    if isinstance(tables, History):
        tables = Tables(tables.shipments, tables.outcomes)
    n = ships.height
    if ship_mentions is None:
        same = ships is tables.source and tables.mentions is not None
        ship_mentions = tables.mentions if same else mentions(ships)
    assert ship_mentions is not None
    # The consignor's then the consignee's mentions, each in the order of `ships`.
    queries = ship_mentions.slice(0, len(ROLES) * n)
    nodes = queries.get_column("party").to_list()
    times_q = queries.get_column("t")
    # (many queries: the months as a series, read as integers; few: in Python)
    months: list[dt.datetime] | pl.Series = (
        times_q.dt.truncate("1mo") if times_q.len() > 2 * SMALL_MAX_SHIPMENTS else _months(times_q)
    )
    latest = tables.latest
    online = n > 0 and latest is not None and bool((ships["declared_at"] >= latest).all())
    if component_sizes is not None and n > 0:
        sizes = component_sizes
        first = months.min() if isinstance(months, pl.Series) else min(months)
        hops = _hops_to_arms(tables.hops(cast(dt.datetime, first)), nodes, months)
    elif online:
        comp = tables.components()
        times = _epoch_us(queries.get_column("t"))
        sizes = np.array(
            [0 if v is None else comp.size_at(v, t) for v, t in zip(nodes, times, strict=True)],
            dtype=np.int64,
        )
        first = months.min() if isinstance(months, pl.Series) else min(months)
        hops = _hops_to_arms(tables.hops(cast(dt.datetime, first)), nodes, months)
    else:
        sizes = _component_sizes(tables.edges.filter(IDENTITY), queries)
        hops = _hops_to_arms(Hops(tables.edges, tables.flagged), nodes, months)

    # Per contact, the other parties behind the mention's value; the most over
    # the contacts and the shipment's two mentions.
    contact_parties: np.ndarray | None = None
    for contact in CONTACTS:
        seen = tables.contacts[contact]
        if n <= SMALL_MAX_SHIPMENTS:  # (the light answers: no frame per answer)
            distinct = distinct_columns(queries, contact, "t", seen, prefix="c")
            others = np.array(distinct.values["c_distinct"], dtype=np.int64)
            self_seen = np.array(pair_seen_values(queries, (contact, "party"), "t", seen))
        else:
            distinct_frame = distinct_query(queries, contact, "t", seen, prefix="c")
            others = distinct_frame.get_column("c_distinct").to_numpy()
            self_seen = pair_seen_query(queries, (contact, "party"), "t", seen).to_numpy()
        shared = others.astype(np.int64) - self_seen.astype(np.int64)
        contact_parties = shared if contact_parties is None else np.maximum(contact_parties, shared)
    assert contact_parties is not None
    return pl.DataFrame(
        [
            ships.get_column("shipment_id"),
            pl.Series("__net_component", sizes.reshape(len(ROLES), n).max(axis=0)),
            pl.Series(
                "__net_contact_parties",
                contact_parties.reshape(len(ROLES), n).max(axis=0),
            ),
            pl.Series("__net_hops", hops.reshape(len(ROLES), n).min(axis=0)),
        ]
    )


@feature(
    F,
    "Parties in the consignee's or consignor's network (connected through shared "
    "phones, e-mails and addresses), the larger of the two, as known before",
    "The consignee or consignor belongs to a network of {value} linked parties",
    "Получатель или отправитель входит в сеть из {value} "
    "{value|связанного участника|связанных участников|связанных участников}",
)
def network_component_parties() -> pl.Expr:
    return pl.col("__net_component")


@feature(
    F,
    "Most other parties seen before with one phone, e-mail or address of the consignee "
    "or consignor",
    "{value} other party(ies) used the same phone, e-mail or address",
    "Тот же телефон, e-mail или адрес ранее {value|указывал|указывали|указывали} ещё "
    "{value} {value|участник|участника|участников}",
)
def network_contact_parties() -> pl.Expr:
    return pl.col("__net_contact_parties")


@feature(
    F,
    f"Graph hops from the consignee or consignor to a party with an arms finding "
    f"(monthly snapshot; {MAX_HOPS + 1} = none within {MAX_HOPS})",
    "Linked within {value} step(s) to a party whose shipment had an arms finding",
    "Связан через {value} {value|звено|звена|звеньев} с участником, у которого изымали оружие",
    wordings=(
        Wording(
            lambda v, _c: v is not None and v > MAX_HOPS,
            f"No party with an arms finding within {MAX_HOPS} steps of the consignee or consignor",
            f"Нет участников с изъятием оружия в пределах {MAX_HOPS} звеньев от получателя "
            "или отправителя",
        ),
    ),
)
def network_hops_to_arms() -> pl.Expr:
    return pl.col("__net_hops")
