"""The cumulative tables built from one sort of the events when their sums are
integers (`features.timeline._sorted_cumulative`) are those of the grouping with
the window expressions (`cum_sum().over(key)`, `min().over(key)`), to the bit, on
random events (keys missing and repeated, equal times), and the grouping still
answers what the sort does not (float sums, nulls in the sums or the times); and
`FirstSeen.build`, which reads the pairs' first times unsorted, builds the tables
of the pairs sorted."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import timeline
from features.timeline import _cumulative, _grouped

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TIME = pl.Datetime("us", "UTC")


def _plain(grouped: pl.DataFrame, key: str, time: str, sums: list[str]) -> pl.DataFrame:
    """`_cumulative` of grouped events as the window expressions compute it."""
    return grouped.with_columns(
        pl.col("__n").cum_sum().over(key).alias("__cum_n"),
        *[pl.col(c).cum_sum().over(key).alias(f"__cum_{c}") for c in sums],
        pl.col(time).min().over(key).alias("__first"),
    ).select(key, time, "__cum_n", "__first", *[f"__cum_{c}" for c in sums])


def assert_same_bits(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal frames, floats to the bit (NaN payloads aside; -0.0 is not 0.0)."""
    assert_frame_equal(got, want, check_exact=True)
    for name, dtype in want.schema.items():
        if dtype == pl.Float64:
            a, b = got.get_column(name).to_numpy(), want.get_column(name).to_numpy()
            same = (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))
            assert same.all(), name


def _float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.02:
        return rng.choice([float("nan"), float("inf"), float("-inf"), -0.0, 0.0])
    return rng.uniform(-1, 1) * 10 ** rng.randrange(-12, 12)


def _events(rng: random.Random, n: int, keys: list[str | None], grid: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [rng.choice(keys) for _ in range(n)],
            "t": [START + dt.timedelta(minutes=rng.randrange(grid)) for _ in range(n)],
            "x": [rng.randrange(-5, 6) for _ in range(n)],
            "y": [_float(rng) for _ in range(n)],
        },
        schema={"k": pl.String, "t": TIME, "x": pl.Int64, "y": pl.Float64},
    )


@pytest.mark.parametrize("seed", range(10))
def test_first_seen_built_from_unsorted_firsts_equals_from_sorted(seed: int) -> None:
    """`FirstSeen.build` reads each pair's first time in no particular order: its
    tables are those of the pairs sorted by time (`first_occurrences`)."""
    rng = random.Random(seed)
    n = rng.choice([0, 1, 50, 2000])
    events = pl.DataFrame(
        {
            "k": [rng.choice([None, "a", "b", "c", "d"]) for _ in range(n)],
            "v": [rng.choice([None, "x", "y", "z", "w", "u"]) for _ in range(n)],
            "t": [START + dt.timedelta(minutes=rng.randrange(300)) for _ in range(n)],
        },
        schema={"k": pl.String, "v": pl.String, "t": TIME},
    )
    seen = timeline.FirstSeen.build(events, "k", "v", "t")
    firsts = timeline.first_occurrences(events, ["k", "v"], "t")
    assert_frame_equal(seen.firsts.frame, firsts.sort("k", "v"), check_exact=True)
    assert_frame_equal(
        seen.counts.rows.frame,
        _plain(_grouped(firsts, "k", "t", []), "k", "t", []),
        check_exact=True,
    )


@pytest.mark.parametrize("seed", range(20))
def test_integer_totals_from_one_sort_equal_the_grouping(seed: int) -> None:
    """Integer sums: `_cumulative` by one sort of the events (`_sorted_cumulative`)
    is the grouping's answer with the window expressions; with floats, nulls in
    the sums or in the times, the sort does not answer."""
    rng = random.Random(seed)
    keys = [None, *(f"k{i}" for i in range(rng.choice([1, 3, 40])))]
    events = _events(rng, rng.choice([0, 1, 7, 400, 3000]), keys, rng.choice([2, 30, 5000]))
    for sums in ([], ["x"]):
        got = timeline._sorted_cumulative(events, "k", "t", sums)
        assert got is not None
        assert_same_bits(got, _plain(_grouped(events, "k", "t", sums), "k", "t", sums))
    events = events.with_columns(x2=pl.col("x") * 3)
    want = _plain(_grouped(events, "k", "t", ["x2", "x"]), "k", "t", ["x2", "x"])
    assert_same_bits(_cumulative(events, "k", "t", ["x2", "x"]), want)
    assert timeline._sorted_cumulative(events, "k", "t", ["x", "y"]) is None
    if events.height:  # (a null in the sums, or in the times)
        nulls = events.with_columns(events.get_column("x").scatter([0], None))
        assert timeline._sorted_cumulative(nulls, "k", "t", ["x"]) is None
        no_time = events.with_columns(events.get_column("t").scatter([0], None))
        assert timeline._sorted_cumulative(no_time, "k", "t", []) is None
