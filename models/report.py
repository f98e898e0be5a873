"""Plots and the HTML evaluation report a data scientist opens in a browser."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
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


CALIBRATION_NOTE = (
    "The model is trained with each inspection weighted by 1/selection probability, so it "
    "predicts the finding rate over all traffic, not among the inspected shipments. "
    "Inspections were chosen for their risk (by rules and officers, on signs the model may "
    "not see), so at the same score inspected shipments find more than the traffic would: "
    "on them (upper panel) a model calibrated to the traffic sits above the diagonal, by "
    "as much as the selection knew beyond the model. The check of calibration is the "
    "random share (lower panel), each draw weighted by 1/selection probability, which "
    "estimates the traffic's rate: there the points should follow the diagonal, within the "
    "noise of few findings (a bin of 60 draws reads 0 or at least 1/60). Axes are "
    "logarithmic; a bin without a finding is drawn on the 0 row; the bins, their "
    "shipments and findings are listed under Reliability bins."
)


def _bin_sizes(bins: dict[str, list[float]]) -> str:
    """The bins' number and size, e.g. "10 bins of 122-123 shipments" (bins of equal
    count differ by one at most)."""
    counts = [int(c) for c in bins["count"]]
    low, high = min(counts), max(counts)
    size = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    return f"{len(counts)} bin{'s' if len(counts) != 1 else ''} of {size} shipments"


def _reliability_axes(
    ax: Any, bins: dict[str, list[float]], lo: float, zero: float, color: str, title: str
) -> None:
    """One panel of `plot_calibration`: the bins on log axes, a bin without a
    finding on the "0" row at the bottom, each annotated with its findings (the
    title gives the shipments per bin)."""
    pred = np.array(bins["predicted"], dtype=float)
    obs = np.array(bins["observed"], dtype=float)
    x = np.clip(pred, lo, 1.0)
    y = np.where(obs > 0, np.clip(obs, lo, 1.0), zero)
    found = obs > 0
    if found.any():
        ax.scatter(x[found], y[found], color=color, zorder=3, label="bin with a finding")
    if not found.all():
        ax.scatter(
            x[~found],
            y[~found],
            facecolors="white",
            edgecolors=color,
            zorder=3,
            label="bin without a finding (on the 0 row)",
        )
    for xi, yi, k in zip(x, y, bins["findings"], strict=True):
        ax.annotate(
            f"{k:,.0f}",
            (xi, yi),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_title(f"{title}\n{_bin_sizes(bins)}; label: findings in the bin", fontsize=9)


def plot_calibration(ev: Evaluation, path: Path) -> None:
    """Reliability on log axes (scores spread over many decades, so that bins do not
    collapse onto 0): per bin of equal count, the mean predicted probability against
    the observed finding rate, annotated findings/shipments. Above: all inspected
    shipments (their finding rate, which a traffic-calibrated model under-predicts);
    below, when there is one, the random share weighted 1/selection probability (the
    traffic's rate, which the model predicts). A bin without a finding sits on the
    "0" row at the bottom."""
    plt = _pyplot()
    panels = [(ev.calibration, f"all {ev.n_inspected:,} inspected shipments (unweighted)")]
    if ev.calibration_random_share:
        panels.append(
            (
                ev.calibration_random_share,
                f"random share ({ev.n_random:,} drawn), weighted 1/selection probability:\n"
                "estimates the rate over all traffic",
            )
        )
    values = [
        v
        for bins, _ in panels
        for v in bins["predicted"] + bins["observed"]
        if v > 0 and np.isfinite(v)
    ]
    lo = min(10 ** np.floor(np.log10(min(values))) if values else 1e-3, 1e-2)
    zero = lo / 10**0.6  # the "0" row, below the lowest decade
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(5.6, 4.3 * len(panels) + 0.6), squeeze=False, sharex=True
    )
    ticks = [zero] + [10.0**e for e in range(int(np.log10(lo)), 1)]
    step = max(1, int(np.ceil((len(ticks) - 1) / 8)))  # at most about 8 decades labelled
    shown = [zero, *ticks[1:][::-1][::step][::-1]]
    for ax, (bins, title), color in zip(axes[:, 0], panels, ("#4c72b0", "#dd8452"), strict=False):
        ax.plot([lo, 1], [lo, 1], color="grey", linewidth=1, label="predicted = observed")
        _reliability_axes(ax, bins, lo, zero, color, title)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo / 1.5, 1.5)
        ax.set_ylim(zero / 1.8, 2.5)
        ax.axhline(np.sqrt(zero * lo), color="#bbbbbb", linewidth=0.6, linestyle=":")
        ax.set_yticks(shown, ["0"] + [f"{t:.0e}" for t in shown[1:]])
        ax.yaxis.set_minor_locator(plt.NullLocator())
        ax.set_ylabel("observed finding rate (log scale)")
        ax.grid(alpha=0.2)
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 0.07))
        ax.tick_params(labelbottom=True)
    axes[-1, 0].set_xlabel("mean predicted probability (log scale)")
    fig.suptitle(
        f"Reliability (Brier {ev.brier:.4f}). The model predicts the finding rate\n"
        "of all traffic (trained weighted 1/selection probability), not of the\n"
        "inspected shipments. Bins of equal count, by score",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SCORE_BINS = 40
LOWEST_SCORE = 1e-6  # the axis starts here; lower scores are counted in a bar of their own
FLOOR_TEXT = "1e-6"  # LOWEST_SCORE as the page writes it
FLOOR_LABEL = f"≤ {FLOOR_TEXT}"


@dataclass(frozen=True)
class ScoreBars:
    """What `plot_scores` drew: the bins' edges and, per class, the bars' heights
    (the share of that class's shipments whose score falls in each bin) and the
    number of shipments. When some score is below `LOWEST_SCORE` (`floor` is then
    `LOWEST_SCORE`), the first bin, [edges[0], edges[1]), is the hatched bar of every
    score at most `floor` (drawn left of the axis' `floor`, labelled "≤ 1e-6"), and
    `below` counts per class the shipments in it."""

    edges: np.ndarray
    shares: dict[str, np.ndarray]
    counts: dict[str, int]
    below: dict[str, int] = field(default_factory=dict)
    floor: float | None = None


def plot_scores(scores: np.ndarray, labels: np.ndarray, path: Path) -> ScoreBars:
    """Score histograms of the shipments with and without a finding, over bins of
    equal width on a log scale: per class, the share of its shipments in each bin
    (each shipment weighs 1/n of its class), so that a bar's height is a share
    whatever the bin's width and two classes of very different sizes compare.
    (Densities would divide by the linear width, 10,000 times larger at 0.7 than
    at 1e-4, and hide the high scores: UAT2 DS F2.) The axis starts at the lowest
    score, or at 1e-6 when scores go lower: those are counted in a hatched bar of
    their own labelled "≤ 1e-6", with their number under the plot (review s24
    4b: piled into the first bin they read as scores of about 1e-6)."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    floor = LOWEST_SCORE if len(scores) and float(scores.min()) < LOWEST_SCORE else None
    low = min(max(float(scores.min()), LOWEST_SCORE), 0.1) if len(scores) else LOWEST_SCORE
    edges = np.logspace(np.log10(low), 0, SCORE_BINS + 1)
    if floor is not None:
        # the "≤ 1e-6" bar: two bins wide, left of the axis' 1e-6
        step = float(np.log10(edges[1]) - np.log10(edges[0]))
        edges = np.concatenate(([low / 10 ** (2 * step)], edges))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    shares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    below: dict[str, int] = {}
    for name, value in (("no finding", 0), ("finding", 1)):
        values = scores[labels == value]
        counts[name] = len(values)
        nbins = len(edges) - 1
        if not len(values):  # nothing to share out (no finding in the window)
            shares[name] = np.zeros(nbins)
            continue
        if floor is not None:
            under = values <= floor
            below[name] = int(under.sum())
            above, _ = np.histogram(np.clip(values[~under], floor, 1.0), bins=edges[1:])
            n_bin = np.concatenate(([below[name]], above))
        else:
            n_bin, _ = np.histogram(np.clip(values, edges[0], 1.0), bins=edges)
        heights = n_bin / len(values)
        bars = ax.bar(
            edges[:-1],
            heights,
            width=np.diff(edges),
            align="edge",
            alpha=0.6,
            label=f"{name} ({len(values):,})",
        )
        bars.patches[0].set_label(bars.get_label())  # as `hist` labels its bars
        if floor is not None:
            bars.patches[0].set_hatch("///")
        shares[name] = np.array([bar.get_height() for bar in bars])
    ax.set_xscale("log")
    ax.set_xlabel("model probability (log scale)")
    ax.set_ylabel("share of the class's shipments")
    ax.set_ylim(0, max(max((h.max() for h in shares.values()), default=0.0) * 1.1, 0.05))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if floor is not None:
        decades = [10.0**e for e in range(int(np.log10(floor)) + 1, 1)]
        center = float(np.sqrt(edges[0] * edges[1]))
        ax.set_xticks(
            [center, *decades],
            [FLOOR_LABEL] + [f"1e{int(np.log10(d))}" if d < 1 else "1" for d in decades],
        )
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlim(edges[0] / 1.2, 1.2)
        fig.text(
            0.5,
            0.01,
            f"hatched bar: every score {FLOOR_LABEL} (the axis starts there): "
            + "; ".join(f"{name} {below[name]:,} of {counts[name]:,}" for name in below),
            ha="center",
            fontsize=8,
        )
    # the classes' colours without the first bar's hatching
    drawn = [c for c in ax.containers if len(c.patches)]
    ax.legend(
        [Patch(facecolor=c.patches[0].get_facecolor()) for c in drawn],
        [c.patches[0].get_label() for c in drawn],
    )
    ax.set_title("Score distribution of inspected test shipments")
    fig.tight_layout(rect=(0, 0.04 if floor is not None else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ScoreBars(edges, shares, counts, below, floor)


def score_caption(bars: ScoreBars) -> str:
    """What the score plot's page says of its first bar ("" when it holds no lower score)."""
    if bars.floor is None:
        return ""
    who = {"no finding": "without a finding", "finding": "with a finding"}
    held = " and ".join(
        f"{bars.below[name]:,} of the {bars.counts[name]:,} shipments {who[name]}"
        for name in bars.below
    )
    return (
        f"The axis starts at {FLOOR_TEXT}: every score {FLOOR_LABEL} is counted in the "
        f"hatched first bar, labelled {FLOOR_LABEL}: {held}."
    )


ABSENT = "no such shipment in the test window"


def typology_rows(ev: Evaluation, capacity: str = "5%") -> list[tuple[str, int, int | None, Any]]:
    """(typology, trafficking shipments in the test window, caught at `capacity`,
    true recall), the typologies of the truth without a shipment in the window last
    (0, None, None)."""
    truth = ev.truth or {}
    per = ev.at_capacity[capacity].get("per_typology") or {}
    n = truth.get("typologies", {})
    caught = truth.get("caught", {}).get(capacity, {})
    rows: list[tuple[str, int, int | None, Any]] = [
        (t, int(n.get(t, 0)), caught.get(t), per[t]) for t in sorted(per)
    ]
    rows += [(t, 0, None, None) for t in truth.get("absent_typologies", [])]
    return rows


def plot_typologies(ev: Evaluation, path: Path) -> bool:
    """True recall at 5 % capacity per typology, each labelled with its number of
    trafficking shipments in the test window (n) and how many were caught; the
    typologies with no shipment in the window are listed, not dropped."""
    rows = typology_rows(ev)
    if not rows:
        return False
    plt = _pyplot()
    rows = rows[::-1]  # the first at the top
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    ypos = np.arange(len(rows))
    ax.barh(ypos, [r[3] or 0.0 for r in rows], color="#4c72b0")
    for y, (_, n, caught, recall) in zip(ypos, rows, strict=True):
        if n == 0:
            ax.text(0.01, y, ABSENT, va="center", fontsize=8, color="#777777", style="italic")
        else:
            ax.text((recall or 0.0) + 0.01, y, f"{caught} of {n} caught", va="center", fontsize=8)
    ax.set_yticks(ypos, [f"{t} (n={n:,})" for t, n, _, _ in rows])
    ax.set_xlim(0, 1.25)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("true recall at 5% capacity")
    ax.set_title(
        "Share of each typology's shipments caught (synthetic truth)\n"
        "n: the typology's trafficking shipments in the test window",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


SHAP_FEATURES = 15


def categorical_inputs(booster: Any, names: list[str]) -> list[str]:
    """The model inputs the booster treats as categories (integer codes without an
    order): those it was trained with as categorical (its own record, covering a
    version's categorical extras), and the registry's categorical features."""
    import re

    from features.build import categorical_columns

    found = re.search(r"\[categorical_feature: ([^\]]*)\]", booster.model_to_string())
    declared: set[str] = set()
    if found:
        for part in found.group(1).split(","):
            part = part.strip()
            if part.isdigit() and int(part) < len(names):
                declared.add(names[int(part)])
            elif part in names:
                declared.add(part)
    return [n for n in names if n in declared or n in categorical_columns()]


CATEGORY_SUFFIX = " (category)"


def plot_shap(
    contrib: np.ndarray,
    x: np.ndarray,
    names: list[str],
    path: Path,
    categorical: list[str] | tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """SHAP beeswarm of LightGBM's native contributions (drawn by the shap package),
    the 15 features of largest mean |contribution|, the x axis in log-odds. Numeric
    features are coloured low to high by their value; `categorical` ones are grey and
    named "(category)": their integer codes have no order (review s24 4e)."""
    import pandas as pd
    import shap

    plt = _pyplot()
    cats = set(categorical)
    data = pd.DataFrame(
        {
            (n + CATEGORY_SUFFIX if n in cats else n): (
                pd.Categorical([None if v != v else f"{v:g}" for v in x[:, i].astype(float)])
                if n in cats
                else x[:, i].astype(float)
            )
            for i, n in enumerate(names)
        }
    )
    explanation = shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=data,
        feature_names=list(data.columns),
    )
    # no "Sum of the other features" row: shap colours it by one feature's values
    shap.plots.beeswarm(
        explanation,
        max_display=SHAP_FEATURES,
        show=False,
        group_remaining_features=False,
        color_bar_label="feature value; grey: a category or no value",
    )
    fig = plt.gcf()
    ax = fig.axes[0]
    ax.set_xlabel("SHAP value: contribution to the score in log-odds", fontsize=11)
    if title:
        ax.set_title(title, fontsize=10)
    fig.set_size_inches(8.5, 6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shap_caption(shown: int, inspected: int, categorical: list[str] | tuple[str, ...]) -> str:
    """What the SHAP plot's page says: which shipments it covers, its axis, its colours."""
    covers = (
        f"all {inspected:,} inspected shipments of the test window"
        if shown >= inspected
        else f"{shown:,} inspected shipments of the test window, drawn at random (fixed "
        f"seed) from its {inspected:,}"
    )
    cats = ", ".join(categorical)
    return (
        f"Each dot is one shipment: {covers}. The x axis is a feature's contribution to the "
        "model's raw score, in log-odds (SHAP values, LightGBM's TreeSHAP: the base value "
        "and the contributions add up to the raw score, whose sigmoid is the probability); "
        f"the {SHAP_FEATURES} features of largest mean absolute contribution are drawn. "
        "Colour: a numeric feature's value, low (blue) to high (red); grey: no value"
        + (
            f", and every value of the categorical features ({cats}), marked (category): "
            "their integer codes have no order"
            if cats
            else ""
        )
        + "."
    )


WIDE_PLOTS = frozenset({"disparity.png"})


def _reliability_table(bins: dict[str, list[float]], weighted: bool) -> str:
    """The bins of a reliability panel: score range, shipments, findings, mean
    predicted and observed rate (weighted: the traffic they stand for too)."""
    head = (
        "<tr><th>bin</th><th>scores</th><th>shipments</th><th>findings</th>"
        + ("<th>traffic they stand for</th>" if weighted else "")
        + "<th>mean predicted</th><th>observed rate</th></tr>"
    )
    rows = []
    for i in range(len(bins["count"])):
        rows.append(
            f"<tr><td>{i + 1}</td><td>{bins['low'][i]:.2g} to {bins['high'][i]:.2g}</td>"
            f"<td>{bins['count'][i]:,.0f}</td><td>{bins['findings'][i]:,.0f}</td>"
            + (f"<td>{bins['weight'][i]:,.0f}</td>" if weighted else "")
            + f"<td>{bins['predicted'][i]:.3g}</td><td>{bins['observed'][i]:.3g}</td></tr>"
        )
    return f"<table class='bins'>{head}{''.join(rows)}</table>"


def _reliability_section(ev: Evaluation) -> str:
    parts = [
        "<h2>Reliability bins</h2>",
        "<p>The bins of the reliability plot, by score, with their shipments and findings. "
        "The model predicts the finding rate over all traffic: the weighted random share "
        "estimates it, the inspected shipments do not.</p>",
        f"<h3>All {ev.n_inspected:,} inspected shipments (unweighted), bins of equal count</h3>",
        _reliability_table(ev.calibration, weighted=False),
    ]
    if ev.calibration_random_share:
        parts += [
            f"<h3>Random share ({ev.n_random:,} drawn, {ev.n_random_positive:,} with a "
            "finding), each draw weighted 1/selection probability</h3>",
            _reliability_table(ev.calibration_random_share, weighted=True),
        ]
    else:
        parts.append("<p>No shipment of the test window was drawn at random.</p>")
    return "".join(parts)


def _typology_section(ev: Evaluation) -> str:
    rows = typology_rows(ev)
    if not rows:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{n:,}</td>"
        + (
            f"<td>{caught if caught is not None else '-'}</td><td>{_fmt(recall)}</td></tr>"
            if n
            else f"<td colspan='2'>{ABSENT}</td></tr>"
        )
        for t, n, caught, recall in rows
    )
    return (
        "<h2>Per typology, 5% capacity</h2><table><tr><th>typology</th>"
        "<th>n (trafficking shipments in the test window)</th><th>caught</th>"
        f"<th>true recall</th></tr>{cells}</table>"
    )


def write_report(
    ev: Evaluation,
    folder: Path,
    images: dict[str, str],
    captions: dict[str, str] | None = None,
) -> Path:
    """evaluation.json and index.html: the tables, then each plot of `images`
    (title -> file) with its caption from `captions` (file -> text), if any."""
    captions = captions or {}
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
    # Each plot links to its full-size file; wide ones (the disparity plot) take the
    # page's width, so that their labels stay readable.
    imgs = "".join(
        f"<figure class='{'wide' if f in WIDE_PLOTS else 'plot'}'>"
        f"<a href='{html.escape(f)}'><img src='{html.escape(f)}' alt='{html.escape(t)}'></a>"
        f"<figcaption><b>{html.escape(t)}</b>"
        + (f"<br>{html.escape(captions[f])}" if captions.get(f) else "")
        + "</figcaption></figure>"
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
    typ_section = _typology_section(ev)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.notes)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Caravan model evaluation {html.escape(str(ev.model_version))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:1em;vertical-align:top}}figure.plot img{{max-width:520px}}
figure.wide{{display:block}}figure.wide img{{max-width:100%}}
figcaption{{max-width:520px;font-size:90%}}figure.wide figcaption{{max-width:none}}
table.bins{{font-size:85%}}</style></head><body>
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
{typ_section}{imgs}{_reliability_section(ev)}</body></html>"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))
