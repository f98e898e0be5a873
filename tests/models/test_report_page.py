"""The evaluation report page: what it says with and without the synthetic truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from models.evaluate import evaluate
from models.report import write_report


def _test_window(n: int = 400) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    labels = (rng.random(n) < 0.1).astype(int)
    frame = pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(n)],
            "declared_at": [start + dt.timedelta(hours=i) for i in range(n)],
            "label": labels,
            "selection_method": np.where(rng.random(n) < 0.3, "random", "rule"),
            "selection_probability": np.full(n, 0.3),
        }
    )
    return frame, labels * 0.5 + rng.random(n) * 0.5


def test_a_report_without_truth_has_no_typology_table_and_says_why(tmp_path: Path) -> None:
    test, scores = _test_window()
    ev = evaluate(model_version="1", test=test, test_scores=scores)
    page = write_report(ev, tmp_path, {"Disparity": "disparity.png"}).read_text()
    assert "Per typology" not in page
    assert "No truth is known" in page and "synthetic world's truth" not in page
    # The wide plot takes the page's width and links to its full-size file.
    assert "<figure class='wide'><a href='disparity.png'>" in page


def test_a_report_with_truth_lists_each_typology(tmp_path: Path) -> None:
    test, scores = _test_window()
    truth = test.select(
        "shipment_id",
        (pl.col("label") == 1).alias("is_trafficking"),
        pl.when(pl.col("label") == 1).then(pl.lit("ammo_mixed")).alias("typology"),
    )
    ev = evaluate(
        model_version="1",
        test=test,
        test_scores=scores,
        window_shipments=test.select("shipment_id"),
        window_scores=scores,
        truth=truth,
    )
    page = write_report(ev, tmp_path, {"Reliability": "calibration.png"}).read_text()
    assert "Per typology" in page and "<td>ammo_mixed</td>" in page
    assert "synthetic world's truth" in page
    assert "<figure class='plot'>" in page


def test_a_window_without_findings_says_recall_is_undefined(tmp_path: Path) -> None:
    test, scores = _test_window()
    test = test.with_columns(label=0)
    ev = evaluate(model_version="1", test=test, test_scores=scores)
    assert any("recall is undefined" in n for n in ev.notes)
    assert "recall is undefined" in write_report(ev, tmp_path, {}).read_text()
