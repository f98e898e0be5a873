"""Evaluation honesty on hand-made frames with known answers (UAT2 DS F7, F8, F9, F12).

- F7: "k % capacity" is computed on three different sets; each figure says which,
  and the honest operating point (the model's top k % of *all* shipments of the
  window: slots, how many were inspected, true precision) is reported.
- F8: the rules-only baseline is its exact expectation over tied scores, not one
  random tie-break; random selection catches exactly slots/n of the trafficking.
- F9: the random-share metrics weight each draw by 1/selection_probability.
- F12: the census note comes from the data (every shipment of the window has an
  outcome), not from selection probabilities of 1.0.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from models.card import card_markdown
from models.evaluate import (
    CAPACITIES,
    Evaluation,
    evaluate,
    precision_recall_at,
)
from models.report import write_report

START = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
N = 100
CENSUS = "every shipment of the test window was inspected"


def _window() -> tuple[pl.DataFrame, np.ndarray]:
    """100 shipments S0..S99, the model scores S0 highest, S99 lowest."""
    ids = [f"S{i}" for i in range(N)]
    frame = pl.DataFrame(
        {"shipment_id": ids, "declared_at": [START + dt.timedelta(hours=i) for i in range(N)]}
    )
    return frame, 1.0 - np.arange(N) / N


def _inspected(ids: list[int], positive: set[int], method: str = "rule") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in ids],
            "declared_at": [START + dt.timedelta(hours=i) for i in ids],
            "label": [int(i in positive) for i in ids],
            "selection_method": [method] * len(ids),
            # a must-inspect rule: probability 1, yet not a census
            "selection_probability": [1.0] * len(ids),
        }
    )


# trafficking of the window (the synthetic truth): 3 in the model's top 5
BAD = {0: "ammo_mixed", 1: "ammo_mixed", 2: "parts", 10: "parts", 50: "parts"}


def _truth() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(N)],
            "is_trafficking": [i in BAD for i in range(N)],
            "typology": [BAD.get(i) for i in range(N)],
        }
    )


def _rules_scores() -> np.ndarray:
    """S0 at 0.9, S1..S40 tied at 0.3 (3 of the 40 trafficking: S1, S2, S10), rest 0."""
    scores = np.zeros(N)
    scores[0] = 0.9
    scores[1:41] = 0.3
    return scores


def _evaluation() -> Evaluation:
    window, scores = _window()
    inspected = list(range(0, N, 10))  # S0, S10, ..., S90: 10 inspected
    test = _inspected(inspected, positive={0, 10})
    return evaluate(
        model_version="7",
        test=test,
        test_scores=scores[inspected],
        window_shipments=window,
        window_scores=scores,
        rules_scores=_rules_scores(),
        truth=_truth(),
    )


def test_each_capacity_figure_says_what_it_is_computed_on_with_the_honest_operating_point() -> None:
    ev = _evaluation()
    five = ev.at_capacity["5%"]
    # top 5 % of the 10 inspected = 1 shipment (S0, a finding): the optimistic figures
    assert five["precision"] == 1.0 and five["recall"] == 0.5
    # top 5 % of all 100 shipments = 5 slots (S0..S4): one was inspected, it found
    # something; 3 of the 5 were trafficking
    assert five["slots"] == 5
    assert five["inspected_in_slots"] == 1 and five["findings_in_slots"] == 1
    assert five["true_precision"] == pytest.approx(0.6)
    assert five["true_recall"] == pytest.approx(0.6)
    ten = ev.at_capacity["10%"]
    assert (ten["slots"], ten["inspected_in_slots"], ten["findings_in_slots"]) == (10, 1, 1)
    assert ten["true_precision"] == pytest.approx(0.3)
    data = ev.to_json()
    assert data["n_shipments_in_window"] == 100
    basis = data["basis"]
    assert "top k % of the 10 inspected shipments" in basis["inspected"]
    assert "1/selection_probability" in basis["random_share"]
    assert "top k % of all 100 shipments" in basis["all_shipments"]
    assert "true_precision" in basis["all_shipments"]


def test_the_report_the_card_and_the_cli_table_label_each_family(tmp_path: Path) -> None:
    from pipelines import cli

    ev = _evaluation()
    page = write_report(ev, tmp_path, {}).read_text()
    assert "<th colspan='2'>top k % of the inspected shipments of the test window</th>" in page
    assert "top k % of all shipments of the test window (the office&#x27;s capacity)" in page
    assert "<th>true precision</th>" in page and "<th>slots</th>" in page
    assert "top k % of all 100 shipments" in page
    card = card_markdown(
        {
            "model": "caravan-risk",
            "version": "7",
            "purpose": "p",
            "algorithm": "a",
            "target": "arms",
            "feature_set_version": "2",
            "features": [],
            "data_hash": "h",
            "code_version": "c",
            "data_windows": {},
            "rows": {},
            "metrics": ev.to_json(),
            "excluded_attributes": [],
            "known_limits": [],
        }
    )
    assert "| capacity | precision (of inspected) | recall (of inspected) |" in card
    assert "true precision (of all shipments)" in card
    assert "| 5% | 1.000 | 0.500 |" in card and "| 5 | 1 | 1 | 0.600 | 0.600 |" in card
    with cli.out.capture() as captured:
        cli._print_evaluation(ev)
    text = captured.get()
    assert "top k % of the inspected shipments of the test window" in text
    assert "top k % of all shipments of the test window" in text and "true precision" in text
    assert "top k % of all 100 shipments" in " ".join(text.split())


def test_the_rules_only_baseline_is_its_exact_expectation_over_ties() -> None:
    ev = _evaluation()
    # 5 slots: S0 (trafficking) above the cutoff, 4 slots among 40 tied with 3 trafficking
    expected = 1 + 3 * 4 / 40
    five = ev.at_capacity["5%"]
    assert five["rules_true_recall"] == pytest.approx(expected / 5)
    assert five["rules_true_precision"] == pytest.approx(expected / 5)
    ten = ev.at_capacity["10%"]
    assert ten["rules_true_recall"] == pytest.approx((1 + 3 * 9 / 40) / 5)
    # random selection: slots / n of the trafficking, exactly
    assert [ev.at_capacity[c]["random_true_recall"] for c in ("1%", "2%", "5%", "10%")] == [
        0.01,
        0.02,
        0.05,
        0.1,
    ]
    assert five["random_true_precision"] == pytest.approx(5 / 100)
    # deterministic: the same window in another order gives the same baseline
    window, scores = _window()
    order = np.random.default_rng(5).permutation(N)
    inspected = list(range(0, N, 10))
    again = evaluate(
        model_version="7",
        test=_inspected(inspected, positive={0, 10}),
        test_scores=scores[inspected],
        window_shipments=window[order],
        window_scores=scores[order],
        rules_scores=_rules_scores()[order],
        truth=_truth(),
    )
    assert again.at_capacity["5%"]["rules_true_recall"] == five["rules_true_recall"]


def _random_share() -> tuple[pl.DataFrame, np.ndarray]:
    """Random draws at two offices: A draws with p = 0.5 (each stands for 2
    shipments), B with p = 0.05 (each stands for 20); plus targeted inspections."""
    rows = [
        # (office, p, score, label)
        ("A", 0.5, 0.90, 0),
        ("B", 0.05, 0.85, 1),
        ("A", 0.5, 0.80, 0),
        ("A", 0.5, 0.70, 0),
        ("A", 0.5, 0.60, 0),
        ("B", 0.05, 0.50, 1),
        ("B", 0.05, 0.40, 0),
        ("B", 0.05, 0.30, 0),
    ]
    targeted = [("A", 1.0, 0.95, 1), ("B", 1.0, 0.20, 1)]
    frame = pl.DataFrame(
        {
            "shipment_id": [f"R{i}" for i in range(len(rows) + len(targeted))],
            "declared_at": [START + dt.timedelta(hours=i) for i in range(10)],
            "label": [r[3] for r in rows + targeted],
            "selection_method": ["random"] * len(rows) + ["rule"] * len(targeted),
            "selection_probability": [r[1] for r in rows + targeted],
        }
    )
    return frame, np.array([r[2] for r in rows + targeted])


def test_random_share_metrics_weight_each_draw_by_its_inverse_selection_probability() -> None:
    test, scores = _random_share()
    ev = evaluate(model_version="1", test=test, test_scores=scores)
    # weights: A 2 each (8), B 20 each (80), 88 in all; 40 of it with a finding.
    # 10 % of 88 = 8.8: the draws at 0.90 (A, 2) and 0.85 (B, 20, a finding) are taken
    ten = ev.at_capacity["10%"]
    assert ten["precision_random_share"] == pytest.approx(20 / 22, abs=1e-6)
    assert ten["recall_random_share"] == pytest.approx(20 / 40)
    # unweighted, the top 10 % of 8 draws is the A draw at 0.90 alone: 0 and 0
    random = (test["selection_method"] == "random").to_numpy()
    labels = test["label"].to_numpy().astype(float)
    assert precision_recall_at(scores[random], labels[random], 0.10) == (0.0, 0.0)
    # 1 % of 88 = 0.88: the first draw only (A, no finding)
    assert ev.at_capacity["1%"]["precision_random_share"] == 0.0
    weights = np.where(test["selection_probability"].to_numpy()[random] == 0.5, 2.0, 20.0)
    assert ev.pr_auc_random_share == pytest.approx(
        average_precision_score(labels[random], scores[random], sample_weight=weights)
    )
    assert ev.pr_auc_random_share != pytest.approx(
        average_precision_score(labels[random], scores[random])
    )
    assert ev.n_random == 8 and ev.n_random_positive == 2
    # the report's capacity curve of the random share is weighted the same way
    from models.report import CURVE_CAPACITIES, capacity_curve

    curve = capacity_curve(scores[random], labels[random], ev.random_weights)
    at_ten = list(CURVE_CAPACITIES).index(0.10)
    assert curve["precision"][at_ten] == pytest.approx(20 / 22)


def test_equal_weights_give_the_unweighted_figures() -> None:
    from models.evaluate import weighted_precision_recall_at

    rng = np.random.default_rng(2)
    scores, labels = rng.random(437), (rng.random(437) < 0.1).astype(float)
    for k in CAPACITIES:
        assert weighted_precision_recall_at(scores, labels, np.full(437, 3.0), k) == pytest.approx(
            precision_recall_at(scores, labels, k)
        )


def test_the_census_note_comes_from_the_data_not_from_probabilities_of_one() -> None:
    window, scores = _window()
    # 10 of 100 inspected by a must-inspect rule (probability 1): not a census
    assert not any(CENSUS in n for n in _evaluation().notes)
    # every shipment of the window inspected: a census
    census = evaluate(
        model_version="1",
        test=_inspected(list(range(N)), positive={0, 10}, method="random"),
        test_scores=scores,
        window_shipments=window,
        window_scores=scores,
    )
    assert any(CENSUS in n for n in census.notes)


def test_the_models_page_says_what_each_capacity_figure_is_a_share_of(tmp_path: Path) -> None:
    """/web/models over HTTP (real uvicorn, SQLite): a registered challenger whose
    report holds these figures; the rows name their basis and show the slots."""
    import json

    import httpx
    import lightgbm as lgb

    from data_contracts.settings import DataLayout
    from models.registry import CHALLENGER, Registry
    from serving.auth import Role
    from tests.serving.conftest import add_users, build_app, password_for, uvicorn_server
    from tests.web.conftest import CSRF

    layout = DataLayout(tmp_path / "data")
    registry = Registry(layout.mlflow_db, layout.mlflow_artifacts)
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 3)), (rng.random(200) < 0.3).astype(int)
    booster = lgb.train({"verbose": -1}, lgb.Dataset(x, y), num_boost_round=2)
    with registry.run("test"):
        version = registry.log_model(booster, {"target": "arms"})
    registry.set_alias(CHALLENGER, version)
    folder = layout.reports / "evaluation" / f"v{version}"
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps(_evaluation().to_json()))

    app = build_app(f"sqlite:///{tmp_path / 'caravan.db'}", layout.root)
    with uvicorn_server(app) as base:
        add_users(app)
        with httpx.Client(base_url=base, timeout=60) as client:
            token = CSRF.search(client.get("/web/login").text)
            assert token is not None
            client.post(
                "/web/login",
                data={
                    "csrf_token": token.group(1),
                    "username": "data-scientist1",
                    "password": password_for(Role.data_scientist),
                },
            )
            page = client.get("/web/models", follow_redirects=True)
    assert page.status_code == 200, page.text
    text = " ".join(page.text.split())
    assert "Precision, top 5% of the inspected shipments</th><td>1.000</td>" in text
    slots = "Top 5% of all shipments: slots, of them inspected, with a finding"
    assert f"{slots}</th><td>5 / 1 / 1" in text
    assert "True precision, top 5% of all shipments (synthetic world)</th><td>0.600" in text
    assert "Random share (weighted by 1/selection probability)" in text
