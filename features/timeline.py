"""Point-in-time primitives: what was known about a key strictly before a time.

Every history feature is an as-of question: "for this key, at this shipment's
declared_at, how many events / what sum / since when?", answered only from
events strictly before that instant. The functions here answer such questions
for any number of queries at once with sorted as-of joins, so the batch over all
shipments and the online call for one new shipment run the same code.

The tables behind the answers (`AsOfTable`: cumulative counts and sums per key
and time; `FirstSeen`: the first time each (key, value) pair occurred) are built
once and kept by `features.state.FeatureState`. They are sorted by key and carry
a hash index key -> row slice, so a query for a few keys reads only their rows:
an as-of join matches rows of the same key only, so restricting the table to
the query's keys gives exactly the rows the full table gives. Rows recorded
later are appended without rebuilding (`append`), provided they are not earlier
than what the table holds for their key; an append of a few rows (one shipment)
is computed in Python from the index, the same rows the frame operations give.
A few queries are answered from the index too, as frames or, for callers that
put several answers into one frame of their own, in light form (`Columns`).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

QUERY_ROW = "__qrow"
# A query with at most this many distinct keys reads the table through its index;
# more keys scan the whole table (the same rows either way).
RESTRICT_MAX_KEYS = 512
# Appended rows are merged into the sorted table when they grow beyond this.
COMPACT_MIN_ROWS = 50_000
# A query of at most this many rows is answered by looking up each row's key in
# the index and searching its times (numpy), without building frames: the same
# answer as the as-of join, without the fixed cost of frame operations (an online
# call asks about one shipment).
LOOKUP_MAX_QUERIES = 64
# An append of at most this many event rows is computed in Python, per key from
# the index (`AsOfTable._listed_rows`, `FirstSeen._listed_pairs`): the rows the
# frame operations give, without their fixed cost (an append adds one shipment).
APPEND_MAX_ROWS = 64
# Rows of a series read one by one, when at most this many (cheaper than a gather).
FEW_ROWS = 16
# Physical (integer) steps of the time units.
_UNIT = {
    "us": dt.timedelta(microseconds=1),
    "ms": dt.timedelta(milliseconds=1),
}


class KeyedRows:
    """Rows sorted by `key`, with a lazily built hash index key -> (start, length).

    Rows appended later wait in a side frame (`extra`, with its own index key ->
    row numbers) until there are enough of them to merge; rows of one key
    appended later come after its earlier rows (keys may interleave: an as-of
    join only needs each key's rows in time order). When an append says it
    `replaces` rows, reads keep, among rows equal on `dedupe`, the last one."""

    def __init__(self, frame: pl.DataFrame, key: str, order: Sequence[str], dedupe: Sequence[str]):
        self.frame = frame
        self.key = key
        self.order = list(order)  # sort columns, key first
        self.dedupe = list(dedupe)
        self.extra: pl.DataFrame | None = None
        self.replaced = False
        self._index: dict[object, tuple[int, int]] | None = None
        self._extra_index: dict[object, list[int]] = {}
        # Physical numpy arrays of numeric and temporal columns, by column (main
        # frame; appended rows), built on first lookup.
        self._arrays: dict[str, np.ndarray] = {}
        self._extra_arrays: dict[str, np.ndarray] = {}
        self._nulls: dict[tuple[str, ...], bool] = {}
        self._schema: pl.Schema | None = None

    @property
    def height(self) -> int:
        return self.frame.height + (0 if self.extra is None else self.extra.height)

    def index(self) -> dict[object, tuple[int, int]]:
        if self._index is None:
            runs = self.frame[self.key].rle()
            lengths = runs.struct.field("len").to_list()
            values = runs.struct.field("value").to_list()
            starts = itertools.accumulate(lengths, initial=0)
            self._index = {v: (s, n) for v, s, n in zip(values, starts, lengths, strict=False)}
        return self._index

    def array(self, column: str, extra: bool = False) -> np.ndarray:
        cache = self._extra_arrays if extra else self._arrays
        array = cache.get(column)
        if array is None:
            frame = self.extra if extra else self.frame
            assert frame is not None
            array = _physical(frame.get_column(column)).to_numpy()
            cache[column] = array
        return array

    def schema(self) -> pl.Schema:
        if self._schema is None:
            self._schema = self.frame.schema
        return self._schema

    def has_nulls(self, columns: Sequence[str]) -> bool:
        """Whether any of these columns holds a null (lookups need none)."""
        found = self._nulls.get(tuple(columns))
        if found is None:
            frames = [self.frame] if self.extra is None else [self.frame, self.extra]
            found = any(f.get_column(c).has_nulls() for f in frames for c in columns)
            self._nulls[tuple(columns)] = found
        return found

    def key_values(self, key: object, column: str) -> np.ndarray:
        """The physical values (integers for times) of a numeric or temporal
        column in the rows of one key, in order: the sorted rows, then the rows
        appended since (each key's rows in time order; when appended rows replace
        held ones, the replacing row comes last among equal times)."""
        start, length = self.index().get(key, (0, 0))
        values = self.array(column)[start : start + length]
        extra = self._extra_index.get(key) if self.extra is not None else None
        if extra:
            values = np.concatenate([values, self.array(column, extra=True)[extra]])
        return values

    def key_list(self, key: object, column: str) -> list[object]:
        """`key_values` of any column, as a list (strings included)."""
        start, length = self.index().get(key, (0, 0))
        values = self.frame.get_column(column).slice(start, length).to_list() if length else []
        extra = self._extra_index.get(key) if self.extra is not None else None
        if extra:
            assert self.extra is not None
            appended = self.extra.get_column(column)
            if len(extra) <= FEW_ROWS:
                values += [appended[i] for i in extra]
            else:
                values += appended.gather(extra).to_list()
        return values

    def rows(self, keys: pl.Series | None = None) -> pl.DataFrame:
        """All rows (keys None), or at least the rows of the given keys (every row
        when there are many keys: a join on the key reads the same rows); each
        key's rows in `order`."""
        wanted: list[object] | None = None
        if keys is not None and keys.len() <= RESTRICT_MAX_KEYS:  # few: in Python
            wanted = [k for k in dict.fromkeys(keys.to_list()) if k is not None]
        if wanted is None:
            parts = [self.frame] if self.extra is None else [self.frame, self.extra]
            appended = self.extra is not None
        else:
            index = self.index()
            parts = [self.frame.slice(*index[k]) for k in wanted if k in index]
            extra_rows = [i for k in wanted for i in self._extra_index.get(k, ())]
            if self.extra is not None and extra_rows:
                parts.append(self.extra[extra_rows])
            appended = bool(extra_rows)
            if not parts:
                parts = [self.frame.clear()]
        frame = parts[0] if len(parts) == 1 else pl.concat(parts)
        # (only appended rows can replace: the sorted rows hold no duplicates)
        if appended and self.replaced:
            frame = frame.unique(self.dedupe, keep="last", maintain_order=True).sort(self.order)
        return frame

    def append(self, rows: pl.DataFrame, *, replaces: bool = False) -> None:
        """Add rows; `replaces`: some may replace rows held (equal on `dedupe`)."""
        if rows.schema != self.schema():
            rows = rows.select(self.frame.columns).cast(self.frame.schema)
        start = 0 if self.extra is None else self.extra.height
        for i, k in enumerate(rows.get_column(self.key).to_list(), start=start):
            self._extra_index.setdefault(k, []).append(i)
        if self.extra is None:
            self.extra = rows.clone()  # (a copy of the caller's frame: extended in place)
        else:
            self.extra.vstack(rows, in_place=True)
        # The arrays and null flags known, brought up to date (not rebuilt: the
        # rows appended are few, those held many).
        self._extra_arrays = {
            c: np.concatenate([a, _physical(rows.get_column(c)).to_numpy()])
            for c, a in self._extra_arrays.items()
        }
        self._nulls = {
            cs: found or any(rows.get_column(c).has_nulls() for c in cs)
            for cs, found in self._nulls.items()
        }
        self.replaced = self.replaced or replaces
        if self.extra.height >= max(COMPACT_MIN_ROWS, self.frame.height // 10):
            merged = pl.concat([self.frame, self.extra])
            if self.replaced:
                merged = merged.unique(self.dedupe, keep="last", maintain_order=True)
            self.frame = merged.sort(self.order)
            self.extra = None
            self.replaced = False
            self._index = None
            self._extra_index = {}
            self._arrays = {}
            self._extra_arrays = {}


def _physical(series: pl.Series) -> pl.Series:
    """The physical values of a series (integers for times), by a cast: cheaper
    than `to_physical`."""
    if not series.dtype.is_temporal():
        return series
    return series.cast(pl.Int32 if series.dtype == pl.Date else pl.Int64)


def _grouped(events: pl.DataFrame, key: str, time: str, sums: list[str]) -> pl.DataFrame:
    """Per (key, time) of the events with a key: the number of events (`__n`)
    and the sums, sorted by key then time."""
    return (
        events.filter(pl.col(key).is_not_null())
        .group_by(key, time)
        .agg(pl.len().alias("__n"), *[pl.col(c).sum() for c in sums])
        .sort(key, time)
    )


def _cumulative(events: pl.DataFrame, key: str, time: str, sums: list[str]) -> pl.DataFrame:
    """Per (key, time): cumulative event count and sums up to and including that
    time, sorted by key then time."""
    counted = _sorted_cumulative(events, key, time, sums)
    if counted is not None:
        return counted
    grouped = _grouped(events, key, time, sums)
    return grouped.with_columns(
        pl.col("__n").cum_sum().over(key).alias("__cum_n"),
        *[pl.col(c).cum_sum().over(key).alias(f"__cum_{c}") for c in sums],
        pl.col(time).min().over(key).alias("__first"),
    ).select(key, time, "__cum_n", "__first", *[f"__cum_{c}" for c in sums])


def _sorted_cumulative(
    events: pl.DataFrame, key: str, time: str, sums: list[str]
) -> pl.DataFrame | None:
    """`_cumulative` of events whose sums are all integers (Int64) without nulls,
    and whose times are without nulls, from one sort of the events by key then
    time instead of a grouping and a sort of the groups: each (key, time) is a
    run of equal rows, its count the events up to its run's end since its key's
    first row, its sums the running totals of the events there less those
    before the key's first row (exact: integers, wrapping alike), its first time
    its key's first row's. None otherwise (floats: a group's sum is Polars' own)."""
    values = [events.get_column(c) for c in sums]
    times = events.get_column(time)
    if (
        not times.dtype.is_temporal()
        or times.has_nulls()
        or any(v.dtype != pl.Int64 or v.has_nulls() for v in values)
    ):
        return None
    ordered = events.select(key, time, *sums).filter(pl.col(key).is_not_null()).sort(key, time)
    keys, times = ordered.get_column(key), ordered.get_column(time)
    new_key = keys.ne_missing(keys.shift(1)).to_numpy()
    new_group = new_key | times.ne_missing(times.shift(1)).to_numpy()
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(new_group))[: len(starts)] - 1  # each group's last row
    key_first = np.flatnonzero(new_key)[np.cumsum(new_key) - 1]  # per row
    first_of_group = key_first[ends]
    counts = (ends + 1 - first_of_group).astype(np.uint32)
    columns = [
        keys.gather(starts),
        times.gather(starts),
        pl.Series("__cum_n", counts, dtype=pl.UInt32),
        times.gather(first_of_group).alias("__first"),
    ]
    for c in sums:
        running = np.cumsum(ordered.get_column(c).to_numpy(), dtype=np.int64)
        before = np.concatenate([np.zeros(1, dtype=np.int64), running])[first_of_group]
        columns.append(pl.Series(f"__cum_{c}", running[ends] - before, dtype=pl.Int64))
    return pl.DataFrame(columns)


class AsOfTable:
    """The cumulative table (`_cumulative`) of some events, per key and time."""

    def __init__(self, rows: KeyedRows, key: str, time: str, sums: list[str]):
        self.rows = rows
        self.key = key
        self.time = time
        self.sums = sums
        self.cums = [f"__cum_{c}" for c in sums]  # their columns

    @classmethod
    def build(
        cls, events: pl.DataFrame, key: str, time: str, sums: list[str] | None = None
    ) -> AsOfTable:
        sums = sums or []
        cum = _cumulative(events.select(key, time, *sums), key, time, sums)
        return cls(KeyedRows(cum, key, [key, time], [key, time]), key, time, sums)

    @classmethod
    def build_each(
        cls, events: pl.DataFrame, key: str, time: str, sums: Sequence[Mapping[str, str]]
    ) -> list[AsOfTable]:
        """`build` of several tables over the same events, each summing its own
        columns (`sums`: per table, its sum's name -> the events' column), from one
        grouping of the events: per (key, time) the same groups, counts and first
        times for every table, and each column's sums and running totals are its
        own (computed column by column), so each table is the one `build` gives of
        the events with its columns under its names."""
        columns = list(dict.fromkeys(c for table in sums for c in table.values()))
        cum = _cumulative(events.select(key, time, *columns), key, time, columns)
        built = []
        for table in sums:
            frame = cum.select(
                key,
                time,
                "__cum_n",
                "__first",
                *[pl.col(f"__cum_{c}").alias(f"__cum_{name}") for name, c in table.items()],
            )
            rows = KeyedRows(frame, key, [key, time], [key, time])
            built.append(cls(rows, key, time, list(table)))
        return built

    def frame(self, keys: pl.Series | None = None) -> pl.DataFrame:
        return self.rows.rows(keys)

    def append(self, events: pl.DataFrame) -> None:
        """Add events no earlier than the latest time this table holds for their key
        (else ValueError, and nothing is added)."""
        new = self._new_rows(events)
        if new is not None:
            rows, replaces = new
            self.rows.append(rows, replaces=replaces)

    def check(self, events: pl.DataFrame) -> None:
        """Raise ValueError if `append(events)` would."""
        self._new_rows(events)

    def _new_rows(self, events: pl.DataFrame) -> tuple[pl.DataFrame, bool] | None:
        """The rows `append(events)` adds (the table's schema), and whether some
        replace rows held (at the time of their key's last row held); None when
        none (no event with a key); ValueError when some precede rows held."""
        if events.height == 0:
            return None
        listed = self._listed(events)
        return self._joined_rows(events) if listed is None else self._listed_rows(*listed)

    def _precedes(self) -> ValueError:
        """The error of an append with rows earlier than their key's last row held."""
        return ValueError(
            f"rows appended to the {self.key!r} table precede rows it already holds: "
            "append only what was recorded after the state"
        )

    def _joined_rows(self, events: pl.DataFrame) -> tuple[pl.DataFrame, bool] | None:
        """`_new_rows` by frame operations: the events grouped, joined to each
        key's last row held."""
        key, time = self.key, self.time
        grouped = _grouped(events, key, time, self.sums)
        if grouped.height == 0:
            return None
        base = (
            self.frame(grouped[key].unique())
            .group_by(key)
            .agg(
                pl.col(time).last().alias("__b_t"),
                pl.col("__cum_n").last().alias("__b_n"),
                pl.col("__first").first().alias("__b_first"),
                *[pl.col(f"__cum_{c}").last().alias(f"__b_{c}") for c in self.sums],
            )
        )
        joined = grouped.join(base, on=key, how="left", maintain_order="left")
        if joined.filter(pl.col(time) < pl.col("__b_t")).height:
            raise self._precedes()
        schema = self.rows.schema()
        rows = joined.with_columns(
            (pl.col("__n").cum_sum().over(key) + pl.col("__b_n").fill_null(0)).alias("__cum_n"),
            pl.coalesce(pl.col("__b_first"), pl.col(time).min().over(key)).alias("__first"),
            *[
                (
                    pl.col(c).cum_sum().over(key).cast(schema[f"__cum_{c}"])
                    + pl.col(f"__b_{c}").fill_null(0)
                ).alias(f"__cum_{c}")
                for c in self.sums
            ],
        )
        replaces = bool(joined.filter(pl.col(time) == pl.col("__b_t")).height)
        return rows.select(schema.names()).cast(schema), replaces

    def _listed(self, events: pl.DataFrame) -> tuple[list[Any], list[int], list[list[Any]]] | None:
        """The events' keys, physical times and summed columns as lists, when
        `_listed_rows` gives exactly what `_joined_rows` does: few events, key and
        time of the table's types (keys Python orders as Polars sorts them), no
        null time, sums of integers into integers or of Float64 into Float64, and
        no null in the columns held (their physical values are read)."""
        if events.height > APPEND_MAX_ROWS:
            return None
        held, key, time, cums = self.rows, self.key, self.time, self.cums
        schema = held.schema()
        types = _dtypes(events, [key, time, *self.sums])
        if not (
            schema.names() == [key, time, "__cum_n", "__first", *cums]
            and types[key] == schema[key]
            and _sorts_as_python(schema[key])
            and types[time] == schema[time] == schema["__first"]
            and schema[time].is_temporal()
            and all(
                _sums_as_python(types[c], schema[f]) for c, f in zip(self.sums, cums, strict=True)
            )
        ):
            return None
        times = events.get_column(time)
        if times.has_nulls() or held.has_nulls([time, "__cum_n", "__first", *cums]):
            return None
        return (
            events.get_column(key).to_list(),
            _physical(times).to_list(),
            [events.get_column(c).to_list() for c in self.sums],
        )

    def _listed_rows(
        self, keys: list[Any], times: list[int], sums: list[list[Any]]
    ) -> tuple[pl.DataFrame, bool] | None:
        """`_new_rows` in Python (from `_listed`): the events grouped per (key,
        time), each key's last row held read from the index, and the same
        arithmetic in the same order as the frame operations (group sums as
        `_group_sum`, then cumulated from zero, then added to the key's last row)."""
        groups: dict[tuple[Any, int], list[int]] = {}
        for i, (k, t) in enumerate(zip(keys, times, strict=True)):
            if k is not None:
                groups.setdefault((k, t), []).append(i)
        if not groups:
            return None
        held, schema = self.rows, self.rows.schema()
        floats = [schema[c] == pl.Float64 for c in self.cums]
        rows: list[tuple[Any, ...]] = []  # in the order of the table's columns
        replaces = False
        for k, pairs in itertools.groupby(sorted(groups), key=lambda pair: pair[0]):
            held_times = held.key_values(k, self.time)
            last: int | None = None
            n, first, bases = 0, None, [0] * len(self.cums)
            if held_times.size:
                last, n = int(held_times[-1]), int(held.key_values(k, "__cum_n")[-1])
                first = int(held.key_values(k, "__first")[0])
                bases = [held.key_values(k, c)[-1].item() for c in self.cums]
            running: list[Any] = [0.0 if f else 0 for f in floats]
            for _, t in pairs:
                if last is not None and t < last:
                    raise self._precedes()
                replaces = replaces or t == last
                members = groups[k, t]
                n += len(members)
                first = t if first is None else first
                for j, values in enumerate(sums):
                    running[j] += _group_sum([values[i] for i in members], floats[j])
                rows.append((k, t, n, first, *[r + b for r, b in zip(running, bases, strict=True)]))
        return _frame(rows, schema), replaces


def _dtypes(frame: pl.DataFrame, columns: list[str]) -> dict[str, pl.DataType]:
    """The types of some columns of a frame (its whole `schema` costs more to
    build, the more columns it has)."""
    return {c: frame.get_column(c).dtype for c in columns}


def _sorts_as_python(dtype: pl.DataType) -> bool:
    """Whether Python orders values of this type (from `to_list`) as Polars sorts them."""
    return dtype == pl.String or dtype.is_integer()


def _sums_as_python(source: pl.DataType, target: pl.DataType) -> bool:
    """Whether `_group_sum` of a column of type `source`, cumulated into `target`,
    gives exactly what Polars does."""
    integral = source == pl.Boolean or source.is_integer()
    return (integral and target.is_integer()) or source == target == pl.Float64


def _group_sum(values: list[Any], floats: bool) -> Any:
    """The sum of a group's values (nulls skipped) as Polars' group_by sum gives
    it, to the bit for floats: Kahan-compensated, from 0.0 (Polars keeps the sign
    of a lone -0.0, which the cumulative sum from 0.0 drops anyway)."""
    if not floats:
        return sum(v for v in values if v is not None)
    total = compensation = 0.0
    for v in values:
        if v is not None:
            y = v - compensation
            t = total + y
            compensation = (t - total) - y
            total = t
    return total


def _frame(rows: list[tuple[Any, ...]], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """A frame of this schema from rows of Python values, temporal ones given as
    physical integers (the fastest way to build a small frame: as dicts, faster
    than rows)."""
    names = list(schema)
    return pl.from_dicts([dict(zip(names, row, strict=True)) for row in rows], schema=schema)


class Columns:
    """A query's answer in light form: a Python list per output column (temporal
    values as physical integers), and the columns' types, in order (plain dicts:
    a `pl.Schema` costs more to build). The frame of an answer costs more than
    looking up a few queries; a caller that puts several answers into one frame
    of its own takes them in this form (`as_of_columns`, `distinct_columns`),
    the others as frames (`frame`)."""

    def __init__(self, types: dict[str, pl.DataType], values: dict[str, list[Any]]):
        self.types = types
        self.values = values

    @classmethod
    def of(cls, frame: pl.DataFrame) -> Columns:
        """The columns of a frame."""
        columns = frame.get_columns()
        return cls(
            {c.name: c.dtype for c in columns}, {c.name: _physical(c).to_list() for c in columns}
        )

    def frame(self) -> pl.DataFrame:
        """The answer as a frame (`_frame`, in the order of `types`)."""
        rows = list(zip(*[self.values[c] for c in self.types], strict=True))
        return _frame(rows, self.types)


def as_of_query(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    *,
    windows: dict[str, dt.timedelta] | None = None,
    prefix: str,
) -> pl.DataFrame:
    """`as_of_counts` answered from a built table (see there)."""
    windows = windows or {}
    found = _as_of_few(queries, q_key, q_time, table, windows, prefix)
    if found is not None:
        return found.frame()
    return _as_of_join(queries, q_key, q_time, table, windows, prefix)


def as_of_columns(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    *,
    windows: dict[str, dt.timedelta] | None = None,
    prefix: str,
) -> Columns:
    """`as_of_query` in light form (`Columns`), for a few queries."""
    windows = windows or {}
    found = _as_of_few(queries, q_key, q_time, table, windows, prefix)
    if found is not None:
        return found
    return Columns.of(_as_of_join(queries, q_key, q_time, table, windows, prefix))


def _as_of_few(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    windows: dict[str, dt.timedelta],
    prefix: str,
) -> Columns | None:
    """`_as_of_values` when there are few queries (else None: the join answers)."""
    if queries.height > LOOKUP_MAX_QUERIES:
        return None
    return _as_of_values(queries, q_key, q_time, table, windows, prefix)


def _as_of_join(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    windows: dict[str, dt.timedelta],
    prefix: str,
) -> pl.DataFrame:
    """`as_of_query` by a backward as-of join of the queries on the table."""
    key, time, sums = table.key, table.time, table.sums
    cum = table.frame(queries[q_key])
    # One as-of join for every instant asked: q_time, then q_time - w per window.
    ats = [pl.col(q_time), *[pl.col(q_time) - width for width in windows.values()]]
    n = queries.height
    # Each row's position in the answer (instant i, query j: i * n + j).
    parts = [
        queries.select(
            pl.int_range(i * n, (i + 1) * n, dtype=pl.UInt64).alias(QUERY_ROW),
            pl.col(q_key).alias(key),
            at.alias(time),
        )
        for i, at in enumerate(ats)
    ]
    left = parts[0] if len(parts) == 1 else pl.concat(parts)
    if left.height > 1:  # (one row is sorted)
        left = left.sort(time)
    cols = ["__cum_n", "__first", *[f"__cum_{c}" for c in sums]]
    joined = left.join_asof(
        cum, on=time, by=key, strategy="backward", allow_exact_matches=False, check_sortedness=False
    ).select(QUERY_ROW, *cols)  # (back in query order below: no keys or times to move)
    if joined.height > 1:
        joined = joined.sort(QUERY_ROW)
    wide = pl.DataFrame(
        [
            joined.get_column(c).slice(i * n, n).alias(f"{c}@{i}")
            for i in range(len(ats))
            for c in cols
        ]
    )

    def total(c: str, i: int) -> pl.Expr:
        return pl.col(f"{c}@{i}").fill_null(0)

    out = [
        total("__cum_n", 0).alias(f"{prefix}_n"),
        pl.col("__first@0").alias(f"{prefix}_first"),
        *[total(f"__cum_{c}", 0).alias(f"{prefix}_{c}") for c in sums],
    ]
    for i, label in enumerate(windows, start=1):
        out.append((total("__cum_n", 0) - total("__cum_n", i)).alias(f"{prefix}_n_{label}"))
        out.extend(
            (total(f"__cum_{c}", 0) - total(f"__cum_{c}", i)).alias(f"{prefix}_{c}_{label}")
            for c in sums
        )
    return wide.select(out)


def _physical_times(
    series: pl.Series, dtype: pl.DataType, widths: Sequence[dt.timedelta]
) -> tuple[list[int | None], list[int]] | None:
    """The query times in the table's physical unit, and the window widths in it
    (None when a width is not a whole number of units: the join answers)."""
    unit = _UNIT.get(getattr(dtype, "time_unit", None) or "")
    if unit is None or any(w % unit for w in widths):
        return None
    if series.dtype != dtype:
        series = series.cast(dtype)
    return _physical(series).to_list(), [w // unit for w in widths]


def _as_of_values(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    table: AsOfTable,
    windows: dict[str, dt.timedelta],
    prefix: str,
) -> Columns | None:
    """`as_of_query` for a few queries, in light form: per query, the key's rows
    from the index and a binary search of its times (the row before q_time,
    strictly, as the backward as-of join without exact matches takes)."""
    rows, time, sums = table.rows, table.time, table.sums
    schema = rows.schema()
    physical = _physical_times(queries.get_column(q_time), schema[time], list(windows.values()))
    if physical is None:
        return None
    times, widths = physical
    cols = ["__cum_n", "__first", *[f"__cum_{c}" for c in sums]]
    if rows.has_nulls([time, *cols]):
        return None
    n, instants = queries.height, 1 + len(widths)
    # got[c][i, j]: column c of the row matched by query j at instant i (0: none)
    got = {c: np.zeros((instants, n), dtype=rows.array(c).dtype) for c in cols}
    matched = [False] * n  # at the query's own time
    for j, (k, t) in enumerate(zip(queries.get_column(q_key).to_list(), times, strict=True)):
        if k is None or t is None:
            continue
        held = rows.key_values(k, time)
        if held.size == 0:
            continue
        positions = (held.searchsorted([t, *[t - w for w in widths]], side="left") - 1).tolist()
        if positions[0] < 0:  # (windows reach no further back than `now`)
            continue
        matched[j] = True
        for c in cols:
            values, column = rows.key_values(k, c), got[c]
            for i, p in enumerate(positions):
                if p >= 0:
                    column[i, j] = values[p]

    names = {"__cum_n": "n", **{f"__cum_{c}": c for c in sums}}
    out = {
        f"{prefix}_n": got["__cum_n"][0].tolist(),
        f"{prefix}_first": [
            v if m else None for v, m in zip(got["__first"][0].tolist(), matched, strict=True)
        ],
    }
    types = {f"{prefix}_n": schema["__cum_n"], f"{prefix}_first": schema["__first"]}
    for c in cols[2:]:
        out[f"{prefix}_{names[c]}"], types[f"{prefix}_{names[c]}"] = got[c][0].tolist(), schema[c]
    for i, label in enumerate(windows, start=1):
        for c, name in names.items():
            out[f"{prefix}_{name}_{label}"] = (got[c][0] - got[c][i]).tolist()
            types[f"{prefix}_{name}_{label}"] = schema[c]
    return Columns(types, out)


def as_of_counts(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    events: pl.DataFrame,
    key: str,
    time: str,
    *,
    windows: dict[str, dt.timedelta] | None = None,
    sums: list[str] | None = None,
    prefix: str,
) -> pl.DataFrame:
    """For each query row, from the events of the same key strictly before q_time:

    * `{prefix}_n`: number of events ever; `{prefix}_first`: time of the first one;
    * `{prefix}_n_{w}`: number in the window [q_time - w, q_time) for each window;
    * `{prefix}_{c}`: sum of column c over all earlier events, for each c in sums,
      and `{prefix}_{c}_{w}` the same sum within each window.

    Returns a frame aligned row for row with `queries`.
    """
    table = AsOfTable.build(events, key, time, sums)
    return as_of_query(queries, q_key, q_time, table, windows=windows, prefix=prefix)


def first_occurrences(events: pl.DataFrame, keys: list[str], time: str) -> pl.DataFrame:
    """The earliest time each distinct combination of keys occurs (nulls dropped),
    sorted by time then keys."""
    return _firsts(events, keys, time).sort(time, *keys)


def _firsts(events: pl.DataFrame, keys: list[str], time: str) -> pl.DataFrame:
    """`first_occurrences` in no particular order."""
    return events.drop_nulls(keys).group_by(keys).agg(pl.col(time).min())


class FirstSeen:
    """The first time each (key, value) pair occurred, and per key the cumulative
    count of distinct values by time."""

    def __init__(self, firsts: KeyedRows, counts: AsOfTable, value: str):
        self.firsts = firsts
        self.counts = counts
        self.value = value

    @property
    def key(self) -> str:
        return self.counts.key

    @property
    def time(self) -> str:
        return self.counts.time

    @classmethod
    def build(cls, events: pl.DataFrame, key: str, value: str, time: str) -> FirstSeen:
        # (in no particular order: both tables sort them, each pair is one row)
        firsts = _firsts(events.select(key, value, time), [key, value], time)
        rows = KeyedRows(firsts.sort(key, value), key, [key, value], [key, value])
        return cls(rows, AsOfTable.build(firsts, key, time), value)

    def append(self, events: pl.DataFrame) -> None:
        """Add events no earlier than any this structure holds."""
        new = self._new_pairs(events)
        if new.height:
            self.counts.append(new)
            self.firsts.append(new)

    def _new_pairs(self, events: pl.DataFrame) -> pl.DataFrame:
        """The `first_occurrences` of the pairs in `events` not held yet."""
        new = self._listed_pairs(events)
        if new is None:
            key, value, time = self.key, self.value, self.time
            new = first_occurrences(events.select(key, value, time), [key, value], time)
            if new.height:
                known = self.firsts.rows(new[key]).select(key, value)
                new = new.join(known, on=[key, value], how="anti")
        return new

    def _listed_pairs(self, events: pl.DataFrame) -> pl.DataFrame | None:
        """`_new_pairs` for few events (else None), in Python: each pair's first
        time, the pairs held looked up in the index, sorted as the frame."""
        key, value, time = self.key, self.value, self.time
        if events.height > APPEND_MAX_ROWS:
            return None
        schema = pl.Schema(_dtypes(events, [key, value, time]))
        if not (
            schema == self.firsts.schema()
            and _sorts_as_python(schema[key])
            and _sorts_as_python(schema[value])
            and schema[time].is_temporal()
        ):
            return None
        times = events.get_column(time)
        if times.has_nulls():
            return None
        firsts: dict[tuple[Any, Any], int] = {}
        for k, v, t in zip(
            events.get_column(key).to_list(),
            events.get_column(value).to_list(),
            _physical(times).to_list(),
            strict=True,
        ):
            if k is not None and v is not None and ((k, v) not in firsts or t < firsts[k, v]):
                firsts[k, v] = t
        held: dict[Any, list[Any]] = {}
        new = []
        for (k, v), t in firsts.items():
            if k not in held:
                held[k] = self.firsts.key_list(k, value)
            if v not in held[k]:
                new.append((t, k, v))
        if not new:  # (the usual case: a cheaper empty frame)
            return self.firsts.frame.clear()
        new.sort()
        return _frame([(k, v, t) for t, k, v in new], schema)


def distinct_query(
    queries: pl.DataFrame, q_key: str, q_time: str, seen: FirstSeen, *, prefix: str
) -> pl.DataFrame:
    """`distinct_before` answered from a built `FirstSeen`."""
    counted = as_of_query(queries, q_key, q_time, seen.counts, prefix=prefix)
    return counted.get_column(f"{prefix}_n").alias(f"{prefix}_distinct").to_frame()


def distinct_columns(
    queries: pl.DataFrame, q_key: str, q_time: str, seen: FirstSeen, *, prefix: str
) -> Columns:
    """`distinct_query` in light form (`Columns`), for a few queries."""
    counted = as_of_columns(queries, q_key, q_time, seen.counts, prefix=prefix)
    name = f"{prefix}_distinct"
    return Columns({name: counted.types[f"{prefix}_n"]}, {name: counted.values[f"{prefix}_n"]})


def pair_seen_query(
    queries: pl.DataFrame, q_keys: tuple[str, str], q_time: str, seen: FirstSeen
) -> pl.Series:
    """`pair_seen_before` answered from a built `FirstSeen`."""
    found = _pair_few(queries, q_keys, q_time, seen)
    if found is not None:
        return pl.Series(found, dtype=pl.Boolean)
    return _pair_join(queries, q_keys, q_time, seen)


def pair_seen_values(
    queries: pl.DataFrame, q_keys: tuple[str, str], q_time: str, seen: FirstSeen
) -> list[bool]:
    """`pair_seen_query` in light form (a list), for a few queries."""
    found = _pair_few(queries, q_keys, q_time, seen)
    if found is not None:
        return found
    return _pair_join(queries, q_keys, q_time, seen).to_list()


def _pair_few(
    queries: pl.DataFrame, q_keys: tuple[str, str], q_time: str, seen: FirstSeen
) -> list[bool] | None:
    """`_pair_values` when there are few queries (else None: the join answers)."""
    if queries.height > LOOKUP_MAX_QUERIES:
        return None
    return _pair_values(queries, q_keys, q_time, seen)


def _pair_join(
    queries: pl.DataFrame, q_keys: tuple[str, str], q_time: str, seen: FirstSeen
) -> pl.Series:
    """`pair_seen_query` by a join of the queries on the pairs' first times."""
    key, value, time = seen.key, seen.value, seen.time
    firsts = seen.firsts.rows(queries[q_keys[0]])
    joined = queries.select(
        pl.col(q_keys[0]).alias(key),
        pl.col(q_keys[1]).alias(value),
        pl.col(q_time).alias("__t"),
    ).join(firsts, on=[key, value], how="left", maintain_order="left")
    return (joined[time].is_not_null() & (joined[time] < joined["__t"])).fill_null(False)


def _pair_values(
    queries: pl.DataFrame, q_keys: tuple[str, str], q_time: str, seen: FirstSeen
) -> list[bool] | None:
    """`pair_seen_query` for a few queries, through the index (one row per pair)."""
    firsts = seen.firsts
    physical = _physical_times(queries.get_column(q_time), firsts.schema()[seen.time], [])
    if physical is None:
        return None
    if firsts.has_nulls([seen.time]):
        return None
    out: list[bool] = []
    keys = queries.get_column(q_keys[0]).to_list()
    values = queries.get_column(q_keys[1]).to_list()
    for k, v, t in zip(keys, values, physical[0], strict=True):
        hit = False
        if k is not None and v is not None and t is not None:
            held = firsts.key_list(k, seen.value)
            if v in held:
                hit = bool(firsts.key_values(k, seen.time)[held.index(v)] < t)
        out.append(hit)
    return out


def distinct_before(
    queries: pl.DataFrame,
    q_key: str,
    q_time: str,
    events: pl.DataFrame,
    key: str,
    value: str,
    time: str,
    *,
    prefix: str,
) -> pl.DataFrame:
    """Number of distinct `value`s seen with the query's key strictly before q_time."""
    seen = FirstSeen.build(events, key, value, time)
    return distinct_query(queries, q_key, q_time, seen, prefix=prefix)


def pair_seen_before(
    queries: pl.DataFrame,
    q_keys: tuple[str, str],
    q_time: str,
    events: pl.DataFrame,
    keys: tuple[str, str],
    time: str,
) -> pl.Series:
    """Whether the query's (key, value) pair occurred strictly before q_time."""
    seen = FirstSeen.build(events, keys[0], keys[1], time)
    return pair_seen_query(queries, q_keys, q_time, seen)
