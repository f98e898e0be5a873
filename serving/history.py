"""The history new shipments are scored against, in one place.

`HistoryStore` holds a `features.context.History`: the validated Parquet files at
start-up (the watchlists then replaced by the database's, `set_watchlist`), plus
what arrives through the API (shipments with their items, traveller records,
outcomes, watchlist changes), appended in memory. Readers take
a `snapshot()` (an immutable History); writers replace it whole under a lock, so a
request never sees half an update. The feature state new shipments are scored
against is kept here too, brought up to date with what arrived just before each
scoring; what it cannot take in order (late arrivals) reaches it through a rebuild
in the background, while requests are served from the state as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from data_contracts.fields import Contract
from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from data_contracts.settings import DataLayout
from features.context import History, appended, empty_history
from features.state import FeatureState, StateError

log = logging.getLogger(__name__)


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """`frame` with exactly the columns of `schema`, in its order and types (cast)."""
    # (Compared column by column: a frame's `schema` costs a tenth of a millisecond
    # to build for a shipment's sixty columns, and a request conforms several.)
    if _same_columns(frame, schema.names(), list(schema.dtypes())):
        return frame
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def _same_columns(frame: pl.DataFrame, names: list[str], dtypes: list[pl.DataType]) -> bool:
    """Whether `frame` has exactly these columns, in this order, of exactly these
    types (as `pl.Schema` compares them)."""
    return frame.columns == names and all(
        a.is_(b) for a, b in zip(frame.dtypes, dtypes, strict=True)
    )


_SCHEMAS: dict[str, pl.Schema] = {}


def contract_schema(contract: Contract) -> pl.Schema:
    """`contract.polars_schema`, built once per contract (a contract never changes;
    building its schema costs about as much as conforming a frame to it). Do not
    change the schema returned: it is shared."""
    schema = _SCHEMAS.get(contract.name)
    if schema is None:
        schema = _SCHEMAS[contract.name] = contract.polars_schema
    return schema


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
    if not _same_columns(new, old.columns, old.dtypes):
        new = _conform(new, old.collect_schema())
    keys = new[key].to_list()
    kept = old
    if held is None or not held.isdisjoint(keys):
        kept = old.join(new.select(key), on=key, how="anti")
    if held is not None:
        held.update(keys)
    return appended(kept, new)


def _built(history: History, *, private_index: bool = False) -> FeatureState:
    """The service's feature state of `history` (the network features of late
    shipments read as of their arrival). `private_index`: screen with an index of
    its own (a background build must not prime the index the serving state reads),
    starting from a copy of the names that index has screened (the same index, so
    the same matches): priming then screens only names new since (a copy is taken
    at once, whatever another thread does meanwhile)."""
    state = FeatureState.build(history)
    state.read_late_as_of_arrival = True
    if private_index and state.watch_index is not None:
        screened = state.watch_index.memo.copy()
        state.watch_index = dataclasses.replace(state.watch_index, memo=screened)
    return state.warm()


def _append_in_order(state: FeatureState, pending: list[dict[str, pl.DataFrame]]) -> bool:
    """Append `pending` (in arrival order) to `state`; what it refuses as out of
    order (`StateError`) is left out: the shipments declared before its `as_of`
    with their lines, then, if need be, the outcomes. True when all was appended."""
    rows = _merged(pending)
    try:
        state.append(**rows)
        return True
    except StateError as error:
        log.debug("feature state: rows out of order wait for a background rebuild (%s)", error)
    as_of = state.as_of
    ships = rows.get("ships")
    if ships is not None and as_of is not None:
        in_order = ships.filter(ships["declared_at"] >= as_of)
        rows["ships"] = in_order
        if "items" in rows:
            rows["items"] = rows["items"].join(
                in_order.select("shipment_id"), on="shipment_id", how="semi"
            )
    for fitting in (rows, {k: v for k, v in rows.items() if k != "outcomes"}):
        try:
            state.append(**fitting)
            return False
        except StateError:
            continue
    return False


class HistoryStore:
    """The current History, replaced whole on every change (thread-safe), and the
    feature state new shipments are scored against.

    The state (`features.state.FeatureState`) is built once, on first use (the
    server does it in the background at start-up: `warm_up`). Rows that arrive
    afterwards wait in a queue; each scoring first appends all that waits, in one
    call, then scores, holding one lock, so a request never reads a state half-way
    through an update and always sees every row recorded before it began (as
    appending after each request did, without paying an append per request when
    requests come together).

    Late arrivals. The state takes only rows in order: shipments declared at or
    after the latest one it holds (`as_of`), inspections recorded after the
    earlier ones of the same party. A late row (normal in production: several
    offices, retries) never makes a request wait for a rebuild: the rows that fit
    are appended, and the others reach the state through a rebuild from the whole
    history in a background thread (`_rebuild_loop`), one at a time, the next one
    starting `rebuild_gap_seconds` (or as long as the last one took) after the end
    of the last; requests keep being scored against the current state meanwhile,
    and the rows recorded during the rebuild are appended to the new state when it
    replaces the old one (late ones among them: another rebuild), so none is lost.
    A late shipment itself is scored at once: point in time, but for its network
    features, read as of its arrival (`FeatureState.read_late_as_of_arrival`).

    A watchlist change is applied to the state in place (`replace_watchlist`).
    """

    # A stream of late arrivals rebuilds the state at most this often (seconds between
    # the end of one rebuild and the start of the next, or as long as the last one
    # took if longer; after a failure, `REBUILD_RETRY_SECONDS`).
    REBUILD_GAP_SECONDS = 10.0
    REBUILD_RETRY_SECONDS = 60.0

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
        # Background rebuilds (`_lock` guards these): the running one's thread; the
        # rows recorded since the history it builds from (None when none runs);
        # whether a scoring left rows out since it started; whether the state misses
        # rows of the history (until a rebuild catches up).
        self.rebuild_gap_seconds = self.REBUILD_GAP_SECONDS
        self._rebuilder: threading.Thread | None = None
        self._rebuild_rows: list[dict[str, pl.DataFrame]] | None = None
        self._rebuild_wanted = False
        self._stale = False
        self._next_rebuild = 0.0  # (time.monotonic)
        # Builds a scoring did itself (the first state only) and background rebuilds done.
        self.inline_builds = 0
        self.rebuilds = 0
        self.last_rebuild_seconds = 0.0  # (how long the last background rebuild took)

    def _keys(self, table: str, frame: pl.DataFrame, column: str) -> set[Any]:
        held = self._held.get((table, column))
        if held is None:
            held = self._held[(table, column)] = set(frame[column].to_list())
        return held

    @contextmanager
    def scoring(self) -> Iterator[FeatureState]:
        """The current feature state, held for the duration of one scoring: built
        on first use, else first brought up to date with the rows recorded since
        (one `append` for all of them: its cost hardly depends on their number).
        Rows it cannot take in order wait for a background rebuild (see the class
        doc): the state is never rebuilt here once it exists."""
        with self._state_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                history = self._history
                stale = self._stale
            if self._state is None:
                self._state = _built(history)
                self.inline_builds += 1
            elif pending and not _append_in_order(self._state, pending):
                self._rebuild_later(again=True)
            elif stale:  # (a rebuild runs already, but for a failure: a safety net)
                self._rebuild_later(again=False)
            yield self._state

    def _rebuild_later(self, *, again: bool) -> None:
        """Have the state rebuilt in the background: start the rebuild thread if
        none runs; `again`: rows were left out just now, so a running one rebuilds
        once more should they have come after the history it builds from."""
        with self._lock:
            self._stale = True
            self._rebuild_wanted = self._rebuild_wanted or again
            if self._rebuilder is not None:
                return
            self._rebuilder = threading.Thread(
                target=self._rebuild_loop, name="caravan-feature-state-rebuild", daemon=True
            )
            self._rebuilder.start()

    def _rebuild_loop(self) -> None:
        """Rebuild the state from the history until it holds every row recorded."""
        try:
            while self._rebuild_once():
                pass
        except BaseException:  # (the next scoring starts another)
            log.exception("the feature state's rebuild thread stopped")
            with self._lock:
                self._rebuilder = None
                self._rebuild_rows = None
            raise

    def _rebuild_once(self) -> bool:
        """One rebuild: build a state from the history as it is now (no lock held
        meanwhile), then, holding the state lock, append what was recorded since
        and put it in place of the current state. True when it must run again
        (rows left out again, or asked for meanwhile); else the thread ends."""
        time.sleep(max(0.0, self._next_rebuild - time.monotonic()))
        with self._lock:
            history = self._history
            self._rebuild_rows = []
            self._rebuild_wanted = False
        started = time.monotonic()
        log.info(
            "feature state: rebuilding in the background over %d shipments "
            "(rows that arrived out of order); requests are served meanwhile",
            history.shipments.height,
        )
        try:
            state = _built(history, private_index=True)
        except Exception:
            log.exception(
                "rebuilding the feature state failed: serving from the current state "
                "(without the rows that arrived out of order); trying again in %.0f s",
                self.REBUILD_RETRY_SECONDS,
            )
            self._next_rebuild = time.monotonic() + self.REBUILD_RETRY_SECONDS
            with self._lock:
                self._rebuild_rows = None
                self._rebuild_wanted = False
            return True
        with self._state_lock:
            with self._lock:
                rows, self._rebuild_rows = self._rebuild_rows or [], None
                # (each row waiting for the old state is in `history` or in `rows`)
                self._pending = []
                watch = self._history.watchlist
            if watch is not history.watchlist:  # changed meanwhile
                state.replace_watchlist(watch)
            complete = not rows or _append_in_order(state, rows)
            self._state = state
        self.rebuilds += 1
        took = time.monotonic() - started
        self.last_rebuild_seconds = took
        # (a stream of late rows keeps at most half a core busy rebuilding)
        self._next_rebuild = time.monotonic() + max(self.rebuild_gap_seconds, took)
        log.info(
            "feature state rebuilt in %.1f s (%d rows recorded meanwhile appended%s)",
            took,
            sum(frame.height for row in rows for frame in row.values()),
            "" if complete else "; some out of order again: another rebuild follows",
        )
        with self._lock:
            if complete and not self._rebuild_wanted:
                self._stale = False
                self._rebuilder = None  # (with the decision: a later request starts anew)
                return False
            self._stale = True
            return True

    def warm_up(self) -> None:
        """Build the state now, if it is not built (the server calls this in the
        background at start-up, so that no request waits for it)."""
        with self.scoring():
            pass

    @property
    def rebuilding(self) -> bool:
        """Whether a background rebuild runs or waits to run."""
        return self._rebuilder is not None

    @property
    def state_current(self) -> bool:
        """Whether the state holds every row recorded (no late row waits for a
        rebuild)."""
        return self._state is not None and not self._stale

    @property
    def state_ready(self) -> bool:
        """Whether the state is built (a scoring will not have to build it)."""
        return self._state is not None

    def _record(self, **rows: pl.DataFrame) -> None:
        """Queue rows just added to the history for the state, and for the state a
        background rebuild is building when one runs (`_lock` held)."""
        self._pending.append(rows)
        if self._rebuild_rows is not None:
            self._rebuild_rows.append(rows)

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
        if held.is_empty():  # (the usual case: new ids; a frame operation spared)
            return {}
        return {str(i): str(s) for i, s in held.select("item_id", "shipment_id").iter_rows()}

    def held_travellers(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Traveller records of the history with these ids: id -> record."""
        wanted = set(ids)
        with self._lock:
            h = self._history
            rows = self._held_rows("travellers", h.travellers, "traveller_record_id", wanted)
        return {str(r["traveller_record_id"]): r for r in rows.to_dicts()}

    def add_shipments(
        self, ships: pl.DataFrame, items: pl.DataFrame, *, held_by: FeatureState | None = None
    ) -> None:
        """Add stored shipments to the history (and, through the queue, to the
        state). `held_by`: the state that already took them (they were appended
        while scored, `FeatureState.append_sequence`): not queued for it again
        when it is still the current state (else queued for the one that replaced
        it, like any other rows)."""
        if held_by is not None:
            with self._state_lock:  # (the state is not replaced meanwhile)
                self._add_shipments(ships, items, queue=self._state is not held_by)
            return
        self._add_shipments(ships, items)

    def drop_state(self, state: FeatureState | None) -> None:
        """Forget `state` if it is still the current one: it took rows that were
        not stored after all (`add_shipments` never came). The next scoring builds
        the state anew from the history, which does not hold them. (None: none
        took any.)"""
        if state is None:
            return
        with self._state_lock:
            if self._state is state:
                self._state = None
                log.warning(
                    "feature state dropped (it held shipments whose storing failed); "
                    "the next scoring rebuilds it"
                )

    def _add_shipments(self, ships: pl.DataFrame, items: pl.DataFrame, queue: bool = True) -> None:
        ships = _conform(ships, contract_schema(SHIPMENTS))
        items = _conform(items, contract_schema(ITEMS))
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
            if queue:
                self._record(ships=ships, items=items)
            elif self._rebuild_rows is not None:  # (a rebuild from an older history runs)
                self._rebuild_rows.append({"ships": ships, "items": items})

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
            self._put_outcomes(outcomes)
            self._record(outcomes=_conform(outcomes, OUTCOMES.polars_schema))

    def replace_outcomes(self, outcomes: pl.DataFrame) -> None:
        """Put corrected outcomes in place of the held rows with the same ids. The
        state counted the old values and only appends: it is rebuilt from the
        history in the background (requests are served from it meanwhile)."""
        with self._lock:
            self._put_outcomes(outcomes)
        if self._state is not None:
            self._rebuild_later(again=True)

    def _put_outcomes(self, outcomes: pl.DataFrame) -> None:
        """The history with `outcomes` in place of held rows of the same ids (the
        caller holds the lock)."""
        h = self._history
        self._history = History(
            h.shipments,
            h.items,
            _append(
                h.outcomes, outcomes, "outcome_id", self._keys("outcomes", h.outcomes, "outcome_id")
            ),
            h.travellers,
            h.watchlist,
        )

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
        self._screen_with_current_lists()

    def _screen_with_current_lists(self) -> None:
        """Have the state screen with the history's watchlist (in place: no rebuild;
        read under both locks, so that of two changes the later one stays)."""
        with self._state_lock:
            with self._lock:
                watch = self._history.watchlist
            if self._state is not None and self._state.watchlist is not watch:
                self._state.replace_watchlist(watch)

    def set_watchlist(self, entries: pl.DataFrame | None) -> None:
        """Screen with `entries` (every list) from now on: at start-up, the lists held
        in the database (see `serving.services.restore_watchlists`)."""
        with self._lock:
            h = self._history
            new = None if entries is None else _conform(entries, WATCHLIST.polars_schema)
            self._history = History(h.shipments, h.items, h.outcomes, h.travellers, new)
        self._screen_with_current_lists()
