"""The goods reference tables of both values built from one grouping per key
(`goods._reference_tables` by `AsOfTable.build_each`, when every line has both
values) are the tables built value by value (`AsOfTable.build` of the lines with
that value), to the bit: on random lines (keys missing and repeated, values with
NaN, infinities and -0.0), and with values missing (each value then built
alone). (The running totals' arithmetic is checked on wide magnitudes in
`test_timeline_build_fast`.)"""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from features import goods
from features.timeline import AsOfTable
from tests.features.test_timeline_build_fast import assert_same_bits

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TIME = pl.Datetime("us", "UTC")


def _plain(lines: pl.DataFrame) -> dict[tuple[str, str], AsOfTable]:
    """The tables as built value by value."""
    return {
        (value, key): AsOfTable.build(
            goods._reference_lines(lines, value), key, "__month", [value, "__sq"]
        )
        for value in goods.VALUES
        for key in goods.KEYS
    }


def _value(rng: random.Random, missing: float) -> float | None:
    r = rng.random()
    if r < missing:
        return None
    if r < missing + 0.02:
        return rng.choice([float("nan"), float("inf"), float("-inf"), -0.0, 0.0])
    # (eighths of at most 512: any sum of a few thousand is exact, so that Polars'
    # group sums, whose order of addition may differ from one grouping to the
    # next, are the same bits in both builds)
    return rng.randrange(-(2**12), 2**12) / 8


def _lines(rng: random.Random, n: int, missing: float) -> pl.DataFrame:
    hs6 = [rng.choice([None, "930120", "847130", "392690"]) for _ in range(n)]
    origin = [rng.choice(["CN", "RU", "TR"]) for _ in range(n)]
    return pl.DataFrame(
        {
            "hs6_origin": [
                None if h is None else f"{h}|{o}" for h, o in zip(hs6, origin, strict=True)
            ],
            "hs6": hs6,
            "__month": [START + dt.timedelta(days=31 * rng.randrange(30)) for _ in range(n)],
            "__luv": [_value(rng, missing) for _ in range(n)],
            "__lmpu": [_value(rng, missing) for _ in range(n)],
            "other": list(range(n)),
        },
        schema={
            "hs6_origin": pl.String,
            "hs6": pl.String,
            "__month": TIME,
            "__luv": pl.Float64,
            "__lmpu": pl.Float64,
            "other": pl.Int64,
        },
    )


@pytest.mark.parametrize("missing", [0.0, 0.1])
@pytest.mark.parametrize("seed", range(12))
def test_reference_tables_equal_the_tables_built_value_by_value(seed: int, missing: float) -> None:
    rng = random.Random(seed)
    lines = _lines(rng, rng.choice([0, 1, 40, 3000]), missing)
    got, want = goods._reference_tables(lines), _plain(lines)
    assert list(got) == list(want)
    for name, table in want.items():
        built = got[name]
        assert (built.key, built.time, built.sums) == (table.key, table.time, table.sums)
        assert built.rows.order == table.rows.order and built.rows.dedupe == table.rows.dedupe
        assert_same_bits(built.rows.frame, table.rows.frame)


def test_build_each_equals_build_of_each_table() -> None:
    rng = random.Random(3)
    lines = _lines(rng, 500, 0.0).with_columns((pl.col("other") % 7).alias("x"))
    sums = [{"a": "__luv", "b": "x"}, {"a": "x"}, {}]
    for table, named in zip(AsOfTable.build_each(lines, "hs6", "__month", sums), sums, strict=True):
        events = lines.select("hs6", "__month", *[pl.col(c).alias(n) for n, c in named.items()])
        want = AsOfTable.build(events, "hs6", "__month", list(named))
        assert table.sums == want.sums
        assert_same_bits(table.rows.frame, want.rows.frame)
