"""Applying the current rules to shipments already declared and still waiting for a
decision (an analyst's audited action): new rule hits, priority and lane, and
their queue entries, as a rescreen updates them; decided shipments are never touched."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from serving import orm as m
from serving.db import write_lock
from serving.rules_engine import (
    Rule,
)
from serving.scoring import (
    ModelInputError,
    Scored,
    score_shipments,
)
from serving.services._core import QueueSettings, ServiceError, Services, now
from serving.services.audit_log import audit
from serving.services.queues import _UTC_DAYS, _latest_scores, _refresh_referral
from serving.services.rules import active_rules
from serving.services.shipments import (
    StoredShipment,
    _extras_of,
    _frames,
    _store_score,
    prepare_shipment,
)
from serving.services.watchlists import _with_hits_of

MAX_APPLY_DAYS = 31  # queue days an application reaches: today and the 30 before
MAX_APPLY_LISTED = 1000  # changed shipments named in the application's audit entry
_APPLY_CHUNK = 1000


@dataclass(frozen=True)
class RulesApplied:
    """What `apply_rules_to_pending` did."""

    examined: int  # scored shipments of the days awaiting a decision
    changed: int  # of those, given a new score: their rule hits changed
    newly_forced: int  # of those, forced into the queue now and not before
    skipped: int  # decided or scored again meanwhile: left as they are
    rules: list[str]  # the rule versions applied, "id@vN"
    day_from: dt.date
    day_to: dt.date
    applied_at: dt.datetime
    changed_shipments: list[str]


def _apply_days(
    day_from: dt.date | None, day_to: dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The queue days of an application: today by default; `day_from` alone runs to
    today, `day_to` alone is one day. Raises ServiceError (422) naming the field."""
    last = day_to or today
    first = day_from or last
    earliest = today - dt.timedelta(days=MAX_APPLY_DAYS - 1)
    if last > today:
        raise ServiceError(
            422,
            f"day_to {last} is after today ({today}, the latest office day): rules are "
            f"applied to the shipments of queue days up to today",
            "day_to",
        )
    if first > last:
        raise ServiceError(422, f"day_from {first} is after day_to {last}", "day_from")
    if first < earliest:
        raise ServiceError(
            422,
            f"day_from {first} is more than {MAX_APPLY_DAYS - 1} days ago: rules are applied "
            f"to the shipments of the queue days from {earliest} to today ({today})",
            "day_from",
        )
    return first, last


def _rules_to_apply(
    session: Session, services: Services, rule_ids: Sequence[str] | None
) -> tuple[list[Rule], list[Rule]]:
    """(the rules to apply: the newest versions of `rule_ids`, or of every active rule;
    every active rule). Raises ServiceError (422) naming an unknown or inactive rule."""
    active = active_rules(session, services)
    if rule_ids is None:
        return active, active
    if not rule_ids:
        raise ServiceError(
            422,
            "name at least one rule, or leave rule_ids out to apply every active rule",
            "rule_ids",
        )
    by_id = {r.id: r for r in active}
    for i, rid in enumerate(rule_ids):
        if rid in by_id:
            continue
        if session.get(m.Rule, rid) is None:
            raise ServiceError(422, f"no rule {rid!r}", f"rule_ids[{i}]")
        raise ServiceError(
            422,
            f"rule {rid!r} is inactive: an inactive rule never hits (activate it first)",
            f"rule_ids[{i}]",
        )
    wanted = set(rule_ids)
    return [r for r in active if r.id in wanted], active


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _APPLY_CHUNK):
        yield ids[i : i + _APPLY_CHUNK]


def _decided_shipments(session: Session, ids: Sequence[str]) -> set[str]:
    """Of the shipments `ids`, those decided: an outcome recorded, or a referral
    inspected, waived or closed after a decision."""
    decided: set[str] = set()
    for chunk in _chunks(ids):
        decided.update(
            session.scalars(select(m.Outcome.shipment_id).where(m.Outcome.shipment_id.in_(chunk)))
        )
        decided.update(
            session.scalars(
                select(m.Referral.shipment_id).where(
                    m.Referral.shipment_id.in_(chunk),
                    m.Referral.decided_at.is_not(None)
                    | m.Referral.status.in_(("inspected", "waived")),
                )
            )
        )
    return decided


