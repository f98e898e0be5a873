"""A test window whose random share holds no finding (found in review): its precision
(0) and recall (undefined) say nothing of the model, and the evaluation says so in
its notes, which the HTML report shows; a random share with a finding gets no such
note."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from models.evaluate import Evaluation, evaluate
from models.report import write_report

START = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
NOTE = "the random share of the test window (8 shipments drawn at random) holds no finding"


def _evaluation(random_findings: set[int]) -> Evaluation:
    """40 inspected shipments, S0 scored highest: S0..S31 chosen by rules (S0, S5,
    S10 found something), S32..S39 drawn at random (p = 0.05)."""
    n = 40
    random = [i >= 32 for i in range(n)]
    test = pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(n)],
            "declared_at": [START + dt.timedelta(hours=i) for i in range(n)],
            "label": [int(i in {0, 5, 10} | random_findings) for i in range(n)],
            "selection_method": ["random" if r else "rule" for r in random],
            "selection_probability": [0.05 if r else 1.0 for r in random],
        }
    )
    return evaluate(model_version="3", test=test, test_scores=1.0 - np.arange(n) / n)


def test_a_random_share_without_a_finding_is_noted_and_the_report_shows_it(
    tmp_path: Path,
) -> None:
    ev = _evaluation(set())
    data = ev.to_json()
    assert data["n_random_share"] == 8 and data["n_random_share_positive"] == 0
    assert data["at_capacity"]["5%"]["precision_random_share"] == 0.0
    assert data["at_capacity"]["5%"]["recall_random_share"] is None
    (note,) = [n for n in data["notes"] if NOTE in n]
    assert "say nothing of how well the model ranks" in note
    assert "no unbiased estimate" in note
    page = write_report(ev, tmp_path, {}).read_text()
    assert f"<li>{NOTE}" in page


def test_a_random_share_with_a_finding_or_no_finding_at_all_gets_no_such_note() -> None:
    assert not any("random share" in n for n in _evaluation({35}).notes)
    nothing = evaluate(
        model_version="3",
        test=pl.DataFrame(
            {
                "shipment_id": ["A", "B"],
                "declared_at": [START, START],
                "label": [0, 0],
                "selection_method": ["random", "rule"],
                "selection_probability": [0.05, 1.0],
            }
        ),
        test_scores=np.array([0.2, 0.1]),
    )
    # no inspection found anything: that note says it, not the random share's
    assert [n for n in nothing.notes if "random share" in n] == []
    assert any("recall is undefined" in n for n in nothing.notes)
