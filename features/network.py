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
  added in time order to a `networkx.utils.UnionFind` and each shipment reads
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
"""

from __future__ import annotations

import polars as pl
from networkx import Graph, bfs_layers
from networkx.utils import UnionFind

from data_contracts.schemas import ARMS_CATEGORIES
from features.context import PARTY_ROLES, History, Params
from features.names import normalise_names
from features.registry import Family, feature
from features.timeline import distinct_before, pair_seen_before

F = Family.NETWORK
HUB_LIMIT = 20
# A truck serves many consignees of its carrier: only its first few link them.
VEHICLE_LIMIT = 5
MAX_HOPS = 4
CONTACTS = ("phone", "email", "address")
# Node prefixes: parties "p|", phones "t|", e-mails "e|", addresses "a|", vehicles "r|".
PREFIX = {"phone": "t|", "email": "e|", "address": "a|"}


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


def contact_keys(frame: pl.DataFrame, role: str) -> pl.DataFrame:
    """`phone`, `email`, `address` comparison keys of one role's columns."""
    return pl.DataFrame(
        {
            "phone": frame.select(phone_key(pl.col(f"{role}_phone"))).to_series(),
            "email": frame.select(email_key(pl.col(f"{role}_email"))).to_series(),
            "address": address_key(frame[f"{role}_address"]),
        }
    )


def _mentions(frame: pl.DataFrame) -> pl.DataFrame:
    """Long frame of (row, role, party node, contact keys, time) over the three roles."""
    parts = []
    for role in PARTY_ROLES:
        keys = contact_keys(frame, role)
        parts.append(
            pl.DataFrame(
                {
                    "__row": pl.int_range(frame.height, dtype=pl.UInt32, eager=True),
                    "role": pl.Series([role] * frame.height, dtype=pl.String),
                    "party": ("p|" + frame[f"{role}_key"].cast(pl.String)),
                    "t": frame["declared_at"],
                }
            ).hstack(keys)
        )
    return pl.concat(parts)


