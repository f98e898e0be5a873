"""Inspection queues per office and day: placement within capacity (forced entries, ranked
entries, exploration draws), refreshes after a rescore, left-out and overdue referrals."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving import orm as m
from serving import policy
from serving.auth import InvalidFieldError, check_office, known_offices
from serving.db import write_lock
from serving.services._core import QueueSettings, Services, now
from serving.services.audit_log import audit
from serving.services.seizures import seizures_of

# --------------------------------------------------------------------------- queues


# Placing shipments in a queue is the engine's act, whoever's read triggered it.
QUEUE_ACTOR = "system:queue"
NOT_A_PERSON = "decisions are made by a named, signed-in person"


def _age(
    ref: m.Referral,
    at: dt.datetime,
    closed_at: dt.datetime | None = None,
    declared_at: dt.datetime | None = None,
) -> float:
    """How long the referred shipment has waited, in seconds: from its declaration
    (`declared_at`; the referral's creation when it is not known) to the decision
    (inspection or waiver), or to the closure of an entry closed without one
    (displaced), or to `at` while it awaits a decision. A shipment of an earlier day
    carried into a later queue counts from its declaration too (it has waited that
    long); one declared later than `at` has not waited yet (0). The overdue limit
    (`overdue_referrals`) and the pages' sort by waiting time read the same age."""
    end = ref.decided_at or (closed_at if ref.status == "closed" else None) or at
    start = declared_at if declared_at is not None else ref.created_at
    return max((end - start).total_seconds(), 0.0)


def displaced(ref: m.Referral) -> bool:
    """Closed without a decision: a later red/yellow arrival took its place."""
    return ref.status == "closed" and ref.decided_at is None


def referral_out(
    ref: m.Referral,
    lane: str,
    at: dt.datetime | None = None,
    *,
    outcome: dict[str, Any] | None = None,
    closing: dict[str, Any] | None = None,
    declared_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """A referral as the API shows it; `declared_at`: its shipment's declaration, from
    which `age_seconds` counts (`_age`)."""
    closing = closing or {}
    return {
        "id": ref.id,
        "office_code": ref.office_code,
        "queue_date": ref.queue_date,
        "shipment_id": ref.shipment_id,
        "rank": ref.rank,
        "priority": ref.priority,
        "lane": lane,
        "selection_method": ref.selection_method,
        "selection_probability": ref.selection_probability,
        "status": ref.status,
        "over_capacity": ref.over_capacity,
        "claimed_by": ref.claimed_by,
        "claimed_at": ref.claimed_at,
        "decided_by": ref.decided_by,
        "decided_at": ref.decided_at,
        "waiver_reason": ref.waiver_reason,
        "created_at": ref.created_at,
        "age_seconds": _age(ref, at or now(), closing.get("closed_at"), declared_at),
        "outcome": outcome,
        "closed_by": closing.get("closed_by"),
        "closed_at": closing.get("closed_at"),
        "displaced_by": closing.get("displaced_by"),
    }


def _outcomes_of(session: Session, refs: Sequence[m.Referral]) -> dict[int, dict[str, Any]]:
    """The recorded outcome of each inspected (or since closed) referral."""
    ids = [r.id for r in refs if r.status in ("inspected", "closed")]
    if not ids:
        return {}
    rows = list(
        session.scalars(
            select(m.Outcome)
            .where(m.Outcome.referral_id.in_(ids))
            .order_by(m.Outcome.recorded_at, m.Outcome.outcome_id)
        )
    )
    lines = seizures_of(session, [o.outcome_id for o in rows])
    return {
        int(o.referral_id): {
            "outcome_id": o.outcome_id,
            "finding": o.finding,
            "category": o.category,
            "quantity": o.quantity,
            "unit": o.unit,
            "seizures": lines[o.outcome_id],
            "notes": o.notes,
            "recorded_by": o.recorded_by,
            "recorded_at": o.recorded_at,
        }
        for o in rows
        if o.referral_id is not None
    }


CLOSING_KINDS = ("queue_decision", "queue_displacement")


def _closings_of(session: Session, refs: Sequence[m.Referral]) -> dict[int, dict[str, Any]]:
    """Who closed each closed referral and when (from its audited closing; there are
    no columns for it), and the referral that displaced it, if it was displaced."""
    closed = {r.id: r for r in refs if r.status == "closed"}
    if not closed:
        return {}
    rows = session.scalars(
        select(m.AuditLog)
        .where(
            m.AuditLog.kind.in_(CLOSING_KINDS),
            m.AuditLog.entity == "shipment",
            m.AuditLog.entity_id.in_({r.shipment_id for r in closed.values()}),
        )
        .order_by(m.AuditLog.seq)
    )
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        body = row.payload or {}
        rid = body.get("referral_id")
        if body.get("action") in ("close", "displace") and rid in closed:
            out[rid] = {
                "closed_by": row.actor,
                "closed_at": row.at,
                "displaced_by": body.get("displaced_by_referral_id"),
            }
    return out


def lanes_of(session: Session, refs: Iterable[m.Referral]) -> dict[int, str]:
    ids = {r.score_id for r in refs if r.score_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(m.Score.id, m.Score.lane).where(m.Score.id.in_(ids)))
    return {int(i): str(lane) for i, lane in rows}


def referrals_out(
    session: Session, refs: Sequence[m.Referral], services: Services | None = None
) -> list[dict[str, Any]]:
    """Referrals as the API shows them, with the shipment's declaration day in the
    office's time zone (`declared_on`: earlier than `queue_date` for a forced shipment
    of an earlier day carried into this queue; the UTC day without `services`) and
    `age_seconds` counted from the shipment's declaration (`_age`; the pages also read
    the instant, `declared_at`, which the API's schema leaves out). A displaced entry
    is never shown over capacity (entries displaced before that was fixed still carry
    the flag in the database)."""
    lanes = lanes_of(session, refs)
    outcomes = _outcomes_of(session, refs)
    closings = _closings_of(session, refs)
    declared = _declared_at(session, refs)
    days = _days(services)
    at = now()
    outs = []
    for r in refs:
        when = declared.get(r.shipment_id)
        out = referral_out(
            r,
            lanes.get(r.score_id or -1, policy.lane(r.priority, r.priority >= policy.TOP_BAND)),
            at,
            outcome=outcomes.get(r.id),
            closing=closings.get(r.id),
            declared_at=when,
        )
        out["over_capacity"] = bool(r.over_capacity) and not displaced(r)
        out["declared_on"] = None if when is None else days.day_of(r.office_code, when)
        out["declared_at"] = when
        outs.append(out)
    return outs


def _declared_at(session: Session, refs: Iterable[m.Referral]) -> dict[str, dt.datetime]:
    """shipment id -> the declaration instant of each referred shipment."""
    ids = {r.shipment_id for r in refs}
    if not ids:
        return {}
    rows = session.execute(
        select(m.Shipment.shipment_id, m.Shipment.declared_at).where(
            m.Shipment.shipment_id.in_(ids)
        )
    )
    return {str(sid): at for sid, at in rows}


# Queue days without the app's settings (a caller with no `Services`): UTC days.
_UTC_DAYS = QueueSettings.model_construct(queue_timezone="UTC", office_timezones={})


def _days(services: Services | None) -> QueueSettings:
    """The settings that define the offices' queue days."""
    return _UTC_DAYS if services is None else services.queue


def _not_displaced() -> Any:
    """SQL: the referral is live or decided (not closed without a decision)."""
    return (m.Referral.status != "closed") | m.Referral.decided_at.is_not(None)


def _latest_scores(session: Session, shipment_ids: Iterable[str]) -> dict[str, m.Score]:
    """The latest score of each of the shipments."""
    ids = set(shipment_ids)
    if not ids:
        return {}
    latest = (
        select(m.Score.shipment_id, func.max(m.Score.id).label("sid"))
        .where(m.Score.shipment_id.in_(ids))
        .group_by(m.Score.shipment_id)
        .subquery()
    )
    rows = session.scalars(select(m.Score).join(latest, m.Score.id == latest.c.sid))
    return {s.shipment_id: s for s in rows}


def _queue_rows(session: Session, office: str, day: dt.date) -> list[m.Referral]:
    return list(
        session.scalars(
            select(m.Referral)
            .where(m.Referral.office_code == office, m.Referral.queue_date == day)
            .order_by(m.Referral.rank, m.Referral.id)
            .execution_options(populate_existing=True)
        )
    )


def _day_scores(
    session: Session,
    days: QueueSettings,
    office: str,
    day: dt.date,
    since: dt.datetime | None = None,
) -> list[m.Score]:
    """The latest score of each shipment of the office declared that day, from local
    midnight to the next in the office's time zone (scored after `since`, when given)."""
    start, end = days.day_window(office, day)
    latest = (
        select(m.Score.shipment_id, func.max(m.Score.id).label("sid"))
        .join(m.Shipment, m.Shipment.shipment_id == m.Score.shipment_id)
        .where(
            m.Shipment.office_code == office,
            m.Shipment.declared_at >= start,
            m.Shipment.declared_at < end,
        )
        .group_by(m.Score.shipment_id)
        .subquery()
    )
    query = select(m.Score).join(latest, m.Score.id == latest.c.sid)
    if since is not None:
        query = query.where(m.Score.scored_at > since)
    return list(session.scalars(query.order_by(m.Score.id)))


def _stray_forced(
    session: Session, days: QueueSettings, office: str, day: dt.date
) -> list[tuple[m.Score, dt.date]]:
    """Forced shipments of the office declared before `day` (the office's local day;
    latest score a must-inspect rule or an exact watchlist hit) that no queue holds:
    no referral anywhere but displaced ones, none in `day`'s queue. With their
    declaration day (local). A late submission, a declaration just before local
    midnight or a rescreen can make such a shipment after its own day's queue was
    last looked at; today's queue takes it in, when declared at most
    `carry_forced_days` days before `day` (an older one is placed in its own day's
    queue when that is viewed, overdue at once)."""
    start = days.day_window(office, day)[0]
    first = days.day_window(office, day - dt.timedelta(days=days.carry_forced_days))[0]
    latest = (
        select(m.Score.shipment_id, func.max(m.Score.id).label("sid"))
        .join(m.Shipment, m.Shipment.shipment_id == m.Score.shipment_id)
        .where(
            m.Shipment.office_code == office,
            m.Shipment.declared_at >= first,
            m.Shipment.declared_at < start,
        )
        .group_by(m.Score.shipment_id)
        .subquery()
    )
    held = select(m.Referral.id).where(
        m.Referral.shipment_id == m.Score.shipment_id,
        _not_displaced() | ((m.Referral.office_code == office) & (m.Referral.queue_date == day)),
    )
    rows = session.execute(
        select(m.Score, m.Shipment.declared_at)
        .join(latest, m.Score.id == latest.c.sid)
        .join(m.Shipment, m.Shipment.shipment_id == m.Score.shipment_id)
        .where(m.Score.priority >= policy.TOP_BAND, ~held.exists())
        .order_by(m.Score.id)
    )
    return [(s, days.day_of(office, at)) for s, at in rows]


def _held_elsewhere(session: Session, office: str, day: dt.date, ids: Iterable[str]) -> set[str]:
    """Of the shipments `ids`, those with a live or decided referral in another queue
    than `day`'s of `office` (a forced shipment of an earlier day carried into a later
    queue): not to be placed twice."""
    wanted = set(ids)
    if not wanted:
        return set()
    rows = session.scalars(
        select(m.Referral.shipment_id).where(
            m.Referral.shipment_id.in_(wanted),
            _not_displaced(),
            (m.Referral.office_code != office) | (m.Referral.queue_date != day),
        )
    )
    return {str(s) for s in rows}


def _lifting_rule_hits(session: Session, score_ids: Sequence[int]) -> set[int]:
    """The scores among `score_ids` with a rule hit that raises the priority (any
    severity but info; an unknown severity counts)."""
    if not score_ids:
        return set()
    rows = session.execute(
        select(m.RuleHit.score_id, m.RuleVersion.severity)
        .outerjoin(
            m.RuleVersion,
            (m.RuleVersion.rule_id == m.RuleHit.rule_id)
            & (m.RuleVersion.version == m.RuleHit.rule_version),
        )
        .where(m.RuleHit.score_id.in_(score_ids))
    )
    return {
        int(sid)
        for sid, severity in rows
        if sid is not None and policy.SEVERITY_WEIGHTS.get(str(severity), 1.0) > 0
    }


def _place(
    session: Session,
    services: Services,
    office: str,
    day: dt.date,
    scores: Sequence[m.Score],
    queued: Sequence[m.Referral],
    actor: str = QUEUE_ACTOR,
    carried: dict[str, dt.date] | None = None,
) -> list[m.Referral]:
    """Referrals for `scores` within what is left of the day's capacity after the
    `queued` entries; red/yellow arrivals that do not fit displace lower-priority
    ranked entries (`policy.displacements`, judged by their current priorities).
    The day's exploration slots (share x capacity) are reserved from its first
    placement on: each placement draws into the slots not yet drawn (see
    `serving.policy`, "A queue placed in steps"). Audited: one entry for the queue,
    one per placed shipment and one per displaced shipment (entity "shipment", so
    each shipment's trail shows it). Nothing when nothing is picked.
    Must-inspect rules and exact watchlist hits always enter (over capacity if full);
    `carried`: forced shipments of earlier days taken into this queue, with their
    declaration day."""
    lifting = _lifting_rule_hits(session, [s.id for s in scores])
    candidates = []
    lanes: dict[str, str] = {}
    for s in scores:
        extra = s.explanation or {}
        exact = bool(extra.get("watchlist_exact", False))
        must = bool(extra.get("must_inspect", False)) and not exact
        candidates.append(
            policy.Candidate(
                s.shipment_id,
                office,
                day,
                s.priority,
                must,
                exact,
                probability=s.probability,
                rule_hit=s.id in lifting,
            )
        )
        lanes[s.shipment_id] = s.lane
    capacity = services.capacity(office)
    live = [r for r in queued if not displaced(r)]
    left = max(capacity - sum(1 for r in live if not r.over_capacity), 0)
    share = services.queue.exploration_share
    reserved = policy.exploration_slots(capacity, share)
    undrawn = max(reserved - sum(1 for r in live if r.selection_method == "random"), 0)
    seed = int(
        hashlib.sha256(f"{office}|{day.isoformat()}|{len(queued)}".encode()).hexdigest()[:8], 16
    )
    entries = policy.build_queue(candidates, left, share, rng_seed=seed, exploration=undrawn)
    chosen = {e.shipment_id for e in entries}
    by_id = {r.id: r for r in queued}
    current = _latest_scores(session, [r.shipment_id for r in queued if r.status == "open"])
    swaps = policy.displacements(
        [
            policy.Placed(
                r.id,
                current[r.shipment_id].priority if r.shipment_id in current else r.priority,
                r.selection_method,
                r.status,
                r.over_capacity,
            )
            for r in queued
        ],
        [c for c in candidates if c.shipment_id not in chosen],
        lanes,
    )
    if not entries and not swaps:
        return []
    score_of = {s.shipment_id: s.id for s in scores}
    created = now()
    refs: list[m.Referral] = []
    rank = max((r.rank for r in queued), default=0)

    def new_ref(sid: str, priority: float, method: str, probability: float, over: bool) -> None:
        nonlocal rank
        rank += 1
        ref = m.Referral(
            office_code=office,
            queue_date=day,
            shipment_id=sid,
            score_id=score_of[sid],
            rank=rank,
            priority=priority,
            selection_method=method,
            selection_probability=probability,
            status="open",
            over_capacity=over,
            created_at=created,
        )
        session.add(ref)
        refs.append(ref)

    for e in entries:
        new_ref(
            e.shipment_id,
            e.priority,
            e.selection_method,
            e.selection_probability,
            e.over_capacity,
        )
    # (displaced entry, its current priority, index of its successor)
    victims: list[tuple[m.Referral, float, int]] = []
    for c, victim in swaps:
        old = by_id[victim.key]
        # Closed without a decision; it is not over capacity (its successor holds the
        # slot, `displaced_by` says so) and no longer counts against the capacity.
        old.status = "closed"
        method = policy.lifted_method(c, c.model_probability > victim.priority)
        new_ref(c.shipment_id, c.priority, method, 1.0, False)
        victims.append((old, victim.priority, len(refs) - 1))
    session.flush()
    key = f"{office}/{day.isoformat()}"
    displaced_by = {i: old for old, _p, i in victims}
    audit(
        session,
        "queue_extended" if queued else "queue_built",
        actor,
        {
            "office_code": office,
            "day": day,
            "capacity": capacity,
            "capacity_left": left,
            "exploration_share": share,
            "exploration_slots": reserved,
            "exploration_slots_undrawn": undrawn,
            "candidates": len(candidates),
            "entries": [
                {
                    "referral_id": r.id,
                    "shipment_id": r.shipment_id,
                    "rank": r.rank,
                    "selection_method": r.selection_method,
                    "selection_probability": r.selection_probability,
                }
                for r in refs
            ],
            "displaced": [
                {
                    "referral_id": old.id,
                    "shipment_id": old.shipment_id,
                    "by_referral_id": refs[i].id,
                    "by_shipment_id": refs[i].shipment_id,
                }
                for old, _p, i in victims
            ],
        },
        entity="queue",
        entity_id=key,
    )
    for i, r in enumerate(refs):
        pushed = displaced_by.get(i)
        audit(
            session,
            "queue_placement",
            actor,
            {
                "queue": key,
                "referral_id": r.id,
                "shipment_id": r.shipment_id,
                "score_id": r.score_id,
                "rank": r.rank,
                "priority": r.priority,
                "lane": lanes.get(r.shipment_id),
                "selection_method": r.selection_method,
                "selection_probability": r.selection_probability,
                "over_capacity": r.over_capacity,
                "displaced_referral_id": None if pushed is None else pushed.id,
                "declared_on": (carried or {}).get(r.shipment_id),
            },
            entity="shipment",
            entity_id=r.shipment_id,
        )
    for old, current_priority, i in victims:
        audit(
            session,
            "queue_displacement",
            actor,
            {
                "action": "displace",
                "queue": key,
                "referral_id": old.id,
                "shipment_id": old.shipment_id,
                "priority": current_priority,
                "displaced_by_referral_id": refs[i].id,
                "displaced_by_shipment_id": refs[i].shipment_id,
                "displaced_by_priority": refs[i].priority,
            },
            entity="shipment",
            entity_id=old.shipment_id,
        )
    return refs


def get_queue(
    session: Session,
    services: Services,
    office: str,
    day: dt.date,
    reader: str | None = None,
) -> tuple[list[m.Referral], bool]:
    """The queue of an office for a day: built (and audited) on first request, then
    extended with the shipments scored since its last entries were placed (new
    arrivals, or a rescreen that made a hit exact) within the capacity left, red and
    yellow arrivals displacing lower-priority ranked entries when it is full.
    Entries whose shipment was scored again (a rescreen) are first brought to the
    latest score (`_refresh_referral`). Today's queue (the office's local day, as every
    queue day) also takes in the forced
    shipments of earlier days that no queue holds (`_stray_forced`), as forced
    entries of today (over capacity if full).
    Placement is the engine's act: it is audited as `QUEUE_ACTOR`, never as `reader`
    (whoever's read found the new shipments; an auditor's read writes nothing in
    their name). Returns the entries and whether any was placed or changed by this
    call."""
    del reader
    rows = _queue_rows(session, office, day)
    if not any(_queue_work(session, services, office, day, rows)):
        return rows, False
    write_lock(session, "queue")
    rows = _queue_rows(session, office, day)
    stale, fresh, strays = _queue_work(session, services, office, day, rows)
    changed = [ref for ref, score in stale if _refresh_referral(session, services, ref, score)]
    scores = fresh + [s for s, _d in strays]
    carried = {s.shipment_id: d for s, d in strays}
    placed = _place(session, services, office, day, scores, rows, carried=carried) if scores else []
    if not placed and not changed:
        session.rollback()
        return rows, False
    session.commit()
    return _queue_rows(session, office, day), True


def _queue_work(
    session: Session, services: Services, office: str, day: dt.date, rows: Sequence[m.Referral]
) -> tuple[list[tuple[m.Referral, m.Score]], list[m.Score], list[tuple[m.Score, dt.date]]]:
    """What a view of the queue has to do: entries to bring to their shipment's
    latest score, the day's shipments scored since the last placement that no queue
    holds, and (today's queue only) the forced shipments of earlier days to take in."""
    since = max((r.created_at for r in rows), default=None)
    referred = {r.shipment_id for r in rows}
    latest = _latest_scores(
        session, [r.shipment_id for r in rows if r.status in _AWAITING or displaced(r)]
    )
    stale = [
        (r, latest[r.shipment_id])
        for r in rows
        if r.shipment_id in latest and _needs_refresh(services, r, latest[r.shipment_id])
    ]
    fresh = _day_scores(session, services.queue, office, day, since)
    fresh = [s for s in fresh if s.shipment_id not in referred]
    held = _held_elsewhere(session, office, day, [s.shipment_id for s in fresh])
    fresh = [s for s in fresh if s.shipment_id not in held]
    today = services.queue.today(office)
    strays = _stray_forced(session, services.queue, office, day) if day == today else []
    return stale, fresh, strays


_AWAITING = tuple(str(st) for st in policy.AWAITING_DECISION)


def _needs_refresh(services: Services, ref: m.Referral, score: m.Score) -> bool:
    """The entry awaits a decision and its shipment was scored again since its
    placement, or it was displaced and its shipment is now forced (from today's
    queue on, the office's local day: an earlier day's displaced shipment goes to
    today's queue instead)."""
    if score.id == ref.score_id:
        return False
    if ref.status in _AWAITING:
        return True
    if not displaced(ref) or score.priority < policy.TOP_BAND:
        return False
    return ref.queue_date >= services.queue.today(ref.office_code)


def _refresh_referral(
    session: Session,
    services: Services,
    ref: m.Referral,
    score: m.Score,
    actor: str = QUEUE_ACTOR,
    cause: dict[str, Any] | None = None,
) -> bool:
    """Bring an entry to its shipment's latest `score` (a rescreen scored it again):
    its priority and score (so its lane), and, when the score forces it in (an exact
    watchlist hit or a must-inspect rule), the selection method "watchlist" or "rule",
    so that it is never displaced. An exploration draw keeps method and probability
    (the draw happened with that probability); every entry keeps its rank and
    selection probability (1.0 for a ranked entry: its selection was deterministic).
    A displaced entry of today's queue (or a later day's) whose shipment is now
    forced is reinstated (open again, over capacity when the capacity is full).
    Audited ("queue_rescore", in the shipment's trail). False when nothing changed
    (the entry is decided, or a displaced one stays closed)."""
    if not _needs_refresh(services, ref, score):
        return False
    reinstate = displaced(ref)
    if reinstate and session.scalar(
        select(func.count(m.Referral.id)).where(
            m.Referral.shipment_id == ref.shipment_id, m.Referral.id != ref.id, _not_displaced()
        )
    ):
        return False  # another queue holds it
    extra = score.explanation or {}
    forced = score.priority >= policy.TOP_BAND
    before = {
        "score_id": ref.score_id,
        "priority": ref.priority,
        "lane": session.scalar(select(m.Score.lane).where(m.Score.id == ref.score_id))
        if ref.score_id is not None
        else None,
        "selection_method": ref.selection_method,
        "status": ref.status,
        "over_capacity": ref.over_capacity,
    }
    if forced and ref.selection_method != "random":
        ref.selection_method = "watchlist" if extra.get("watchlist_exact") else "rule"
    ref.score_id, ref.priority = score.id, score.priority
    if reinstate:
        others = session.scalars(
            select(m.Referral).where(
                m.Referral.office_code == ref.office_code,
                m.Referral.queue_date == ref.queue_date,
                m.Referral.id != ref.id,
            )
        )
        used = sum(1 for r in others if not displaced(r) and not r.over_capacity)
        ref.status, ref.over_capacity = "open", used >= services.capacity(ref.office_code)
    session.flush()
    after = {
        "score_id": ref.score_id,
        "priority": ref.priority,
        "lane": score.lane,
        "selection_method": ref.selection_method,
        "status": ref.status,
        "over_capacity": ref.over_capacity,
    }
    audit(
        session,
        "queue_rescore",
        actor,
        {
            "action": "reinstate" if reinstate else "rescore",
            "queue": f"{ref.office_code}/{ref.queue_date.isoformat()}",
            "referral_id": ref.id,
            "shipment_id": ref.shipment_id,
            "before": before,
            "after": after,
            **(cause or {}),
        },
        entity="shipment",
        entity_id=ref.shipment_id,
    )
    return True


def requeue_rescored(session: Session, services: Services, shipment_id: str, actor: str) -> None:
    """After a new score of a stored shipment (a rescreen by `actor`): bring its
    referrals awaiting a decision to the score, and reinstate its displaced entry of
    today's queue if the score now forces it in (`_refresh_referral`, audited as the
    queue's act). A forced shipment with no entry of today is taken into today's
    queue at its next view (`_stray_forced`)."""
    score = _latest_scores(session, [shipment_id]).get(shipment_id)
    if score is None:
        return
    refs = session.scalars(
        select(m.Referral).where(m.Referral.shipment_id == shipment_id).order_by(m.Referral.id)
    )
    for ref in list(refs):
        _refresh_referral(
            session, services, ref, score, cause={"cause": "rescreen", "rescreened_by": actor}
        )


def left_out(
    session: Session, office: str, day: dt.date, services: Services | None = None
) -> list[dict[str, Any]]:
    """Red and yellow shipments of the office's day (its local day; UTC without
    `services`) without a live entry in its queue: never placed for want of capacity,
    or displaced by a later arrival. Best first. A shipment another queue holds (a
    forced one taken into a later day's) is not left out."""
    rows = _queue_rows(session, office, day)
    live = {r.shipment_id for r in rows if not displaced(r)}
    pushed = {r.shipment_id: r.id for r in rows if displaced(r)}
    out = [
        {
            "shipment_id": s.shipment_id,
            "score_id": s.id,
            "probability": s.probability,
            "priority": s.priority,
            "lane": s.lane,
            "displaced_referral_id": pushed.get(s.shipment_id),
        }
        for s in _day_scores(session, _days(services), office, day)
        if s.lane in ("red", "yellow") and s.shipment_id not in live
    ]
    held = _held_elsewhere(session, office, day, [str(o["shipment_id"]) for o in out])
    out = [o for o in out if o["shipment_id"] not in held]
    return sorted(out, key=lambda o: (-o["priority"], o["shipment_id"]))


def overdue_referrals(session: Session, services: Services, office: str) -> list[m.Referral]:
    """Referrals of the office still awaiting a decision (open or claimed) whose
    shipment has waited past the overdue limit since its declaration (the age the
    API's `age_seconds` and the pages' "Waiting" show: `_age`), longest waiting
    first; an inspected, waived or closed one is never overdue. A forced entry (a
    must-inspect rule or an exact watchlist hit, by its current priority) of a queue
    whose day is over (the office's local day) is overdue at once, however recently
    it was declared or placed: a must-inspect shipment of a past day still waiting is
    late (it may have been placed only when somebody opened that day's queue again)."""
    at = now()
    limit = at - dt.timedelta(hours=services.queue.overdue_hours)
    today = services.queue.today(office, at)
    return list(
        session.scalars(
            select(m.Referral)
            .join(m.Shipment, m.Shipment.shipment_id == m.Referral.shipment_id)
            .where(
                m.Referral.office_code == office,
                m.Referral.status.in_(_AWAITING),
                (m.Shipment.declared_at < limit)
                | ((m.Referral.priority >= policy.TOP_BAND) & (m.Referral.queue_date < today)),
            )
            .order_by(m.Shipment.declared_at, m.Referral.id)
        )
    )


def unknown_office(session: Session, services: Services, office: str) -> str | None:
    """Why `office` is no office of the deployment (no stored shipment, validated
    history, capacity or time-zone setting names it: `serving.auth.check_office`), or
    None. A mistyped code read as an empty queue of the default capacity (found in
    review); asked of empty queues only (one with entries is of a known office)."""
    configured = {*services.queue.office_capacities, *services.queue.office_timezones}
    try:
        check_office(office, known_offices(session, configured, services.layout.validated))
    except InvalidFieldError as exc:
        return str(exc)
    return None
