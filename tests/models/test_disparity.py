"""Selection rates by group on hand-made windows whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.disparity import OTHER, as_json, plot_disparity, selection_by_group


def _window() -> tuple[pl.DataFrame, np.ndarray, pl.DataFrame]:
    # 1,000 shipments: office A holds 600, office B 390, office C 10 (pooled).
    # The 50 highest scores (5 %) are 40 in A and 10 in B.
    offices = ["A"] * 600 + ["B"] * 390 + ["C"] * 10
    scores = np.zeros(1000)
    scores[:40] = np.linspace(0.9, 0.99, 40)  # A
    scores[600:610] = np.linspace(0.8, 0.89, 10)  # B
    window = pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(1000)],
            "office_code": offices,
            "origin_country": ["CN"] * 1000,
        }
    )
    # Truth: 20 trafficking shipments in A (10 selected), 20 in B (10 selected).
    bad = list(range(30, 50)) + list(range(600, 620))
    truth = pl.DataFrame(
        {"shipment_id": [f"S{i}" for i in bad], "is_trafficking": [True] * len(bad)}
    )
    return window, scores, truth


def test_rates_ratios_and_recall_per_group() -> None:
    window, scores, truth = _window()
    table = selection_by_group(window, scores, k=0.05, truth=truth, min_shipments=50)
    office = {r["group"]: r for r in table.filter(group_by="office_code").iter_rows(named=True)}
    assert set(office) == {"A", "B", OTHER}
    assert (office["A"]["shipments"], office["A"]["selected"]) == (600, 40)
    assert office["A"]["selection_rate"] == pytest.approx(40 / 600)
    assert office["A"]["rate_ratio"] == pytest.approx((40 / 600) / 0.05)
    assert office["B"]["rate_ratio"] == pytest.approx((10 / 390) / 0.05)
    assert office[OTHER]["selected"] == 0
    assert office["A"]["trafficking_rate"] == pytest.approx(20 / 600)
    assert office["A"]["recall"] == pytest.approx(10 / 20)
    assert office["B"]["recall"] == pytest.approx(10 / 20)
    assert office[OTHER]["recall"] is None  # no trafficking there: no recall to read
    origin = table.filter(group_by="origin_country")
    assert origin["rate_ratio"].to_list() == pytest.approx([1.0])


def test_json_and_plot(tmp_path: Path) -> None:
    window, scores, truth = _window()
    table = selection_by_group(window, scores, truth=truth, min_shipments=50)
    data = as_json(table, 0.05)
    assert data["capacity"] == "5%"
    assert {g["group"] for g in data["groups"]["office_code"]} == {"A", "B", OTHER}
    path = tmp_path / "disparity.png"
    plot_disparity(table, path, 0.05)
    assert path.stat().st_size > 10_000


def test_mismatched_scores_are_refused() -> None:
    window, scores, _ = _window()
    with pytest.raises(ValueError, match="1000 shipments but 999 scores"):
        selection_by_group(window, scores[:-1])
