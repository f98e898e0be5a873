"""Family 4: how closely the shipment's parties match a watchlist.

Every distinct party name (consignor, consignee, declarant) is screened once
with `features.screening.WatchlistIndex` against every entry scoring at least
`SCORE_FLOOR`, then each shipment keeps, per party, the best entry that was
already listed before the shipment: an entry counts only when its `listed_on`
date is before the day of `declared_at` (the listing's hour is unknown, so a
listing on the same day does not count); an entry without a date counts always.
Party identification numbers are also looked up among the listed document
numbers (exact, after `normalise_document`).

That point-in-time rule is for the model's features (training and scoring must
see the same values). The hits that act on a shipment operationally (its lane,
must-inspect, its place in the queue, the rescreen after a list changes) use the
lists as they are now: `operational` screens with every entry, whatever its
`listed_on`, so a party designated today is flagged on shipments declared today
or waiting for clearance.

The index of one watchlist frame is built once and reused while the same frame
is passed (the online call screens one shipment against the same list).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl

from features.context import PARTY_ROLES, History, Params
from features.registry import Family, Kind, Wording, feature
from features.screening import DEFAULT_THRESHOLD, WatchlistIndex

if TYPE_CHECKING:
    from features.state import FeatureState

F = Family.WATCHLIST
# Lowest score kept: below it a name counts as no match (score 0). Lower than the
# alert threshold so that the model sees near misses too.
SCORE_FLOOR = 70
# Entries kept per distinct name before the listing-date filter.
MAX_ENTRIES_PER_NAME = 50

# At most this many shipments are screened row by row in Python (`_prepare_few`):
# the same values, without the fixed cost of frame operations.
SMALL = 5

_INDEX_CACHE: list[tuple[pl.DataFrame, WatchlistIndex]] = []
_DATES_CACHE: list[tuple[pl.DataFrame, dict[str, dt.date | None] | None]] = []


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
    party's id equals a listed document number, and for display the role
    (`__wl_party`), entry id and listed name of the best match.

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
            return _prepare_few(ships, index, dates, as_listed_now=as_listed_now)
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
        pl.col("role").first().alias("__wl_party"),
        pl.col("entry_id").first().alias("__wl_entry"),
        pl.col("matched_name").first().alias("__wl_name"),
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
        )
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
    *,
    as_listed_now: bool = False,
) -> pl.DataFrame:
    """`prepare` row by row: the same screening, listing-date rule and choice of
    the best match (score, then exact, then role, then entry id)."""
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
        for role in PARTY_ROLES:
            name = names[role][i]
            kept = [m for m in screened.get(name, []) if _listed_before(m[0], day, dates)]
            if name is not None and kept:
                entry, shown, score, exact = min(kept, key=lambda m: (-m[2], not m[3], m[0]))
                best.append((score, exact, role, entry, shown))
        top = min(best, key=lambda b: (-b[0], not b[1], b[2], b[3]), default=None)
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
                None if top is None else top[2],
                None if top is None else top[3],
                None if top is None else top[4],
            )
        )
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


def operational(
    ships: pl.DataFrame, source: History | FeatureState | pl.DataFrame | None
) -> pl.DataFrame:
    """The watchlist hits that act on shipments now (lane, must-inspect, queue,
    rescreen): `prepare`'s columns, screened against the lists as they are now,
    every entry counting whatever its `listed_on` (a party designated today is
    flagged on a shipment declared today or waiting). `source` is the History,
    the feature state (whose index is reused) or the watchlist frame. The model's
    features keep the point-in-time rule."""
    from features.state import FeatureState

    index = None
    if isinstance(source, FeatureState):
        index = source.watch_index
        watchlist = source.watchlist  # (not `history`: that would join the queued appends)
    elif isinstance(source, History):
        watchlist = source.watchlist
    else:
        watchlist = source
    return prepare(ships, watchlist, Params(), index, as_listed_now=True)


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
    "{value} участник(ов) сделки похожи на записи в списке наблюдения",
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
