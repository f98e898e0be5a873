"""The trader family's path for a few shipments (`features.trader.SMALL_MAX_SHIPMENTS`:
the API's one shipment) gives exactly what the frame path gives: `prepare` from the
timeline's light answers (`features.timeline.Columns`), the contacts normalised in
Python, the days since the first sighting in Python, and `Tables.append` of a few
rows; the light answers equal the frames they stand for."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import timeline, trader
from features.context import History, party_keys
from features.timeline import (
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
from pipelines.features import load_history

# Contacts on which Python and Polars may disagree (`\w`, case mappings, final
# sigma, beyond the BMP), and ordinary ones.
STRANGE = [
    None, "", " ", "+7 (701) 111-22-33", "г. Алматы, ул. Абая, д. 5, оф. 7", "STRASSE ß",
    "İstanbul", "ǅ", "ΣΑΣ", "ΟΔΟΣ 5", "σ", "Σ", "x²y", "½ 12", "e\u0301te", "x\u0085y",
    "١٢٣ ٤", "＋７ ７０１", "\xa0Mail@X.KZ\u2003", "a_b-c", "emoji 😀 12", "𝐀𝐁 7",
    "\u1c89", "ᾼ", "ﬁ ﬂ", "K\u212a", "Ⅻ 3", "ǈ", "ß" * 3, "\u0130\u0307",
]  # fmt: skip


def _equal(left: pl.DataFrame, right: pl.DataFrame) -> None:
    """The same frames, to the bit (floats too: by default 1e-5 apart are equal)."""
    assert_frame_equal(left, right, check_exact=True)


@pytest.fixture(scope="module")
def world(small_world: DataLayout) -> History:
    h = load_history(small_world)
    return History(party_keys(h.shipments), h.items, h.outcomes, h.travellers, h.watchlist)


def _events(world: History, ships: pl.DataFrame) -> pl.DataFrame:
    """`trader.shipment_events` of some shipments, with a made-up flag (one in five)."""
    ids = ships["shipment_id"]
    flags = pl.DataFrame({"shipment_id": ids, "undervalued": ids.hash(5) % 5 == 0})
    return trader.shipment_events(ships, flags)


def _tables(world: History, ships: pl.DataFrame, outcomes: pl.DataFrame) -> trader.Tables:
    items = world.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    return trader.Tables.build(
        _events(world, ships), items, trader.outcome_events(outcomes, world.shipments)
    )


@pytest.fixture(scope="module")
def appended(world: History) -> tuple[trader.Tables, trader.Tables, pl.DataFrame]:
    """The tables of the history before a cut with 40 later shipments appended one
    at a time (each after the outcomes recorded before it), the tables rebuilt
    over the same rows, and the shipments appended."""
    ships = world.shipments.sort("declared_at", "shipment_id")
    cut = ships["declared_at"][int(ships.height * 0.8)]
    past = ships.filter(pl.col("declared_at") < cut)
    new = ships.filter(pl.col("declared_at") >= cut).head(40)
    end = new["declared_at"].max()
    assert isinstance(end, dt.datetime)
    outcomes = world.outcomes.sort("inspected_at")
    tables = _tables(world, past, outcomes.filter(pl.col("inspected_at") < cut))
    pending = outcomes.filter(pl.col("inspected_at").is_between(cut, end, closed="left"))
    for i in range(new.height):
        one = new.slice(i, 1)
        found = pending.filter(pl.col("inspected_at") < one["declared_at"][0])
        pending = pending.slice(found.height)
        items = world.items.filter(pl.col("shipment_id") == one["shipment_id"][0])
        tables.append(
            _events(world, one.clear()),
            world.items.clear(),
            trader.outcome_events(found, world.shipments),
        )
        tables.append(
            _events(world, one), items, trader.outcome_events(found.clear(), world.shipments)
        )
    done = pl.concat([past, new])
    recorded = outcomes.filter(pl.col("inspected_at") < end)
    return tables, _tables(world, done, recorded.head(recorded.height - pending.height)), new


def _odd(world: History, ships: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The shipments with odd keys, contacts and times: null and never seen
    keys, strange contacts, the consignee and time of a held shipment (or one
    microsecond later: seen at the very instant, or just before), and a twin of
    the first one (two shipments at one instant)."""
    rng = random.Random(seed)
    held = world.shipments.sample(ships.height, seed=seed)
    keys, at = ships["consignee_key"].to_list(), ships["declared_at"].to_list()
    for i, (key, t) in enumerate(zip(held["consignee_key"], held["declared_at"], strict=True)):
        draw = rng.random()
        if draw < 0.5:
            keys[i], at[i] = key, t + dt.timedelta(microseconds=rng.choice([0, 1]))
        elif draw < 0.7:
            keys[i] = rng.choice([None, "id:NEVER-SEEN"])

    def pick(values: Sequence[object], column: str) -> pl.Series:
        picked = [rng.choice(values) if rng.random() < 0.5 else v for v in ships[column]]
        return pl.Series(column, picked, dtype=ships.schema[column])

    odd = ships.with_columns(
        pl.Series("consignee_key", keys, dtype=pl.String),
        pl.Series("declared_at", at, dtype=ships.schema["declared_at"]),
        pick([None, "id:NEVER-SEEN-TOO"], "consignor_key"),
        pick([None], "declarant_key"),
        pick(STRANGE, "consignee_phone"),
        pick([*STRANGE, *held["consignee_address"].to_list()], "consignee_address"),
    )
    return pl.concat([odd, odd.head(1).with_columns(pl.lit("TWIN").alias("shipment_id"))])


