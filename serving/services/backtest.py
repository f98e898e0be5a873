"""A rule's record over the loaded history: which past shipments it would have hit,
how many of them were inspected, and what was found.

The figures the service keeps per rule (`rule_performance_rows`) count only the
shipments it scored itself, so a rule's record starts at zero on every deployment
and a new profile cannot be measured against past inspections. A backtest
evaluates the rule, with the same engine the service scores with (its batch
path), over the history the service holds: the validated shipments and goods
lines, with the features `caravan features` computed for them (point in time: each
as known before the shipment's declaration, so a rule on `watchlist_best_score` or
`consignee_shipments_365d` sees what it would have seen then), and the outcomes
recorded. Shipments the service holds but `caravan features` has not seen yet
(ingested since its last run) have no feature row: they are left out and counted.

Finding rates over inspected shipments carry the selection bias of past
inspections (rules and officers chose them). The shipments inspected because
they were drawn at random are an unbiased sample: their figures are given apart,
beside the same figures over every random inspection of the window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl

from data_contracts.schemas import ARMS_CATEGORIES
from features.registry import specs
from serving.rules_engine import ITEM_PREFIX, Rule, evaluate_frame, rule_fields, rule_frame
from serving.services._core import ServiceError, Services

RECENT_HITS = 20  # shipment ids listed (newest first)


def _day_bounds(
    since: dt.date | None, until: dt.date | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    lo = dt.datetime.combine(since, dt.time(), dt.UTC) if since else None
    hi = (
        dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC)
        if until and until < dt.date.max
        else None
    )
    return lo, hi


def _window(frame: pl.DataFrame, lo: dt.datetime | None, hi: dt.datetime | None) -> pl.DataFrame:
    at = pl.col("declared_at")
    if lo is not None:
        frame = frame.filter(at >= lo)
    if hi is not None:
        frame = frame.filter(at < hi)
    return frame


def _per_shipment_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """One row per inspected shipment: any finding, any arms finding, and whether
    an inspection of it was a random draw."""
    finding = pl.col("finding").fill_null(False)
    arms = finding & pl.col("finding_category").cast(pl.String).is_in(list(ARMS_CATEGORIES))
    return outcomes.group_by("shipment_id").agg(
        finding.any().alias("finding"),
        arms.fill_null(False).any().alias("arms_finding"),
        (pl.col("selection_method").cast(pl.String) == "random")
        .fill_null(False)
        .any()
        .alias("random"),
    )


def _figures(rows: pl.DataFrame) -> dict[str, Any]:
    """Counts over shipments joined with `_per_shipment_outcomes` (null when not
    inspected), and the rates over the inspected ones (None when none was)."""
    inspected = int(rows["inspected"].sum())
    findings = int(rows["finding"].fill_null(False).sum())
    arms = int(rows["arms_finding"].fill_null(False).sum())
    return {
        "inspected": inspected,
        "findings": findings,
        "arms_findings": arms,
        "finding_rate": findings / inspected if inspected else None,
        "arms_finding_rate": arms / inspected if inspected else None,
    }


def _random_figures(rows: pl.DataFrame) -> dict[str, Any]:
    drawn = rows.filter(pl.col("random").fill_null(False))
    figures = _figures(drawn)
    return {
        "inspected_at_random": figures["inspected"],
        "arms_findings": figures["arms_findings"],
        "arms_finding_rate": figures["arms_finding_rate"],
    }


def backtest(
    services: Services,
    rule: Rule,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    effective_dates: bool = True,
) -> dict[str, Any]:
    """The rule's record over the held history declared in [since, until] (UTC days,
    inclusive; unbounded when None). With `effective_dates`, the rule applies on
    the days it is in force, as the service applies it; without, on every day (a
    draft meant for the future measured on the past). Raises ServiceError 409 when
    `caravan features` has not been run, or its features lack one the rule reads."""
    if since and until and until < since:
        raise ServiceError(422, "the window ends before it begins", "until")
    path = services.layout.features / "features.parquet"
    if not path.exists():
        raise ServiceError(
            409,
            "no batch features to test a rule on: run `caravan features` on the data directory",
        )
    history = services.history.snapshot()
    fields = set(rule_fields(rule))
    item_fields = sorted(f.removeprefix(ITEM_PREFIX) for f in fields if f.startswith(ITEM_PREFIX))
    ship_columns = set(history.shipments.columns)
    registered = {s.name for s in specs()}
    wanted = sorted(f for f in fields - ship_columns if not f.startswith(ITEM_PREFIX))
    available = set(pl.read_parquet_schema(path))
    missing = [f for f in wanted if f in registered and f not in available]
    if missing:
        raise ServiceError(
            409,
            f"the batch features lack {', '.join(missing)}: run `caravan features` again "
            "(they were computed with an older feature set)",
            "condition",
        )
    lo, hi = _day_bounds(since, until)
    ships = _window(history.shipments, lo, hi)
    feats = (
        pl.scan_parquet(path)
        .select("shipment_id", *wanted)
        .join(ships.lazy().select("shipment_id"), on="shipment_id", how="semi")
        .collect()
    )
    without = ships.height - feats.height
    ships = ships.join(feats.select("shipment_id"), on="shipment_id", how="semi")
    items = history.items.select(
        "shipment_id",
        *(["line_no"] if "line_no" in history.items.columns else []),
        *(c for c in item_fields if c != "line_no"),
    ).join(ships.select("shipment_id"), on="shipment_id", how="semi")
    applied = (
        rule
        if effective_dates
        else rule.model_copy(update={"effective_from": None, "effective_to": None})
    )
    hit_ids = evaluate_frame([applied], rule_frame(ships, items, feats))["shipment_id"]
    per_shipment = _per_shipment_outcomes(history.outcomes)
    examined = (
        ships.select("shipment_id", "declared_at")
        .with_columns(pl.col("shipment_id").is_in(hit_ids.implode()).alias("hit"))
        .join(per_shipment, on="shipment_id", how="left")
        .with_columns(pl.col("finding").is_not_null().alias("inspected"))
    )
    hit_rows = examined.filter(pl.col("hit"))
    base = _figures(examined)
    hit = _figures(hit_rows)
    first, last = examined["declared_at"].min(), examined["declared_at"].max()
    days = (
        (last.date() - first.date()).days + 1
        if isinstance(first, dt.datetime) and isinstance(last, dt.datetime)
        else 0
    )
    base_rate = base["arms_finding_rate"]
    return {
        "rule_id": rule.id,
        "version": rule.version,
        "effective_dates_applied": effective_dates,
        "window": {
            "since": since,
            "until": until,
            "first_declared": first,
            "last_declared": last,
        },
        "examined": examined.height,
        "without_features": without,
        "hits": hit_rows.height,
        "hit_share": hit_rows.height / examined.height if examined.height else None,
        "hits_per_day": hit_rows.height / days if days else None,
        **hit,
        "lift": (
            hit["arms_finding_rate"] / base_rate
            if hit["arms_finding_rate"] is not None and base_rate
            else None
        ),
        "random": _random_figures(hit_rows),
        "baseline": {**base, "random": _random_figures(examined)},
        "by_month": _by_month(hit_rows),
        "recent_hits": hit_rows.sort("declared_at", descending=True)["shipment_id"]
        .head(RECENT_HITS)
        .to_list(),
    }


def _by_month(rows: pl.DataFrame) -> list[dict[str, Any]]:
    months: Iterable[dict[str, Any]] = (
        rows.group_by(pl.col("declared_at").dt.strftime("%Y-%m").alias("month"))
        .agg(
            pl.len().alias("hits"),
            pl.col("inspected").sum().alias("inspected"),
            pl.col("arms_finding").fill_null(False).sum().alias("arms_findings"),
        )
        .sort("month")
        .iter_rows(named=True)
    )
    return [{k: (int(v) if k != "month" else v) for k, v in m.items()} for m in months]
