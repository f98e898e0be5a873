"""Selection rates by group: who the model would send to inspection, per group.

At a given inspection capacity (the top `k` share of scores in a window), each
group (office, origin country) gets:

* `shipments` and `selected`: how many of the window's shipments it holds and how
  many the model would select;
* `selection_rate` and `rate_ratio`: its selection rate and that rate divided by
  the overall rate (1.0 = selected as often as everyone else; the "four-fifths"
  screening rule of thumb flags groups below 0.8 or, for the burden of inspection,
  well above 1);
* when the synthetic world's truth is known: `trafficking` and `trafficking_rate`
  (how many and what share of the group's shipments really carry arms),
  `trafficking_ratio` (that rate divided by the window's: the group's risk against
  the average) and `recall` (the share of those the model catches). A selection
  rate that follows the trafficking rate is targeting; one that does not is a
  disparity an auditor should ask about: `plot_disparity` draws, per group, the
  two ratios side by side, so that a group selected far above its risk stands out.

Groups smaller than `min_shipments` are pooled into "(other)" so that a rate is
never read off a handful of shipments. Traveller nationality is a protected trait
and not a model feature (see models/card.py); shipments carry no nationality, so
the groups here are the shipment's own attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.evaluate import top_k_mask

GROUPS = ("office_code", "origin_country")
OTHER = "(other)"


def selection_by_group(
    window: pl.DataFrame,
    scores: np.ndarray,
    *,
    k: float = 0.05,
    groups: Sequence[str] = GROUPS,
    truth: pl.DataFrame | None = None,
    min_shipments: int = 200,
) -> pl.DataFrame:
    """One row per (group_by, group) with the figures described above."""
    if window.height != len(scores):
        raise ValueError(f"{window.height} shipments but {len(scores)} scores")
    frame = window.select("shipment_id", *[g for g in groups if g in window.columns])
    frame = frame.with_columns(pl.Series("__selected", top_k_mask(scores, k)))
    if truth is not None:
        frame = frame.join(
            truth.select("shipment_id", "is_trafficking"),
            on="shipment_id",
            how="left",
            maintain_order="left",
        ).with_columns(pl.col("is_trafficking").fill_null(False))
    overall = float(frame["__selected"].cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
    risk = (
        float(frame["is_trafficking"].cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
        if truth is not None
        else 0.0
    )
    parts = []
    for g in groups:
        if g not in frame.columns:
            continue
        sizes = frame.group_by(g).len()
        small = sizes.filter(pl.col("len") < min_shipments)[g]
        label = (
            pl.when(pl.col(g).is_in(small.implode()))
            .then(pl.lit(OTHER))
            .otherwise(pl.col(g).cast(pl.String))
        )
        aggs: list[pl.Expr] = [
            pl.len().alias("shipments"),
            pl.col("__selected").sum().alias("selected"),
        ]
        if truth is not None:
            aggs += [
                pl.col("is_trafficking").sum().alias("trafficking"),
                (pl.col("is_trafficking") & pl.col("__selected")).sum().alias("caught"),
            ]
        part = frame.group_by(label.alias("group")).agg(aggs)
        part = part.with_columns(
            pl.lit(g).alias("group_by"),
            (pl.col("selected") / pl.col("shipments")).alias("selection_rate"),
        ).with_columns(
            (pl.col("selection_rate") / overall if overall else pl.lit(None))
            .cast(pl.Float64)
            .alias("rate_ratio")
        )
        if truth is not None:
            part = part.with_columns(
                (pl.col("trafficking") / pl.col("shipments")).alias("trafficking_rate"),
                (
                    pl.col("trafficking") / pl.col("shipments") / risk
                    if risk
                    else pl.lit(None, dtype=pl.Float64)
                ).alias("trafficking_ratio"),
                pl.when(pl.col("trafficking") > 0)
                .then(pl.col("caught") / pl.col("trafficking"))
                .otherwise(None)
                .alias("recall"),
            ).drop("caught")
        parts.append(part)
    if not parts:
        raise ValueError(f"none of the group columns {list(groups)} is in the window")
    out = pl.concat(parts, how="diagonal_relaxed")
    first = ["group_by", "group", "shipments", "selected", "selection_rate", "rate_ratio"]
    return out.select(first + [c for c in out.columns if c not in first]).sort(
        "group_by", "selection_rate", descending=[False, True]
    )


def as_json(table: pl.DataFrame, k: float) -> dict[str, Any]:
    """`{"capacity": "5%", "groups": {group_by: [{group, shipments, ...}, ...]}}`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in table.iter_rows(named=True):
        by = row.pop("group_by")
        out.setdefault(by, []).append(
            {c: round(v, 6) if isinstance(v, float) else v for c, v in row.items()}
        )
    return {"capacity": f"{k * 100:g}%", "groups": out}


