"""`context.lines_with_shipments` gives the inner join of the lines with their
shipments (in the lines' order), whether each line matches one shipment (its
shipment's columns gathered beside the lines) or not (the join): lines without
their shipment, ids given twice, both (as many rows as lines), null ids, names
on both sides, no lines."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.context import lines_with_shipments

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _join(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """The join, written out."""
    return items.join(ships, on="shipment_id", how="inner", maintain_order="left")


def _frames(
    rng: random.Random, ship_ids: list[str | None], line_ids: list[str | None]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    ships = pl.DataFrame(
        {
            "shipment_id": ship_ids,
            "declared_at": [START + dt.timedelta(hours=rng.randrange(99)) for _ in ship_ids],
            "consignee_key": [rng.choice([None, "a", "b"]) for _ in ship_ids],
        },
        schema={
            "shipment_id": pl.String,
            "declared_at": pl.Datetime("us", "UTC"),
            "consignee_key": pl.String,
        },
    )
    items = pl.DataFrame(
        {
            "shipment_id": line_ids,
            "hs_code": [rng.choice([None, "930120", "8466"]) for _ in line_ids],
            "value": [rng.uniform(0, 9) for _ in line_ids],
        },
        schema={"shipment_id": pl.String, "hs_code": pl.String, "value": pl.Float64},
    )
    return items, ships


def _case(rng: random.Random, case: str) -> tuple[list[str | None], list[str | None]]:
    ships: list[str | None] = [f"s{i}" for i in range(40)]
    rng.shuffle(ships)
    lines: list[str | None] = [rng.choice(ships) for _ in range(120)]
    if case == "missing":
        lines[7] = "nowhere"
    elif case == "twice":
        ships.append(ships[3])
        lines.append(ships[3])
    elif case == "missing and twice":  # (as many rows as lines, not one each)
        ships += ["dup", "dup"]
        lines[7], lines[50] = "nowhere", "dup"
    elif case == "null":
        ships[0], lines[0] = None, None
    elif case == "none":
        lines = []
    return ships, lines


@pytest.mark.parametrize(
    "case", ["each once", "missing", "twice", "missing and twice", "null", "none"]
)
@pytest.mark.parametrize("seed", range(4))
def test_lines_with_shipments_equal_the_join(case: str, seed: int) -> None:
    rng = random.Random(seed)
    items, ships = _frames(rng, *_case(rng, case))
    assert_frame_equal(lines_with_shipments(items, ships), _join(items, ships), check_exact=True)


def test_a_name_on_both_sides_is_joined() -> None:
    rng = random.Random(1)
    items, ships = _frames(rng, *_case(rng, "each once"))
    ships = ships.with_columns(pl.lit(1.0).alias("value"))
    assert_frame_equal(lines_with_shipments(items, ships), _join(items, ships), check_exact=True)
