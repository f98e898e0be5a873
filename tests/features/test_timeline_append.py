"""Appending a few rows (features.timeline): the per-key path in Python gives
exactly, to the bit, the rows, the `replaces` flag and the errors of the frame
operations, for random small appends (null keys, repeated times, times equal to
a key's last row held, integer, boolean and float sums), and the tables then
answer every query alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import timeline
from features.timeline import (
    AsOfTable,
    FirstSeen,
    KeyedRows,
    as_of_query,
    distinct_query,
    pair_seen_query,
)

KEYS = ["a", "b", "c", "d", "e", None]  # "e": never in the history
VALUES = ["u", "v", "w", "x", None]
SEEDS = range(6)
ROUNDS = 30


def _times(steps: list[int], kind: str) -> pl.Series:
    """Times `steps` apart, of a kind: datetime[us, UTC] (steps of 90 minutes),
    months (datetime[us, UTC] at the start of a month), dates, datetime[ms]."""
    if kind == "us_utc":
        t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        return pl.Series("t", [t0 + s * dt.timedelta(minutes=90) for s in steps])
    if kind == "month":
        months = [dt.datetime(2024 + s // 12, 1 + s % 12, 1, tzinfo=dt.UTC) for s in steps]
        return pl.Series("t", months, dtype=pl.Datetime("us", "UTC"))
    if kind == "date":
        return pl.Series("t", [dt.date(2024, 1, 1) + dt.timedelta(days=s) for s in steps])
    t0 = dt.datetime(2024, 1, 1)
    return pl.Series("t", [t0 + s * dt.timedelta(seconds=1) for s in steps], pl.Datetime("ms"))


def _float(rng: np.random.Generator) -> float | None:
    """Mostly of a few magnitudes (so that rounding shows), some null or zero."""
    pick = int(rng.integers(10))
    return [None, -0.0, 0.0][pick] if pick < 3 else float(rng.normal() * 10.0 ** (pick - 6))


def _events(rng: np.random.Generator, steps: list[int], kind: str) -> pl.DataFrame:
    n = len(steps)
    return pl.DataFrame(
        {
            "k": pl.Series([KEYS[i] for i in rng.integers(len(KEYS), size=n)], dtype=pl.String),
            "t": _times(steps, kind),
            "x": pl.Series([_float(rng) for _ in range(n)], dtype=pl.Float64),
            "m": pl.Series(
                [None if v < 0 else int(v) for v in rng.integers(-3, 50, n)], dtype=pl.Int64
            ),
            "flag": pl.Series(
                [[None, True, False][i] for i in rng.integers(3, size=n)], dtype=pl.Boolean
            ),
            "v": pl.Series([VALUES[i] for i in rng.integers(len(VALUES), size=n)], dtype=pl.String),
        }
    )


def _history(rng: np.random.Generator, kind: str) -> pl.DataFrame:
    """40 events over the first 10 steps, every key but "e" present."""
    events = _events(rng, sorted(rng.integers(10, size=40).tolist()), kind)
    return events.with_columns(pl.Series("k", [KEYS[i % 4] for i in range(40)]))


def _round(rng: np.random.Generator, now: int, kind: str, wrong: bool) -> pl.DataFrame:
    """1 to 30 events at `now` (the time of rows held) or after, often several
    of a key at one time; `wrong`: also one of a held key before the history."""
    steps = (now + rng.integers(0, 2, size=int(rng.integers(1, 31)))).tolist()
    events = _events(rng, steps, kind)
    if wrong:
        early = _events(rng, [-1], kind).with_columns(pl.lit("a").alias("k"))
        events = pl.concat([events, early]).sample(fraction=1.0, shuffle=True, seed=now)
    return events


def _bits(frame: pl.DataFrame) -> list[Any]:
    """Float columns as their bit patterns (-0.0 differs from 0.0)."""
    return [
        frame.get_column(c).to_numpy().view(np.uint64).tolist()
        for c, t in frame.schema.items()
        if t == pl.Float64
    ]


def _same(left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert_frame_equal(left, right, check_exact=True)
    assert _bits(left) == _bits(right)


def _outcome(f: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", f()
    except ValueError as error:
        return "error", str(error)


def _slow(monkeypatch: pytest.MonkeyPatch, f: Callable[[], Any]) -> tuple[str, Any]:
    """`f` with every append through the frame operations."""
    with monkeypatch.context() as m:
        m.setattr(timeline, "APPEND_MAX_ROWS", 0)
        return _outcome(f)


def _same_outcome(fast: tuple[str, Any], slow: tuple[str, Any]) -> None:
    assert fast[0] == slow[0]
    if fast[0] == "error" or fast[1] is None or slow[1] is None:
        assert fast == slow
    elif isinstance(fast[1], tuple):  # (rows, replaces)
        _same(fast[1][0], slow[1][0])
        assert fast[1][1] == slow[1][1]
    else:
        _same(fast[1], slow[1])


def _queries(now: int, kind: str, since: int = -1) -> pl.DataFrame:
    """Every key (and a value) at every step from `since` to just after `now`."""
    steps = [s for s in range(since, now + 3) for _ in KEYS]
    n = len(steps)
    return pl.DataFrame(
        {
            "qk": KEYS * (n // len(KEYS)),
            "qt": _times(steps, kind),
            "qv": [VALUES[i % len(VALUES)] for i in range(n)],
        }
    )


def _both_ways(monkeypatch: pytest.MonkeyPatch, f: Callable[[], Any]) -> tuple[Any, Any]:
    """`f` with queries answered as they come (few: by lookups), then by joins."""
    first = f()
    with monkeypatch.context() as m:
        m.setattr(timeline, "LOOKUP_MAX_QUERIES", -1)
        return first, f()


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("kind", ["us_utc", "month", "date", "ms"])
@pytest.mark.parametrize("seed", SEEDS)
def test_few_appended_rows_equal_the_frame_operations(
    monkeypatch: pytest.MonkeyPatch, seed: int, kind: str, compact: bool
) -> None:
    if compact:  # merge the appended rows now and then
        monkeypatch.setattr(timeline, "COMPACT_MIN_ROWS", 6)
    rng = np.random.default_rng(seed)
    history = _history(rng, kind)
    sums = ["x", "m", "flag"]
    fast, slow = (AsOfTable.build(history, "k", "t", sums) for _ in range(2))
    windows = {"w": dt.timedelta(days=2)} if kind in ("us_utc", "ms") else {}

    def answers(table: AsOfTable, queries: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        return _both_ways(
            monkeypatch,
            lambda: as_of_query(queries, "qk", "qt", table, windows=windows, prefix="c"),
        )

    appended, now, listed, replaced, refused, last = [history], 9, 0, 0, 0, ROUNDS - 1
    for i in range(ROUNDS):
        events = _round(rng, now, kind, wrong=i % 5 == 4)
        listed += fast._listed(events) is not None
        new = _outcome(lambda events=events: fast._new_rows(events))
        _same_outcome(new, _slow(monkeypatch, lambda events=events: slow._new_rows(events)))
        _same_outcome(
            _outcome(lambda events=events: fast.check(events)),
            _slow(monkeypatch, lambda events=events: slow.check(events)),
        )
        _same_outcome(
            _outcome(lambda events=events: fast.append(events)),
            _slow(monkeypatch, lambda events=events: slow.append(events)),
        )
        refused += new[0] == "error"
        replaced += new[0] == "ok" and new[1] is not None and new[1][1]
        appended += [events] if new[0] == "ok" else []
        now += 1  # (the next round starts at the latest time held)
        _same(fast.frame(), slow.frame())
        few = fast.frame(pl.Series(KEYS[:2]))  # (read through the index)
        _same(few.sort("k", "t"), fast.frame().filter(pl.col("k").is_in(KEYS[:2])).sort("k", "t"))
        for queries in [_queries(now, kind, since=now - 1)] + [_queries(now, kind)] * (i == last):
            (fast_few, fast_joined), (slow_few, slow_joined) = (
                answers(t, queries) for t in (fast, slow)
            )
            for got in (fast_few, fast_joined, slow_few):
                _same(got, slow_joined)
    assert listed == ROUNDS  # (the fast path was taken)
    assert refused and replaced
    rebuilt = AsOfTable.build(pl.concat(appended), "k", "t", sums)
    queries = _queries(now, kind)
    assert_frame_equal(
        as_of_query(queries, "qk", "qt", fast, windows=windows, prefix="c"),
        as_of_query(queries, "qk", "qt", rebuilt, windows=windows, prefix="c"),
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("kind", ["us_utc", "month", "date"])
@pytest.mark.parametrize("seed", SEEDS)
def test_few_appended_pairs_equal_the_frame_operations(
    monkeypatch: pytest.MonkeyPatch, seed: int, kind: str, compact: bool
) -> None:
    if compact:
        monkeypatch.setattr(timeline, "COMPACT_MIN_ROWS", 6)
    rng = np.random.default_rng(seed)
    history = _history(rng, kind)
    fast, slow = (FirstSeen.build(history, "k", "v", "t") for _ in range(2))
    appended, now, listed, added, last = [history], 9, 0, 0, ROUNDS - 1
    for i in range(ROUNDS):
        events = _round(rng, now, kind, wrong=False)
        listed += fast._listed_pairs(events) is not None
        new = _outcome(lambda events=events: fast._new_pairs(events))
        _same_outcome(new, _slow(monkeypatch, lambda events=events: slow._new_pairs(events)))
        added += new[1].height
        fast.append(events)
        _slow(monkeypatch, lambda events=events: slow.append(events))
        appended.append(events)
        now += 1
        _same(fast.firsts.rows(), slow.firsts.rows())
        _same(fast.counts.frame(), slow.counts.frame())
        for queries in [_queries(now, kind, since=now - 1)] + [_queries(now, kind)] * (i == last):
            for seen in (fast, slow):
                counts = _both_ways(
                    monkeypatch,
                    lambda q=queries, s=seen: distinct_query(q, "qk", "qt", s, prefix="d"),
                )
                pairs = _both_ways(
                    monkeypatch,
                    lambda q=queries, s=seen: pair_seen_query(q, ("qk", "qv"), "qt", s).to_list(),
                )
                _same(*counts)
                assert pairs[0] == pairs[1]
    assert listed == ROUNDS and added
    rebuilt = FirstSeen.build(pl.concat(appended), "k", "v", "t")
    _same(fast.firsts.rows().sort("k", "v"), rebuilt.firsts.rows())
    queries = _queries(now, kind)
    _same(
        distinct_query(queries, "qk", "qt", fast, prefix="d"),
        distinct_query(queries, "qk", "qt", rebuilt, prefix="d"),
    )


def test_appending_leaves_the_frames_appended_as_they_were() -> None:
    held = pl.DataFrame({"k": ["a", "b"], "t": [1, 2]})
    rows = KeyedRows(held, "k", ["k", "t"], ["k", "t"])
    first, second = pl.DataFrame({"k": ["a"], "t": [3]}), pl.DataFrame({"k": ["c"], "t": [4]})
    rows.append(first)
    rows.append(second)
    assert first.to_dicts() == [{"k": "a", "t": 3}]
    assert rows.rows().to_dicts()[2:] == [{"k": "a", "t": 3}, {"k": "c", "t": 4}]


def test_the_rows_of_a_key_include_those_appended() -> None:
    rows = KeyedRows(pl.DataFrame({"k": ["a", "b"], "t": [0, 0]}), "k", ["k", "t"], ["k", "t"])
    for t in range(1, 2 * timeline.FEW_ROWS):  # (read one by one, then gathered)
        rows.append(pl.DataFrame({"k": ["b", "a"], "t": [t, t]}))
        assert rows.key_list("a", "t") == list(range(t + 1))
        assert rows.key_values("b", "t").tolist() == list(range(t + 1))


def test_an_append_outside_the_python_path_takes_the_frame_operations() -> None:
    """Sums the Python path cannot reproduce (a Float32 column) and null times
    are appended by the frame operations."""
    rng = np.random.default_rng(0)
    history = _history(rng, "us_utc").with_columns(pl.col("x").cast(pl.Float32))
    table = AsOfTable.build(history, "k", "t", ["x"])
    events = _round(rng, 9, "us_utc", wrong=False)
    assert table._listed(events.with_columns(pl.col("x").cast(pl.Float32))) is None
    assert table._listed(events.with_columns(pl.lit(None).cast(pl.Float32).alias("x"))) is None
    null_time = events.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("t"))
    assert table._listed(null_time) is None
