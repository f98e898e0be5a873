"""Point-in-time primitives: what was known about a key strictly before a time.

Every history feature is an as-of question: "for this key, at this shipment's
declared_at, how many events / what sum / since when?", answered only from
events strictly before that instant. The functions here answer such questions
for any number of queries at once with sorted as-of joins, so the batch over all
shipments and the online call for one new shipment run the same code.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

QUERY_ROW = "__qrow"


def _cumulative(events: pl.DataFrame, key: str, time: str, sums: list[str]) -> pl.DataFrame:
    """Per (key, time): cumulative event count and sums up to and including that time."""
    grouped = (
        events.filter(pl.col(key).is_not_null())
        .group_by(key, time)
        .agg(pl.len().alias("__n"), *[pl.col(c).sum() for c in sums])
        .sort(time, key)
    )
    return grouped.with_columns(
        pl.col("__n").cum_sum().over(key).alias("__cum_n"),
        *[pl.col(c).cum_sum().over(key).alias(f"__cum_{c}") for c in sums],
        pl.col(time).min().over(key).alias("__first"),
    ).select(key, time, "__cum_n", "__first", *[f"__cum_{c}" for c in sums])


def _asof(
    queries: pl.DataFrame, cum: pl.DataFrame, q_key: str, key: str, at: pl.Expr, time: str
) -> pl.DataFrame:
    left = queries.select(QUERY_ROW, pl.col(q_key).alias(key), at.alias(time)).sort(time)
    joined = left.join_asof(
        cum, on=time, by=key, strategy="backward", allow_exact_matches=False, check_sortedness=False
    )
    return joined.sort(QUERY_ROW)


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
    sums = sums or []
    windows = windows or {}
    q = queries.select(q_key, q_time).with_row_index(QUERY_ROW)
    cum = _cumulative(events.select(key, time, *sums), key, time, sums)
    now = _asof(q, cum, q_key, key, pl.col(q_time), time)
    out = [
        now["__cum_n"].fill_null(0).alias(f"{prefix}_n"),
        now["__first"].alias(f"{prefix}_first"),
        *[now[f"__cum_{c}"].fill_null(0).alias(f"{prefix}_{c}") for c in sums],
    ]
    for label, width in windows.items():
        before = _asof(q, cum, q_key, key, pl.col(q_time) - width, time)
        out.append(
            (now["__cum_n"].fill_null(0) - before["__cum_n"].fill_null(0)).alias(
                f"{prefix}_n_{label}"
            )
        )
        out.extend(
            (now[f"__cum_{c}"].fill_null(0) - before[f"__cum_{c}"].fill_null(0)).alias(
                f"{prefix}_{c}_{label}"
            )
            for c in sums
        )
    return pl.DataFrame(out)


def first_occurrences(events: pl.DataFrame, keys: list[str], time: str) -> pl.DataFrame:
    """The earliest time each distinct combination of keys occurs (nulls dropped)."""
    return events.drop_nulls(keys).group_by(keys).agg(pl.col(time).min()).sort(time, *keys)


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
    firsts = first_occurrences(events.select(key, value, time), [key, value], time)
    counted = as_of_counts(queries, q_key, q_time, firsts, key, time, prefix=prefix)
    return counted.select(pl.col(f"{prefix}_n").alias(f"{prefix}_distinct"))


def pair_seen_before(
    queries: pl.DataFrame,
    q_keys: tuple[str, str],
    q_time: str,
    events: pl.DataFrame,
    keys: tuple[str, str],
    time: str,
) -> pl.Series:
    """Whether the query's (key, value) pair occurred strictly before q_time."""
    firsts = first_occurrences(events.select(*keys, time), list(keys), time)
    joined = (
        queries.select(
            pl.col(q_keys[0]).alias(keys[0]),
            pl.col(q_keys[1]).alias(keys[1]),
            pl.col(q_time).alias("__t"),
        )
        .with_row_index(QUERY_ROW)
        .join(firsts, on=list(keys), how="left")
        .sort(QUERY_ROW)
    )
    return (joined[time].is_not_null() & (joined[time] < joined["__t"])).fill_null(False)
