"""The history new shipments are scored against, in one place.

`HistoryStore` holds a `features.context.History`: the validated Parquet files at
start-up, plus what arrives through the API (shipments with their items,
traveller records, outcomes, watchlist changes), appended in memory. Readers take
a `snapshot()` (an immutable History); writers replace it whole under a lock, so a
request never sees half an update. This is the one place to switch to the
incremental feature state later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from data_contracts.settings import DataLayout
from features.context import History, empty_history
from features.state import FeatureState, StateError


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def frame_of(rows: Iterable[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """A frame of exactly `schema` from row mappings (missing keys are null)."""
    names = schema.names()
    data = [{n: row.get(n) for n in names} for row in rows]
    return pl.DataFrame(data, schema=schema, orient="row")


def _append(old: pl.DataFrame, new: pl.DataFrame, key: str) -> pl.DataFrame:
    if new.is_empty():
        return old
    new = _conform(new, old.schema)
    kept = old.join(new.select(key), on=key, how="anti") if key else old
    return pl.concat([kept, new], how="vertical", rechunk=False)


class HistoryStore:
    """The current History, replaced whole on every change (thread-safe), and the
    feature state new shipments are scored against.

    The state (`features.state.FeatureState`) is built once, on first use, and
    then kept up to date with `append` as rows arrive; scoring and appending hold
    one lock, so a request never reads a state half-way through an update. A
    change the state cannot take incrementally (rows older than it, a new
    watchlist) drops it, and the next scoring builds it again.
    """

    def __init__(self, history: History | None = None) -> None:
        self._history = history or empty_history()
        self._lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._state: FeatureState | None = None

    @contextmanager
    def scoring(self) -> Iterator[FeatureState]:
        """The current feature state, held for the duration of one scoring."""
        with self._state_lock:
            if self._state is None:
                self._state = FeatureState.build(self._history).warm()
            yield self._state

    def _update_state(self, **rows: pl.DataFrame) -> None:
        with self._state_lock:
            if self._state is None:
                return
            try:
                self._state.append(**rows)
            except StateError:
                self._state = None

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

    def add_shipments(self, ships: pl.DataFrame, items: pl.DataFrame) -> None:
        with self._lock:
            h = self._history
            ids = ships.select("shipment_id")
            old_items = h.items.join(ids, on="shipment_id", how="anti")
            self._history = History(
                _append(h.shipments, ships, "shipment_id"),
                _append(old_items, items, "item_id"),
                h.outcomes,
                h.travellers,
                h.watchlist,
            )
        self._update_state(
            ships=_conform(ships, SHIPMENTS.polars_schema),
            items=_conform(items, ITEMS.polars_schema),
        )

    def add_travellers(self, travellers: pl.DataFrame) -> None:
        with self._lock:
            h = self._history
            self._history = History(
                h.shipments,
                h.items,
                h.outcomes,
                _append(h.travellers, travellers, "traveller_record_id"),
                h.watchlist,
            )
        self._update_state(traveller_rows=_conform(travellers, TRAVELLERS.polars_schema))

    def add_outcomes(self, outcomes: pl.DataFrame) -> None:
        with self._lock:
            h = self._history
            self._history = History(
                h.shipments,
                h.items,
                _append(h.outcomes, outcomes, "outcome_id"),
                h.travellers,
                h.watchlist,
            )
        self._update_state(outcomes=_conform(outcomes, OUTCOMES.polars_schema))

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
