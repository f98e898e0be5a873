"""Family 4: how closely the shipment's parties match a watchlist.

Every distinct party name (consignor, consignee, declarant) is screened once
with `features.screening.WatchlistIndex` against every entry scoring at least
`SCORE_FLOOR`, then each shipment keeps, per party, the best entry that was
already listed before the shipment: an entry counts only when its `listed_on`
date is before the day of `declared_at` (the listing's hour is unknown, so a
listing on the same day does not count); an entry without a date counts always.
Party identification numbers (`<role>_id`) are also looked up among the listed
document numbers (exact, after `normalise_document`): the feature
`watchlist_id_match`.

That point-in-time rule is for the model's features (training and scoring must
see the same values). The hits that act on a shipment operationally (its lane,
must-inspect, its place in the queue, the rescreen after a list changes) use the
lists as they are now: `operational` screens with every entry, whatever its
`listed_on`, so a party designated today is flagged on shipments declared today
or waiting for clearance. It screens more than the features read: a party's id
and identity document number (`<role>_document_number`) among the listed
document numbers, and the names and document numbers of the traveller records
linked to the parties; such a match is an exact hit (see `operational`).

Besides the model's values, `prepare` and `operational` carry the hit that acts
on the shipment (`__wl_party`, `__wl_entry`, `__wl_name`): exact first, then a
hit that counts (at least the alert threshold and not weak, see
`features.screening.weak_match`), then the best score; with its own score
(`__wl_hit_score`), the name words it rests on (`__wl_words`), why it is weak
(`__wl_weak`, None when it is not) and the entry's type (`__wl_entity_type`).
Without weak hits it is the best-scoring hit, as before. The policy counts a
weak hit as a near miss (`serving.policy`); the features' values do not change.

The index of one watchlist frame is built once and reused while the same frame
is passed (the online call screens one shipment against the same list).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from features.context import PARTY_ROLES, History, Params
from features.registry import Family, Kind, Wording, feature
from features.screening import DEFAULT_THRESHOLD, WatchlistIndex, match_words, weak_match

if TYPE_CHECKING:
    from features.state import FeatureState

F = Family.WATCHLIST
# Lowest score kept: below it a name counts as no match (score 0). Lower than the
# alert threshold so that the model sees near misses too.
SCORE_FLOOR = 70
# Entries kept per distinct name before the listing-date filter.
MAX_ENTRIES_PER_NAME = 50

# At most this many shipments are screened row by row in Python (`_prepare_few`):
# the same values, without the fixed cost of frame operations. Measured (medians,
# both paths in one process) against the UN list with a national one (1,108
# entries), the parties' names primed (`prime`, as a service's are): 8 shipments
# 0.7 ms row by row against 20 ms in frames, 256: 10 against 91 ms, 1,000: 10
# against 131 ms; names not screened before: 8 shipments 6 against 44 ms, 64 to
# 1,000 about the same either way. (Against a 15-entry list: 8 shipments 0.1-0.5
# against 4.3-4.8 ms.)
SMALL = 1000

_INDEX_CACHE: list[tuple[pl.DataFrame, WatchlistIndex]] = []
_DATES_CACHE: list[tuple[pl.DataFrame, dict[str, dt.date | None] | None]] = []
_TYPES_CACHE: list[tuple[pl.DataFrame, dict[str, str | None]]] = []
_PRIMARY_CACHE: list[tuple[pl.DataFrame, dict[str, tuple[str | None, str | None]]]] = []


def prime(index: WatchlistIndex, names: list[str]) -> None:
    """Screen `names` now as this family screens party names (see
    `WatchlistIndex.prime`)."""
    index.prime(names, limit=MAX_ENTRIES_PER_NAME, threshold=SCORE_FLOOR)


def _listing_dates(watchlist: pl.DataFrame) -> dict[str, dt.date | None] | None:
    """entry_id -> listed_on of `watchlist` (built once per frame object); None
    when an entry id occurs twice (the frame path's join then repeats its rows)."""
    for frame, dates in _DATES_CACHE:
        if frame is watchlist:
            return dates
    ids = watchlist.get_column("entry_id").to_list()
    days = watchlist.get_column("listed_on").to_list()
    found: dict[str, dt.date | None] | None = dict(zip(ids, days, strict=True))
    if found is not None and len(found) != len(ids):
        found = None
    _DATES_CACHE[:] = [(watchlist, found)]
    return found


def _entry_types(watchlist: pl.DataFrame) -> dict[str, str | None]:
    """entry_id -> entity_type ("individual", "entity") of `watchlist` (built once
    per frame object; empty when the frame has no entity_type)."""
    for frame, cached in _TYPES_CACHE:
        if frame is watchlist:
            return cached
    types: dict[str, str | None] = {}
    if "entity_type" in watchlist.columns:
        types = dict(
            zip(
                watchlist.get_column("entry_id").to_list(),
                watchlist.get_column("entity_type").cast(pl.String).to_list(),
                strict=True,
            )
        )
    _TYPES_CACHE[:] = [(watchlist, types)]
    return types


def _primary_names(watchlist: pl.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """entry_id -> (primary name, name in the original script) of `watchlist` (built
    once per frame object): the spellings that are the entry's own name, not an
    alias."""
    for frame, cached in _PRIMARY_CACHE:
        if frame is watchlist:
            return cached
    script = (
        watchlist.get_column("name_original_script").to_list()
        if "name_original_script" in watchlist.columns
        else [None] * watchlist.height
    )
    primaries = {
        e: (n, o)
        for e, n, o in zip(
            watchlist.get_column("entry_id").to_list(),
            watchlist.get_column("name").to_list(),
            script,
            strict=True,
        )
    }
    _PRIMARY_CACHE[:] = [(watchlist, primaries)]
    return primaries


def hit_counts(exact: bool, score: int, weak: str | None) -> bool:
    """Whether a hit acts on the priority: exact, or at least the alert threshold
    and not weak."""
    return exact or (weak is None and score >= DEFAULT_THRESHOLD)


def watchlist_index(watchlist: pl.DataFrame) -> WatchlistIndex:
    """The index of `watchlist`, built once per frame object."""
    for frame, index in _INDEX_CACHE:
        if frame is watchlist:
            return index
    index = WatchlistIndex.build(watchlist)
    _INDEX_CACHE[:] = [(watchlist, index)]
    return index


_SCHEMA = {
    "shipment_id": pl.String,
    "__wl_score": pl.Int64,
    "__wl_exact": pl.Boolean,
    "__wl_parties": pl.Int64,
    "__wl_id_match": pl.Boolean,
    "__wl_party": pl.String,
    "__wl_entry": pl.String,
    "__wl_name": pl.String,
    "__wl_hit_score": pl.Int64,
    "__wl_words": pl.Int64,
    "__wl_weak": pl.String,
    "__wl_entity_type": pl.String,
}


def _empty(ships: pl.DataFrame) -> pl.DataFrame:
    n = ships.height
    return pl.DataFrame(
        {
            "shipment_id": ships["shipment_id"],
            "__wl_score": pl.Series([0] * n, dtype=pl.Int64),
            "__wl_exact": pl.Series([False] * n, dtype=pl.Boolean),
            "__wl_parties": pl.Series([0] * n, dtype=pl.Int64),
            "__wl_id_match": pl.Series([False] * n, dtype=pl.Boolean),
            "__wl_party": pl.Series([None] * n, dtype=pl.String),
            "__wl_entry": pl.Series([None] * n, dtype=pl.String),
            "__wl_name": pl.Series([None] * n, dtype=pl.String),
            "__wl_hit_score": pl.Series([None] * n, dtype=pl.Int64),
            "__wl_words": pl.Series([None] * n, dtype=pl.Int64),
            "__wl_weak": pl.Series([None] * n, dtype=pl.String),
            "__wl_entity_type": pl.Series([None] * n, dtype=pl.String),
        }
    )


def _mentions(ships: pl.DataFrame, column: str) -> pl.DataFrame:
    """One row per (shipment row, role): __row, role, value, the day of declaration."""
    return pl.concat(
        [
            ships.select(
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"),
                pl.lit(role).alias("role"),
                pl.col(f"{role}_{column}").cast(pl.String).alias("value"),
                pl.col("declared_at").dt.date().alias("__day"),
            )
            for role in PARTY_ROLES
        ]
    ).drop_nulls("value")


def prepare(
    ships: pl.DataFrame,
    history: History | pl.DataFrame | None,
    params: Params,
    index: WatchlistIndex | None = None,
    *,
    as_listed_now: bool = False,
) -> pl.DataFrame:
    """Intermediate columns, one row per shipment in the order given:
    `__wl_score` best score over the parties (0-100, 0 = none >= SCORE_FLOOR),
    `__wl_exact` a party's name equals a listed name after normalisation,
    `__wl_parties` parties scoring >= the alert threshold, `__wl_id_match` a
    party's id equals a listed document number, and the hit that acts (see the
    module docstring): its role (`__wl_party`), entry id, listed name, score,
    words, weakness and entry type.

    `history` is the History or its watchlist frame; `index`, when given, is the
    index of that frame (else it is built, or taken from the cache).

    An entry counts when listed before the day of `declared_at` (the features'
    point-in-time rule); with `as_listed_now` every entry counts (see
    `operational`)."""
    del params
    watchlist = history.watchlist if isinstance(history, History) else history
    if watchlist is None or watchlist.height == 0 or ships.height == 0:
        return _empty(ships)
    index = index or watchlist_index(watchlist)
    if ships.height <= SMALL:
        dates = _listing_dates(watchlist)
        if dates is not None:
            return _prepare_few(ships, index, dates, watchlist, as_listed_now=as_listed_now)
    listed = watchlist.select("entry_id", pl.col("listed_on").alias("__listed"))
    counts = (
        pl.lit(True)
        if as_listed_now
        else pl.col("__listed").is_null() | (pl.col("__listed") < pl.col("__day"))
    )

    names = _mentions(ships, "name")
    distinct = names.select(pl.col("value").unique(maintain_order=True))
    hits = index.screen(distinct["value"], limit=MAX_ENTRIES_PER_NAME, threshold=SCORE_FLOOR).join(
        listed, on="entry_id", how="left"
    )
    hits = hits.with_columns(
        pl.Series("value", distinct["value"].gather(hits["query_index"]), dtype=pl.String)
    )
    hits = _with_weakness(hits, watchlist)
    best = (
        names.join(hits, on="value", how="inner")
        .filter(counts)
        .sort(
            ["__row", "score", "exact", "role", "entry_id"],
            descending=[False, True, True, False, False],
        )
    )
    per_party = best.unique(["__row", "role"], keep="first", maintain_order=True)
    summary = per_party.group_by("__row").agg(
        pl.col("score").max().cast(pl.Int64).alias("__wl_score"),
        pl.col("exact").any().alias("__wl_exact"),
        (pl.col("score") >= DEFAULT_THRESHOLD).sum().cast(pl.Int64).alias("__wl_parties"),
    )
    # the hit that acts: exact, then one that counts, then the best score
    acting = (
        best.with_columns(
            (
                pl.col("exact")
                | (pl.col("__weak").is_null() & (pl.col("score") >= DEFAULT_THRESHOLD))
            ).alias("__counts")
        )
        .sort(
            ["__row", "exact", "__counts", "score", "role", "entry_id"],
            descending=[False, True, True, True, False, False],
        )
        .unique("__row", keep="first", maintain_order=True)
        .select(
            "__row",
            pl.col("role").alias("__wl_party"),
            pl.col("entry_id").alias("__wl_entry"),
            pl.col("matched_name").alias("__wl_name"),
            pl.col("score").cast(pl.Int64).alias("__wl_hit_score"),
            pl.col("__words").alias("__wl_words"),
            pl.col("__weak").alias("__wl_weak"),
            pl.col("__type").alias("__wl_entity_type"),
        )
    )

    ids = _mentions(ships, "id")
    distinct_ids = ids.select(pl.col("value").unique(maintain_order=True))
    docs = index.screen_documents(distinct_ids["value"]).join(listed, on="entry_id", how="left")
    docs = docs.with_columns(
        pl.Series("value", distinct_ids["value"].gather(docs["query_index"]), dtype=pl.String)
    )
    id_rows = (
        ids.join(docs, on="value", how="inner")
        .filter(counts)
        .select(pl.col("__row").unique(), pl.lit(True).alias("__wl_id_match"))
    )

    rows = ships.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"), "shipment_id")
    return (
        rows.join(summary, on="__row", how="left", maintain_order="left")
        .join(acting, on="__row", how="left", maintain_order="left")
        .join(id_rows, on="__row", how="left", maintain_order="left")
        .with_columns(
            pl.col("__wl_score").fill_null(0),
            pl.col("__wl_exact").fill_null(False),
            pl.col("__wl_parties").fill_null(0),
            pl.col("__wl_id_match").fill_null(False),
        )
        .select(
            "shipment_id",
            "__wl_score",
            "__wl_exact",
            "__wl_parties",
            "__wl_id_match",
            "__wl_party",
            "__wl_entry",
            "__wl_name",
            "__wl_hit_score",
            "__wl_words",
            "__wl_weak",
            "__wl_entity_type",
        )
    )


def _weak(name: str, shown: str, entry: str, exact: bool, watchlist: pl.DataFrame) -> str | None:
    """`features.screening.weak_match` of a party's (or traveller's) `name` matched to
    the spelling `shown` of the entry `entry` of `watchlist`."""
    return weak_match(
        name,
        shown,
        entity_type=_entry_types(watchlist).get(entry),
        exact=exact,
        primary=shown in _primary_names(watchlist).get(entry, ()),
    )


def _with_weakness(hits: pl.DataFrame, watchlist: pl.DataFrame) -> pl.DataFrame:
    """`hits` (value, entry_id, matched_name, exact) with each hit's entry type
    (`__type`), the words it rests on (`__words`) and why it is weak (`__weak`,
    `features.screening.weak_match`)."""
    types = _entry_types(watchlist)
    rows = list(
        zip(
            hits.get_column("value").to_list(),
            hits.get_column("matched_name").to_list(),
            hits.get_column("entry_id").to_list(),
            hits.get_column("exact").to_list(),
            strict=True,
        )
    )
    return hits.with_columns(
        pl.Series("__type", [types.get(e) for _, _, e, _ in rows], dtype=pl.String),
        pl.Series("__words", [match_words(v, n) for v, n, _, _ in rows], dtype=pl.Int64),
        pl.Series(
            "__weak",
            [_weak(v, n, e, bool(x), watchlist) for v, n, e, x in rows],
            dtype=pl.String,
        ),
    )


def _listed_before(entry: str, day: dt.date | None, dates: dict[str, dt.date | None]) -> bool:
    """An entry counts when listed before the day (or undated, or `day` is None:
    the lists as they are now; unknown ids: never, as the frame path's inner join
    drops them)."""
    if entry not in dates:
        return False
    listed = dates[entry]
    return listed is None or day is None or listed < day


def _prepare_few(
    ships: pl.DataFrame,
    index: WatchlistIndex,
    dates: dict[str, dt.date | None],
    watchlist: pl.DataFrame,
    *,
    as_listed_now: bool = False,
) -> pl.DataFrame:
    """`prepare` row by row: the same screening, listing-date rule, values and
    choice of the hit that acts (exact, then a hit that counts, then score, role,
    entry id)."""
    names = {r: ships.get_column(f"{r}_name").cast(pl.String).to_list() for r in PARTY_ROLES}
    ids = {r: ships.get_column(f"{r}_id").cast(pl.String).to_list() for r in PARTY_ROLES}
    distinct = list(dict.fromkeys(v for r in PARTY_ROLES for v in names[r] if v is not None))
    screened = dict(
        zip(
            distinct,
            index.screen_few(distinct, limit=MAX_ENTRIES_PER_NAME, threshold=SCORE_FLOOR),
            strict=True,
        )
    )
    rows = []
    for i, (sid, at) in enumerate(
        zip(
            ships.get_column("shipment_id").to_list(),
            ships.get_column("declared_at").to_list(),
            strict=True,
        )
    ):
        day = None if as_listed_now else at.date()
        # per role, its best match listed before the day: (score, exact, role, entry, name)
        best = []
        # every match listed before the day, for the hit that acts:
        # (exact, counts, score, role, entry, name, weak)
        candidates = []
        for role in PARTY_ROLES:
            name = names[role][i]
            kept = [m for m in screened.get(name, []) if _listed_before(m[0], day, dates)]
            if name is not None and kept:
                entry, shown, score, exact = min(kept, key=lambda m: (-m[2], not m[3], m[0]))
                best.append((score, exact, role, entry, shown))
                for entry, shown, score, exact in kept:
                    weak = _weak(name, shown, entry, exact, watchlist)
                    candidates.append(
                        (
                            exact,
                            hit_counts(exact, score, weak),
                            score,
                            role,
                            entry,
                            shown,
                            name,
                            weak,
                        )
                    )
        top = min(candidates, key=lambda c: (not c[0], not c[1], -c[2], c[3], c[4]), default=None)
        id_match = any(
            _listed_before(entry, day, dates)
            for role in PARTY_ROLES
            if ids[role][i] is not None
            for entry, _ in index.document(str(ids[role][i]))
        )
        rows.append(
            (
                sid,
                max((b[0] for b in best), default=0),
                any(b[1] for b in best),
                sum(b[0] >= DEFAULT_THRESHOLD for b in best),
                id_match,
                *(
                    (None,) * 7
                    if top is None
                    else (
                        top[3],
                        top[4],
                        top[5],
                        top[2],
                        match_words(top[6], top[5]),
                        top[7],
                        _entry_types(watchlist).get(top[4]),
                    )
                ),
            )
        )
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


# Operational screening (`operational`) only: the party fields looked up among the
# listed document numbers (a trader's id, and the identity document of a natural
# person). The model's `watchlist_id_match` keeps reading `<role>_id` alone.
DOCUMENT_FIELDS = ("id", "document_number")
_OPERATIONAL_SCHEMA = {**_SCHEMA, "__wl_by": pl.String, "__wl_traveller": pl.String}
_NAMES_CACHE: list[tuple[pl.DataFrame, dict[str, str]]] = []
_TRAVELLERS_CACHE: list[tuple[pl.DataFrame, Any]] = []


class Hit(NamedTuple):
    """One operational watchlist hit of a shipment: `party` is the role matched
    (for a linked traveller, the role of the party it is linked to), `traveller`
    the linked traveller record's id (None: the party itself), `by` "name" (a
    fuzzy name match, `score` its similarity) or "document" (a listed document
    number, exact: `score` 100), `name` the listed spelling matched (for a
    document, the entry's primary name); `words` the name words a name match
    rests on, `weak` why it is weak (`features.screening.weak_match`, None when
    it is not), `entity_type` the entry's type."""

    exact: bool
    score: int
    party: str
    traveller: str | None
    by: str
    entry: str
    name: str
    words: int | None = None
    weak: str | None = None
    entity_type: str | None = None

    def rank(self) -> tuple[bool, bool, int, bool, bool, str, str, str]:
        """Sort key, best first: exact, a hit that counts (`hit_counts`), score, the
        party itself before a linked traveller, a name before a document, then
        role, record and entry ids."""
        return (
            not self.exact,
            not hit_counts(self.exact, self.score, self.weak),
            -self.score,
            self.traveller is not None,
            self.by != "name",
            self.party,
            self.traveller or "",
            self.entry,
        )


def operational(
    ships: pl.DataFrame, source: History | FeatureState | pl.DataFrame | None
) -> pl.DataFrame:
    """The watchlist hits that act on shipments now (lane, must-inspect, queue,
    rescreen), screened against the lists as they are now, every entry counting
    whatever its `listed_on` (a party designated today is flagged on a shipment
    declared today or waiting). `source` is the History, the feature state (whose
    watchlist and traveller indexes are reused) or the watchlist frame (then no
    traveller is screened). The model's features keep the point-in-time rule and
    `prepare`'s values.

    Beyond `prepare`'s party names, this screens:

    * each party's `<role>_id` and `<role>_document_number` among the listed
      document numbers: a match identifies the listed person or company and is an
      exact hit (`Hit.by` "document");
    * the traveller records (API/PNR) linked to a party with a confidence of at
      least `features.travellers.FEATURE_MIN_CONFIDENCE` (the links the features
      use; a link by name alone stays below it), whatever their travel dates: the
      Latin and native-script names (as party names are screened) and the travel
      document number (exact).

    Columns: `prepare`'s, where `__wl_score` is the best name similarity (parties
    and linked travellers), `__wl_exact` any exact hit (name or document), and the
    hit that acts (`Hit.rank`) fills `__wl_party`, `__wl_entry`, `__wl_name`,
    `__wl_hit_score`, `__wl_words`, `__wl_weak`, `__wl_entity_type`, with
    `__wl_by` and `__wl_traveller` (`Hit`)."""
    from features.state import FeatureState

    index = None
    records = None
    if isinstance(source, FeatureState):
        index = source.watch_index
        watchlist = source.watchlist  # (not `history`: that would join the queued appends)
        records = source.travellers.records
    elif isinstance(source, History):
        watchlist = source.watchlist
        records = _traveller_index(source.travellers)
    else:
        watchlist = source
    base = prepare(ships, watchlist, Params(), index, as_listed_now=True)
    if watchlist is None or watchlist.height == 0 or ships.height == 0:
        return base.with_columns(
            pl.lit(None, dtype=pl.String).alias("__wl_by"),
            pl.lit(None, dtype=pl.String).alias("__wl_traveller"),
        )
    index = index or watchlist_index(watchlist)
    names = _entry_names(watchlist)
    types = _entry_types(watchlist)
    found = _document_hits(ships, index, names, types)
    for i, hits in enumerate(_traveller_hits(ships, records, index, watchlist)):
        found[i].extend(hits)
    rows = []
    for i, row in enumerate(base.iter_rows(named=True)):
        hits = found[i]
        if row["__wl_entry"] is not None:
            hits.append(
                Hit(
                    bool(row["__wl_exact"]),
                    int(row["__wl_hit_score"]),
                    row["__wl_party"],
                    None,
                    "name",
                    row["__wl_entry"],
                    row["__wl_name"],
                    row["__wl_words"],
                    row["__wl_weak"],
                    row["__wl_entity_type"],
                )
            )
        best = min(hits, key=Hit.rank, default=None)
        by_name = [h.score for h in hits if h.by == "name"]
        rows.append(
            (
                row["shipment_id"],
                max([int(row["__wl_score"]), *by_name]),
                bool(row["__wl_exact"]) or any(h.exact for h in hits),
                row["__wl_parties"],
                row["__wl_id_match"],
                None if best is None else best.party,
                None if best is None else best.entry,
                None if best is None else best.name,
                None if best is None else best.score,
                None if best is None else best.words,
                None if best is None else best.weak,
                None if best is None else best.entity_type,
                None if best is None else best.by,
                None if best is None else best.traveller,
            )
        )
    return pl.DataFrame(rows, schema=_OPERATIONAL_SCHEMA, orient="row")


def _entry_names(watchlist: pl.DataFrame) -> dict[str, str]:
    """entry_id -> primary name of `watchlist` (built once per frame object)."""
    for frame, names in _NAMES_CACHE:
        if frame is watchlist:
            return names
    names = dict(
        zip(
            watchlist.get_column("entry_id").to_list(),
            watchlist.get_column("name").to_list(),
            strict=True,
        )
    )
    _NAMES_CACHE[:] = [(watchlist, names)]
    return names


def _traveller_index(travellers: pl.DataFrame | None) -> Any:
    """The `features.travellers.TravellerIndex` of a History's traveller records
    (built once per frame object), None when there is none."""
    if travellers is None or travellers.height == 0:
        return None
    for frame, records in _TRAVELLERS_CACHE:
        if frame is travellers:
            return records
    from features.travellers import TravellerIndex

    records = TravellerIndex(travellers)
    _TRAVELLERS_CACHE[:] = [(travellers, records)]
    return records


def _document_hits(
    ships: pl.DataFrame,
    index: WatchlistIndex,
    names: dict[str, str],
    types: dict[str, str | None],
) -> list[list[Hit]]:
    """Per shipment row, its parties' ids and identity document numbers
    (`DOCUMENT_FIELDS`) found among the listed document numbers."""
    out: list[list[Hit]] = [[] for _ in range(ships.height)]
    for role in PARTY_ROLES:
        for field in DOCUMENT_FIELDS:
            column = f"{role}_{field}"
            if column not in ships.columns:
                continue
            for i, value in enumerate(ships.get_column(column).cast(pl.String).to_list()):
                if value is None:
                    continue
                for entry, _listed in index.document(value):
                    out[i].append(
                        Hit(
                            True,
                            100,
                            role,
                            None,
                            "document",
                            entry,
                            names.get(entry, entry),
                            entity_type=types.get(entry),
                        )
                    )
    return out


def _party_column(ships: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column).cast(dtype) if column in ships.columns else pl.lit(None, dtype=dtype)


def _traveller_hits(
    ships: pl.DataFrame,
    records: Any,
    index: WatchlistIndex,
    watchlist: pl.DataFrame,
) -> list[list[Hit]]:
    """Per shipment row, the hits of the traveller records linked to its parties
    (`features.travellers.link_travellers`, confidence at least
    `FEATURE_MIN_CONFIDENCE`): each record's best name match (Latin "surname given
    names" and native script) and its document number among the listed ones."""
    from features import travellers

    names, types = _entry_names(watchlist), _entry_types(watchlist)
    out: list[list[Hit]] = [[] for _ in range(ships.height)]
    if records is None or records.travellers.height == 0:
        return out
    if ships.height * len(PARTY_ROLES) <= min(travellers.SMALL_KEYS, travellers.SMALL_MAX_PARTIES):
        # A few shipments (the API's one): their parties keyed and linked in Python
        # (`_party_keys_few`, `_link_few`): the links `_links_frame` gives, without
        # its frames' fixed cost.
        few = [
            link
            for link in travellers._link_few(_keys_per_shipment(ships), records)
            if link.confidence >= travellers.FEATURE_MIN_CONFIDENCE
        ]
        if not few:
            return out
        pairs = [(link.rec, link.party_key) for link in few]
        linked_rows = records.travellers[sorted({link.row for link in few})]
    else:
        links = _links_frame(ships, records)
        if links.height == 0:
            return out
        pairs = list(links.select("traveller_record_id", "party_key").iter_rows())
        wanted = links.get_column("traveller_record_id").unique().to_list()
        linked_rows = records.travellers.filter(pl.col("traveller_record_id").is_in(wanted))
    linked = linked_rows.select(
        "traveller_record_id",
        pl.concat_str([pl.col("surname"), pl.col("given_names").fill_null("")], separator=" ")
        .str.strip_chars()
        .alias("full"),
        "name_native",
        pl.col("document_number").cast(pl.String),
    )
    spellings = list(
        dict.fromkeys(
            v for c in ("full", "name_native") for v in linked.get_column(c).to_list() if v
        )
    )
    matched: dict[str, tuple[str, str, int, bool]] = {}
    for q, entry, shown, score, exact in index.screen(
        spellings, limit=1, threshold=SCORE_FLOOR
    ).iter_rows():
        matched.setdefault(spellings[q], (entry, shown, int(score), bool(exact)))
    # per record: (exact, score, by, entry, shown, words, weak)
    per_record: dict[str, list[tuple[bool, int, str, str, str, int | None, str | None]]] = {}
    for rec, full, native, document in linked.iter_rows():
        hits = per_record.setdefault(rec, [])
        for spelling in (full, native):
            if spelling in matched:
                entry, shown, score, exact = matched[spelling]
                hits.append(
                    (
                        exact,
                        score,
                        "name",
                        entry,
                        shown,
                        match_words(spelling, shown),
                        _weak(spelling, shown, entry, exact, watchlist),
                    )
                )
        if document is not None:
            hits.extend(
                (True, 100, "document", e, names.get(e, e), None, None)
                for e, _ in index.document(document)
            )
    for rec, key in pairs:
        row, role = key.split("|", 1)
        for exact, score, by, entry, shown, n_words, why in per_record.get(rec, []):
            out[int(row)].append(
                Hit(exact, score, role, rec, by, entry, shown, n_words, why, types.get(entry))
            )
    return out


def _party_rows(ships: pl.DataFrame) -> list[tuple[Any, ...]]:
    """The shipments' parties as `_links_frame` frames them, row by row, for
    `features.travellers._party_keys_few`: party_key ("<row>|<role>"), name, phone,
    email, address, birth_date, document_number."""
    columns: dict[str, list[Any]] = {}
    for role in PARTY_ROLES:
        for c in ("name", "phone", "email", "address", "document_number", "birth_date"):
            column = f"{role}_{c}"
            if column not in ships.columns:
                columns[column] = [None] * ships.height
                continue
            values = ships.get_column(column)
            dtype = pl.Date() if c == "birth_date" else pl.String()
            columns[column] = (values if values.dtype == dtype else values.cast(dtype)).to_list()
    return [
        (
            f"{i}|{role}",
            *(columns[f"{role}_{c}"][i] for c in ("name", "phone", "email", "address")),
            columns[f"{role}_birth_date"][i],
            columns[f"{role}_document_number"][i],
        )
        for role in PARTY_ROLES
        for i in range(ships.height)
    ]


def _keys_per_shipment(ships: pl.DataFrame) -> list[Any]:
    """The parties' comparison keys (`features.travellers._party_keys_few`, party
    key "<row>|<role>") with their shared-contact flags computed over each
    shipment's own parties, as for one shipment alone: a shipment's linked
    travellers, and so its hits and lane, do not depend on the shipments screened
    with it (a batch, a rescreen, or the API's one)."""
    from features.travellers import _party_keys_few

    by_ship: dict[str, list[tuple[Any, ...]]] = {}
    for row in _party_rows(ships):
        by_ship.setdefault(str(row[0]).split("|", 1)[0], []).append(row)
    return [party for rows in by_ship.values() for party in _party_keys_few(rows)]


def _links_frame(ships: pl.DataFrame, records: Any) -> pl.DataFrame:
    """The links (`features.travellers.link_travellers`, confidence at least
    `FEATURE_MIN_CONFIDENCE`) of the shipments' parties, keyed "<row>|<role>",
    through frames (`_traveller_hits` of many shipments)."""
    from features.travellers import (
        FEATURE_MIN_CONFIDENCE,
        SHARED_FLAGS,
        SMALL_MAX_PARTIES,
        link_travellers,
    )

    parties = pl.concat(
        [
            ships.select(
                pl.concat_str([pl.int_range(pl.len()).cast(pl.String), pl.lit(f"|{role}")]).alias(
                    "party_key"
                ),
                *[
                    _party_column(ships, f"{role}_{c}", pl.String()).alias(c)
                    for c in ("name", "phone", "email", "address", "document_number")
                ],
                _party_column(ships, f"{role}_birth_date", pl.Date()).alias("birth_date"),
            )
            for role in PARTY_ROLES
        ]
    )
    # Whether parties of other names declare the same phone, e-mail or address (a
    # shared number links a little less surely) is computed per shipment
    # (`_keys_per_shipment`), then the parties are linked a few at a time through
    # the index's lookups (`SMALL_MAX_PARTIES`: the links one call over all of them
    # gives, without comparing with every record).
    keyed = _keys_per_shipment(ships)
    flags = pl.DataFrame(
        {
            "party_key": [p.party_key for p in keyed],
            **{f: [getattr(p, f) for p in keyed] for f in SHARED_FLAGS},
        },
        schema={"party_key": pl.String, **{f: pl.Boolean for f in SHARED_FLAGS}},
    )
    parties = parties.join(flags, on="party_key", how="left", maintain_order="left")
    return pl.concat(
        [
            link_travellers(parties.slice(start, SMALL_MAX_PARTIES), records)
            for start in range(0, parties.height, SMALL_MAX_PARTIES)
        ]
    ).filter(pl.col("confidence") >= FEATURE_MIN_CONFIDENCE)


@feature(
    F,
    "Best watchlist match score of the consignor, consignee or declarant name (0-100)",
    "A party's name resembles a watchlist entry ({value}% similar)",
    "Наименование участника сделки похоже на запись в списке наблюдения (сходство {value}%)",
)
def watchlist_best_score() -> pl.Expr:
    return pl.col("__wl_score")


@feature(
    F,
    "A party's name equals a watchlist name after normalisation (script, spelling, order)",
    "A party's name is the same as a name on a watchlist",
    "Наименование участника сделки совпадает с именем из списка наблюдения",
    kind=Kind.FLAG,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "No party's name is the same as a name on a watchlist",
            "Наименования участников сделки не совпадают с именами из списка наблюдения",
        ),
    ),
)
def watchlist_exact() -> pl.Expr:
    return pl.col("__wl_exact").cast(pl.Int8)


@feature(
    F,
    "Number of parties whose name scores at or above the screening alert threshold",
    "{value} party(ies) of the shipment resemble watchlist entries",
    "{value} {value|участник сделки похож на запись|участника сделки похожи на записи"
    "|участников сделки похожи на записи} в списке наблюдения",
)
def watchlist_parties_matched() -> pl.Expr:
    return pl.col("__wl_parties")


@feature(
    F,
    "A party's identification number equals a document number on a watchlist",
    "A party's identification number is listed on a watchlist",
    "Идентификационный номер участника сделки указан в списке наблюдения",
    kind=Kind.FLAG,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "No party's identification number is listed on a watchlist",
            "Идентификационные номера участников сделки не указаны в списке наблюдения",
        ),
    ),
)
def watchlist_id_match() -> pl.Expr:
    return pl.col("__wl_id_match").cast(pl.Int8)
