"""Promotion: a named person moves the alias `champion` to a version.

The version is compared with the current champion on the same shipments: the part
of the version's test window that lies after everything either model trained or
early-stopped on (their `train_window` and `valid_window`, read from their MLflow
runs), so that neither is scored in-sample. When that part is empty or holds no
finding, nothing is compared and the promotion is refused unless forced. A worse
version is refused unless the promotion is forced, and a forced promotion needs a
reason. Nothing is automated: the caller names who
decides. `promote()` plans and applies in one call; callers that record the
promotion elsewhere (the serving database and its audit log) call
`plan_promotion()`, write and commit their record, and only then
`apply_promotion()` (see `serving.promotions`: a champion is never in service
without its record).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

import polars as pl

from data_contracts.settings import DataLayout
from models.assess import (
    Assessment,
    Baseline,
    assess,
    assess_version,
    evaluation_window,
    read_features,
    read_truth,
    registry,
    with_model_codes,
)
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


def _visible(text: str) -> bool:
    """Whether `text` holds a character one can see (not only spaces, zero-width or
    other format characters): a name or a reason made of those says nothing."""
    return any(not unicodedata.category(c).startswith(("Z", "C")) for c in text)


class PromotionError(Exception):
    """A promotion that cannot be done; the message says why. Where it says what to
    do, it names the options of `caravan promote`; `api_message` says the same naming
    the fields of the API's request body (`POST /api/v1/models/{version}/promote`)."""

    def __init__(self, message: str, *, api_message: str | None = None) -> None:
        super().__init__(message)
        self.api_message = message if api_message is None else api_message


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
    # The shipments both versions were compared on (the part of the version's test
    # window after what either model saw); None when nothing was compared.
    comparison_window: tuple[str, str] | None = None
    # What each version trained, early-stopped and was tested on ("challenger",
    # "champion"), as read from the registry.
    seen: dict[str, dict[str, Any]] | None = None
    # What each version predicts (`caravan train --target`): the version's, and the
    # previous champion's (None without one). They differ only when forced.
    target: str = "arms"
    previous_target: str | None = None

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
            "target": self.target,
            "previous_target": self.previous_target,
            "primary_metric": self.challenger.primary_metric(),
            "primary_challenger": _finite(self.challenger.primary()),
            "primary_champion": _finite(self.champion.primary()) if self.champion else None,
            "test_window": list(self.challenger.test_window),
            "comparison_window": list(self.comparison_window) if self.comparison_window else None,
            "windows": self.seen,
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


Window = tuple[dt.datetime, dt.datetime]


def _window(value: str | None) -> Window | None:
    """A window recorded as `FROM|TO` (MLflow params of `caravan train`)."""
    if not value or "|" not in value:
        return None
    try:
        start, end = (dt.datetime.fromisoformat(v.strip()) for v in value.split("|", 1))
    except ValueError:
        return None
    return start, end


def _when(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Seen:
    """What a version trained and early-stopped on (its run's `train_window` and
    `valid_window` params) and the test window it was evaluated on (its tags)."""

    version: str
    train: Window | None
    valid: Window | None
    test: Window | None

    def last_seen(self) -> dt.datetime | None:
        """The latest declaration time the version trained or early-stopped on. When
        the run's windows are not recorded, everything before its test window (the
        newest shipments of its data) counts as seen; None when nothing is known."""
        ends = [w[1] for w in (self.train, self.valid) if w is not None]
        if ends:
            return max(ends)
        if self.test is not None:
            return self.test[0] - dt.timedelta(microseconds=1)
        return None

    def describe(self) -> str:
        parts = [
            f"{what} {_when(w[0])} to {_when(w[1])}"
            for what, w in (
                ("trained on", self.train),
                ("early-stopped on", self.valid),
                ("tested on", self.test),
            )
            if w is not None
        ]
        return ", ".join(parts) if parts else "windows not recorded"

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            **{
                name: [str(w[0]), str(w[1])] if w is not None else None
                for name, w in (("train", self.train), ("valid", self.valid), ("test", self.test))
            },
        }


def seen_by(layout: DataLayout, version: str) -> Seen:
    """The windows of `version`, read from its MLflow run and its tags."""
    reg = registry(layout)
    mv = reg.version(version)
    try:
        params = dict(reg.client().get_run(mv.run_id).data.params)
    except Exception:  # a run deleted from the store: fall back on the tags
        params = {}
    test = None
    if "test_from" in mv.tags and "test_to" in mv.tags:
        test = _window(f"{mv.tags['test_from']}|{mv.tags['test_to']}")
    return Seen(
        mv.version,
        _window(params.get("train_window")),
        _window(params.get("valid_window")),
        test,
    )


def _overlap(target: str, previous: str, mine: Seen, theirs: Seen) -> str:
    return (
        f"champion {previous} {theirs.describe()}; version {target} {mine.describe()}. "
        f"A comparison is honest only on shipments neither model trained or "
        f"early-stopped on"
    )