def _edges(history: pl.DataFrame, mentions: pl.DataFrame) -> pl.DataFrame:
    """Undirected edges (a < b) at their first time, hub-capped (see module doc);
    `trade` marks consignor-consignee edges."""
    hist = history.select(
        pl.col("declared_at").alias("t"),
        ("p|" + pl.col("consignor_key")).alias("consignor"),
        ("p|" + pl.col("consignee_key")).alias("consignee"),
        pl.when(pl.col("mode").cast(pl.String) == "road")
        .then("r|" + pl.col("conveyance_ref").str.to_uppercase().str.replace_all(r"[^0-9A-Z]", ""))
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
    edges = (
        pl.concat(raw)
        .drop_nulls()
        .filter(pl.col("u") != pl.col("v"))
        .select(pl.min_horizontal("u", "v").alias("a"), pl.max_horizontal("u", "v").alias("b"), "t")
        .group_by("a", "b")
        .agg(pl.col("t").min())
        .with_row_index("edge")
    )
    ends = pl.concat(
        [
            edges.select("edge", pl.col("a").alias("node"), pl.col("b").alias("other"), "t"),
            edges.select("edge", pl.col("b").alias("node"), pl.col("a").alias("other"), "t"),
        ]
    ).sort("node", "t", "other")
    limit = pl.when(pl.col("node").str.starts_with("r|")).then(VEHICLE_LIMIT).otherwise(HUB_LIMIT)
    rank = ends.with_columns((pl.int_range(pl.len()).over("node") >= limit).alias("over"))
    kept = rank.group_by("edge").agg(pl.col("over").any()).filter(~pl.col("over"))
    return (
        edges.join(kept.select("edge"), on="edge", how="semi")
        .with_columns(
            (pl.col("a").str.starts_with("p|") & pl.col("b").str.starts_with("p|")).alias("trade")
        )
        .sort("t", "a", "b")
    )


def _node_ids(edges: pl.DataFrame, queries: pl.DataFrame) -> pl.DataFrame:
    nodes = pl.concat([edges["a"], edges["b"], queries["node"]]).unique().sort()
    return pl.DataFrame({"node": nodes}).with_row_index("id")


def _component_sizes(edges: pl.DataFrame, queries: pl.DataFrame, ids: pl.DataFrame) -> pl.Series:
    """Parties in each query node's component from edges strictly before its time."""
    e = (
        edges.join(ids.rename({"node": "a", "id": "ia"}), on="a")
        .join(ids.rename({"node": "b", "id": "ib"}), on="b")
        .sort("t", "ia", "ib")
    )
    q = queries.join(ids, on="node", how="left", maintain_order="left").with_row_index("__q")
    q = q.sort("t", "__q")
    is_party = ids["node"].str.starts_with("p|").cast(pl.Int64).to_list()
    eu, ev = e["ia"].to_list(), e["ib"].to_list()
    et = e["t"].dt.epoch("us").to_list()
    qn, qt = q["id"].to_list(), q["t"].dt.epoch("us").to_list()
    uf = UnionFind()
    parties: dict[int, int] = {}
    sizes: list[int] = []
    i, n_edges = 0, len(eu)
    for node, t in zip(qn, qt, strict=True):
        while i < n_edges and et[i] < t:
            ru, rv = uf[eu[i]], uf[ev[i]]
            if ru != rv:
                total = parties.get(ru, is_party[ru]) + parties.get(rv, is_party[rv])
                uf.union(ru, rv)
                parties[uf[ru]] = total
            i += 1
        if node is None:
            sizes.append(0)
            continue
        root = uf[node]
        sizes.append(parties.get(root, is_party[root]))
    out = pl.Series("size", sizes, dtype=pl.Int64)
    return q.select("__q").with_columns(out).sort("__q")["size"]


def _hops_to_arms(edges: pl.DataFrame, queries: pl.DataFrame, flagged: pl.DataFrame) -> pl.Series:
    """Hops from each query node to a flagged party, on monthly snapshots."""
    q = queries.with_row_index("__q").with_columns(pl.col("t").dt.truncate("1mo").alias("month"))
    months = q["month"].unique().sort().to_list()
    graph = Graph()
    e_a, e_b, e_t = edges["a"].to_list(), edges["b"].to_list(), edges["t"].to_list()
    f_node, f_t = flagged["node"].to_list(), flagged["t"].to_list()
    i = j = 0
    sources: set[str] = set()
    frames: list[pl.DataFrame] = []
    for month in months:
        start = i
        while i < len(e_t) and e_t[i] < month:
            i += 1
        graph.add_edges_from(zip(e_a[start:i], e_b[start:i], strict=True))
        while j < len(f_t) and f_t[j] < month:
            sources.add(f_node[j])
            j += 1
        if not sources:
            continue
        graph.add_nodes_from(sources)
        nodes: list[str] = []
        hops: list[int] = []
        for depth, layer in enumerate(bfs_layers(graph, sources)):
            if depth > MAX_HOPS:
                break
            nodes.extend(layer)
            hops.extend([depth] * len(layer))
        frames.append(
            pl.DataFrame({"node": nodes, "hops": pl.Series(hops, dtype=pl.Int64)}).with_columns(
                pl.lit(month, dtype=q["month"].dtype).alias("month")
            )
        )
    if not frames:
        return pl.Series("hops", [None] * q.height, dtype=pl.Int64)
    near = pl.concat(frames)
    return q.join(near, on=["month", "node"], how="left", maintain_order="left")["hops"]


def _flagged(history: History) -> pl.DataFrame:
    """Party nodes (consignor, consignee) of shipments with an arms finding, by
    the time the finding was recorded, first time per party, in time order."""
    arms = history.outcomes.filter(
        pl.col("finding") & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES)
    ).join(
        history.shipments.select("shipment_id", "consignor_key", "consignee_key"),
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


def prepare(ships: pl.DataFrame, history: History, params: Params) -> pl.DataFrame:
    """Intermediate columns, one row per shipment in the order given:
    `__net_component` (largest of the consignee's and consignor's component, in
    parties), `__net_contact_parties` (most other parties behind one of their
    phones, e-mails or addresses), `__net_hops` (hops to an arms finding,
    `MAX_HOPS + 1` when none is that near)."""
    del params
    hist_mentions = _mentions(history.shipments)
    edges = _edges(history.shipments, hist_mentions)
    n = ships.height
    roles = ("consignee", "consignor")
    queries = pl.concat(
        [
            ships.select(
                ("p|" + pl.col(f"{r}_key")).alias("node"), pl.col("declared_at").alias("t")
            )
            for r in roles
        ]
    )
    ids = _node_ids(edges, queries)
    identity = (
        ~pl.col("trade") & ~pl.col("a").str.starts_with("r|") & ~pl.col("b").str.starts_with("r|")
    )
    sizes = _component_sizes(edges.filter(identity), queries, ids)
    hops = _hops_to_arms(edges, queries, _flagged(history))

    same = ships is history.shipments  # batch: the queries are the history
    ship_mentions = (hist_mentions if same else _mentions(ships)).filter(
        pl.col("role").is_in(roles)
    )
    shared: list[pl.Series] = []
    for contact in CONTACTS:
        others = distinct_before(
            ship_mentions, contact, "t", hist_mentions, contact, "party", "t", prefix="c"
        )["c_distinct"]
        self_seen = pair_seen_before(
            ship_mentions, (contact, "party"), "t", hist_mentions, (contact, "party"), "t"
        )
        shared.append((others.cast(pl.Int64) - self_seen.cast(pl.Int64)).alias(contact))
    contact_parties = (
        ship_mentions.select("__row")
        .hstack(shared)
        .group_by("__row")
        .agg(pl.max_horizontal(*CONTACTS).max().alias("__net_contact_parties"))
    )
    frame = pl.DataFrame(
        {
            "shipment_id": ships["shipment_id"],
            "__row": pl.int_range(n, dtype=pl.UInt32, eager=True),
            "__c1": sizes[:n],
            "__c2": sizes[n:],
            "__h1": hops[:n],
            "__h2": hops[n:],
        }
    )
    return frame.join(contact_parties, on="__row", how="left", maintain_order="left").select(
        "shipment_id",
        pl.max_horizontal("__c1", "__c2").alias("__net_component"),
        pl.col("__net_contact_parties").fill_null(0),
        pl.min_horizontal("__h1", "__h2").fill_null(MAX_HOPS + 1).alias("__net_hops"),
    )


@feature(
    F,
    "Parties in the consignee's or consignor's network (connected through trade, "
    "phones, e-mails, addresses, vehicles), the larger of the two, as known before",
    "The consignee or consignor belongs to a network of {value} linked parties",
    "Получатель или отправитель входит в сеть из {value} связанных участников",
)
def network_component_parties() -> pl.Expr:
    return pl.col("__net_component")


@feature(
    F,
    "Most other parties seen before with one phone, e-mail or address of the consignee "
    "or consignor",
    "{value} other party(ies) used the same phone, e-mail or address",
    "Тот же телефон, e-mail или адрес ранее указывали ещё {value} участник(ов)",
)
def network_contact_parties() -> pl.Expr:
    return pl.col("__net_contact_parties")


@feature(
    F,
    f"Graph hops from the consignee or consignor to a party with an arms finding "
    f"(monthly snapshot; {MAX_HOPS + 1} = none within {MAX_HOPS})",
    "Linked within {value} step(s) to a party whose shipment had an arms finding",
    "Связан через {value} звен. с участником, у которого изымали оружие",
)
def network_hops_to_arms() -> pl.Expr:
    return pl.col("__net_hops")
