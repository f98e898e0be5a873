"""Family 3: what was known about the consignee, consignor and declarant before
the shipment: since when they trade, how much, what, how often they were
inspected and with what result, and who shares their phone or address."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Collection
from typing import Any

import numpy as np
import polars as pl

from features.context import lines_with_shipments
from features.names import shared_result
from features.network import keys_of
from features.registry import Family, Kind, Wording, feature, plural_ru
from features.timeline import (
    LOOKUP_MAX_QUERIES,
    AsOfTable,
    Columns,
    FirstSeen,
    as_of_columns,
    as_of_query,
    distinct_columns,
    distinct_query,
    pair_seen_query,
    pair_seen_values,
)

F = Family.TRADER
DAY = dt.timedelta(days=1)
WINDOWS = {"7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY, "365d": 365 * DAY}


ROLES = ("consignee", "consignor", "declarant")
CONTACT_FIELDS = ("phone", "address")
# Inputs of at most this many shipments (or goods lines) are computed from the
# timeline's light answers and Python lists, and framed once: the frame path's
# values, without its fixed cost per operation (an online call or an append
# holds one shipment).
SMALL_MAX_SHIPMENTS = 32


def shipment_events(ships: pl.DataFrame, undervalued: pl.DataFrame) -> pl.DataFrame:
    """Shipments (with `<role>_key`) and their 0/1 undervaluation flag."""
    if _aligned(ships, undervalued):  # (the join's rows: the flags placed beside)
        flags = undervalued.get_column("undervalued")
        return ships.hstack([flags.fill_null(False).cast(pl.Int64)])
    return ships.join(undervalued, on="shipment_id", how="left").with_columns(
        pl.col("undervalued").fill_null(False).cast(pl.Int64)
    )


def _aligned(ships: pl.DataFrame, undervalued: pl.DataFrame) -> bool:
    """Whether `undervalued` (shipment_id, undervalued) holds the shipments' ids, of
    the same type, in the same order, none missing and none repeated (as
    `goods.prepare` gives them for the same shipments): then the left join on the
    id matches each shipment with the flag of its own row, and only it (a null id
    matches nothing, a repeated one every row of its id)."""
    ids = ships.get_column("shipment_id")
    return (
        undervalued.columns == ["shipment_id", "undervalued"]
        and "undervalued" not in ships.columns
        and ids.equals(undervalued.get_column("shipment_id"), check_dtypes=True, null_equal=False)
        and (ids.len() <= 1 or ids.n_unique() == ids.len())
    )


def outcome_events(outcomes: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """Outcomes with the party keys of their shipment (`ships` carries them)."""
    return outcomes.join(
        ships.select("shipment_id", "consignee_key", "consignor_key", "declarant_key"),
        on="shipment_id",
        how="inner",
    ).with_columns(
        pl.col("finding").cast(pl.Int64).alias("__finding"),
        pl.col("finding_category")
        .cast(pl.String)
        .is_in(["firearms", "parts", "ammunition", "explosives"])
        .cast(pl.Int64)
        .alias("__arms_finding"),
    )


def line_events(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """Each goods line's chapter, with its shipment's consignee and time (the
    lines' other columns are not read: the join would gather them)."""
    return lines_with_shipments(
        items.select("shipment_id", "hs_code"),
        ships.select("shipment_id", "declared_at", "consignee_key"),
    ).with_columns(pl.col("hs_code").str.slice(0, 2).alias("__chapter"))


def _chapter_events(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """The columns of `line_events` that `Tables.chapters` reads, for a few lines
    in Python: each line's chapter with the consignee and time of each shipment
    of its id (the inner join's rows, in another order: a `FirstSeen` reads
    them as a set)."""
    keys, times = ships.get_column("consignee_key"), ships.get_column("declared_at")
    by_id: dict[Any, list[tuple[Any, Any]]] = {}
    for sid, key, t in zip(
        ships.get_column("shipment_id").to_list(), keys.to_list(), times.to_list(), strict=True
    ):
        if sid is not None:  # (a join matches no null)
            by_id.setdefault(sid, []).append((key, t))
    rows = [
        (key, None if code is None else code[:2], t)
        for sid, code in zip(
            items.get_column("shipment_id").to_list(),
            items.get_column("hs_code").to_list(),
            strict=True,
        )
        for key, t in by_id.get(sid, ())
    ]
    schema = {"consignee_key": keys.dtype, "__chapter": pl.String(), "declared_at": times.dtype}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _normalise(contact: pl.Expr) -> pl.Expr:
    """The comparison form of a contact: lower case, word characters only (each
    run of other characters removed at once: what removing them one by one
    leaves, with fewer replacements)."""
    return contact.str.to_lowercase().str.replace_all(r"[^\w]+", "")


def _normalised_column(frame: pl.DataFrame, contact: str) -> pl.Series:
    """`_normalise` of the consignees' `contact` in `frame`, named `__{contact}`:
    each distinct contact normalised once and mapped back (contacts repeat: a
    regex pass over each distinct string, not each shipment). Within
    `shared_normalisation`, a column normalised before (the tables' build, then a
    batch's `prepare` of the same shipments) is not normalised again."""
    column = frame.get_column(f"consignee_{contact}")
    name = f"__{contact}"
    if column.dtype != pl.String:  # (the expression, as it reads other types)
        return frame.select(_normalise(pl.col(column.name)).alias(name)).to_series()

    def compute(strings: pl.Series) -> pl.Series:
        distinct = strings.drop_nulls().unique()
        normal = distinct.to_frame().select(_normalise(pl.col(strings.name))).to_series()
        return strings.replace_strict(distinct, normal, default=None, return_dtype=pl.String)

    return shared_result("contact", column, compute).alias(name)


_NON_WORD = re.compile(r"[^\w]")


def _normalise_python(contact: str) -> str:
    """`_normalise` in Python: the same for the strings `_normalises_alike` admits."""
    return _NON_WORD.sub("", contact.lower())


@functools.cache
def _differing() -> re.Pattern[str]:
    """The characters for which `_normalise_python` may differ from `_normalise`:
    those of the BMP whose normal form differs (Python's and Rust's Unicode
    tables differ on `\\w` and on some case mappings), the capital sigma (lower
    case by its neighbours: final sigma) and every one beyond the BMP. Both
    lower-case character by character (but for that sigma) and drop non-word
    characters one by one, so strings of the other characters get the same
    form. Computed once: one expression over the BMP (~40 ms)."""
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    frame = pl.DataFrame({"c": chars}, schema={"c": pl.String})
    polars = frame.select(_normalise(pl.col("c"))).to_series().to_list()
    differ = [c for c, p in zip(chars, polars, strict=True) if _normalise_python(c) != p]
    escaped = "".join(re.escape(c) for c in [*differ, "\u03a3"])
    return re.compile(f"[{escaped}\U00010000-\U0010ffff]")


def warm() -> None:
    """Run now the one-off check behind `_normalises_alike` (~40 ms), which the
    first small call would otherwise pay."""
    _differing()


def _normalises_alike(contact: str) -> bool:
    """Whether `_normalise_python` gives what `_normalise` does for this string."""
    return _differing().search(contact) is None


def _normalised_values(contacts: pl.Series) -> list[str | None]:
    """`_normalise` of a few contacts (a String series): in Python, but for the
    strings with characters where Python and Polars differ (rare: the expression)."""
    return keys_of(contacts.to_list(), _normalise, _normalise_python, _normalises_alike)


def _contact(frame: pl.DataFrame, contact: str) -> pl.DataFrame:
    """consignee_key, declared_at and the consignee's normalised contact `__contact`
    (for a few shipments, normalised in Python)."""
    column = frame.get_column(f"consignee_{contact}")
    if frame.height > SMALL_MAX_SHIPMENTS or column.dtype != pl.String:
        return pl.DataFrame(
            [
                frame.get_column("consignee_key"),
                frame.get_column("declared_at"),
                _normalised_column(frame, contact).alias("__contact"),
            ]
        )
    return pl.DataFrame(
        [
            frame.get_column("consignee_key"),
            frame.get_column("declared_at"),
            pl.Series("__contact", _normalised_values(column), dtype=pl.String),
        ]
    )


class Tables:
    """What this family reads of the history, built once (see features.state)."""

    def __init__(
        self,
        seen: dict[str, AsOfTable],
        inspections: dict[str, AsOfTable],
        chapters: FirstSeen,
        contacts: dict[str, FirstSeen],
    ):
        self.seen = seen
        self.inspections = inspections
        self.chapters = chapters
        self.contacts = contacts

    @classmethod
    def build(cls, ships: pl.DataFrame, items: pl.DataFrame, outcomes: pl.DataFrame) -> Tables:
        """`ships`: `shipment_events` of the history; `outcomes`: `outcome_events`."""
        return cls(
            {r: AsOfTable.build(ships, f"{r}_key", "declared_at", ["undervalued"]) for r in ROLES},
            {
                r: AsOfTable.build(
                    outcomes, f"{r}_key", "inspected_at", ["__finding", "__arms_finding"]
                )
                for r in ROLES
            },
            FirstSeen.build(line_events(items, ships), "consignee_key", "__chapter", "declared_at"),
            {
                c: FirstSeen.build(_contact(ships, c), "__contact", "consignee_key", "declared_at")
                for c in CONTACT_FIELDS
            },
        )

    def append(self, ships: pl.DataFrame, items: pl.DataFrame, outcomes: pl.DataFrame) -> None:
        """Add rows recorded after those held (same forms as `build`; `items` of
        `ships`). The tables read only their own columns of the frames given."""
        for r in ROLES:
            self.seen[r].append(ships)
            self.inspections[r].append(outcomes)
        few = (
            max(items.height, ships.height) <= SMALL_MAX_SHIPMENTS
            and items.get_column("hs_code").dtype == pl.String
        )
        self.chapters.append(_chapter_events(items, ships) if few else line_events(items, ships))
        for c in CONTACT_FIELDS:
            self.contacts[c].append(_contact(ships, c))


# Physical steps of the time units the sorted as-of answers (`_as_of_sorted`).
_UNIT_STEP = {
    "us": dt.timedelta(microseconds=1),
    "ms": dt.timedelta(milliseconds=1),
}


def as_of(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    *,
    windows: dict[str, dt.timedelta] | None = None,
    prefix: str,
    windowed: Collection[str] | None = None,
) -> pl.DataFrame:
    """`features.timeline.as_of_query`: many queries by `_as_of_sorted`, when it
    applies; the others as `as_of_query` answers them. `windowed`: the totals
    ("n", or a sum's name) whose columns per window are wanted (None: all); the
    others' are left out (not computed, by `_as_of_sorted`)."""
    windows = windows or {}
    if windows and queries.height > LOOKUP_MAX_QUERIES:  # (one instant: the join is as fast)
        found = _as_of_sorted(queries, q_key, q_time, table, windows, prefix, windowed)
        if found is not None:
            return found
    answer = as_of_query(queries, q_key, q_time, table, windows=windows, prefix=prefix)
    if windowed is None:
        return answer
    unwanted = [name for name in ("n", *table.sums) if name not in windowed]
    return answer.drop(f"{prefix}_{name}_{label}" for name in unwanted for label in windows)


def _as_of_sorted(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    windows: dict[str, dt.timedelta],
    prefix: str,
    windowed: Collection[str] | None = None,
) -> pl.DataFrame | None:
    """`as_of_query`'s answer (the same columns, types and values; per window,
    only the totals `windowed` names, when given: see `as_of`), by binary
    searches in numpy instead of as-of joins: the table's rows are sorted by key
    then time, so with each key numbered in that order and each time replaced by
    its rank (its position among the table's times sorted), `key number * (rows +
    1) + rank` is sorted too; a query's row (the last of its key strictly before
    its instant) is the one before the first at or after `key number * (rows +
    1) + how many of the table's times precede the instant`, if that row is of
    its key. None (the joins answer) when the table holds appended rows (not in
    that order), nulls in its times or sums, or other types than the queries'."""
    rows, key, time = table.rows, table.key, table.time
    cols = ["__cum_n", "__first", *table.cums]
    schema = rows.schema()
    at, keys = queries.get_column(q_time), queries.get_column(q_key)
    dtype = schema[time]
    step = _UNIT_STEP.get(getattr(dtype, "time_unit", None) or "")
    if (
        rows.extra is not None
        or rows.frame.height == 0
        or step is None
        or at.dtype != dtype
        or keys.dtype != schema[key]
        or any(w % step for w in windows.values())
        or rows.has_nulls([time, *cols])
    ):
        return None
    frame = rows.frame
    runs = frame.get_column(key).rle()
    lengths = runs.struct.field("len").to_numpy()
    numbers = pl.DataFrame(
        [runs.struct.field("value").alias(key), pl.Series("__k", np.arange(len(lengths)))]
    )
    k = (
        keys.alias(key)
        .to_frame()
        .join(numbers, on=key, how="left", maintain_order="left")
        .get_column("__k")
    )
    asked = (k.is_not_null() & at.is_not_null()).to_numpy()
    k_q = k.fill_null(0).to_numpy()
    t_q = at.cast(pl.Int64).fill_null(0).to_numpy()
    held = rows.array(time)
    # Each row's time rank: its position among the table's times sorted. (Equal
    # times take distinct ranks, in any order: a row's rank is below the count of
    # times preceding an instant exactly when the row's time precedes the
    # instant, which is all the searches below ask; one key's rows hold distinct
    # times. So numpy's default sort, not a stable one: several times faster.)
    by_time = np.argsort(held)
    times = held[by_time]
    rank = np.empty(len(held), dtype=np.int64)
    rank[by_time] = np.arange(len(held), dtype=np.int64)
    span = len(held) + 1
    k_held = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    order = k_held * span + rank  # (sorted: the rows are by key, then time)
    # Searches of sorted values are the fast ones: the queries in time order for
    # the ranks of their instants, in key order for the rows.
    in_time = None if bool(np.all(t_q[1:] >= t_q[:-1])) else np.argsort(t_q)
    needles = []
    for width in [dt.timedelta(0), *windows.values()]:
        instant = t_q - width // step
        if in_time is None:
            before = np.searchsorted(times, instant, side="left")
        else:
            before = np.empty(len(instant), dtype=np.int64)
            before[in_time] = np.searchsorted(times, instant[in_time], side="left")
        needles.append(k_q * span + before)
    # The rows are searched and read in key order (the needles sorted: the
    # searches and the reads of the table's columns go forward), and the answers
    # put back in query order once, column by column.
    in_key = np.argsort(needles[0])  # (ties: any order will do)
    k_s, asked_s = k_q[in_key], asked[in_key]
    names = {"__cum_n": "n", **{f"__cum_{c}": c for c in table.sums}}
    # (the windows read the counts and sums only, those wanted: the first sighting
    # is `now`'s)
    in_windows = [c for c in names if windowed is None or names[c] in windowed]
    got: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    found0 = asked_s
    for i, needle in enumerate(needles):
        p = np.searchsorted(order, needle[in_key], side="left") - 1
        found = asked_s & (p >= 0)
        p = np.maximum(p, 0)
        found &= k_held[p] == k_s
        if i == 0:
            found0 = found
        for c in cols if i == 0 else in_windows:
            values = rows.array(c)
            got[c].append(np.where(found, values[p], 0).astype(values.dtype, copy=False))

    def in_query_order(values: np.ndarray) -> np.ndarray:
        placed = np.empty_like(values)
        placed[in_key] = values
        return placed

    out = [
        pl.Series(f"{prefix}_n", in_query_order(got["__cum_n"][0]), dtype=schema["__cum_n"]),
        pl.Series(f"{prefix}_first", in_query_order(got["__first"][0]))
        .scatter(in_key[~found0], None)
        .cast(schema["__first"]),
        *[
            pl.Series(f"{prefix}_{names[c]}", in_query_order(got[c][0]), dtype=schema[c])
            for c in cols[2:]
        ],
    ]
    for i, label in enumerate(windows, start=1):
        out += [
            pl.Series(
                f"{prefix}_{name}_{label}",
                in_query_order(got[c][0] - got[c][i]),
                dtype=schema[c],
            )
            for c, name in names.items()
            if c in in_windows
        ]
    return pl.DataFrame(out)


def _kept(role: str) -> dict[str, str]:
    """The columns of a role's answers that `prepare` keeps, by their names there
    (the as-of answers of `seen`, prefix role, and of `inspections`, prefix
    `{role}_insp`), and their names kept."""
    return {
        f"{role}_first": f"__{role}_first",
        **{f"{role}_n_{w}": f"__{role}_n_{w}" for w in WINDOWS},
        f"{role}_n": f"__{role}_n",
        f"{role}_undervalued": f"__{role}_underv",
        f"{role}_insp_n": f"__{role}_insp",
        f"{role}_insp___finding": f"__{role}_find",
        f"{role}_insp___arms_finding": f"__{role}_arms_find",
    }


def prepare(ships: pl.DataFrame, tables: Tables) -> pl.DataFrame:
    """`ships` carries `<role>_key` columns; `tables` holds the history."""
    if ships.height <= SMALL_MAX_SHIPMENTS:
        small = _small_prepare(ships, tables)
        if small is not None:
            return small
    cols: list[pl.Series] = [ships["shipment_id"]]
    for role in ROLES:
        key = f"{role}_key"
        seen = as_of(
            ships,
            key,
            "declared_at",
            tables.seen[role],
            windows=WINDOWS,
            prefix=role,
            windowed=("n",),  # (`_kept`: the counts per window, not the sums)
        )
        insp = as_of_query(
            ships, key, "declared_at", tables.inspections[role], prefix=f"{role}_insp"
        )
        answers = {**seen.to_dict(), **insp.to_dict()}
        cols += [answers[name].alias(kept) for name, kept in _kept(role).items()]
    chapters = distinct_query(ships, "consignee_key", "declared_at", tables.chapters, prefix="c")
    cols.append(chapters["c_distinct"].alias("__consignee_chapters"))
    q = pl.DataFrame(
        [
            ships.get_column("consignee_key"),
            ships.get_column("declared_at"),
            *[_normalised_column(ships, c) for c in CONTACT_FIELDS],
        ]
    )
    for contact in CONTACT_FIELDS:
        seen_contact = tables.contacts[contact]
        on = f"__{contact}"
        parties = distinct_query(q, on, "declared_at", seen_contact, prefix="p")["p_distinct"]
        self_seen = pair_seen_query(q, (on, "consignee_key"), "declared_at", seen_contact)
        cols.append((parties - self_seen.cast(pl.UInt32)).alias(f"__shared_{contact}"))
    days = [
        ((pl.col("__at") - pl.col(f"__{r}_first")).dt.total_microseconds() / 8.64e10).alias(
            f"__{r}_days"
        )
        for r in ROLES
    ]
    frame = pl.DataFrame([*cols, ships["declared_at"].alias("__at")])
    return frame.select(
        "shipment_id",
        *[c for c in frame.columns[1:] if c != "__at" and not c.endswith("_first")],
        *days,
    )


def _small_prepare(ships: pl.DataFrame, tables: Tables) -> pl.DataFrame | None:
    """`prepare` of a few shipments: the timeline's light answers (`Columns`),
    the contacts normalised in Python (`_normalised_values`) and the days since
    the first sighting in Python (`_days`), framed once in the frame path's
    columns and types. None (the frame path) unless the shipments' times are in
    microseconds, of the type of the first sightings, and their contacts strings."""
    at, ids = ships.get_column("declared_at"), ships.get_column("shipment_id")
    contacts = [ships.get_column(f"consignee_{c}") for c in CONTACT_FIELDS]
    if not (
        getattr(at.dtype, "time_unit", None) == "us"
        and all(tables.seen[r].rows.schema()["__first"] == at.dtype for r in ROLES)
        and all(c.dtype == pl.String for c in contacts)
    ):
        return None
    values: dict[str, list[Any]] = {"shipment_id": ids.to_list()}
    types: dict[str, pl.DataType] = {"shipment_id": ids.dtype}
    firsts: dict[str, list[int | None]] = {}
    for role in ROLES:
        key = f"{role}_key"
        seen = as_of_columns(
            ships, key, "declared_at", tables.seen[role], windows=WINDOWS, prefix=role
        )
        insp = as_of_columns(
            ships, key, "declared_at", tables.inspections[role], prefix=f"{role}_insp"
        )
        answers = {**seen.values, **insp.values}
        answer_types = {**seen.types, **insp.types}
        for name, kept in _kept(role).items():
            if name == f"{role}_first":
                firsts[role] = answers[name]
            else:
                values[kept], types[kept] = answers[name], answer_types[name]
    chapters = distinct_columns(ships, "consignee_key", "declared_at", tables.chapters, prefix="c")
    values["__consignee_chapters"] = chapters.values["c_distinct"]
    types["__consignee_chapters"] = chapters.types["c_distinct"]
    q = pl.DataFrame(
        [
            ships.get_column("consignee_key"),
            at,
            *[
                pl.Series(f"__{c}", _normalised_values(column), dtype=pl.String)
                for c, column in zip(CONTACT_FIELDS, contacts, strict=True)
            ],
        ]
    )
    for contact in CONTACT_FIELDS:
        seen_contact = tables.contacts[contact]
        on = f"__{contact}"
        parties = distinct_columns(q, on, "declared_at", seen_contact, prefix="p")
        self_seen = pair_seen_values(q, (on, "consignee_key"), "declared_at", seen_contact)
        shared = [p - s for p, s in zip(parties.values["p_distinct"], self_seen, strict=True)]
        values[f"__shared_{contact}"] = shared
        types[f"__shared_{contact}"] = _shared_type(parties.types["p_distinct"])
    times = at.cast(pl.Int64).to_list()
    for role in ROLES:
        since = [
            None if t is None or f is None else t - f
            for t, f in zip(times, firsts[role], strict=True)
        ]
        values[f"__{role}_days"] = _days(since)
        types[f"__{role}_days"] = pl.Float64()
    return Columns(types, values).frame()


def _days(microseconds: list[int | None]) -> list[float | None]:
    """`microseconds / 8.64e10` as Polars computes it over a column of these
    values: the quotient for one value, for more the product with the
    reciprocal (they may differ in the last bit)."""
    if len(microseconds) == 1:
        return [None if d is None else d / 8.64e10 for d in microseconds]
    reciprocal = 1 / 8.64e10
    return [None if d is None else d * reciprocal for d in microseconds]


@functools.cache
def _shared_type(parties: pl.DataType) -> pl.DataType:
    """The type of `parties - self_seen.cast(pl.UInt32)` in `prepare`, for the
    type of `parties` (Polars' supertype rule, asked once)."""
    return (pl.Series(dtype=parties) - pl.Series(dtype=pl.UInt32)).dtype


def _role_features(role: str, ru: str) -> None:
    def days() -> pl.Expr:
        return pl.col(f"__{role}_days")

    def new() -> pl.Expr:
        return (pl.col(f"__{role}_n") == 0).cast(pl.Int8)

    def findings() -> pl.Expr:
        return pl.col(f"__{role}_arms_find")

    def inspections() -> pl.Expr:
        return pl.col(f"__{role}_insp")

    for fn, name, desc, en, ru_text, kind, fmt in (
        (
            days,
            f"{role}_days_since_first",
            f"Days since the {role} was first seen",
            f"{role.title()} first seen {{value}} days ago",
            f"{ru} впервые появился {{value}} {{value|день|дня|дней}} назад",
            Kind.NUMERIC,
            "{:.0f}",
        ),
        (
            new,
            f"{role}_is_new",
            f"The {role} was never seen before",
            f"{role.title()} never seen before",
            f"{ru} ранее не встречался",
            Kind.FLAG,
            "{:.0f}",
        ),
        (
            findings,
            f"{role}_arms_findings",
            f"Arms findings known before for the {role}",
            f"{role.title()} had {{value}} arms finding(s) before",
            f"У {_RU_GENITIVE[ru]} ранее {{value}} {{value|изъятие|изъятия|изъятий}} оружия",
            Kind.NUMERIC,
            "{:.0f}",
        ),
        (
            inspections,
            f"{role}_inspections",
            f"Inspections known before for the {role}",
            f"{role.title()} inspected {{value}} time(s) before",
            f"{ru} ранее досматривался {{value}} {{value|раз|раза|раз}}",
            Kind.NUMERIC,
            "{:.0f}",
        ),
    ):
        fn.__name__ = name
        monotone = 1 if name.endswith("arms_findings") else 0
        # No first sighting before this shipment: the party is new.
        missing = (
            (f"{role.title()} never seen before", f"{ru} ранее не встречался")
            if name.endswith("days_since_first")
            else ("", "")
        )
        # A flag that is off: the party was seen before.
        seen = (
            (
                Wording(
                    lambda v, _c: v == 0, f"{role.title()} seen before", f"{ru} встречался ранее"
                ),
            )
            if name.endswith("is_new")
            else ()
        )
        feature(
            F,
            desc,
            en,
            ru_text,
            kind=kind,
            fmt=fmt,
            monotone=monotone,
            missing_en=missing[0],
            missing_ru=missing[1],
            wordings=seen,
        )(fn)
    for w in WINDOWS:

        def count(w: str = w) -> pl.Expr:
            return pl.col(f"__{role}_n_{w}")

        count.__name__ = f"{role}_shipments_{w}"
        days_n = w.removesuffix("d")  # the windows are written "30d": read as days
        days_ru = plural_ru(int(days_n), "день", "дня", "дней")
        feature(
            F,
            f"Shipments of the {role} in the {w} before",
            f"{role.title()}: {{value}} shipment(s) in the last {days_n} days",
            f"{ru}: {{value}} {{value|отправка|отправки|отправок}} за последние {days_n} {days_ru}",
        )(count)


# The roles' Russian names after "у" ("у получателя"), for the reason texts.
_RU_GENITIVE = {"Получатель": "получателя", "Отправитель": "отправителя", "Декларант": "декларанта"}


_role_features("consignee", "Получатель")
_role_features("consignor", "Отправитель")
_role_features("declarant", "Декларант")


@feature(
    F,
    "Distinct HS chapters the consignee imported before",
    "Consignee imported {value} different kinds of goods before (HS chapters)",
    "Получатель ранее ввозил товары {value} {value|группы|групп|групп} ТН ВЭД",
)
def consignee_distinct_chapters() -> pl.Expr:
    return pl.col("__consignee_chapters")


@feature(
    F,
    "Share of the consignee's earlier shipments that were undervalued",
    "{value} of the consignee's earlier shipments were undervalued",
    "{value} прежних отправок получателя были занижены по стоимости",
    fmt="{:.0%}",
    missing_en="Consignee has no earlier shipments",
    missing_ru="У получателя нет прежних отправок",
)
def consignee_undervalued_share() -> pl.Expr:
    n = pl.col("__consignee_n")
    return pl.when(n > 0).then(pl.col("__consignee_underv") / n)


@feature(
    F,
    "Other consignees seen before with the same phone",
    "{value} other consignee(s) used the same phone",
    "Тот же телефон {value|указывал|указывали|указывали} ещё {value} "
    "{value|получатель|получателя|получателей}",
)
def consignee_phone_shared() -> pl.Expr:
    return pl.col("__shared_phone")


@feature(
    F,
    "Other consignees seen before at the same address",
    "{value} other consignee(s) declared the same address",
    "Тот же адрес {value|указывал|указывали|указывали} ещё {value} "
    "{value|получатель|получателя|получателей}",
)
def consignee_address_shared() -> pl.Expr:
    return pl.col("__shared_address")
