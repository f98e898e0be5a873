"""Honest evaluation at inspection capacity.

Outcomes exist only for inspected shipments, and those were chosen by an
earlier policy, so metrics on all inspected shipments are biased. Metrics on
the shipments drawn at random (the exploration share) estimate the truth
without that bias; both are reported side by side. On the synthetic world,
where the truth of every shipment is known, the true share of all trafficking
caught at each capacity is reported too, beside the rules-only policy and
random selection at the same capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, brier_score_loss

CAPACITIES = (0.01, 0.02, 0.05, 0.10)
PRIMARY = "5%"  # the primary metric is recall at 5 % capacity


def capacity_label(k: float) -> str:
    return f"{round(k * 100)}%"


def top_k_mask(scores: np.ndarray, k: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """The ceil(k * n) highest scores (ties broken at random with a fixed seed)."""
    n = len(scores)
    m = min(n, math.ceil(k * n))
    rng = rng or np.random.default_rng(0)
    order = np.lexsort((rng.random(n), -scores))
    mask = np.zeros(n, dtype=bool)
    mask[order[:m]] = True
    return mask


def precision_recall_at(scores: np.ndarray, labels: np.ndarray, k: float) -> tuple[float, float]:
    if len(scores) == 0:
        return float("nan"), float("nan")
    mask = top_k_mask(scores, k)
    tp = float(labels[mask].sum())
    positives = float(labels.sum())
    return tp / max(int(mask.sum()), 1), (tp / positives if positives else float("nan"))


@dataclass
class Evaluation:
    model_version: str | None
    test_window: tuple[str, str]
    n_inspected: int
    n_positive: int
    n_random: int
    n_random_positive: int
    pr_auc: float
    pr_auc_random_share: float
    brier: float
    at_capacity: dict[str, dict[str, Any]]
    calibration: dict[str, list[float]]
    truth: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "test_window": list(self.test_window),
            "n_inspected": self.n_inspected,
            "n_positive": self.n_positive,
            "n_random_share": self.n_random,
            "n_random_share_positive": self.n_random_positive,
            "pr_auc": _clean(self.pr_auc),
            "pr_auc_random_share": _clean(self.pr_auc_random_share),
            "brier": _clean(self.brier),
            "at_capacity": self.at_capacity,
            "calibration": self.calibration,
            "notes": self.notes,
        }

    def primary(self) -> float:
        value = self.at_capacity[PRIMARY].get("true_recall", self.at_capacity[PRIMARY]["recall"])
        return float(value) if value is not None else float("nan")

    def primary_metric(self) -> str:
        """The name of what `primary()` returns: true recall on a synthetic world
        (whose truth is known), recall on inspected shipments otherwise."""
        truth = "true_recall" in self.at_capacity[PRIMARY]
        return f"{'true recall' if truth else 'recall'} at {PRIMARY} capacity"


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def evaluate(
    *,
    model_version: str | None,
    test: pl.DataFrame,
    test_scores: np.ndarray,
    window_shipments: pl.DataFrame | None = None,
    window_scores: np.ndarray | None = None,
    rules_scores: np.ndarray | None = None,
    truth: pl.DataFrame | None = None,
) -> Evaluation:
    """`test`: inspected shipments of the test window (label, selection_method);
    `window_shipments`: every shipment of the window (shipment_id) with the
    model's `window_scores` and the rules-only policy's `rules_scores`, used
    with `truth` (shipment_id, is_trafficking, typology) when it exists."""
    labels = test["label"].to_numpy().astype(float)
    random = (test["selection_method"] == "random").to_numpy()
    notes = []
    if (test["selection_probability"] >= 1.0).all():
        notes.append("every shipment of the test window was inspected: metrics use all of them")
    if not labels.any():
        notes.append(
            "no inspection of the test window found anything: recall is undefined and this "
            "version cannot be compared with another on it"
        )
    at: dict[str, dict[str, Any]] = {}
    for k in CAPACITIES:
        p, r = precision_recall_at(test_scores, labels, k)
        pr, rr = precision_recall_at(test_scores[random], labels[random], k)
        at[capacity_label(k)] = {
            "precision": _clean(p),
            "recall": _clean(r),
            "precision_random_share": _clean(pr),
            "recall_random_share": _clean(rr),
        }
    truth_block = None
    if truth is not None and window_shipments is not None and window_scores is not None:
        truth_block = _truth_metrics(at, window_shipments, window_scores, rules_scores, truth)
    pos = labels.sum()
    rand_pos = labels[random].sum()
    return Evaluation(
        model_version=model_version,
        test_window=(str(test["declared_at"].min()), str(test["declared_at"].max())),
        n_inspected=test.height,
        n_positive=int(pos),
        n_random=int(random.sum()),
        n_random_positive=int(rand_pos),
        pr_auc=float(average_precision_score(labels, test_scores)) if pos else float("nan"),
        pr_auc_random_share=(
            float(average_precision_score(labels[random], test_scores[random]))
            if rand_pos
            else float("nan")
        ),
        brier=float(brier_score_loss(labels, test_scores)),
        at_capacity=at,
        calibration=_reliability(labels, test_scores),
        truth=truth_block,
        notes=notes,
    )


def _reliability(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted against observed rate, in bins of equal count."""
    order = np.argsort(scores)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    return {
        "predicted": [float(scores[c].mean()) for c in chunks],
        "observed": [float(labels[c].mean()) for c in chunks],
        "count": [float(len(c)) for c in chunks],
    }


def _truth_metrics(
    at: dict[str, dict[str, Any]],
    window: pl.DataFrame,
    scores: np.ndarray,
    rules_scores: np.ndarray | None,
    truth: pl.DataFrame,
) -> dict[str, Any]:
    joined = window.select("shipment_id").join(
        truth, on="shipment_id", how="left", maintain_order="left"
    )
    bad = joined["is_trafficking"].fill_null(False).to_numpy()
    typ = joined["typology"].fill_null("").to_numpy()
    total = int(bad.sum())
    typologies = sorted({t for t in typ[bad] if t})
    for k in CAPACITIES:
        entry = at[capacity_label(k)]
        mask = top_k_mask(scores, k)
        entry["true_recall"] = _clean(bad[mask].sum() / total) if total else None
        if rules_scores is not None:
            rmask = top_k_mask(rules_scores, k, np.random.default_rng(1))
            entry["rules_true_recall"] = _clean(bad[rmask].sum() / total) if total else None
        entry["random_true_recall"] = _clean(k)  # expected share caught by a uniform draw
        entry["per_typology"] = {
            t: _clean(float((mask & (typ == t)).sum()) / float((typ == t).sum()))
            for t in typologies
        }
    return {
        "shipments_in_window": len(bad),
        "trafficking_in_window": total,
        "typologies": {t: int((typ == t).sum()) for t in typologies},
    }
