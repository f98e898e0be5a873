"""Promotion: a named person moves the alias `champion` to a version.

The version is compared with the current champion on the same test window (the
version's own); a worse version is refused unless the promotion is forced, and a
forced promotion needs a reason. Nothing is automated: the caller names who
decides. `promote()` plans and applies in one call; callers that record the
promotion elsewhere (the serving database and its audit log) call
`plan_promotion()`, write their record, `apply_promotion()`, and commit, and
`restore_champion()` if their commit fails.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from data_contracts.settings import DataLayout
from models.assess import Baseline, assess_version, read_features, registry
from models.evaluate import PRIMARY, Evaluation
from models.registry import CHAMPION, MODEL_NAME

DEFAULT_REASON = "better or equal on the primary metric"
FIRST_REASON = "first champion: no champion to compare with"
# What the primary metric is in general; a promotion records the one it compared
# (`Evaluation.primary_metric()`: true recall on a synthetic world).
PRIMARY_METRIC = f"recall at {PRIMARY} capacity"


def primary_metric_of(layout: DataLayout) -> str:
    """The metric promotions on this deployment compare (as
    `Evaluation.primary_metric()`): true recall where the synthetic world's truth is
    known, recall on inspected shipments otherwise."""
    truth = (layout.truth / "truth.parquet").exists()
    return f"{'true recall' if truth else 'recall'} at {PRIMARY} capacity"


class PromotionError(Exception):
    """A promotion that cannot be done; the message says why."""


class UnknownVersionError(PromotionError):
    """No such registered version."""


class PromotionRefusedError(PromotionError):
    """Refused by the promotion rules (worse than the champion, already champion...)."""


class ReasonRequiredError(PromotionRefusedError):
    """A forced promotion without a reason."""


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    challenger: Evaluation
    champion: Evaluation | None  # the previous champion on the same test window
    forced: bool
    worse: bool  # worse than the previous champion on the primary metric
    who: str
    reason: str
    at: dt.datetime

    def summary(self) -> dict[str, Any]:
        """Plain JSON: what was decided, by whom, why, and the numbers compared."""
        return {
            "model_name": MODEL_NAME,
            "version": self.version,
            "previous": self.previous,
            "by": self.who,
            "reason": self.reason,
            "forced": self.forced,
            "worse": self.worse,
            "at": self.at.isoformat(timespec="seconds"),
            "primary_metric": self.challenger.primary_metric(),
            "primary_challenger": _finite(self.challenger.primary()),
            "primary_champion": _finite(self.champion.primary()) if self.champion else None,
            "test_window": list(self.challenger.test_window),
            "challenger": key_metrics(self.challenger),
            "champion": key_metrics(self.champion) if self.champion else None,
        }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def key_metrics(ev: Evaluation) -> dict[str, Any]:
    """The metrics a person compares before promoting."""
    at = ev.at_capacity.get(PRIMARY, {})
    return {
        "model_version": ev.model_version,
        "test_window": list(ev.test_window),
        "n_inspected": ev.n_inspected,
        "n_positive": ev.n_positive,
        "pr_auc": _finite(ev.pr_auc),
        "pr_auc_random_share": _finite(ev.pr_auc_random_share),
        "brier": _finite(ev.brier),
        "primary": _finite(ev.primary()),
        f"precision_at_{PRIMARY}": at.get("precision"),
        f"recall_at_{PRIMARY}": at.get("recall"),
        f"true_recall_at_{PRIMARY}": at.get("true_recall"),
    }


def current_champion(layout: DataLayout) -> str | None:
    reg = registry(layout)
    return reg.version(CHAMPION).version if reg.has_alias(CHAMPION) else None


def plan_promotion(
    layout: DataLayout,
    version: str,
    *,
    who: str,
    reason: str | None,
    force: bool = False,
    baseline: Baseline | None = None,
) -> Promotion:
    """Decide, changing nothing: evaluate `version` and the current champion on the
    version's test window and apply the refusal rules."""
    who = (who or "").strip()
    if not who:
        raise PromotionError("a promotion names the person who decides it")
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise ReasonRequiredError("a forced promotion needs a reason (--reason TEXT)")
    if not layout.mlflow_db.exists():  # nothing trained here (and do not create the store)
        raise UnknownVersionError(f"no registered model version {version!r}: nothing trained")
    reg = registry(layout)
    try:
        target = reg.version(str(version)).version
    except Exception:
        raise UnknownVersionError(f"no registered model version {version!r}") from None
    previous = current_champion(layout)
    if previous == target:
        raise PromotionRefusedError(f"version {target} is already the champion")
    features = read_features(layout)
    challenger, _ = assess_version(layout, target, baseline=baseline, features=features)
    champion: Evaluation | None = None
    worse = False
    if previous is not None:
        champ, _ = assess_version(
            layout, previous, window_of=target, baseline=baseline, features=features
        )
        champion = champ.evaluation
        ours, theirs = challenger.evaluation.primary(), champion.primary()
        if math.isnan(ours) or math.isnan(theirs):
            # no finding in the test window (or no truth): nothing can be compared
            if not force:
                raise PromotionRefusedError(
                    f"version {target} cannot be compared with champion {previous}: "
                    f"{challenger.evaluation.primary_metric()} is undefined on the test "
                    "window (it holds no finding); force it with a reason to promote anyway"
                )
            worse = True  # recorded as not shown to be at least as good
        else:
            worse = ours < theirs
        if worse and not force:
            raise PromotionRefusedError(
                f"version {target} is worse than champion {previous} on "
                f"{challenger.evaluation.primary_metric()} "
                f"({challenger.evaluation.primary():.3f} < {champion.primary():.3f}); "
                "force it with a reason to promote anyway"
            )
    return Promotion(
        version=target,
        previous=previous,
        challenger=challenger.evaluation,
        champion=champion,
        forced=force,
        worse=worse,
        who=who,
        reason=reason or (DEFAULT_REASON if previous is not None else FIRST_REASON),
        at=dt.datetime.now(dt.UTC),
    )


