"""The goods family's per-shipment picks of a quoted line (`goods._text_aggregates`:
each line's columns picked together in a struct, one sort per shipment, groups
in order of first line) give what one sort per picked column gave; on random
lines (similarities missing, NaN, tied; line numbers missing or repeated). And
`prepare` takes the line frame its reference's build computed only for the very
frames the build read."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import goods
from features.context import History, Params
from pipelines.features import load_history


def _per_column() -> list[pl.Expr]:
    """The aggregates as written before: each picked column sorted on its own."""
    worst = [pl.col("__hs_sim").fill_null(2.0), pl.col("line_no")]
    armsy = [pl.col("__arms_gap").fill_null(-2.0), -pl.col("line_no")]
    has_sim = pl.col("__hs_sim").is_not_null().any()
    has_gap = pl.col("__arms_gap").is_not_null().any()
    chars = goods.CONTEXT_CHARS
    return [
        pl.col("__hs_sim").min().fill_null(goods.NO_TEXT_SIMILARITY).alias("__hs_text_sim"),
        pl.when(has_sim)
        .then(pl.col("description").sort_by(worst).first().str.slice(0, chars))
        .alias("hs_text_line"),
        pl.when(has_sim)
        .then(pl.col("hs_code").sort_by(worst).first().str.slice(0, 6))
        .alias("hs_text_code"),
        pl.col("__arms_gap").max().fill_null(goods.NO_ARMS_MARGIN).alias("__arms_margin"),
        pl.when(has_gap)
        .then(pl.col("description").sort_by(armsy, descending=True).first().str.slice(0, chars))
        .alias("arms_fit_line"),
        pl.when(has_gap)
        .then(pl.col("__arms_heading").sort_by(armsy, descending=True).first())
        .alias("arms_fit_heading"),
    ]


def _value(rng: random.Random) -> float | None:
    return rng.choice([None, float("nan"), 0.0, 0.25, 0.5, 0.5, 1.0, rng.random()])


def _lines(rng: random.Random) -> pl.DataFrame:
    rows = []
    for s in range(rng.randrange(1, 300)):
        for k in range(rng.choice([1, 1, 2, 3, 8])):
            rows.append(
                (
                    f"S{s}",
                    rng.choice([None, k, k, 1]),
                    rng.choice([None, "8708", "930510", "8471300000"]),
                    rng.choice([None, f"line {k} of {s}", "x" * 80, "rifle barrel"]),
                    _value(rng),
                    _value(rng),
                    rng.choice([None, "9305", "9306"]),
                )
            )
    rng.shuffle(rows)  # (a shipment's lines need not be next to each other)
    schema = {
        "shipment_id": pl.String,
        "line_no": pl.Int64,
        "hs_code": pl.String,
        "description": pl.String,
        "__hs_sim": pl.Float64,
        "__arms_gap": pl.Float64,
        "__arms_heading": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


@pytest.mark.parametrize("seed", range(30))
def test_struct_picks_equal_one_sort_per_column(seed: int) -> None:
    lines = _lines(random.Random(seed))
    got = (
        lines.group_by("shipment_id", maintain_order=True)
        .agg(*goods._text_aggregates())
        .unnest(*goods.TEXT_PICKS)
    )
    want = lines.group_by("shipment_id").agg(*_per_column())
    assert got.columns == want.columns
    assert_frame_equal(got, want, check_row_order=False, check_exact=True)
    firsts = lines.get_column("shipment_id").unique(maintain_order=True)
    assert got.get_column("shipment_id").equals(firsts)  # (groups in order of first line)


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    return load_history(small_world)


def test_prepare_takes_the_line_frame_of_the_build_of_the_same_frames(history: History) -> None:
    """A build keeps its line frame for the `prepare` of the very frames it read
    (taken once); other frames, or the same ones changed since, get their own."""
    params = Params()
    ships, items = history.shipments, history.items
    ref = goods.Reference.build(ships, items, params)
    kept = ref._lines
    assert kept is not None
    assert ref.lines_of(ships, items, params) is kept[3]
    again = ref.lines_of(ships, items, params)  # (taken: computed anew)
    assert again is not kept[3]
    assert_frame_equal(again, kept[3], check_exact=True)
    fewer = items.head(items.height // 2)
    ref = goods.Reference.build(ships, items, params)
    assert_frame_equal(
        ref.lines_of(ships, fewer, params),
        goods._line_frame(ships, fewer, params),
        check_exact=True,
    )
    assert ref._lines is None  # (dropped, although not taken)
    other = ships.with_columns(pl.col("invoice_currency").reverse())  # (same shape)
    ref = goods.Reference.build(ships, items, params)
    assert_frame_equal(
        ref.lines_of(other, items, params),
        goods._line_frame(other, items, params),
        check_exact=True,
    )
    grown, more = ships.clone(), items.clone()
    ref = goods.Reference.build(grown, more, params)
    new_id = pl.lit("NEW").alias("shipment_id")
    grown.vstack(ships.head(1).with_columns(new_id), in_place=True)
    more.vstack(items.head(2).with_columns(new_id), in_place=True)
    lines = ref.lines_of(grown, more, params)
    assert lines.height == ref_height(ships, items) + 2
    assert_frame_equal(lines, goods._line_frame(grown, more, params), check_exact=True)
    ref = goods.Reference.build(ships, items, params)
    want = goods.prepare(ships, items, goods.Reference.build(ships, items, params), params)
    ref._lines = None  # (nothing kept: the line frame computed by `prepare`)
    assert_frame_equal(goods.prepare(ships, items, ref, params), want, check_exact=True)


def ref_height(ships: pl.DataFrame, items: pl.DataFrame) -> int:
    return goods._line_frame(ships, items, Params()).height
