"""Decisions on referrals: claim, waiver, outcome (and its correction), close, release;
outcomes exported as labels."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from data_contracts.fields import text_problem
from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS
from serving import orm as m
from serving import policy
from serving.db import write_lock
from serving.history import frame_of
from serving.schemas import shipment_in_model
from serving.services._core import ServiceError, Services, now
from serving.services.audit_log import audit
from serving.services.queues import NOT_A_PERSON
from serving.services.seizures import seizure_values, seizures_of, write_seizures
from serving.services.shipments import _validate_json

# --------------------------------------------------------------------------- decisions


def _domain(ref: m.Referral, session: Session | None = None) -> policy.Referral:
    """The referral's policy view (with its shipment's declaration time when a
    `session` is given: outcomes are checked against it)."""
    last = max(t for t in (ref.created_at, ref.claimed_at, ref.decided_at) if t is not None)
    status = policy.Status(ref.status)
    declared = None
    if session is not None:
        declared = session.scalar(
            select(m.Shipment.declared_at).where(m.Shipment.shipment_id == ref.shipment_id)
        )
    return policy.Referral(
        shipment_id=ref.shipment_id,
        office_code=ref.office_code,
        created_at=ref.created_at,
        status=status,
        claimed_by=ref.claimed_by,
        claimed_at=ref.claimed_at,
        waiver_reason=ref.waiver_reason,
        decided_by=ref.decided_by,
        decided_at=ref.decided_at,
        history=(policy.Transition(None, status, "db", last),),
        declared_at=declared,
    )


def _refused(exc: policy.TransitionError) -> ServiceError:
    """A refused transition as a 409; one made before the shipment's declaration
    names `declared_at` (the page says it in the officer's language)."""
    before = isinstance(exc, policy.BeforeDeclarationError)
    return ServiceError(409, str(exc), "declared_at" if before else None)


def _locked_referral(session: Session, referral_id: int) -> m.Referral:
    write_lock(session, "queue")
    ref = session.get(m.Referral, referral_id, populate_existing=True)
    if ref is None:
        raise ServiceError(404, f"no referral {referral_id}")
    return ref


def _officer(username: str, office: str | None, ref: m.Referral) -> policy.Officer:
    # Admins act for the referral's office; officers only for their own.
    return policy.Officer(username, office if office is not None else ref.office_code)


def _decider(session: Session, username: str) -> None:
    """A named person (an active user account) decides, never an API key or a system:
    the referral records the user (claimed_by / decided_by are user names)."""
    user = session.scalar(select(m.User).where(m.User.username == username))
    if user is None or not user.active:
        raise ServiceError(403, NOT_A_PERSON)


def claim(session: Session, referral_id: int, username: str, office: str | None) -> m.Referral:
    _decider(session, username)
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.claim(_domain(ref), _officer(username, office, ref), at)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
    ref.status, ref.claimed_by, ref.claimed_at = "claimed", username, at
    _audit_decision(session, username, ref, "claim")
    session.commit()
    return ref


def _audit_decision(
    session: Session, username: str, ref: m.Referral, action: str, **details: Any
) -> None:
    """Audit an officer's step on a referral (claim, waive, close, release) in its
    shipment's trail."""
    audit(
        session,
        "queue_decision",
        username,
        {"action": action, "referral_id": ref.id, "shipment_id": ref.shipment_id, **details},
        entity="shipment",
        entity_id=ref.shipment_id,
    )


def waive(
    session: Session, referral_id: int, username: str, office: str | None, reason: str
) -> m.Referral:
    _decider(session, username)
    if not policy.has_visible_text(reason):
        raise ServiceError(422, "a waiver needs a reason (it has no visible character)", "reason")
    problem = _text_problem("reason", reason)
    if problem is not None:
        raise problem
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.waive(_domain(ref), _officer(username, office, ref), at, reason)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
    ref.status, ref.decided_by, ref.decided_at = "waived", username, at
    ref.waiver_reason = reason.strip()
    _audit_decision(session, username, ref, "waive", reason=ref.waiver_reason)
    session.commit()
    return ref


def record_outcome(
    session: Session,
    services: Services,
    referral_id: int,
    username: str,
    office: str | None,
    outcome: policy.InspectionOutcome,
) -> tuple[m.Referral, m.Outcome, Path | None]:
    """The claiming officer records what the inspection found: the outcome (its
    category / quantity / unit the most serious seizure line's), its seizure lines
    and its audit entry (with the lines) in one transaction; the label file."""
    _decider(session, username)
    problem = _outcome_problem(outcome)
    if problem is not None:
        raise problem
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.record_outcome(_domain(ref, session), _officer(username, office, ref), at, outcome)
    except policy.TransitionError as exc:
        raise _refused(exc) from None
    ref.status, ref.decided_by, ref.decided_at = "inspected", username, at
    row = m.Outcome(
        outcome_id=f"api-{ref.id}-{uuid.uuid4().hex[:12]}",
        shipment_id=ref.shipment_id,
        referral_id=ref.id,
        selection_method=ref.selection_method,
        selection_probability=ref.selection_probability,
        finding=outcome.finding,
        category=outcome.finding_category,
        quantity=outcome.quantity_seized,
        unit=outcome.seized_unit,
        notes=outcome.notes or None,
        inspected_at=at,
        recorded_by=username,
        recorded_at=at,
    )
    session.add(row)
    session.flush()
    write_seizures(session, row.outcome_id, outcome.seizures)
    audit(
        session,
        "outcome",
        username,
        {
            "referral_id": ref.id,
            "outcome_id": row.outcome_id,
            "shipment_id": ref.shipment_id,
            "finding": outcome.finding,
            "category": outcome.finding_category,
            "quantity": outcome.quantity_seized,
            "unit": outcome.seized_unit,
            "seizures": seizure_values(outcome.seizures),
            "selection_method": ref.selection_method,
            "selection_probability": ref.selection_probability,
        },
        entity="shipment",
        entity_id=ref.shipment_id,
    )
    session.commit()
    frame = outcome_frame([row])
    services.history.add_outcomes(frame)
    path = export_labels(session, services, [row])
    return ref, row, path


OUTCOME_FIELDS = ("finding", "category", "quantity", "unit", "notes")


def _outcome_values(session: Session, row: m.Outcome) -> dict[str, Any]:
    """What an officer records of an outcome (what a correction may change): its
    fields and its seizure lines."""
    values = {name: getattr(row, name) for name in OUTCOME_FIELDS}
    values["seizures"] = seizures_of(session, [row.outcome_id])[row.outcome_id]
    return values


def _outcome_problem(outcome: policy.InspectionOutcome) -> ServiceError | None:
    """An outcome the rules refuse (`policy.seizure_problems`), as a 422 naming its
    field (`seizures[1].quantity`); or notes that the OUTCOMES contract refuses
    (`_text_problem`)."""
    problems = policy.seizure_problems(outcome.finding, outcome.seizures)
    if problems:
        return ServiceError(422, problems[0].text(), problems[0].name())
    return _text_problem("notes", outcome.notes)


def _text_problem(name: str, value: str | None) -> ServiceError | None:
    """A 422 naming `name` when `value` holds what the contracts' text rule refuses
    (`data_contracts.fields.text_problem`: control or bidirectional formatting
    characters, nothing visible but invisible characters). Notes go into the label
    file that `caravan validate` reads: notes it would quarantine would lose the
    outcome from training; a reason is shown and audited as written."""
    problem = None if value is None else text_problem(value)
    return None if problem is None else ServiceError(422, f"{name} {problem}", name)


def _correction_target(session: Session, ref: m.Referral) -> m.Outcome | None:
    """The recorded outcome of `ref` (the latest, should there be several), or None
    when the decision recorded is a waiver; 409 when nothing was decided."""
    if ref.status in ("open", "claimed") or ref.decided_by is None:
        state = "was closed without a decision" if ref.status == "closed" else f"is {ref.status}"
        raise ServiceError(
            409,
            f"cannot correct the outcome of referral {ref.id} ({ref.shipment_id}): it {state}, "
            "no outcome or waiver is recorded",
        )
    return session.scalars(
        select(m.Outcome)
        .where(m.Outcome.referral_id == ref.id)
        .order_by(m.Outcome.recorded_at.desc(), m.Outcome.outcome_id.desc())
        .limit(1)
    ).first()


def correct_outcome(
    session: Session,
    services: Services,
    referral_id: int,
    username: str,
    office: str | None,
    outcome: policy.InspectionOutcome,
    reason: str,
    *,
    override: bool = False,
) -> tuple[m.Referral, m.Outcome, Path | None]:
    """Correct the decision recorded on a referral, with a reason: by the officer who
    recorded it, or an administrator (`override`).

    An outcome is corrected in place (the same outcome id: finding, category,
    quantity, unit, notes; its seizure lines are replaced); a waiver recorded by
    mistake, when the goods were inspected after all, becomes this outcome (a new
    one, inspected now). The correction is audited as an `outcome` entry with
    `action: "correct"`, who, why, and the values before and after (the seizure
    lines too; the original entry stays in the chain); the
    label file under raw/outcomes/ is rewritten, so that the next `caravan
    validate` / `train` read the corrected label once. The feature history is
    brought up to date (see `_history_after_correction`)."""
    _decider(session, username)
    if not policy.has_visible_text(reason):
        raise ServiceError(
            422, "a correction needs a reason (it has no visible character)", "reason"
        )
    problem = _text_problem("reason", reason) or _outcome_problem(outcome)
    if problem is not None:
        raise problem
    ref = _locked_referral(session, referral_id)
    row = _correction_target(session, ref)
    if not override and username != ref.decided_by:
        raise ServiceError(
            403,
            f"only the officer who recorded the decision on referral {ref.id} "
            f"({ref.decided_by}) or an administrator can correct it",
        )
    after = {
        "finding": outcome.finding,
        "category": outcome.finding_category,
        "quantity": outcome.quantity_seized,
        "unit": outcome.seized_unit,
        "notes": outcome.notes or None,
        "seizures": seizure_values(outcome.seizures),
    }
    if row is not None and _outcome_values(session, row) == after:
        raise ServiceError(
            409,
            f"nothing to correct: outcome {row.outcome_id} of referral {ref.id} already "
            "holds these values",
        )
    at = now()
    try:
        policy.correct_outcome(
            _domain(ref, session),
            _officer(username, office, ref),
            at,
            outcome,
            reason,
            override=override,
        )
    except policy.TransitionError as exc:
        raise _refused(exc) from None
    before: dict[str, Any]
    if row is None:  # a waiver becomes an outcome
        before = {
            "decision": "waiver",
            "waiver_reason": ref.waiver_reason,
            "decided_by": ref.decided_by,
            "decided_at": ref.decided_at,
        }
        row = m.Outcome(
            outcome_id=f"api-{ref.id}-{uuid.uuid4().hex[:12]}",
            shipment_id=ref.shipment_id,
            referral_id=ref.id,
            selection_method=ref.selection_method,
            selection_probability=ref.selection_probability,
            inspected_at=at,
            recorded_by=ref.decided_by or username,
            recorded_at=at,
            **{name: after[name] for name in OUTCOME_FIELDS},
        )
        session.add(row)
        if ref.status == "waived":
            ref.status = "inspected"
        ref.waiver_reason = None
    else:
        before = {"decision": "outcome", **_outcome_values(session, row)}
        for name in OUTCOME_FIELDS:
            setattr(row, name, after[name])
    session.flush()
    write_seizures(session, row.outcome_id, outcome.seizures)
    audit(
        session,
        "outcome",
        username,
        {
            "action": "correct",
            "referral_id": ref.id,
            "outcome_id": row.outcome_id,
            "shipment_id": ref.shipment_id,
            "finding": row.finding,
            "category": row.category,
            "quantity": row.quantity,
            "unit": row.unit,
            "seizures": after["seizures"],
            "selection_method": ref.selection_method,
            "selection_probability": ref.selection_probability,
            "reason": reason.strip(),
            "before": before,
            "after": {"decision": "outcome", **after},
        },
        entity="shipment",
        entity_id=ref.shipment_id,
    )
    session.commit()
    _history_after_correction(services, row, new=before["decision"] == "waiver")
    path = export_labels(session, services, [row])
    return ref, row, path


def _history_after_correction(services: Services, row: m.Outcome, *, new: bool) -> None:
    """The feature history after a correction. A waiver turned into an outcome is a
    new outcome: appended as a recorded one is. A corrected outcome replaces the row
    the history holds, and the live feature state, which only appends (it would
    count the original and the correction both), is rebuilt from the history in the
    background; until it is swapped in (seconds; about a minute for a million
    shipments), scoring reads the state that still counts the original."""
    if new:
        services.history.add_outcomes(outcome_frame([row]))
    else:
        services.history.replace_outcomes(outcome_frame([row]))


def corrections_of(session: Session, shipment_id: str) -> list[dict[str, Any]]:
    """The corrections made to the outcomes of a shipment's referrals (from the audit
    trail), oldest first: who, when, why, before and after."""
    rows = session.scalars(
        select(m.AuditLog)
        .where(
            m.AuditLog.kind == "outcome",
            m.AuditLog.entity == "shipment",
            m.AuditLog.entity_id == shipment_id,
        )
        .order_by(m.AuditLog.seq)
    )
    return [
        {
            "by": row.actor,
            "at": row.at,
            "referral_id": row.payload.get("referral_id"),
            "outcome_id": row.payload.get("outcome_id"),
            "reason": row.payload.get("reason"),
            "before": row.payload.get("before") or {},
            "after": row.payload.get("after") or {},
        }
        for row in rows
        if (row.payload or {}).get("action") == "correct"
    ]


def close(session: Session, referral_id: int, username: str, office: str | None) -> m.Referral:
    """Close an inspected or waived referral (an officer of its office or an admin):
    the case is done. The decision (decided_by/at, the outcome or waiver reason) stays
    as recorded; the closing is audited with who closed it and when."""
    _decider(session, username)
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.close(_domain(ref), _officer(username, office, ref), at)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
    decision = ref.status
    ref.status = "closed"
    _audit_decision(session, username, ref, "close", decision=decision, decided_by=ref.decided_by)
    session.commit()
    return ref


def release(
    session: Session,
    referral_id: int,
    username: str,
    office: str | None,
    *,
    override: bool = False,
) -> m.Referral:
    """Hand a claimed referral back to the office's queue (claimed -> open): by the
    officer who claimed it, or by an admin (`override`) for anyone's claim. The audit
    entry names who released it and whose claim it was."""
    _decider(session, username)
    ref = _locked_referral(session, referral_id)
    at = now()
    holder, since = ref.claimed_by, ref.claimed_at
    try:
        policy.release(_domain(ref), _officer(username, office, ref), at, override=override)
    except policy.TransitionError as exc:
        mine = ref.status != "claimed" or holder == username
        hint = "" if mine else "; only they or an administrator can release it"
        raise ServiceError(409, f"{exc}{hint}") from None
    ref.status, ref.claimed_by, ref.claimed_at = "open", None, None
    _audit_decision(
        session,
        username,
        ref,
        "release",
        claimed_by=holder,
        claimed_at=since,
        released_for_another=holder != username,
    )
    session.commit()
    return ref


def outcome_frame(
    rows: Sequence[m.Outcome], selection_rules: dict[str, str] | None = None
) -> pl.DataFrame:
    """Outcomes in the OUTCOMES contract (what `caravan validate` reads);
    `selection_rules`: the rule that selected each outcome's referral, by outcome id
    (`selection_rules`; none given: left empty)."""
    rules = selection_rules or {}
    return frame_of(
        [
            {
                "outcome_id": r.outcome_id,
                "shipment_id": r.shipment_id,
                "inspected_at": r.inspected_at,
                "officer_id": r.recorded_by,
                "selection_method": r.selection_method,
                "selection_rule": rules.get(r.outcome_id),
                "selection_probability": r.selection_probability,
                "finding": r.finding,
                "finding_category": r.category,
                "quantity_seized": r.quantity,
                "seized_unit": r.unit,
                "notes": r.notes,
            }
            for r in rows
        ],
        OUTCOMES.polars_schema,
    )


def selection_rules(session: Session, rows: Sequence[m.Outcome]) -> dict[str, str]:
    """By outcome id, the rule that selected the outcome's referral, when its method
    is "rule": of the rule hits of the score the referral was placed (or last
    refreshed) with, the must-inspect one (the rule that forces an entry in), else
    the one of the highest severity; ties by rule id. (The historical labels carry
    the rule of the rules-and-random policy in `selection_rule`; the service's did
    not.)"""
    by_ref = {
        r.referral_id: r.outcome_id
        for r in rows
        if r.selection_method == "rule" and r.referral_id is not None
    }
    if not by_ref:
        return {}
    hits = session.execute(
        select(m.Referral.id, m.RuleHit.rule_id, m.RuleVersion.severity)
        .join(m.RuleHit, m.RuleHit.score_id == m.Referral.score_id)
        .outerjoin(
            m.RuleVersion,
            (m.RuleVersion.rule_id == m.RuleHit.rule_id)
            & (m.RuleVersion.version == m.RuleHit.rule_version),
        )
        .where(m.Referral.id.in_(by_ref))
    )
    best: dict[str, tuple[float, str]] = {}
    for ref_id, rule_id, severity in hits:
        weight = (
            math.inf
            if severity == "must_inspect"
            else policy.SEVERITY_WEIGHTS.get(str(severity), 1.0)
        )
        key = (-weight, str(rule_id))
        outcome_id = by_ref[ref_id]
        if outcome_id not in best or key < best[outcome_id]:
            best[outcome_id] = key
    return {outcome_id: rule for outcome_id, (_w, rule) in best.items()}


def export_labels(session: Session, services: Services, rows: Sequence[m.Outcome]) -> Path | None:
    """Write outcomes (with their shipments and goods lines) under raw/, where
    `caravan validate` and then `caravan features` / `caravan train` pick them up:
    raw/outcomes/api-<id>.parquet, raw/shipments/api-<shipment>.parquet, raw/items/..."""
    from pipelines.validate import pulled_shipment, write_parquet

    if not rows:
        return None
    raw = services.layout.raw
    last: Path | None = None
    with services._export_lock:
        for row in rows:
            sid = row.shipment_id
            ship = session.get(m.Shipment, sid)
            if ship is None:
                continue
            ship_path = raw / "shipments" / f"api-{sid}.parquet"
            # (not when `caravan validate` already pulled it from the database)
            if not ship_path.exists() and not pulled_shipment(raw, sid):
                record = _validate_json(
                    shipment_in_model(),
                    {
                        **ship.payload,
                        "items": [
                            i.payload
                            for i in session.scalars(
                                select(m.Item)
                                .where(m.Item.shipment_id == sid)
                                .order_by(m.Item.line_no)
                            )
                        ],
                    },
                ).model_dump()
                lines = [{**i, "shipment_id": sid} for i in record.pop("items")]
                write_parquet(frame_of([record], SHIPMENTS.polars_schema), ship_path)
                write_parquet(
                    frame_of(lines, ITEMS.polars_schema), raw / "items" / f"api-{sid}.parquet"
                )
            last = raw / "outcomes" / f"api-{row.outcome_id}.parquet"
            write_parquet(outcome_frame([row], selection_rules(session, [row])), last)
    return last
