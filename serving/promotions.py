"""Promotions recorded in the operational database and its audit log.

`promote_model` is the one entry point for the API, the web pages and
`caravan promote`: it compares and decides (`models.promotion`), writes the
`model_promotions` row and its audit entry in one transaction, moves the alias
`champion` before that transaction commits, and moves it back if the commit
fails, so a promotion is never in effect without its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from data_contracts.settings import DataLayout
from models.assess import Baseline, registry
from models.promotion import (
    PRIMARY_METRIC,
    Promotion,
    PromotionRefusedError,
    apply_promotion,
    current_champion,
    plan_promotion,
    restore_champion,
)
from models.registry import CHALLENGER, CHAMPION, MODEL_NAME
from serving import orm as m
from serving.db import write_lock
from serving.scoring import ModelHolder
from serving.services import audit

# metrics logged by `caravan train` (MLflow run metrics) shown beside each version
KEY_METRICS = (
    "pr_auc",
    "pr_auc_random_share",
    "brier",
    "precision_at_5pct",
    "recall_at_5pct",
    "recall_random_share_at_5pct",
    "true_recall_at_5pct",
)


@dataclass(frozen=True)
class Recorded:
    promotion: Promotion
    row: m.ModelPromotion
    audit_seq: int
    swapped: bool  # the given holder now serves the new champion


def promote_model(
    session: Session,
    layout: DataLayout,
    version: str,
    *,
    who: str,
    reason: str | None,
    force: bool = False,
    via: str = "api",
    holder: ModelHolder | None = None,
    baseline: Baseline | None = None,
) -> Recorded:
    """Compare, decide, record (row + audit entry, one transaction), move the alias,
    and make `holder` serve the new champion. Raises the errors of
    `models.promotion` (UnknownVersionError, PromotionRefusedError, ReasonRequiredError)."""
    if via not in m.PROMOTION_CHANNELS:
        raise ValueError(f"via must be one of {', '.join(m.PROMOTION_CHANNELS)}")
    promo = plan_promotion(layout, version, who=who, reason=reason, force=force, baseline=baseline)
    summary = {**promo.summary(), "via": via}
    try:
        write_lock(session, "audit_log")  # one promotion at a time
        if current_champion(layout) != promo.previous:
            raise PromotionRefusedError(
                "the champion changed while this promotion was being compared; try again"
            )
        row = m.ModelPromotion(
            model_name=MODEL_NAME,
            model_version=promo.version,
            alias=CHAMPION,
            previous_version=promo.previous,
            promoted_by=promo.who,
            reason=promo.reason,
            forced=promo.forced,
            via=via,
            evaluation=summary,
            promoted_at=promo.at,
        )
        session.add(row)
        session.flush()
        entry = audit(
            session,
            "promotion",
            promo.who,
            {**summary, "promotion_id": row.id},
            entity="model",
            entity_id=f"{MODEL_NAME}/{promo.version}",
        )
        apply_promotion(layout, promo)
    except BaseException:
        session.rollback()
        raise
    try:
        session.commit()
    except BaseException:
        session.rollback()
        restore_champion(layout, promo)
        raise
    swapped = False
    if holder is not None:
        swapped = holder.refresh()
    return Recorded(promo, row, entry.seq, swapped)


def promotion_out(row: m.ModelPromotion) -> dict[str, Any]:
    ev = row.evaluation or {}
    return {
        "id": row.id,
        "model_name": row.model_name,
        "version": row.model_version,
        "alias": row.alias,
        "previous": row.previous_version,
        "promoted_by": row.promoted_by,
        "reason": row.reason,
        "forced": row.forced,
        "via": row.via,
        "promoted_at": row.promoted_at,
        "primary_metric": ev.get("primary_metric", PRIMARY_METRIC),
        "primary_challenger": ev.get("primary_challenger"),
        "primary_champion": ev.get("primary_champion"),
    }


def promotions(session: Session, limit: int = 100) -> list[m.ModelPromotion]:
    return list(
        session.scalars(select(m.ModelPromotion).order_by(m.ModelPromotion.id.desc()).limit(limit))
    )


def model_versions(layout: DataLayout) -> dict[str, Any]:
    """Registered versions (newest first) with their aliases, tags that matter and the
    key metrics of their evaluation at training; the champion and the challenger."""
    if not layout.mlflow_db.exists():  # nothing trained yet (and do not create the store)
        return {"champion": None, "challenger": None, "versions": []}
    reg = registry(layout)
    client = reg.client()
    try:  # search results do not carry aliases: read them from the registered model
        found = client.get_registered_model(MODEL_NAME).aliases
        aliases = {str(k): str(v) for k, v in dict(found).items()}
    except Exception:  # no model registered yet
        return {"champion": None, "challenger": None, "versions": []}
    by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    out = []
    for mv in reversed(reg.versions()):
        try:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        except Exception:  # a run deleted from the store: show the version without metrics
            metrics = {}
        tags = mv.tags
        out.append(
            {
                "version": mv.version,
                "aliases": sorted(by_version.get(mv.version, [])),
                "target": tags.get("target"),
                "feature_set_version": tags.get("feature_set_version"),
                "test_from": tags.get("test_from"),
                "test_to": tags.get("test_to"),
                "metrics": {k: float(metrics[k]) for k in KEY_METRICS if k in metrics},
                "promoted_by": tags.get("promoted_by"),
                "promoted_at": tags.get("promoted_at"),
                "promotion_reason": tags.get("promotion_reason"),
            }
        )
    return {
        "champion": aliases.get(CHAMPION),
        "challenger": aliases.get(CHALLENGER),
        "versions": out,
    }
