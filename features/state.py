"""The feature state: what every feature call needs of the history, built once.

`FeatureState.build(history, params)` precomputes, from the recorded history:

* the party keys of its shipments (`features.context.party_keys`);
* goods: per HS6 x origin and per HS6, per month, the cumulative reference
  aggregates of the unit values and masses (`features.goods.Reference`), and the
  undervaluation flag of every history shipment;
* trader: per party key, the cumulative as-of tables of shipments and of
  inspections, and the first-seen tables of chapters and contacts
  (`features.trader.Tables`);
* network: the contact first-seen tables, the hub-capped edges, the findings,
  and (on first online use) the union-find and monthly BFS as of the end of the
  history (`features.network.Tables`);
* travellers: per contact the names seen with it, the records' keys and hash
  indexes, their trips (`features.travellers.Tables`);
* the watchlist index.

Every table is sorted by key and indexed (key -> row slice), so a query for one
or a few shipments reads only their keys' rows; the batch reads whole tables.
Both run the family code in `features.build.build_features`: batch is the state
of the full history queried for all its shipments, online the same state queried
for one new shipment (`online_features`).

Point in time. Every as-of table is cut at each query's declared_at, so a
shipment of any date gets the features it would have had. The network's
union-find cannot be cut: it is kept as of the latest shipment held
(`as_of`). A query declared at or after `as_of` reads it; an earlier one replays
the edges from the start (exact, as slow as a batch). `online_features` refuses
shipments declared before `as_of`.

Late arrivals (the service). A shipment reaching the API after shipments declared
later than it (several offices, retries, a message a few minutes late) is
declared before `as_of`. Its features are point in time like any other's, except
with `read_late_as_of_arrival` set (the service's state,
`serving.history.HistoryStore`) the network family's (component size, contact
sharing, hops to an arms finding): those are read as of `as_of`, as of its
arrival, which may include parties and links recorded after its declared_at.
The exact answer would replay the network's edges from the start, which costs
what a batch costs; a batch re-run (`caravan features`) computes them point in
time.

`append` adds newly recorded rows (the API ingests one shipment at a time)
without rebuilding: the as-of tables take new rows at the end of their keys;
the result equals a state built from scratch on the combined history. Rows must
not precede what is held (shipments declared before `as_of`, an inspection
recorded before an earlier inspection of the same party): `append` refuses them.
What is still rebuilt on append: when traveller records are appended, their keys
and indexes; the network's BFS, on next use, when an appended edge or finding is
of a month it has already read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from features import goods, network, shipment, trader, travellers, watchlist
from features.context import PARTY_ROLES, History, Params, appended, party_keys
from features.names import shared_normalisation
from features.screening import WatchlistIndex
from features.timeline import FirstSeen, KeyedRows


@dataclass(frozen=True)
class _Prepared:
    """An online query's new shipments and lines, their party keys, goods frame and
    contact mentions."""

    ships: pl.DataFrame
    items: pl.DataFrame
    keyed: pl.DataFrame
    goods: pl.DataFrame
    mentions: pl.DataFrame | None


# Appends queued at most before they are joined to the state's frames. Stacking
# onto the queue costs the same however long it is (some 40 us an append); joining
# it costs about 1.2 ms for 64 appends, 7 ms for 1,024 (measured here against a
# 100,000-shipment history; about 3 ms and 10 ms inside the service). At 64, every
# 64th request paid it: 1.6 % of them, inside the 99th percentile of a single
# ingest's latency; at 1,024, one request in 1,024, and less in all.
MAX_TAIL = 1024


class _Tail:
    """The rows appended since the state's frames were last joined with them: per
    frame (`FRAMES`), one frame that each append's rows are stacked onto in place,
    as chunks (about 10 us a frame), so that joining them (`joined`) is one
    rechunk of the rows waiting, not a concatenation of one frame per append
    (some 6 ms for 64 appends)."""

    FRAMES = ("ships", "items", "outcomes", "travellers", "keyed", "goods")

    def __init__(self) -> None:
        self.appends = 0
        self._frames: dict[str, pl.DataFrame] = {}

    def __len__(self) -> int:
        return self.appends

    def add(self, **rows: pl.DataFrame) -> None:
        """Queue one append's rows (each with the schema of the state's frame it
        joins: `FeatureState._check_schemas`; empty frames add nothing)."""
        assert set(rows) == set(self.FRAMES), sorted(rows)
        for name, frame in rows.items():
            if not frame.height:
                continue
            held = self._frames.get(name)
            if held is None:
                # (a shallow copy: stacking onto it leaves the caller's frame as it is)
                self._frames[name] = frame.clone()
            else:
                held.vstack(frame, in_place=True)
        self.appends += 1

    def joined(self, name: str, old: pl.DataFrame) -> pl.DataFrame:
        """`old` followed by the rows of `name` waiting (in one chunk)."""
        new = self._frames.get(name)
        return old if new is None else appended(old, new.rechunk())


class StateError(ValueError):
    """A query or an append the state cannot answer exactly."""


class FeatureState:
    """See the module doc."""

    def __init__(
        self,
        params: Params,
        history: History,
        keyed: pl.DataFrame,
        reference: goods.Reference,
        goods_frame: pl.DataFrame,
        trader_tables: trader.Tables,
        traveller_tables: travellers.Tables,
        network_tables: network.Tables,
        watch_index: WatchlistIndex | None,
    ):
        self.params = params
        self._history = history
        self._keyed = keyed  # history shipments with `<role>_key`
        self.reference = reference
        self._goods_frame = goods_frame  # goods.prepare of the history shipments
        # Rows appended since the frames above were last joined with them (`_settle`):
        # appends only queue them; reading `history`, `keyed` or `goods_frame` joins.
        self._tail = _Tail()
        self._no_inspections: pl.DataFrame | None = None
        self.trader = trader_tables
        self.travellers = traveller_tables
        self.network = network_tables
        self.watch_index = watch_index
        # What the last online query computed of its new shipments (`_Prepared`):
        # `append` of the same shipments, the API's next step, reuses it.
        self._prepared: _Prepared | None = None
        # Queries declared before `as_of` read the history as of `as_of` (see the
        # module doc: the service's late arrivals); off, they are answered exactly.
        self.read_late_as_of_arrival = False

    @property
    def history(self) -> History:
        """Everything the state holds (the history it was built on and what was
        appended since)."""
        self._settle()
        return self._history

    @property
    def watchlist(self) -> pl.DataFrame | None:
        """The watchlist the state screens with (appends never change it, so this
        does not join the queued appends as `history` does)."""
        return self._history.watchlist

    @property
    def keyed(self) -> pl.DataFrame:
        """The shipments held, with `<role>_key`."""
        self._settle()
        return self._keyed

    @property
    def goods_frame(self) -> pl.DataFrame:
        """`goods.prepare` of the shipments held."""
        self._settle()
        return self._goods_frame

    def _settle(self) -> None:
        """Join the queued appended rows to the frames (one rechunk and one
        concatenation each)."""
        if not self._tail:
            return
        tail, self._tail = self._tail, _Tail()
        h = self._history
        self._history = History(
            tail.joined("ships", h.shipments),
            tail.joined("items", h.items),
            tail.joined("outcomes", h.outcomes),
            tail.joined("travellers", h.travellers),
            h.watchlist,
        )
        self._keyed = tail.joined("keyed", self._keyed)
        self._goods_frame = tail.joined("goods", self._goods_frame)

    @classmethod
    def build(cls, history: History, params: Params | None = None) -> FeatureState:
        params = params or Params()
        ships = history.shipments
        # (the parties' names and addresses are normalised for several tables: once)
        with shared_normalisation():
            keyed = party_keys(ships)
            reference = goods.Reference.build(ships, history.items, params)
            goods_frame = goods.prepare(ships, history.items, reference, params)
            events = trader.shipment_events(keyed, goods.undervalued_flags(goods_frame))
            trader_tables = trader.Tables.build(
                events, history.items, trader.outcome_events(history.outcomes, keyed)
            )
            wl = history.watchlist
            index = watchlist.watchlist_index(wl) if wl is not None and wl.height > 0 else None
            # (the parties' contact keys: the network's, for the travellers too)
            network_tables = network.Tables(keyed, history.outcomes)
            return cls(
                params,
                history,
                keyed,
                reference,
                goods_frame,
                trader_tables,
                travellers.Tables(keyed, history.travellers, params, network_tables.mentions),
                network_tables,
                index,
            )

    def warm(self) -> FeatureState:
        """Build now what online queries and appends would otherwise build on
        first use: the key indexes of every table, the record indexes, the edge
        ends, the union-find and the BFS snapshot of the month of `as_of`, the
        trader family's check of contact characters; and screen the history's
        party names against the watchlist, so that a shipment of a trader seen
        before finds its screening done."""
        trader.warm()
        if self.watch_index is not None:
            ships = self.history.shipments
            names = pl.concat([ships.get_column(f"{r}_name").cast(pl.String) for r in PARTY_ROLES])
            watchlist.prime(self.watch_index, names.unique().drop_nulls().to_list())
        for table in self.tables():
            table.index()
        self.travellers.records.index()
        self.network.ends.index()
        self.network.source = self.network.mentions = None  # (batch-only: memory)
        self.network.components()
        as_of = self.as_of
        if as_of is not None:
            month = as_of.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            self.network.hops(month).at(month)
        return self

    def tables(self) -> list[KeyedRows]:
        """Every keyed table the state holds."""
        rows: list[KeyedRows] = [t.rows for t in self.reference.tables.values()]
        seen: list[FirstSeen] = [self.trader.chapters, *self.trader.contacts.values()]
        seen += [*self.network.contacts.values(), *self.travellers.shared.values()]
        rows += [t.rows for t in (*self.trader.seen.values(), *self.trader.inspections.values())]
        for s in seen:
            rows += [s.firsts, s.counts.rows]
        return rows

    @property
    def as_of(self) -> dt.datetime | None:
        """The latest declared_at of the shipments held (None when empty)."""
        return self.network.latest

    def family_frames(self, ships: pl.DataFrame, items: pl.DataFrame) -> list[pl.DataFrame]:
        """The intermediate frames of the six families for `ships`, in order."""
        params = self.params
        # (a batch passes `history.shipments`, read just before: nothing queued)
        batch = not self._tail and ships is self._history.shipments
        ships_k = self.keyed if batch else party_keys(ships)
        goods_frame = (
            self.goods_frame if batch else goods.prepare(ships, items, self.reference, params)
        )
        # The parties' contact keys, computed once for the two families reading them
        # (a batch over the history reuses the network's tables', when it holds them).
        if batch:
            net = self.network
            mentions = net.mentions if net.source is ships_k else None
        else:
            mentions = network.mentions(ships_k)
        if not batch:
            self._prepared = _Prepared(ships, items, ships_k, goods_frame, mentions)
        # What the network family reads (late shipments: see `_network_query`).
        net_k, net_mentions = (
            (ships_k, mentions) if batch else self._network_query(ships_k, mentions)
        )
        return [
            shipment.prepare(ships, items, params),
            goods_frame,
            trader.prepare(ships_k, self.trader),
            watchlist.prepare(ships_k, self._history.watchlist, params, self.watch_index),
            travellers.prepare(ships_k, self.travellers, params, mentions),
            network.prepare(net_k, self.network, params, net_mentions),
        ]

    def _network_query(
        self, ships_k: pl.DataFrame, mentions: pl.DataFrame | None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """The shipments (with keys) and their contact mentions as the network family
        reads them for an online query: with `read_late_as_of_arrival`, those
        declared before `as_of` at `as_of` (as of their arrival, see the module
        doc); else (and when none is) as given."""
        as_of = self.as_of
        if (
            not self.read_late_as_of_arrival
            or as_of is None
            or not ships_k.height
            or not bool((ships_k["declared_at"] < as_of).any())
        ):
            return ships_k, mentions
        at = pl.lit(as_of).cast(ships_k.schema["declared_at"])
        late = ships_k.with_columns(
            pl.when(pl.col("declared_at") < at)
            .then(at)
            .otherwise(pl.col("declared_at"))
            .alias("declared_at")
        )
        return late, network.mentions(late)

    def replace_watchlist(self, entries: pl.DataFrame | None) -> None:
        """Screen with `entries` from now on: the state a build on the same history
        with this watchlist gives (only the watchlist family reads it), without the
        rebuild. The history's names are screened against it on first use."""
        h = self._history
        self._history = History(h.shipments, h.items, h.outcomes, h.travellers, entries)
        self.watch_index = (
            watchlist.watchlist_index(entries)
            if entries is not None and entries.height > 0
            else None
        )

    def check_online(self, ships: pl.DataFrame) -> None:
        """Online queries must be declared at or after `as_of` (see the module doc)."""
        as_of = self.as_of
        if as_of is not None and ships.height and bool((ships["declared_at"] < as_of).any()):
            raise StateError(
                f"online features need shipments declared at or after the state's as_of "
                f"({as_of.isoformat()}); earlier ones: use build_features (a replay)"
            )

    def _check_schemas(self, **rows: pl.DataFrame) -> None:
        """Appended rows must have the columns and types of the frames they join
        (`StateError` before anything changes; empty frames add nothing)."""
        h = self._history
        held = {"ships": h.shipments, "items": h.items}
        held |= {"outcomes": h.outcomes, "travellers": h.travellers}
        for name, frame in rows.items():
            if frame.height and frame.schema != held[name].schema:
                raise StateError(
                    f"appended {name} do not have the columns and types of those held: "
                    f"{dict(frame.schema)} against {dict(held[name].schema)}"
                )

    def _reuse(self, ships: pl.DataFrame, items: pl.DataFrame) -> _Prepared | None:
        """What the last online query prepared, when it was for exactly these
        shipments and lines (consumed: used once)."""
        prepared, self._prepared = self._prepared, None
        if prepared is None or not ships.height:
            return None
        if prepared.ships.equals(ships) and prepared.items.equals(items):
            return prepared
        return None

    def append_sequence(self, ships: pl.DataFrame, items: pl.DataFrame) -> list[pl.DataFrame]:
        """Append new shipments (with their goods lines) and return their family
        frames (`family_frames`' six, one row per shipment in the order given),
        each shipment's as if they had been appended and queried one at a time in
        declaration order: every family reads what was declared strictly before
        it, the earlier shipments of `ships` included (a service's batch, scored
        in one pass; `caravan features` counts them so). The as-of tables are cut
        at each shipment's declared_at; the network's union-find is swept through
        the new edges (`network.Tables.append_swept`). Refused (`StateError`,
        nothing changed) when one is declared before `as_of`; the rows join the
        state whatever the caller does next (a caller that does not keep them
        must drop the state)."""
        self.check_online(ships)
        self._check_schemas(ships=ships, items=items)
        params = self.params
        keyed = party_keys(ships)
        mentions = network.mentions(keyed)
        # The reference first: a line is compared only with earlier months, which
        # `ships` may hold too (those of an earlier month count for a later one).
        self.reference.append(ships, items, params)
        new_goods = goods.prepare(ships, items, self.reference, params)
        if self._no_inspections is None:
            self._no_inspections = trader.outcome_events(
                self._history.outcomes.clear(), keyed.clear()
            )
        self.trader.append(
            trader.shipment_events(keyed, goods.undervalued_flags(new_goods)),
            items,
            self._no_inspections,
        )
        sizes = self.network.append_swept(keyed, mentions)
        self.travellers.append(keyed, None, params, mentions)
        h = self._history
        self._tail.add(
            ships=ships,
            items=items,
            outcomes=h.outcomes.clear(),
            travellers=h.travellers.clear(),
            keyed=keyed,
            goods=new_goods,
        )
        if len(self._tail) >= MAX_TAIL:
            self._settle()
        self._prepared = None
        return [
            shipment.prepare(ships, items, params),
            new_goods,
            trader.prepare(keyed, self.trader),
            watchlist.prepare(keyed, self._history.watchlist, params, self.watch_index),
            travellers.prepare(keyed, self.travellers, params, mentions),
            network.prepare(keyed, self.network, params, mentions, component_sizes=sizes),
        ]

    def append(
        self,
        ships: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        outcomes: pl.DataFrame | None = None,
        traveller_rows: pl.DataFrame | None = None,
    ) -> None:
        """Add rows recorded after the state (validated contract frames; `items`
        are the goods lines of `ships`). Refused (`StateError`, nothing changed):
        shipments declared before `as_of`, an inspection recorded before an
        earlier one of the same party. Outcomes of shipments not held are
        ignored, as a batch ignores them."""
        params = self.params
        base = self._history  # (its frames' schemas, without joining the queued rows)
        ships = ships if ships is not None else base.shipments.clear()
        items = items if items is not None else base.items.clear()
        outcomes = outcomes if outcomes is not None else base.outcomes.clear()
        traveller_rows = traveller_rows if traveller_rows is not None else base.travellers.clear()
        as_of = self.as_of
        if as_of is not None and ships.height and bool((ships["declared_at"] < as_of).any()):
            raise StateError(f"appended shipments must be declared at or after {as_of.isoformat()}")
        self._check_schemas(ships=ships, items=items, outcomes=outcomes, travellers=traveller_rows)
        prepared = self._reuse(ships, items)
        keyed = party_keys(ships) if prepared is None else prepared.keyed
        # The shipments of the outcomes (a scan of every shipment held: only when
        # there are outcomes, which officers record far less often than shipments
        # arrive).
        if outcomes.height:
            touched = appended(self.keyed, keyed).filter(
                pl.col("shipment_id").is_in(outcomes["shipment_id"].implode())
            )
            inspections = trader.outcome_events(outcomes, touched)
        else:
            touched = keyed.clear()
            if self._no_inspections is None:
                self._no_inspections = trader.outcome_events(outcomes, touched)
            inspections = self._no_inspections
        for table in self.trader.inspections.values():  # before changing anything
            try:
                table.check(inspections)
            except ValueError as error:
                raise StateError(
                    f"{error} (an inspection recorded before an earlier one of the same party)"
                ) from error
        # The reference first: a line is compared only with earlier months, which
        # the appended rows may hold too.
        self.reference.append(ships, items, params)
        # (Prepared before the reference took these lines: the same values, since a
        # line is compared only with months before its own.)
        new_goods = (
            goods.prepare(ships, items, self.reference, params)
            if prepared is None
            else prepared.goods
        )
        self.trader.append(
            trader.shipment_events(keyed, goods.undervalued_flags(new_goods)), items, inspections
        )
        mentions = None
        if ships.height:
            mentions = network.mentions(keyed) if prepared is None else prepared.mentions
        self.network.append(keyed, outcomes, touched, mentions)
        self.travellers.append(keyed, traveller_rows, params, mentions)
        self._tail.add(
            ships=ships,
            items=items,
            outcomes=outcomes,
            travellers=traveller_rows,
            keyed=keyed,
            goods=new_goods,
        )
        if len(self._tail) >= MAX_TAIL:  # (a service may never read them: bound the queue)
            self._settle()