def apply_promotion(layout: DataLayout, promo: Promotion) -> None:
    """Move the alias `champion`; tag the version with who, when and why; append the
    decision to reports/promotions.jsonl."""
    reg = registry(layout)
    reg.set_alias(CHAMPION, promo.version)
    client = reg.client()
    tags = {
        "promoted_by": promo.who,
        "promoted_at": promo.at.isoformat(timespec="seconds"),
        "promotion_reason": promo.reason,
        "promotion_forced": str(promo.forced).lower(),
    }
    if promo.previous:
        tags["replaced"] = promo.previous
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, promo.version, key, value)
    layout.reports.mkdir(parents=True, exist_ok=True)
    with (layout.reports / "promotions.jsonl").open("a", encoding="utf-8") as fh:
        summary = promo.summary()
        fh.write(json.dumps({k: summary[k] for k in _LOGGED}) + "\n")


_LOGGED = (
    "at",
    "version",
    "previous",
    "by",
    "reason",
    "forced",
    "primary_metric",
    "primary_challenger",
    "primary_champion",
)


def restore_champion(layout: DataLayout, promo: Promotion) -> None:
    """Undo `apply_promotion`'s alias move (when recording the promotion failed)."""
    reg = registry(layout)
    if promo.previous is not None:
        reg.set_alias(CHAMPION, promo.previous)
    else:
        reg.client().delete_registered_model_alias(MODEL_NAME, CHAMPION)


def promote(
    layout: DataLayout,
    version: str,
    *,
    who: str,
    reason: str | None,
    force: bool = False,
    baseline: Baseline | None = None,
) -> Promotion:
    """Compare, decide, and move the alias `champion` to `version`.

    Raises UnknownVersionError, PromotionRefusedError (worse and not forced, already
    champion), ReasonRequiredError (forced without a reason)."""
    promo = plan_promotion(layout, version, who=who, reason=reason, force=force, baseline=baseline)
    apply_promotion(layout, promo)
    return promo
