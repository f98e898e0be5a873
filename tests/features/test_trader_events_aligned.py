"""`trader.shipment_events` places the undervaluation flags beside the shipments
when they are given for the same ids in the same order (`_aligned`: what
`goods.prepare` gives for the batch's and the online call's shipments) and gives
the left join's rows either way: on flags aligned, and on flags that are not
(ids missing, null, repeated, reordered, of another type; other columns)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import trader


def _join(ships: pl.DataFrame, flags: pl.DataFrame) -> pl.DataFrame:
    """`shipment_events` as the join computes it."""
    return ships.join(flags, on="shipment_id", how="left").with_columns(
        pl.col("undervalued").fill_null(False).cast(pl.Int64)
    )


def _ships(ids: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shipment_id": ids,
            "consignee_key": [f"k{i % 3}" for i in range(len(ids))],
            "value": [float(i) for i in range(len(ids))],
        },
        schema={"shipment_id": pl.String, "consignee_key": pl.String, "value": pl.Float64},
    )


def _flags(ids: list[str | None], flags: list[bool | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"shipment_id": ids, "undervalued": flags},
        schema={"shipment_id": pl.String, "undervalued": pl.Boolean},
    )


IDS = ["s1", "s2", "s3", "s4"]
FLAGS = [True, None, False, True]
CASES = {
    "aligned": (IDS, IDS, FLAGS, True),
    "one": (["s1"], ["s1"], [True], True),
    "none": ([], [], [], True),
    "reordered": (IDS, IDS[::-1], FLAGS, False),
    "missing": (IDS, IDS[:3], FLAGS[:3], False),
    "null id": (["s1", None, "s3"], ["s1", None, "s3"], [True, True, True], False),
    "repeated id": (["s1", "s1", "s2"], ["s1", "s1", "s2"], [True, False, True], False),
    "other ids": (IDS, ["s1", "s2", "s3", "x"], FLAGS, False),
}


@pytest.mark.parametrize("case", CASES)
def test_shipment_events_equal_the_join(case: str) -> None:
    ship_ids, flag_ids, flags, aligned = CASES[case]
    ships, undervalued = _ships(ship_ids), _flags(flag_ids, flags)
    assert trader._aligned(ships, undervalued) is aligned
    assert_frame_equal(
        trader.shipment_events(ships, undervalued), _join(ships, undervalued), check_exact=True
    )


def test_flags_with_other_columns_or_types_are_joined() -> None:
    ships = _ships(IDS)
    wider = _flags(IDS, FLAGS).with_columns(pl.lit(1).alias("extra"))
    assert not trader._aligned(ships, wider)
    assert_frame_equal(trader.shipment_events(ships, wider), _join(ships, wider), check_exact=True)
    coded = _flags(IDS, FLAGS).with_columns(pl.col("shipment_id").cast(pl.Categorical))
    assert not trader._aligned(ships, coded)
    flagged = ships.with_columns(pl.lit(True).alias("undervalued"))
    assert not trader._aligned(flagged, _flags(IDS, FLAGS))
