"""The trader family's batch shortcuts give the values of the plain computation:
the as-of answers with windows by binary searches in numpy (`trader.as_of`,
`_as_of_sorted`) are the as-of joins' (`features.timeline.as_of_query`), and the
contacts normalised once per distinct value are the expression's over every
row; on random tables and queries (keys and times missing, unknown, repeated,
unsorted; sums with NaN)."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import trader
from features.timeline import LOOKUP_MAX_QUERIES, AsOfTable, as_of_query
from tests.features.test_trader_small import STRANGE

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TIME = pl.Datetime("us", "UTC")


def _times(rng: random.Random, n: int, grid: int, missing: float) -> list[dt.datetime | None]:
    """n times on a coarse grid of minutes (many equal), a share of them missing."""
    return [
        None if rng.random() < missing else START + dt.timedelta(minutes=rng.randrange(grid) * 7)
        for _ in range(n)
    ]


def _table(rng: random.Random, keys: list[str | None]) -> AsOfTable:
    n = rng.randrange(1, 400)
    times = _times(rng, n, rng.choice([3, 50, 2000]), 0.0)
    events = pl.DataFrame(
        {
            "k": [rng.choice(keys) for _ in range(n)],
            "t": times,
            "x": [rng.randrange(-3, 4) for _ in range(n)],
            "y": [
                float("nan") if rng.random() < 0.01 else rng.uniform(-1e3, 1e3) for _ in range(n)
            ],
        },
        schema={"k": pl.String, "t": TIME, "x": pl.Int64, "y": pl.Float64},
    )
    return AsOfTable.build(events, "k", "t", ["x", "y"])


def _queries(rng: random.Random, keys: list[str | None]) -> pl.DataFrame:
    n = rng.randrange(LOOKUP_MAX_QUERIES + 1, 500)
    frame = pl.DataFrame(
        {
            "key": [rng.choice([*keys, "unknown"]) for _ in range(n)],
            "at": _times(rng, n, rng.choice([3, 50, 2000]), rng.choice([0.0, 0.05])),
        },
        schema={"key": pl.String, "at": TIME},
    )
    return frame.sort("at", nulls_last=True) if rng.random() < 0.5 else frame


@pytest.mark.parametrize("seed", range(40))
def test_sorted_as_of_equals_the_as_of_join(seed: int) -> None:
    rng = random.Random(seed)
    keys = [None, *(f"party-{i}" for i in range(rng.choice([1, 3, 30])))]
    table = _table(rng, keys)
    queries = _queries(rng, keys)
    minutes = [0, 1, 7, 30, 60 * 24, 10**6]
    windows = {
        f"w{i}": dt.timedelta(minutes=rng.choice(minutes)) for i in range(rng.randrange(1, 5))
    }
    want = as_of_query(queries, "key", "at", table, windows=windows, prefix="p")
    got = trader._as_of_sorted(queries, "key", "at", table, windows, "p")
    assert got is not None  # (the numpy path answered)
    assert_frame_equal(got, want, check_exact=True)
    assert_frame_equal(
        trader.as_of(queries, "key", "at", table, windows=windows, prefix="p"),
        want,
        check_exact=True,
    )


WINDOWED: list[tuple[str, ...] | None] = [None, (), ("n",), ("x",), ("y", "n"), ("n", "x", "y")]


@pytest.mark.parametrize("windowed", WINDOWED)
@pytest.mark.parametrize("seed", range(12))
def test_only_the_windows_asked_are_computed(seed: int, windowed: tuple[str, ...] | None) -> None:
    """`windowed`: the sorted answer and `as_of` leave out the window columns of
    the totals not named, and give the others as the join does."""
    rng = random.Random(seed)
    keys = [None, *(f"party-{i}" for i in range(rng.choice([1, 3, 30])))]
    table = _table(rng, keys)
    queries = _queries(rng, keys)
    windows = {"w1": dt.timedelta(minutes=7), "w2": dt.timedelta(minutes=60 * 24)}
    want = as_of_query(queries, "key", "at", table, windows=windows, prefix="p")
    if windowed is not None:
        want = want.drop(
            f"p_{name}_{label}"
            for name in ("n", "x", "y")
            if name not in windowed
            for label in windows
        )
    got = trader._as_of_sorted(queries, "key", "at", table, windows, "p", windowed)
    assert got is not None
    assert_frame_equal(got, want, check_exact=True)
    answer = trader.as_of(
        queries, "key", "at", table, windows=windows, prefix="p", windowed=windowed
    )
    assert_frame_equal(answer, want, check_exact=True)
    # (the join answers a table with appended rows: its columns left out alike)
    table.append(table.frame().tail(1).select("k", "t").with_columns(x=pl.lit(0), y=pl.lit(0.0)))
    answer = trader.as_of(
        queries, "key", "at", table, windows=windows, prefix="p", windowed=windowed
    )
    assert answer.columns == want.columns


def test_tables_with_appended_rows_are_answered_by_the_join() -> None:
    rng = random.Random(7)
    keys = ["a", "b", "c"]
    table = _table(rng, keys)
    later = pl.DataFrame(
        {"k": ["a", "c"], "t": [START + dt.timedelta(days=400)] * 2, "x": [1, 2], "y": [0.5, 1.5]},
        schema={"k": pl.String, "t": TIME, "x": pl.Int64, "y": pl.Float64},
    )
    table.append(later)
    queries = _queries(rng, keys).with_columns(at=pl.lit(START + dt.timedelta(days=401)))
    windows = {"7d": dt.timedelta(days=7)}
    assert trader._as_of_sorted(queries, "key", "at", table, windows, "p") is None
    got = trader.as_of(queries, "key", "at", table, windows=windows, prefix="p")
    want = as_of_query(queries, "key", "at", table, windows=windows, prefix="p")
    assert_frame_equal(got, want, check_exact=True)
    assert got["p_n_7d"].sum() == (queries["key"].is_in(["a", "c"])).sum()


@pytest.mark.parametrize("contact", trader.CONTACT_FIELDS)
def test_contacts_normalised_per_distinct_value_equal_the_expression(contact: str) -> None:
    rng = random.Random(3)
    values = [rng.choice(STRANGE) for _ in range(5 * trader.SMALL_MAX_SHIPMENTS)]
    frame = pl.DataFrame(
        {f"consignee_{contact}": values}, schema={f"consignee_{contact}": pl.String}
    )
    want = frame.select(trader._normalise(pl.col(f"consignee_{contact}")).alias(f"__{contact}"))
    assert_frame_equal(trader._normalised_column(frame, contact).to_frame(), want, check_exact=True)
    nulls = pl.DataFrame({f"consignee_{contact}": [None] * 40}, schema=frame.schema)
    assert trader._normalised_column(nulls, contact).null_count() == 40


def test_contact_form_removes_what_removing_each_other_character_removes() -> None:
    """`_normalise` drops runs of non-word characters at once: the form that
    dropping them one by one (`[^\\w]`) gives, on strange and random strings."""
    rng = random.Random(11)
    alphabet = [c for s in STRANGE if s for c in s] + list(" .,-()+/\t\n_")
    strings = [*STRANGE, *("".join(rng.choices(alphabet, k=rng.randrange(30))) for _ in range(500))]
    frame = pl.DataFrame({"c": strings}, schema={"c": pl.String})
    want = frame.select(pl.col("c").str.to_lowercase().str.replace_all(r"[^\w]", ""))
    assert_frame_equal(frame.select(trader._normalise(pl.col("c"))), want, check_exact=True)