def plot_disparity(table: pl.DataFrame, path: Path, k: float) -> None:
    """Per group, its selection rate at capacity `k` divided by the window's (blue)
    beside its true trafficking rate divided by the window's (red, when the truth is
    known), on one axis where 1 is the average, each group labelled with its
    shipments, selected and trafficking counts. Both are ratios to the average
    because the rates themselves differ tenfold (a 5 % selection against a 0.5 %
    trafficking rate) and on one linear axis the trafficking rates all sat at 0
    (review s24 4d). Groups are ordered by how far selection exceeds risk, the
    most over-selected on top; a blue dot far right of its red one is a group
    selected well beyond its risk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = table["group_by"].unique(maintain_order=True).to_list()
    known = "trafficking_ratio" in table.columns and table["trafficking_ratio"].is_not_null().any()
    tallest = max(table.filter(pl.col("group_by") == g).height for g in by)
    fig, axes = plt.subplots(
        1, len(by), figsize=(7.2 * len(by), 0.32 * tallest + 2.2), squeeze=False
    )
    for ax, g in zip(axes[0], by, strict=True):
        part = table.filter(pl.col("group_by") == g)
        gap = pl.col("rate_ratio").fill_null(0.0) - (
            pl.col("trafficking_ratio").fill_null(0.0) if known else pl.lit(0.0)
        )
        part = part.with_columns(gap.alias("__gap")).sort("__gap")  # most over-selected on top
        ypos = np.arange(part.height)
        sel = part["rate_ratio"].fill_null(0.0).to_numpy()
        risk = np.zeros(0)
        if known:
            risk = part["trafficking_ratio"].fill_null(0.0).to_numpy()
            ax.hlines(ypos, np.minimum(sel, risk), np.maximum(sel, risk), color="#bbbbbb", lw=2)
            ax.scatter(
                risk, ypos, color="#c44e52", zorder=3, label="true trafficking rate / average"
            )
        ax.scatter(
            sel, ypos, color="#4c72b0", zorder=4, label=f"selection rate at {k:.0%} / average"
        )
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="average (1)")
        labels = []
        for row in part.iter_rows(named=True):
            text = f"{row['group']}  (n={row['shipments']:,}; {row['selected']:,} selected"
            if "trafficking" in row:
                text += f"; {row['trafficking']:,} trafficking"
            labels.append(text + ")")
        ax.set_yticks(ypos, labels, fontsize=8)
        top = max(float(sel.max(initial=0.0)), float(risk.max(initial=0.0)) if known else 0.0, 1.0)
        ax.set_xlim(0, top * 1.08)
        ax.set_xlabel("ratio to the window's average (1 = average)")
        ax.set_title(f"by {g}")
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9)
    fig.suptitle(
        f"Selection at {k:.0%} capacity against risk, by group: a blue dot far right of its "
        "red one is a group selected well beyond its trafficking"
        if known
        else f"Selection at {k:.0%} capacity by group, against the average "
        "(no truth known: risk not drawn)"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def disparity_caption(table: pl.DataFrame, k: float) -> str:
    """What the disparity plot's page says: how to read it, and the groups selected
    most beyond their risk (at least twice their trafficking ratio and above average)."""
    text = (
        f"Each row is a group of the test window with its shipments (n), how many the model "
        f"selects at {k:.0%} capacity and, on the synthetic world, how many truly traffic. "
        "Blue: the group's selection rate divided by the window's; red: its true "
        "trafficking rate divided by the window's (1 = average). Groups under 200 "
        f"shipments are pooled into {OTHER}."
    )
    if "trafficking_ratio" not in table.columns:
        return text
    over = table.filter(
        (pl.col("rate_ratio") >= 1.5)
        & (pl.col("rate_ratio") >= 2 * pl.col("trafficking_ratio").fill_null(0.0))
    ).sort("rate_ratio", descending=True)
    if over.height:
        text += " Selected beyond their risk: " + "; ".join(
            f"{r['group']} ({r['group_by']}) {r['rate_ratio']:.1f}x the average selection, "
            f"trafficking {r['trafficking_ratio'] or 0.0:.1f}x ({r['trafficking']:,} of "
            f"{r['shipments']:,})"
            for r in over.head(5).iter_rows(named=True)
        )
        text += "."
    return text
