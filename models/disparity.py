"""Selection rates by group: who the model would send to inspection, per group.

At a given inspection capacity (the top `k` share of scores in a window), each
group (office, origin country) gets:

* `shipments` and `selected`: how many of the window's shipments it holds and how
  many the model would select;
* `selection_rate` and `rate_ratio`: its selection rate and that rate divided by
  the overall rate (1.0 = selected as often as everyone else; the "four-fifths"
  screening rule of thumb flags groups below 0.8 or, for the burden of inspection,
  well above 1);
* when the synthetic world's truth is known: `trafficking_rate` (the share of the
  group's shipments that really carry arms) and `recall` (the share of those the
  model catches). A selection rate that follows the trafficking rate is targeting;
  one that does not is a disparity an auditor should ask about.

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
    """Selection rate per group beside the group's true trafficking rate (when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = table["group_by"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(by), figsize=(6 * len(by), 5), squeeze=False)
    for ax, g in zip(axes[0], by, strict=True):
        part = table.filter(pl.col("group_by") == g).sort("selection_rate")
        ypos = np.arange(part.height)
        ax.barh(ypos, part["selection_rate"].to_numpy(), color="#4c72b0", label="selection rate")
        if "trafficking_rate" in part.columns:
            ax.scatter(
                part["trafficking_rate"].to_numpy(),
                ypos,
                color="#c44e52",
                zorder=3,
                label="true trafficking rate",
            )
        ax.axvline(k, color="grey", linestyle="--", label=f"capacity {k:.0%}")
        ax.set_yticks(ypos, part["group"].to_list())
        ax.set_xlabel("share of the group's shipments")
        ax.set_title(f"by {g}")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Selection at {k:.0%} capacity by group")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
