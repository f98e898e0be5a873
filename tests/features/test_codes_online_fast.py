"""Categorical codes (`FeatureSpec.code_expr`, a cast to an enum of the
categories) equal the replace of each category by its position + 1 (0 for
unknown, missing or differently spelt values), for every registered categorical,
on one row (an online call) and on many."""

from __future__ import annotations

import random

import polars as pl
from polars.testing import assert_series_equal

from features.registry import Kind, specs


def test_codes_are_the_positions_of_the_categories() -> None:
    rng = random.Random(5)
    categorical = [s for s in specs() if s.kind is Kind.CATEGORICAL]
    assert categorical
    for spec in categorical:
        cats = list(spec.categories)
        values: list[str | None] = [*cats, None, "", "??", " " + cats[0], cats[0].lower() + "x"]
        values += [c.swapcase() for c in cats if c.swapcase() != c and c.swapcase() not in cats]
        values += [rng.choice(values) for _ in range(500)]
        frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.String)})
        mapping = {c: i + 1 for i, c in enumerate(cats)}
        want = frame.select(pl.col("v").replace_strict(mapping, default=0, return_dtype=pl.Int32))
        got = frame.select(spec.code_expr(pl.col("v")))
        assert_series_equal(got.to_series(), want.to_series(), check_exact=True)
        assert got.to_series().dtype == pl.Int32
        for i in range(0, 40):
            one = frame.slice(i, 1)
            assert one.select(spec.code_expr(pl.col("v"))).item() == mapping.get(values[i], 0)