def _forcible(message: str) -> PromotionRefusedError:
    """A refusal that forcing with a reason overrides: says so, as the CLI and the API
    ask for it."""
    return PromotionRefusedError(
        f"{message}; force it with a reason (--force --reason TEXT) to promote anyway",
        api_message=f'{message}; force it with a reason ("force": true and a "reason") '
        "to promote anyway",
    )


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
    part of the version's test window after what both models saw, and apply the
    refusal rules."""
    who = (who or "").strip()
    if not _visible(who):
        raise PromotionError("a promotion names the person who decides it")
    reason = (reason or "").strip() or None
    if force and (reason is None or not _visible(reason)):
        needed = "a forced promotion needs a reason with visible text"
        raise ReasonRequiredError(
            f"{needed} (--reason TEXT)", api_message=f'{needed} (the "reason" field)'
        )
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
    predicts = _target_of(reg.version(target).tags)
    predicted = _target_of(reg.version(previous).tags) if previous is not None else None
    if predicted is not None and predicts != predicted and not force:
        # (the comparison below would judge the champion on labels it was not trained
        # for, and the served score would change meaning under the lanes and rules)
        raise _forcible(
            f"version {target} predicts {_TARGETS.get(predicts, predicts)} (--target "
            f"{predicts}) while champion {previous} predicts "
            f"{_TARGETS.get(predicted, predicted)} (--target {predicted}): promoting it "
            "changes what every served score means, under lanes, priorities and rules set "
            f"for the champion's, and the two cannot be compared on one set of labels"
        )
    features = read_features(layout)
    challenger: Evaluation
    champion: Evaluation | None = None
    compared: tuple[str, str] | None = None
    seen: dict[str, dict[str, Any]] | None = None
    worse = False
    if previous is None:
        challenger = assess_version(layout, target, baseline=baseline, features=features)[
            0
        ].evaluation
    else:
        mine, theirs = seen_by(layout, target), seen_by(layout, previous)
        seen = {"challenger": mine.as_json(), "champion": theirs.as_json()}
        lasts = [mine.last_seen(), theirs.last_seen()]
        if mine.test is None:
            raise PromotionRefusedError(
                f"version {target} has no recorded test window: it cannot be compared"
            )
        window = evaluation_window(layout, reg.version(target).tags, features)
        known = [t for t in lasts if t is not None]
        if len(known) < len(lasts):
            window = window.clear()  # what a model saw is unknown: nothing is out-of-sample
        else:
            window = window.filter(pl.col("declared_at") > max(known))
        if window.height == 0:
            if not force:
                raise _forcible(
                    f"version {target} cannot be compared with champion {previous}: no "
                    f"inspected shipment of version {target}'s test window "
                    f"({_when(mine.test[0])} to {_when(mine.test[1])}) lies after what "
                    f"both models saw, so the windows overlap: "
                    f"{_overlap(target, previous, mine, theirs)}"
                )
            challenger = assess_version(layout, target, baseline=baseline, features=features)[
                0
            ].evaluation
            worse = True  # recorded as not shown to be at least as good
        else:
            ours = _assess(layout, target, window, features, baseline).evaluation
            champ = _assess(layout, previous, window, features, baseline).evaluation
            challenger, champion = ours, champ
            compared = ours.test_window
            mine_p, theirs_p = ours.primary(), champ.primary()
            if math.isnan(mine_p) or math.isnan(theirs_p):
                # no finding in the comparison window (or no truth): nothing compared
                if not force:
                    raise _forcible(
                        f"version {target} cannot be compared with champion {previous}: "
                        f"{ours.primary_metric()} is undefined on the comparison window "
                        f"{compared[0][:16]} to {compared[1][:16]} (the part of version "
                        f"{target}'s test window after what both models saw; it holds no "
                        f"finding): {_overlap(target, previous, mine, theirs)}"
                    )
                worse = True  # recorded as not shown to be at least as good
            else:
                worse = mine_p < theirs_p
            if worse and not force:
                raise PromotionRefusedError(
                    f"version {target} is worse than champion {previous} on "
                    f"{ours.primary_metric()} for {_TARGETS.get(predicts, predicts)} "
                    f"({mine_p:.3f} < {theirs_p:.3f}) on "
                    f"{compared[0][:16]} to {compared[1][:16]} "
                    f"({ours.n_inspected:,} inspected shipments after what both models "
                    "saw); force it with a reason to promote anyway"
                )
    return Promotion(
        version=target,
        previous=previous,
        challenger=challenger,
        champion=champion,
        forced=force,
        worse=worse,
        who=who,
        reason=reason or (DEFAULT_REASON if previous is not None else FIRST_REASON),
        at=dt.datetime.now(dt.UTC),
        comparison_window=compared,
        seen=seen,
        target=predicts,
        previous_target=predicted,
    )


# What a version's target means, in the messages.
_TARGETS = {
    "arms": "findings of arms, their parts, ammunition or explosives",
    "any-finding": "findings of any kind",
}


def _target_of(tags: dict[str, str]) -> str:
    """A version's target (versions trained before targets were recorded: arms)."""
    return str(tags.get("target", "arms"))


def _assess(
    layout: DataLayout,
    version: str,
    window: pl.DataFrame,
    features: pl.DataFrame,
    baseline: Baseline | None,
) -> Assessment:
    """Evaluate `version` on the given inspected shipments."""
    booster, mv = registry(layout).load(version)
    # both frames with the version's own code tables of categorical extras
    own, test = with_model_codes(layout, features, mv), with_model_codes(layout, window, mv)
    return assess(booster, mv.version, test, own, read_truth(layout), baseline)


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
    "target",
    "previous_target",
    "primary_metric",
    "primary_challenger",
    "primary_champion",
    "comparison_window",
)


def restore_champion(layout: DataLayout, promo: Promotion) -> None:
    """Undo `apply_promotion`'s alias move (to the champion before `promo`)."""
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
