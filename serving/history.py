"""The history new shipments are scored against, in one place.

`HistoryStore` holds a `features.context.History`: the validated Parquet files at
start-up (the watchlists then replaced by the database's, `set_watchlist`), plus
what arrives through the API (shipments with their items, traveller records,
outcomes, watchlist changes), appended in memory. Readers take
a `snapshot()` (an immutable History); writers replace it whole under a lock, so a
request never sees half an update. The feature state new shipments are scored
against is kept here too, brought up to date with what arrived just before each
scoring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from data_contracts.settings import DataLayout
from features.context import History, appended, empty_history
from features.state import FeatureState, StateError


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    if frame.schema == schema:
        return frame
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def frame_of(rows: Iterable[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """A frame of exactly `schema` from row mappings (missing keys are null)."""
    names = schema.names()
    data = [{n: row.get(n) for n in names} for row in rows]
    return pl.DataFrame(data, schema=schema, orient="row")


def _merged(pending: list[dict[str, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """The pending rows of each kind in one frame, in arrival order."""
    kinds = dict.fromkeys(kind for rows in pending for kind in rows)
    return {kind: pl.concat([rows[kind] for rows in pending if kind in rows]) for kind in kinds}


def _append(
    old: pl.DataFrame, new: pl.DataFrame, key: str, held: set[Any] | None = None
) -> pl.DataFrame:
    """`new` after the rows of `old` with other keys. `held` (kept up to date here)
    holds at least the keys of `old`: when none of the new keys is in it, the usual
    case, the join over the whole of `old` is skipped."""
    if new.is_empty():
        return old
    new = _conform(new, old.schema)
    keys = new[key].to_list()
    kept = old
    if held is None or not held.isdisjoint(keys):
        kept = old.join(new.select(key), on=key, how="anti")
    if held is not None:
        held.update(keys)
    return appended(kept, new)


class HistoryStore:
    """The current History, replaced whole on every change (thread-safe), and the
    feature state new shipments are scored against.

    The state (`features.state.FeatureState`) is built once, on first use. Rows
    that arrive afterwards wait in a queue; each scoring first appends all that
    waits, in one call, then scores, holding one lock, so a request never reads a
    state half-way through an update and always sees every row recorded before it
    began (as appending after each request did, without paying an append per
    request when requests come together). A change the state cannot take
    incrementally (rows older than it, a new watchlist) drops it, and the next
    scoring builds it again from the history.
    """

    def __init__(self, history: History | None = None) -> None:
        self._history = history or empty_history()
        self._lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._state: FeatureState | None = None
        # Rows recorded since the state was last brought up to date, in arrival order
        # (`_lock` guards them with the history: a row is either in the history the
        # state is built from or waiting here, never both).
        self._pending: list[dict[str, pl.DataFrame]] = []
        # The ids held in the history's frames (supersets), built on first append.
        self._held: dict[tuple[str, str], set[Any]] = {}

    def _keys(self, table: str, frame: pl.DataFrame, column: str) -> set[Any]:
        held = self._held.get((table, column))
        if held is None:
            held = self._held[(table, column)] = set(frame[column].to_list())
        return held

    @contextmanager
    def scoring(self) -> Iterator[FeatureState]:
        """The current feature state, held for the duration of one scoring: built
        on first use, else first brought up to date with the rows recorded since
        (one `append` for all of them: its cost hardly depends on their number)."""
        with self._state_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                history = self._history
            if self._state is not None and pending:
                try:
                    self._state.append(**_merged(pending))
                except StateError:
                    self._state = None
            if self._state is None:
                self._state = FeatureState.build(history).warm()
            yield self._state

    def warm_up(self) -> None:
        """Build the state now, if it is not built (the server calls this in the
        background at start-up, so that no request waits for it)."""
        with self.scoring():
            pass

    @property
    def state_ready(self) -> bool:
        """Whether the state is built (a scoring will not have to build it)."""
        return self._state is not None

    def _record(self, **rows: pl.DataFrame) -> None:
        """Queue rows just added to the history for the state (`_lock` held)."""
        self._pending.append(rows)

    @classmethod
    def load(cls, layout: DataLayout) -> HistoryStore:
        """The validated history of the data directory (empty when there is none)."""
        if not (layout.validated / "shipments.parquet").exists():
            return cls()
        from pipelines.features import load_history

        h = load_history(layout)
        return cls(
            History(
                _conform(h.shipments, SHIPMENTS.polars_schema),
                _conform(h.items, ITEMS.polars_schema),
                _conform(h.outcomes, OUTCOMES.polars_schema),
                _conform(h.travellers, TRAVELLERS.polars_schema),
                None if h.watchlist is None else _conform(h.watchlist, WATCHLIST.polars_schema),
            )
        )

    def snapshot(self) -> History:
        return self._history

    def _held_rows(self, table: str, frame: pl.DataFrame, key: str, ids: set[str]) -> pl.DataFrame:
        """The rows of `frame` whose `key` is one of `ids` (`_lock` held); the set of
        keys held spares the scan in the usual case, when none is."""
        if not ids or self._keys(table, frame, key).isdisjoint(ids):
            return frame.clear()
        return frame.filter(pl.col(key).is_in(sorted(ids)))

    def held_shipments(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Shipments of the history (validated/ and those ingested since start) with
        these ids: id -> the record with its goods lines under "items"."""
        wanted = set(ids)
        with self._lock:
            h = self._history
            ships = self._held_rows("ships", h.shipments, "shipment_id", wanted)
            if ships.is_empty():
                return {}
            lines = h.items.filter(pl.col("shipment_id").is_in(ships["shipment_id"].to_list()))
        out: dict[str, dict[str, Any]] = {}
        for row in ships.to_dicts():
            out[str(row["shipment_id"])] = {**row, "items": []}
        for line in lines.sort("line_no").to_dicts():
            out[str(line["shipment_id"])]["items"].append(line)
        return out

    def item_owners(self, item_ids: Iterable[str]) -> dict[str, str]:
        """Goods line id -> the shipment the history holds it under, for these ids."""
        wanted = set(item_ids)
        with self._lock:
            h = self._history
            held = self._held_rows("items", h.items, "item_id", wanted)
        return {str(i): str(s) for i, s in held.select("item_id", "shipment_id").iter_rows()}

    def held_travellers(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Traveller records of the history with these ids: id -> record."""
        wanted = set(ids)
        with self._lock:
            h = self._history
            rows = self._held_rows("travellers", h.travellers, "traveller_record_id", wanted)
        return {str(r["traveller_record_id"]): r for r in rows.to_dicts()}

    def add_shipments(self, ships: pl.DataFrame, items: pl.DataFrame) -> None:
        ships = _conform(ships, SHIPMENTS.polars_schema)
        items = _conform(items, ITEMS.polars_schema)
        with self._lock:
            h = self._history
            item_ships = self._keys("items", h.items, "shipment_id")
            old_items = h.items
            if not item_ships.isdisjoint(ships["shipment_id"].to_list()):
                old_items = h.items.join(ships.select("shipment_id"), on="shipment_id", how="anti")
            item_ships.update(items["shipment_id"].to_list())
            self._history = History(
                _append(
                    h.shipments,
                    ships,
                    "shipment_id",
                    self._keys("ships", h.shipments, "shipment_id"),
                ),
                _append(old_items, items, "item_id", self._keys("items", h.items, "item_id")),
                h.outcomes,
                h.travellers,
                h.watchlist,
            )
            self._record(ships=ships, items=items)

    def add_travellers(self, travellers: pl.DataFrame) -> None:
        with self._lock:
            h = self._history
            self._history = History(
                h.shipments,
                h.items,
                h.outcomes,
                _append(
                    h.travellers,
                    travellers,
                    "traveller_record_id",
                    self._keys("travellers", h.travellers, "traveller_record_id"),
                ),
                h.watchlist,
            )
            self._record(traveller_rows=_conform(travellers, TRAVELLERS.polars_schema))

    def add_outcomes(self, outcomes: pl.DataFrame) -> None:
        with self._lock:
            h = self._history
            self._history = History(
                h.shipments,
                h.items,
                _append(
                    h.outcomes,
                    outcomes,
                    "outcome_id",
                    self._keys("outcomes", h.outcomes, "outcome_id"),
                ),
                h.travellers,
                h.watchlist,
            )
            self._record(outcomes=_conform(outcomes, OUTCOMES.polars_schema))

    def replace_watchlist(self, list_names: Iterable[str], entries: pl.DataFrame) -> None:
        """Replace the entries of the named lists with `entries`."""
        names = list(list_names)
        with self._lock:
            h = self._history
            new = _conform(entries, WATCHLIST.polars_schema)
            if h.watchlist is not None:
                kept = _conform(h.watchlist, WATCHLIST.polars_schema).filter(
                    ~pl.col("list_name").is_in(names)
                )
                new = pl.concat([kept, new], how="vertical")
            self._history = History(h.shipments, h.items, h.outcomes, h.travellers, new)
        with self._state_lock:
            self._state = None

    def set_watchlist(self, entries: pl.DataFrame | None) -> None:
        """Screen with `entries` (every list) from now on: at start-up, the lists held
        in the database (see `serving.services.restore_watchlists`)."""
        with self._lock:
            h = self._history
            new = None if entries is None else _conform(entries, WATCHLIST.polars_schema)
            self._history = History(h.shipments, h.items, h.outcomes, h.travellers, new)
        with self._state_lock:
            self._state = None
