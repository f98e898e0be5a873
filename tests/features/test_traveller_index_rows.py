"""`features.travellers.RowsBy`, the traveller index's value -> rows lookup, gives
the rows a plain grouping gives, value by value, in ascending order."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from features.travellers import RowsBy


def _plain(frame: pl.DataFrame, col: str) -> dict[object, list[int]]:
    out: dict[object, list[int]] = {}
    for i, value in enumerate(frame.get_column(col).to_list()):
        if value is not None:
            out.setdefault(value, []).append(i)
    return out


@pytest.mark.parametrize(
    "values",
    [
        lambda rng: [rng.choice(["+7 701", "+7 702", "+996 555", None]) for _ in range(500)],
        lambda rng: [rng.choice([dt.date(1980, 1, d) for d in range(1, 9)]) for _ in range(500)],
        lambda rng: [f"k{rng.randrange(200)}" for _ in range(2000)],
        lambda rng: [None] * 10,
    ],
    ids=["strings-with-nulls", "dates", "many-keys", "only-nulls"],
)
def test_rows_by_value_equal_a_plain_grouping(values: object) -> None:
    rng = random.Random(3)
    frame = pl.DataFrame({"key": values(rng)})  # type: ignore[operator]
    plain = _plain(frame, "key")
    grouped = frame.with_row_index("__i").drop_nulls("key").group_by("key").agg("__i")
    rows = RowsBy(grouped, "key")
    assert len(rows) == len(plain)
    for value, want in plain.items():
        assert value in rows
        assert rows.rows(value) == want
        assert all(type(r) is int for r in rows.rows(value))
    assert "absent" not in rows
    assert rows.rows("absent") == []
