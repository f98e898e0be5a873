"""Honest evaluation at inspection capacity.

Outcomes exist only for inspected shipments, and those were chosen by an
earlier policy, so metrics on all inspected shipments are biased. Metrics on
the shipments drawn at random (the exploration share) estimate the truth
without that bias; both are reported side by side. On the synthetic world,
where the truth of every shipment is known, the true share of all trafficking
caught at each capacity is reported too, beside the rules-only policy and
random selection at the same capacity.

Each family of figures says what it is computed on (`Evaluation.basis`), because
"k % capacity" means three different sets:

- `precision`, `recall`: the model's top k % of the *inspected* shipments of the
  test window (k % of the inspected, far fewer than k % of all shipments); biased
  by the policy that chose the inspections.
- `precision_random_share`, `recall_random_share`, `pr_auc_random_share`: the
  shipments drawn at random, each weighted by 1/selection_probability
  (Horvitz-Thompson, self-normalised), the top k % of the traffic they stand for;
  offices draw with different probabilities, so unweighted figures would lean
  toward the offices that draw most.
- `slots`, `inspected_in_slots`, `findings_in_slots`, `true_precision`,
  `true_recall` and the baselines: the model's top k % of *all* shipments of the
  test window (slots = ceil(k x shipments)), the honest operating point of an
  office that inspects k % of its traffic. The rules-only and random baselines are
  their exact expectations (over the rules' tied scores, over the random draw),
  not one lottery draw.
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


# What each family of capacity figures is computed on, and its columns as the CLI
# table, the HTML report and the model card show them (key, short label).
FAMILIES: dict[str, str] = {
    "inspected": "top k % of the inspected shipments of the test window",
    "random_share": "top k % of the random share, each draw weighted 1/selection probability",
    "all_shipments": "top k % of all shipments of the test window (the office's capacity)",
}
CAPACITY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("inspected", "precision", "precision"),
    ("inspected", "recall", "recall"),
    ("random_share", "precision_random_share", "precision"),
    ("random_share", "recall_random_share", "recall"),
    ("all_shipments", "slots", "slots"),
    ("all_shipments", "inspected_in_slots", "inspected"),
    ("all_shipments", "findings_in_slots", "with a finding"),
    ("all_shipments", "true_precision", "true precision"),
    ("all_shipments", "true_recall", "true recall"),
    ("all_shipments", "rules_true_recall", "rules-only true recall (expected)"),
    ("all_shipments", "random_true_recall", "random true recall (expected)"),
)
FAMILY_SHORT = {
    "inspected": "of inspected",
    "random_share": "random share, weighted",
    "all_shipments": "of all shipments",
}


def capacity_columns(at: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The `CAPACITY_COLUMNS` that hold a value at some capacity (no truth: no
    true_* column; no window: no slots)."""
    return [
        c
        for c in CAPACITY_COLUMNS
        if c[0] != "all_shipments" or any(m.get(c[1]) is not None for m in at.values())
    ]


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


def inverse_probability(probabilities: np.ndarray) -> np.ndarray:
    """Horvitz-Thompson weights 1/p of random draws (a draw with p = 0.02 stands for
    50 shipments, one with p = 0.3 for 3.3); a missing or non-positive p counts 1."""
    p = np.asarray(probabilities, dtype=float)
    ok = np.isfinite(p) & (p > 0)
    return np.where(ok, 1.0 / np.where(ok, p, 1.0), 1.0)


def weighted_precision_recall_at(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: float
) -> tuple[float, float]:
    """Precision and recall of the top k % of the population a weighted sample
    stands for (self-normalised Horvitz-Thompson): rows are taken by descending
    score (ties broken as in `top_k_mask`) while the weight taken before them is
    below k x the total weight; precision = weighted findings taken / weight taken,
    recall = weighted findings taken / weighted findings. With equal weights this
    is `precision_recall_at`."""
    n = len(scores)
    if n == 0:
        return float("nan"), float("nan")
    order = np.lexsort((np.random.default_rng(0).random(n), -scores))
    w = np.asarray(weights, dtype=float)[order]
    y = np.asarray(labels, dtype=float)[order]
    before = np.concatenate(([0.0], np.cumsum(w)[:-1]))
    taken = before < k * w.sum() * (1 - 1e-12)
    tp = float((w * y)[taken].sum())
    positives = float((w * y).sum())
    return tp / float(w[taken].sum()), (tp / positives if positives else float("nan"))