def _stored_hits(
    session: Session, score_ids: Sequence[int]
) -> dict[int, list[tuple[str, int, str | None, dt.datetime]]]:
    """score id -> its rule hits (rule, version, that version's severity, hit_at)."""
    out: dict[int, list[tuple[str, int, str | None, dt.datetime]]] = {}
    for i in range(0, len(score_ids), _APPLY_CHUNK):
        rows = session.execute(
            select(
                m.RuleHit.score_id,
                m.RuleHit.rule_id,
                m.RuleHit.rule_version,
                m.RuleVersion.severity,
                m.RuleHit.hit_at,
            )
            .outerjoin(
                m.RuleVersion,
                (m.RuleVersion.rule_id == m.RuleHit.rule_id)
                & (m.RuleVersion.version == m.RuleHit.rule_version),
            )
            .where(m.RuleHit.score_id.in_(score_ids[i : i + _APPLY_CHUNK]))
            .order_by(m.RuleHit.rule_id, m.RuleHit.rule_version)
        )
        for sid, rid, version, severity, at in rows:
            if sid is not None:
                out.setdefault(int(sid), []).append((str(rid), int(version), severity, at))
    return out


def _score_stored(session: Session, services: Services, ids: Sequence[str]) -> dict[str, Scored]:
    """Score stored shipments again as a rescreen does (current history, model,
    watchlists and active rules), without storing anything."""
    out: dict[str, Scored] = {}
    rules = active_rules(session, services)
    for chunk in _chunks(ids):
        lines: dict[str, list[dict[str, Any]]] = {}
        for item in session.scalars(select(m.Item).where(m.Item.shipment_id.in_(chunk))):
            lines.setdefault(item.shipment_id, []).append(item.payload)
        ships = session.scalars(select(m.Shipment).where(m.Shipment.shipment_id.in_(chunk)))
        prepared = [
            prepare_shipment({**s.payload, "items": lines.get(s.shipment_id, [])}, stored=True)
            for s in ships
        ]
        frames = _frames(prepared)
        try:
            scored = score_shipments(
                frames[0],
                frames[1],
                services.history.snapshot(),
                services.holder.handle,
                rules,
                extras=_extras_of(prepared),
            )
        except ModelInputError as exc:
            raise ServiceError(503, str(exc)) from None
        out.update((s.shipment_id, s) for s in scored)
    return out


def _office_days(
    days: QueueSettings, day_from: dt.date | None, day_to: dt.date | None, at: dt.datetime
) -> tuple[Any, dt.date, dt.date]:
    """SQL: the shipment was declared on the queue days `day_from`..`day_to` of its
    office, each office's local calendar days (its time zone; `day_to` left out: the
    office's today, `day_from` left out: `day_to`); with the first and last day over
    all offices. Offices with their own zone one by one, the others in the default
    zone together."""
    own = sorted(days.office_timezones)
    groups: list[tuple[str, Any]] = [(o, m.Shipment.office_code == o) for o in own]
    groups.append(("", m.Shipment.office_code.not_in(own) if own else None))
    clauses, firsts, lasts = [], [], []
    for office, which in groups:
        last = day_to or days.today(office, at)
        first = day_from or last
        if first > last:  # (`day_from` after this office's today: none of its days)
            continue
        start = days.day_window(office, first)[0]
        end = days.day_window(office, last)[1]
        window = (m.Shipment.declared_at >= start) & (m.Shipment.declared_at < end)
        clauses.append(window if which is None else which & window)
        firsts.append(first)
        lasts.append(last)
    if not clauses:
        first = day_from or days.today("", at)
        return false(), first, max(first, day_to or first)
    return or_(*clauses), min(firsts), max(lasts)


def _latest_office_today(days: QueueSettings, at: dt.datetime) -> dt.date:
    """The latest of the offices' todays (queue days reach up to it)."""
    return max(days.today(o, at) for o in ["", *days.office_timezones])


def _pending_scores(session: Session, declared: Any) -> dict[str, m.Score]:
    """The latest score of each stored shipment `declared` on the days of the
    application (`_office_days`) that awaits a decision (`_decided_shipments`)."""
    ids = list(
        session.scalars(
            select(m.Shipment.shipment_id).where(declared).order_by(m.Shipment.shipment_id)
        )
    )
    decided = _decided_shipments(session, ids)
    pending = [s for s in ids if s not in decided]
    latest: dict[str, m.Score] = {}
    for chunk in _chunks(pending):
        latest.update(_latest_scores(session, chunk))
    return latest


def pending_count(
    session: Session, day: dt.date | None = None, services: Services | None = None
) -> int:
    """How many scored shipments of `day` (default: each office's today) await a
    decision: what `apply_rules_to_pending` of that day examines. Each office's local
    day (UTC days without `services`)."""
    days = services.queue if services is not None else _UTC_DAYS
    declared, _first, _last = _office_days(days, day, day, now())
    return len(_pending_scores(session, declared))