def _frame_path(
    ships: pl.DataFrame, tables: trader.Tables, monkeypatch: pytest.MonkeyPatch
) -> pl.DataFrame:
    """`trader.prepare` by frame operations only (the timeline's joins too)."""
    with monkeypatch.context() as m:
        m.setattr(trader, "SMALL_MAX_SHIPMENTS", -1)
        m.setattr(timeline, "LOOKUP_MAX_QUERIES", -1)
        return trader.prepare(ships, tables)


def test_small_prepare_equals_the_frame_path(
    world: History,
    appended: tuple[trader.Tables, trader.Tables, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables, rebuilt, new = appended
    ships = world.shipments
    rng = np.random.default_rng(3)
    samples = [ships[rng.choice(ships.height, size=k, replace=False)] for k in [1] * 20 + [2, 9]]
    samples += [new.head(1), new.tail(3), ships.sample(trader.SMALL_MAX_SHIPMENTS, seed=1)]
    samples += [_odd(world, s, seed) for seed, s in enumerate(samples[-6:])]
    got = []
    for sample in samples:
        small = trader._small_prepare(sample, tables)
        assert small is not None  # (the small path answers)
        _equal(small, trader.prepare(sample, tables))
        _equal(small, _frame_path(sample, tables, monkeypatch))
        _equal(small, _frame_path(sample, rebuilt, monkeypatch))
        got.append(small)
    every = pl.concat(got)
    # The cases met: parties new and known, contacts shared, unseen and null.
    for role in trader.ROLES:
        days = every[f"__{role}_days"]
        assert days.null_count() > 0 and (days > 1).any()
    assert every["__consignee_insp"].max() > 0  # type: ignore[operator]
    assert every["__consignee_n_7d"].max() > 0  # type: ignore[operator]
    assert every["__consignee_underv"].max() > 0  # type: ignore[operator]
    for contact in trader.CONTACT_FIELDS:
        assert every[f"__shared_{contact}"].max() > 0  # type: ignore[operator]


def test_light_answers_equal_the_frames(
    world: History,
    appended: tuple[trader.Tables, trader.Tables, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables, _, new = appended
    queries = pl.concat([new.head(30), world.shipments.sample(30, seed=2)])
    queries = queries.with_columns(
        queries["consignee_key"].scatter(1, None), queries["consignee_phone"].scatter(2, None)
    )
    windows = trader.WINDOWS
    light = [
        as_of_columns(queries, "consignee_key", "declared_at", tables.seen["consignee"],
                      windows=windows, prefix="s"),
        as_of_columns(queries, "consignor_key", "declared_at", tables.inspections["consignor"],
                      prefix="i"),
        distinct_columns(queries, "consignee_key", "declared_at", tables.chapters, prefix="c"),
    ]  # fmt: skip
    seen = tables.contacts["phone"]
    q = trader._contact(queries, "phone").rename({"__contact": "p"})
    pairs = pair_seen_values(q, ("p", "consignee_key"), "declared_at", seen)
    distinct = distinct_columns(q, "p", "declared_at", seen, prefix="d")
    with monkeypatch.context() as m:
        m.setattr(timeline, "LOOKUP_MAX_QUERIES", -1)  # the joins
        joined = [
            as_of_query(queries, "consignee_key", "declared_at", tables.seen["consignee"],
                        windows=windows, prefix="s"),
            as_of_query(queries, "consignor_key", "declared_at", tables.inspections["consignor"],
                        prefix="i"),
            distinct_query(queries, "consignee_key", "declared_at", tables.chapters, prefix="c"),
        ]  # fmt: skip
        assert pairs == pair_seen_query(q, ("p", "consignee_key"), "declared_at", seen).to_list()
        _equal(distinct.frame(), distinct_query(q, "p", "declared_at", seen, prefix="d"))
        # (the light form of the joins' answers)
        fallback = as_of_columns(
            queries, "consignee_key", "declared_at", tables.seen["consignee"], prefix="s"
        )
        assert fallback.values == {c: light[0].values[c] for c in fallback.values}
        assert any(pairs)
    for got, want in zip(light, joined, strict=True):
        _equal(got.frame(), want)
        assert got.types == dict(want.schema)
        assert got.values == Columns.of(want).values  # temporal values: physical integers
    assert light[0].values["s_first"][1] is None and light[0].values["s_first"][0] is not None


def test_light_answers_fall_back_to_the_joins() -> None:
    """Windows not a whole number of the table's time unit: the joins answer."""
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ms = pl.Datetime("ms", "UTC")
    events = pl.DataFrame(
        {"k": ["a", "a", "b"], "t": [t0, t0 + dt.timedelta(seconds=1), t0], "v": [1, 2, 3]},
        schema={"k": pl.String, "t": ms, "v": pl.Int64},
    )
    table = AsOfTable.build(events, "k", "t", ["v"])
    seen = FirstSeen.build(events, "k", "v", "t")
    queries = pl.DataFrame(
        {"k": ["a", "b", None], "t": [t0 + dt.timedelta(seconds=2), t0, t0], "v": [2, 3, 1]},
        schema={"k": pl.String, "t": ms, "v": pl.Int64},
    )
    windows = {"1.5ms": dt.timedelta(microseconds=1500)}
    got = as_of_columns(queries, "k", "t", table, windows=windows, prefix="c")
    _equal(got.frame(), as_of_query(queries, "k", "t", table, windows=windows, prefix="c"))
    assert got.values["c_n"] == [2, 0, 0] and got.values["c_v_1.5ms"] == [0, 0, 0]
    assert got.values["c_first"] == [int(t0.timestamp() * 1000), None, None]
    assert pair_seen_values(queries, ("k", "v"), "t", seen) == [True, False, False]


def test_python_normal_form_equals_the_expression() -> None:
    rng = random.Random(2)
    alphabet = "aZ09 _-.,+()@\t\xa0жЖёЁßİıΣσς²½\u0301\u0085٣３ǅﬁ😀𝐀\u1c89K"
    values: list[str | None] = [*STRANGE, *["".join(rng.choices(alphabet, k=rng.randint(0, 9)))
                                            for _ in range(3000)]]  # fmt: skip
    series = pl.Series("v", values, dtype=pl.String)
    want = series.to_frame().select(trader._normalise(pl.col("v"))).to_series().to_list()
    assert trader._normalised_values(series) == want
    # Every BMP character but those set apart: the same form, alone and in context.
    differing = trader._differing()
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    alike = [c for c in chars if not differing.search(c)]
    polars = pl.Series(alike, dtype=pl.String).to_frame("v").select(trader._normalise(pl.col("v")))
    assert [trader._normalise_python(c) for c in alike] == polars.to_series().to_list()
    texts = ["".join(rng.choices(alike, k=12)) for _ in range(2000)]
    frame = pl.Series(texts, dtype=pl.String).to_frame("v")
    polars_texts = frame.select(trader._normalise(pl.col("v"))).to_series().to_list()
    assert [trader._normalise_python(t) for t in texts] == polars_texts
    # Python takes the usual contacts; the set apart are few.
    assert all(trader._normalises_alike(s) for s in ["+7 701 111", "г. Алматы, оф. 7", "ß é"])
    assert not any(trader._normalises_alike(s) for s in ["x²", "İ", "e\u0301", "Σ", "😀"])
    assert len(chars) - len(alike) < 3000


def test_days_in_python_equal_the_expression() -> None:
    """Polars divides one value, but multiplies more by the reciprocal."""
    rng = np.random.default_rng(8)
    values: list[int | None] = [int(v) for v in rng.integers(-(10**14), 10**14, 3000)]
    values[7] = None
    for n in (1, 2, 3, 33, 3000):
        for start in range(0, 3000 - n + 1, max(n, 100)):
            part = values[start : start + n]
            frame = pl.DataFrame({"us": part}, schema={"us": pl.Int64})
            want = frame.select(pl.col("us") / 8.64e10).to_series().to_list()
            assert trader._days(part) == want


def test_small_appends_read_the_frame_rows(world: History, monkeypatch: pytest.MonkeyPatch) -> None:
    ships = world.shipments.sample(6, seed=4)
    # An id twice, a null id.
    ships = pl.concat(
        [ships, ships.head(1), ships.head(1).with_columns(pl.lit(None).alias("shipment_id"))]
    )
    ships = ships.with_columns(
        pl.Series("consignee_phone", STRANGE[:8], dtype=pl.String),
        pl.Series("consignee_address", STRANGE[-8:], dtype=pl.String),
    )
    ships = ships.with_columns(ships["consignee_key"].scatter(1, None))
    items = world.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    stray = items.head(3).with_columns(
        pl.Series("shipment_id", [None, "NOT-HELD", items["shipment_id"][0]]),
        pl.Series("hs_code", ["12", None, "9"]),
    )
    items = pl.concat([items, stray])
    assert items.height <= trader.SMALL_MAX_SHIPMENTS
    order = ["consignee_key", "__chapter", "declared_at"]
    got = trader._chapter_events(items, ships)
    want = trader.line_events(items, ships).select(order)
    _equal(got.sort(order, nulls_last=True), want.sort(order, nulls_last=True))
    assert got.height > ships.height
    for contact in trader.CONTACT_FIELDS:
        small = trader._contact(ships, contact)
        with monkeypatch.context() as m:
            m.setattr(trader, "SMALL_MAX_SHIPMENTS", -1)
            _equal(small, trader._contact(ships, contact))


def test_appending_one_at_a_time_equals_a_rebuild(
    appended: tuple[trader.Tables, trader.Tables, pl.DataFrame],
) -> None:
    tables, rebuilt, _ = appended

    def same(left: timeline.KeyedRows, right: timeline.KeyedRows) -> None:
        _equal(left.rows().sort(left.order), right.rows().sort(right.order))

    for mine, theirs in [
        *zip(tables.seen.values(), rebuilt.seen.values(), strict=True),
        *zip(tables.inspections.values(), rebuilt.inspections.values(), strict=True),
    ]:
        same(mine.rows, theirs.rows)
    for first, second in [
        (tables.chapters, rebuilt.chapters),
        *zip(tables.contacts.values(), rebuilt.contacts.values(), strict=True),
    ]:
        same(first.firsts, second.firsts)
        same(first.counts.rows, second.counts.rows)
    assert tables.seen["consignee"].rows.extra is not None  # (lookups read appended rows)
    assert tables.chapters.firsts.extra is not None
    assert tables.inspections["consignee"].rows.extra is not None
