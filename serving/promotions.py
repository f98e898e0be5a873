"""Promotions recorded in the operational database and its audit log.

`promote_model` is the one entry point for the API, the web pages and
`caravan promote`: it compares and decides (`models.promotion`), writes the
`model_promotions` row and its audit entry in one transaction and commits it, and
only then moves the alias `champion` (the server follows the alias). A crash
(kill -9, power cut) before the commit leaves no promotion; a crash between the
commit and the alias move leaves a recorded promotion not yet in effect, which
`follow_recorded` applies: at the start of the next promotion and at the server's
start and model refreshes. So a champion is never in service without its record.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from data_contracts.settings import DataLayout
from models.assess import Baseline, registry
from models.promotion import (
    PRIMARY_METRIC,
    Promotion,
    PromotionError,
    PromotionRefusedError,
    apply_promotion,
    current_champion,
    plan_promotion,
)
from models.registry import CHALLENGER, CHAMPION, MODEL_NAME
from serving import orm as m
from serving.db import write_lock
from serving.scoring import ModelHolder
from serving.services import audit

log = logging.getLogger(__name__)
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


class PromotionNotAppliedError(PromotionError):
    """The promotion is recorded (row and audit entry) but the alias could not be
    moved; `follow_recorded` applies it later."""


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
    """Compare, decide, record (row + audit entry, one transaction, committed), then
    move the alias, and make `holder` serve the new champion. Raises the errors of
    `models.promotion` (UnknownVersionError, PromotionRefusedError, ReasonRequiredError),
    and PromotionNotAppliedError when the record is committed but the alias move failed."""
    if via not in m.PROMOTION_CHANNELS:
        raise ValueError(f"via must be one of {', '.join(m.PROMOTION_CHANNELS)}")
    follow_recorded(session, layout)  # a recorded promotion a crash left unapplied
    promo = plan_promotion(layout, version, who=who, reason=reason, force=force, baseline=baseline)
    summary = {**promo.summary(), "via": via}
    try:
        write_lock(session, "audit_log")  # one promotion at a time
        recorded = _latest(session)
        if current_champion(layout) != promo.previous or (
            recorded is not None and recorded.model_version != promo.previous
        ):
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
        audit_seq = entry.seq
        session.commit()  # the record first: the alias moves only once it is committed
    except BaseException:
        session.rollback()
        raise
    try:
        apply_promotion(layout, promo)
    except Exception as exc:
        log.exception("promotion %s recorded, moving the alias failed", row.id)
        raise PromotionNotAppliedError(
            f"the promotion of version {promo.version} is recorded (promotion {row.id}, "
            f"audit entry {audit_seq}) but moving the alias {CHAMPION!r} failed ({exc}); "
            "the server applies it at its next model refresh, or the next promotion does"
        ) from exc
    swapped = False
    if holder is not None:
        swapped = holder.refresh()
    return Recorded(promo, row, audit_seq, swapped)


def _latest(session: Session) -> m.ModelPromotion | None:
    return session.scalars(
        select(m.ModelPromotion).order_by(m.ModelPromotion.id.desc()).limit(1)
    ).first()


def follow_recorded(session: Session, layout: DataLayout, *, grace: float = 0.0) -> str | None:
    """Make the alias `champion` name the version of the latest recorded promotion when
    it does not: a promotion committed by a process that died before moving the alias
    is applied; an alias moved without a record (by hand, or a crash of a former
    version of this code) is moved back to the recorded champion. The version moved
    to, or None when alias and record agree (or nothing is recorded, or the move
    failed: logged, tried again at the next call). `grace`: seconds a promotion recorded
    this recently is left to the process that records it (which moves the alias right
    after its commit). Writes nothing in the database; when it acted, it took the
    promotions' write lock and ends the transaction."""
    if not layout.mlflow_db.exists():
        return None
    latest = _latest(session)
    if latest is None or current_champion(layout) == latest.model_version:
        return None
    at = (
        latest.promoted_at
        if latest.promoted_at.tzinfo
        else latest.promoted_at.replace(tzinfo=dt.UTC)
    )
    if grace and dt.datetime.now(dt.UTC) - at < dt.timedelta(seconds=grace):
        return None
    try:
        write_lock(session, "audit_log")  # no promotion commits meanwhile: re-read
        latest = _latest(session)
        alias = current_champion(layout)
        if latest is None or alias == latest.model_version:
            session.commit()
            return None
        pid, version, previous = latest.id, str(latest.model_version), latest.previous_version
        _apply_row(layout, latest)
        session.commit()  # ends the transaction (the lock row is not changed)
    except Exception:
        session.rollback()
        log.exception("cannot make the alias %s follow the recorded promotions", CHAMPION)
        return None
    if alias == previous:
        log.warning(
            "promotion %s of version %s was recorded but not applied (the promoting "
            "process stopped before moving the alias): applied now",
            pid,
            version,
        )
    else:
        log.warning(
            "the alias %s named version %s, which no recorded promotion made champion: "
            "moved back to version %s (promotion %s)",
            CHAMPION,
            alias,
            version,
            pid,
        )
    return version


SERVER_GRACE_SECONDS = 60.0  # a promotion in progress moves the alias itself


def follow_recorded_champion(
    factory: sessionmaker[Session], layout: DataLayout, *, grace: float = SERVER_GRACE_SECONDS
) -> str | None:
    """`follow_recorded` in a session of its own: the server calls it at start and
    before each model refresh, so it serves only a recorded champion."""
    if not layout.mlflow_db.exists():
        return None
    with factory() as session:
        return follow_recorded(session, layout, grace=grace)


def _apply_row(layout: DataLayout, row: m.ModelPromotion) -> None:
    """Move the alias to a recorded promotion's version and tag it as `apply_promotion`
    does; the decision is appended to reports/promotions.jsonl, marked as applied late."""
    import json

    reg = registry(layout)
    reg.set_alias(CHAMPION, row.model_version)
    tags = {
        "promoted_by": row.promoted_by,
        "promoted_at": row.promoted_at.isoformat(timespec="seconds"),
        "promotion_reason": row.reason,
        "promotion_forced": str(bool(row.forced)).lower(),
    }
    if row.previous_version:
        tags["replaced"] = row.previous_version
    client = reg.client()
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, row.model_version, key, value)
    ev = dict(row.evaluation or {})
    layout.reports.mkdir(parents=True, exist_ok=True)
    with (layout.reports / "promotions.jsonl").open("a", encoding="utf-8") as fh:
        line = {
            "at": ev.get("at", tags["promoted_at"]),
            "version": row.model_version,
            "previous": row.previous_version,
            "by": row.promoted_by,
            "reason": row.reason,
            "forced": bool(row.forced),
            "promotion_id": row.id,
            "applied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "applied_late": True,
        }
        fh.write(json.dumps(line) + "\n")


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
        "comparison_window": ev.get("comparison_window"),
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