def expected_caught(scores: np.ndarray, bad: np.ndarray, slots: int) -> float:
    """The exact expected number of `bad` shipments among the `slots` highest scores
    when ties at the cutoff are broken uniformly at random: every shipment strictly
    above the cutoff score, plus the tied group's count times (slots left / tie size).
    Deterministic: the same scores give the same figure, whatever the seed."""
    n = len(scores)
    slots = min(slots, n)
    if slots <= 0:
        return 0.0
    cutoff = np.sort(scores)[::-1][slots - 1]
    above = scores > cutoff
    tied = scores == cutoff
    left = slots - int(above.sum())
    return float(bad[above].sum()) + float(bad[tied].sum()) * left / int(tied.sum())


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
    n_window: int | None = None  # every shipment of the test window, inspected or not
    basis: dict[str, str] = field(default_factory=dict)  # what each family is computed on
    # the random share's 1/selection probability, in the order of the test frame's
    # random rows (for the report's capacity curve; not in the JSON)
    random_weights: np.ndarray | None = field(default=None, repr=False)
    # the reliability bins of the random share, each draw weighted 1/selection
    # probability: the estimate of the finding rate over all traffic, which the model
    # (trained inverse-propensity weighted) predicts; None without a random share
    calibration_random_share: dict[str, list[float]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "test_window": list(self.test_window),
            "n_inspected": self.n_inspected,
            "n_positive": self.n_positive,
            "n_random_share": self.n_random,
            "n_random_share_positive": self.n_random_positive,
            "n_shipments_in_window": self.n_window,
            "pr_auc": _clean(self.pr_auc),
            "pr_auc_random_share": _clean(self.pr_auc_random_share),
            "brier": _clean(self.brier),
            "at_capacity": self.at_capacity,
            "basis": self.basis,
            "calibration": self.calibration,
            "calibration_random_share": self.calibration_random_share,
            "notes": self.notes,
            # synthetic truth: trafficking shipments per typology in the window, caught
            # per capacity, and the typologies with none in the window
            **({"truth": self.truth} if self.truth is not None else {}),
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
    # each random draw stands for 1/p shipments of the window (Horvitz-Thompson)
    weights = inverse_probability(test["selection_probability"].to_numpy())[random]
    notes = []
    if window_shipments is not None and _census(test, window_shipments):
        # from the data: every shipment of the window has an outcome (a selection
        # probability of 1.0 says nothing of the sort: a must-inspect rule has it too)
        notes.append("every shipment of the test window was inspected: metrics use all of them")
    if not labels.any():
        notes.append(
            "no inspection of the test window found anything: recall is undefined and this "
            "version cannot be compared with another on it"
        )
    at: dict[str, dict[str, Any]] = {}
    for k in CAPACITIES:
        p, r = precision_recall_at(test_scores, labels, k)
        pr, rr = weighted_precision_recall_at(test_scores[random], labels[random], weights, k)
        at[capacity_label(k)] = {
            "precision": _clean(p),
            "recall": _clean(r),
            "precision_random_share": _clean(pr),
            "recall_random_share": _clean(rr),
        }
    n_window = None
    if window_shipments is not None and window_scores is not None:
        n_window = window_shipments.height
        _slot_metrics(at, test, window_shipments, window_scores)
    truth_block = None
    if truth is not None and window_shipments is not None and window_scores is not None:
        truth_block = _truth_metrics(at, window_shipments, window_scores, rules_scores, truth)
    pos = labels.sum()
    rand_pos = labels[random].sum()
    if random.any() and pos and not rand_pos:
        notes.append(_empty_random_share(int(random.sum()), truth_block is not None))
    return Evaluation(
        model_version=model_version,
        test_window=(str(test["declared_at"].min()), str(test["declared_at"].max())),
        n_inspected=test.height,
        n_positive=int(pos),
        n_random=int(random.sum()),
        n_random_positive=int(rand_pos),
        pr_auc=float(average_precision_score(labels, test_scores)) if pos else float("nan"),
        pr_auc_random_share=(
            float(
                average_precision_score(labels[random], test_scores[random], sample_weight=weights)
            )
            if rand_pos
            else float("nan")
        ),
        brier=float(brier_score_loss(labels, test_scores)),
        at_capacity=at,
        calibration=_reliability(labels, test_scores),
        calibration_random_share=(
            _reliability(
                labels[random],
                test_scores[random],
                bins=_random_share_bins(int(random.sum())),
                weights=weights,
            )
            if random.any()
            else None
        ),
        truth=truth_block,
        notes=notes,
        n_window=n_window,
        basis=_basis(test.height, int(random.sum()), n_window, truth_block is not None),
        random_weights=weights,
    )


def _empty_random_share(n_random: int, truth: bool) -> str:
    """The note of a test window whose random share holds no finding (while other
    inspections found something)."""
    return (
        f"the random share of the test window ({n_random:,} shipments drawn at random) "
        "holds no finding: its precision (0 at every capacity), recall and PR-AUC "
        "(undefined) say nothing of how well the model ranks, only that too few "
        "shipments were drawn at random for findings this rare; this window has no "
        "unbiased estimate, and the figures on the inspected shipments are biased by "
        "the policy that chose them"
        + (" (the true figures, from the synthetic world's truth, are not)" if truth else "")
    )


def _census(test: pl.DataFrame, window: pl.DataFrame) -> bool:
    """Every shipment of the window has an outcome among the inspected `test`."""
    if window.height == 0:
        return False
    inspected = test.select("shipment_id").unique()
    return window.select("shipment_id").join(inspected, on="shipment_id", how="anti").height == 0


def _basis(n_inspected: int, n_random: int, n_window: int | None, truth: bool) -> dict[str, str]:
    """What each family of `at_capacity` figures is computed on, with its size."""
    basis = {
        "inspected": (
            f"precision, recall: the model's top k % of the {n_inspected:,} inspected "
            "shipments of the test window (k % of the inspected, not of all shipments); "
            "biased by the policy that chose the inspections"
        ),
        "random_share": (
            f"precision_random_share, recall_random_share, pr_auc_random_share: the "
            f"{n_random:,} shipments drawn at random, each weighted by 1/selection_probability "
            "(Horvitz-Thompson, self-normalised), the top k % of the traffic they stand for"
        ),
    }
    if n_window is not None:
        basis["all_shipments"] = (
            "slots, inspected_in_slots, findings_in_slots"
            + (", true_precision, true_recall, per_typology" if truth else "")
            + f": the model's top k % of all {n_window:,} shipments of the test window "
            "(slots = k % of them, rounded up: the office's capacity)"
            + (
                "; rules_true_recall, rules_true_precision, random_true_recall and "
                "random_true_precision are the exact expected values of the rules-only "
                "policy (over its tied scores) and of a uniform random draw with the same slots"
                if truth
                else ""
            )
        )
    return basis


def _slot_metrics(
    at: dict[str, dict[str, Any]], test: pl.DataFrame, window: pl.DataFrame, scores: np.ndarray
) -> None:
    """The honest operating point at k % of all shipments of the window: the slots,
    how many of the model's top k % were inspected, and how many of those found
    something (a lower bound of what the slots would catch)."""
    joined = window.select("shipment_id").join(
        test.select("shipment_id", pl.col("label").alias("__label")).unique("shipment_id"),
        on="shipment_id",
        how="left",
        maintain_order="left",
    )
    inspected = joined["__label"].is_not_null().to_numpy()
    found = joined["__label"].fill_null(0).to_numpy().astype(float) > 0
    for k in CAPACITIES:
        mask = top_k_mask(scores, k)
        entry = at[capacity_label(k)]
        entry["slots"] = int(mask.sum())
        entry["inspected_in_slots"] = int((mask & inspected).sum())
        entry["findings_in_slots"] = int((mask & found).sum())


def _reliability(
    labels: np.ndarray, scores: np.ndarray, bins: int = 10, weights: np.ndarray | None = None
) -> dict[str, list[float]]:
    """Mean predicted against observed rate, in bins of equal count (by score), with
    each bin's number of shipments (`count`), of findings (`findings`) and its
    lowest and highest score (`low`, `high`). With `weights` (the random share's
    1/selection probability) the mean and the rate are weighted, estimating the
    traffic each bin's draws stand for (`weight`: how many shipments that is)."""
    order = np.argsort(scores)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    out: dict[str, list[float]] = {
        "predicted": [float(np.average(scores[c], weights=w[c])) for c in chunks],
        "observed": [float(np.average(labels[c], weights=w[c])) for c in chunks],
        "count": [float(len(c)) for c in chunks],
        "findings": [float(labels[c].sum()) for c in chunks],
        "low": [float(scores[c].min()) for c in chunks],
        "high": [float(scores[c].max()) for c in chunks],
    }
    if weights is not None:
        out["weight"] = [float(w[c].sum()) for c in chunks]
    return out


def _random_share_bins(n: int) -> int:
    """Fewer bins for the random share (a few hundred draws at most in a window):
    about 40 draws a bin, 5 bins at most."""
    return max(1, min(5, n // 40))


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
    # the typologies of the truth (the whole world) with no shipment in this window:
    # listed as absent, not silently dropped
    known = truth.filter(pl.col("is_trafficking").fill_null(False))["typology"].drop_nulls()
    absent = sorted(set(known.to_list()) - set(typologies) - {""})
    caught_by_typology: dict[str, dict[str, int]] = {}
    n = len(bad)
    for k in CAPACITIES:
        entry = at[capacity_label(k)]
        mask = top_k_mask(scores, k)
        slots = int(mask.sum())
        caught = float(bad[mask].sum())
        entry["true_recall"] = _clean(caught / total) if total else None
        entry["true_precision"] = _clean(caught / slots) if slots else None
        if rules_scores is not None:
            # the exact expectation over the rules' tied scores, not one tie-break
            expected = expected_caught(rules_scores, bad, slots)
            entry["rules_true_recall"] = _clean(expected / total) if total else None
            entry["rules_true_precision"] = _clean(expected / slots) if slots else None
        # a uniform draw of `slots` of the n shipments catches slots/n of the trafficking
        entry["random_true_recall"] = _clean(slots / n) if n else None
        entry["random_true_precision"] = _clean(total / n) if n else None
        in_slots = {t: int((mask & (typ == t)).sum()) for t in typologies}
        caught_by_typology[capacity_label(k)] = in_slots
        entry["per_typology"] = {
            t: _clean(in_slots[t] / float((typ == t).sum())) for t in typologies
        }
    return {
        "shipments_in_window": len(bad),
        "trafficking_in_window": total,
        "typologies": {t: int((typ == t).sum()) for t in typologies},
        "caught": caught_by_typology,
        "absent_typologies": absent,
    }
