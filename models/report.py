"""Plots and the HTML evaluation report a data scientist opens in a browser."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluate import (
    FAMILIES,
    Evaluation,
    capacity_columns,
    top_k_mask,
    weighted_precision_recall_at,
)

CURVE_CAPACITIES = np.array([0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def capacity_curve(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, list[float]]:
    """Precision and recall at each capacity; with `weights` (the random share's
    1/selection probability) the self-normalised weighted figures of
    `models.evaluate.weighted_precision_recall_at`."""
    if weights is not None:
        pairs = [
            weighted_precision_recall_at(scores, labels, weights, float(k))
            for k in CURVE_CAPACITIES
        ]
        return {
            "capacity": CURVE_CAPACITIES.tolist(),
            "precision": [p for p, _ in pairs],
            "recall": [0.0 if r != r else r for _, r in pairs],
        }
    prec, rec = [], []
    positives = max(float(labels.sum()), 1.0)
    for k in CURVE_CAPACITIES:
        mask = top_k_mask(scores, float(k))
        tp = float(labels[mask].sum())
        prec.append(tp / max(int(mask.sum()), 1))
        rec.append(tp / positives)
    return {"capacity": CURVE_CAPACITIES.tolist(), "precision": prec, "recall": rec}


# the set each curve of `pipelines.modelling` ranks, as the capacity axis names it
CURVE_SETS = {
    "all inspected": "inspected",
    "random share (weighted)": "random share",
    "true (all shipments)": "all",
}


def plot_capacity(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, c in curves.items():
        cap = np.array(c["capacity"]) * 100
        ax.plot(cap, c["recall"], marker="o", label=f"recall - {name}")
        if "precision" in c:
            ax.plot(cap, c["precision"], marker="s", linestyle="--", label=f"precision - {name}")
    # each curve's capacity is a share of the set it ranks (UAT2 DS F7): the sets of
    # the curves drawn (no random-share curve when the random share holds no finding)
    sets = ", ".join(CURVE_SETS.get(name, name) for name in curves)
    ax.set_xlabel(f"capacity (top k % of each curve's set: {sets})")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Precision and recall against inspection capacity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(ev: Evaluation, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    ax.plot(ev.calibration["predicted"], ev.calibration["observed"], marker="o")
    top = max(max(ev.calibration["predicted"] + ev.calibration["observed"]) * 1.1, 0.05)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed finding rate")
    ax.set_title(f"Reliability (Brier {ev.brier:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SCORE_BINS = 40
LOWEST_SCORE = 1e-6  # the first bin's lower edge at most; lower scores are counted in it


@dataclass(frozen=True)
class ScoreBars:
    """What `plot_scores` drew: the bins' edges and, per class, the bars' heights
    (the share of that class's shipments whose score falls in each bin) and the
    number of shipments."""

    edges: np.ndarray
    shares: dict[str, np.ndarray]
    counts: dict[str, int]


def plot_scores(scores: np.ndarray, labels: np.ndarray, path: Path) -> ScoreBars:
    """Score histograms of the shipments with and without a finding, over bins of
    equal width on a log scale: per class, the share of its shipments in each bin
    (each shipment weighs 1/n of its class), so that a bar's height is a share
    whatever the bin's width and two classes of very different sizes compare.
    (Densities would divide by the linear width, 10,000 times larger at 0.7 than
    at 1e-4, and hide the high scores: UAT2 DS F2.) Scores below the first edge
    are counted in the first bin, none is left out."""
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    low = min(max(float(scores.min()), LOWEST_SCORE), 0.1) if len(scores) else LOWEST_SCORE
    edges = np.logspace(np.log10(low), 0, SCORE_BINS + 1)
    shown = np.clip(scores, edges[0], edges[-1])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    shares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for name, value in (("no finding", 0), ("finding", 1)):
        values = shown[labels == value]
        counts[name] = len(values)
        if not len(values):  # nothing to share out (no finding in the window)
            shares[name] = np.zeros(SCORE_BINS)
            continue
        _, _, bars = ax.hist(
            values,
            bins=edges,
            weights=np.full(len(values), 1.0 / len(values)),
            alpha=0.6,
            label=f"{name} ({len(values):,})",
        )
        shares[name] = np.array([bar.get_height() for bar in bars])
    ax.set_xscale("log")
    ax.set_xlabel("model probability (log scale)")
    ax.set_ylabel("share of the class's shipments")
    ax.set_ylim(0, max(max((h.max() for h in shares.values()), default=0.0) * 1.1, 0.05))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend()
    ax.set_title("Score distribution of inspected test shipments")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ScoreBars(edges, shares, counts)


def plot_typologies(ev: Evaluation, path: Path) -> bool:
    per = ev.at_capacity["5%"].get("per_typology")
    if not per:
        return False
    plt = _pyplot()
    names = sorted(per)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(names, [per[n] or 0.0 for n in names])
    ax.set_xlim(0, 1)
    ax.set_xlabel("true recall at 5% capacity")
    ax.set_title("Share of each typology's shipments caught (synthetic truth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_shap(contrib: np.ndarray, x: np.ndarray, names: list[str], path: Path) -> None:
    """SHAP beeswarm of LightGBM's native contributions (drawn by the shap package)."""
    import shap

    plt = _pyplot()
    explanation = shap.Explanation(
        values=contrib[:, :-1], base_values=contrib[:, -1], data=x, feature_names=names
    )
    shap.plots.beeswarm(explanation, max_display=15, show=False)
    fig = plt.gcf()
    fig.set_size_inches(8, 6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WIDE_PLOTS = frozenset({"disparity.png"})


def write_report(ev: Evaluation, folder: Path, images: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = ev.to_json()
    (folder / "evaluation.json").write_text(json.dumps(data, indent=2, default=str))
    columns = capacity_columns(ev.at_capacity)
    rows = []
    for cap, m in ev.at_capacity.items():
        cells = "".join(f"<td>{_fmt(m.get(key))}</td>" for _, key, _ in columns)
        rows.append(f"<tr><th>{cap}</th>{cells}</tr>")
    # one header cell per family, saying what its capacity is a share of
    spans: list[tuple[str, int]] = []
    for family, _, _ in columns:
        if spans and spans[-1][0] == family:
            spans[-1] = (family, spans[-1][1] + 1)
        else:
            spans.append((family, 1))
    family_head = "".join(f"<th colspan='{n}'>{html.escape(FAMILIES[f])}</th>" for f, n in spans)
    column_head = "".join(f"<th>{html.escape(label)}</th>" for _, _, label in columns)
    basis = "".join(
        f"<li><b>{html.escape(FAMILIES[f])}</b>: {html.escape(text)}</li>"
        for f, text in ev.basis.items()
        if f in FAMILIES
    )
    per = ev.at_capacity["5%"].get("per_typology") or {}
    typ_rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{_fmt(v)}</td></tr>" for t, v in sorted(per.items())
    )
    # Each plot links to its full-size file; wide ones (the disparity plot) take the
    # page's width, so that their labels stay readable.
    imgs = "".join(
        f"<figure class='{'wide' if f in WIDE_PLOTS else 'plot'}'>"
        f"<a href='{html.escape(f)}'><img src='{html.escape(f)}' alt='{html.escape(t)}'></a>"
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, f in images.items()
    )
    truth_known = any(m.get("true_recall") is not None for m in ev.at_capacity.values())
    truth_note = (
        '"True" figures use the synthetic world\'s truth for every shipment of the window, '
        "inspected or not."
        if truth_known
        else "No truth is known for this data (it is not a synthetic world): only inspected "
        "shipments are measured."
    )
    typ_section = (
        "<h2>Per typology, 5% capacity</h2><table><tr><th>typology</th><th>true recall</th></tr>"
        f"{typ_rows}</table>"
        if per
        else ""
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.notes)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Caravan model evaluation {html.escape(str(ev.model_version))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:1em;vertical-align:top}}figure.plot img{{max-width:520px}}
figure.wide{{display:block}}figure.wide img{{max-width:100%}}</style></head><body>
<h1>Model {html.escape(str(ev.model_version))}: evaluation</h1>
<p>Test window {html.escape(ev.test_window[0])} to {html.escape(ev.test_window[1])}:
{ev.n_inspected:,} inspected shipments, {ev.n_positive:,} with a finding;
{ev.n_random:,} of them drawn at random ({ev.n_random_positive:,} with a finding).
PR-AUC {_fmt(data["pr_auc"])} on all inspected, {_fmt(data["pr_auc_random_share"])} on the
random share (weighted); Brier score {_fmt(data["brier"])}.</p>
<p>Metrics on all inspected shipments are biased by the policy that chose them; the random
share, each draw weighted by the inverse of its recorded selection probability
(Horvitz-Thompson), estimates them without that bias. A capacity of k % means three
different sets below: k % of the inspected shipments, k % of the traffic the random
share stands for, and k % of all shipments of the window (the slots an office that
inspects k % of its traffic has). {html.escape(truth_note, quote=False)}</p><ul>{notes}</ul>
<table><tr><th rowspan='2'>capacity</th>{family_head}</tr><tr>{column_head}</tr>
{"".join(rows)}</table>
<ul class="basis">{basis}</ul>
{typ_section}{imgs}</body></html>"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))