def apply_rules_to_pending(
    session: Session,
    services: Services,
    actor: str,
    *,
    rule_ids: Sequence[str] | None = None,
    day_from: dt.date | None = None,
    day_to: dt.date | None = None,
) -> RulesApplied:
    """Apply the current rules to the shipments still awaiting a decision: those
    declared on the queue days `day_from`..`day_to` (each office's local calendar days,
    as its queue; by default the office's today; at most MAX_APPLY_DAYS back) with a
    score, no outcome and no decided referral (queued and open or claimed, displaced,
    or not queued). A profile saved on this morning's intelligence thus reaches this
    morning's declarations, the night's included (local midnight on).

    Each is evaluated against the newest version of the rules applied (`rule_ids`, or
    every active rule) as a rescreen scores it. Its rule hits become: the stored hits of
    other rules still active (an inactive rule never hits); a stored hit of a rule
    applied made by its current version (kept as made); else the current version's
    hit, if it hits (a hit of an older version gives way to the current version's
    verdict). When that differs from the stored hits, the shipment gets a new score
    (audited as "rule_apply", its priority, lane and must-inspect recomputed from the
    hits as `_with_hits_of` does for a rescreen), each new hit recording when it was
    applied (`hit_at`; a kept hit keeps its own), and its referrals awaiting a decision
    follow it as after a rescreen (`_refresh_referral`: never displaced once forced; a
    forced shipment with no entry enters the queue at its next view). Hits counted per
    version, a hit made by an application counts like any other of its version.
    Decided shipments are never touched. One audit entry ("rule_apply") records the
    rule versions, the days, the time applied and the counts, even when nothing
    changed. Commits. Raises ServiceError (422 naming the field; 503 without a model
    for the stored inputs)."""
    applied_at = now()
    _apply_days(day_from, day_to, _latest_office_today(services.queue, applied_at))
    declared, first, last = _office_days(services.queue, day_from, day_to, applied_at)
    rules, active = _rules_to_apply(session, services, rule_ids)
    latest = _pending_scores(session, declared)
    pending = sorted(latest)
    evaluated = _score_stored(session, services, pending) if pending else {}

    write_lock(session, "audit_log")  # decisions and scores wait until this is committed
    decided = _decided_shipments(session, pending)
    current: dict[str, m.Score] = {}
    for chunk in _chunks(pending):
        current.update(_latest_scores(session, chunk))
    stored_hits = _stored_hits(session, [s.id for s in current.values()])
    applied = {r.id: r.version for r in rules}
    changed: list[str] = []
    newly_forced = skipped = 0
    for sid in pending:
        s, score = evaluated.get(sid), current.get(sid)
        if sid in decided or s is None or score is None or score.id != latest[sid].id:
            skipped += 1
            continue
        made = stored_hits.get(score.id, [])
        kept = [(r, v, sev) for r, v, sev, _at in made if r not in applied or v == applied[r]]
        held = {r for r, _v, _sev in kept}
        fresh: list[tuple[str, int, str | None]] = [
            (h.rule_id, h.rule_version, h.severity)
            for h in s.rule_hits
            if applied.get(h.rule_id) == h.rule_version and h.rule_id not in held
        ]
        ship = session.get(m.Shipment, sid)
        assert ship is not None
        new = _with_hits_of(s, StoredShipment(ship, score, sorted(kept + fresh)), active)
        if {(h.rule_id, h.rule_version) for h in new.rule_hits} == {(r, v) for r, v, *_ in made}:
            continue
        was_forced = bool((score.explanation or {}).get("must_inspect"))
        row = _store_score(session, new, actor, kind="rule_apply")
        when = {(r, v): at for r, v, _sev, at in made}
        for hit in session.scalars(select(m.RuleHit).where(m.RuleHit.score_id == row.id)):
            hit.hit_at = when.get((hit.rule_id, hit.rule_version), applied_at)
        refs = session.scalars(
            select(m.Referral).where(m.Referral.shipment_id == sid).order_by(m.Referral.id)
        )
        for ref in list(refs):
            _refresh_referral(
                session, services, ref, row, cause={"cause": "rule_apply", "applied_by": actor}
            )
        changed.append(sid)
        newly_forced += int(new.must_inspect and not was_forced)
    result = RulesApplied(
        examined=len(pending),
        changed=len(changed),
        newly_forced=newly_forced,
        skipped=skipped,
        rules=[f"{r.id}@v{r.version}" for r in rules],
        day_from=first,
        day_to=last,
        applied_at=applied_at,
        changed_shipments=changed,
    )
    audit(
        session,
        "rule_apply",
        actor,
        {
            "rules": result.rules,
            "every_active_rule": rule_ids is None,
            "day_from": first,
            "day_to": last,
            "applied_at": applied_at,
            "examined": result.examined,
            "changed": result.changed,
            "newly_forced": newly_forced,
            "skipped": skipped,
            "shipments": changed[:MAX_APPLY_LISTED],
            "shipments_not_listed": max(0, len(changed) - MAX_APPLY_LISTED),
        },
        entity="rules",
    )
    session.commit()
    return result
