"""The hash-chained audit log: appending an entry in the caller's transaction, verifying
the chain, and the checks of stored scores against their entries."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from serving import audit_chain
from serving import orm as m
from serving.db import write_lock
from serving.services._core import content_hash, jsonable, now

# --------------------------------------------------------------------------- audit


# session.info key: ((transaction, savepoint), last entry appended in them) -- see `audit`.
_AUDIT_HEAD = "caravan_audit_head"


def _entry(row: m.AuditLog) -> audit_chain.AuditEntry:
    """The chain entry of a row; its lookup columns (outside the hash) must equal the
    copies that `audit` puts in the hashed payload."""
    return audit_chain.AuditEntry(
        row.seq,
        row.entry_id,
        row.at,
        row.kind,
        row.actor,
        row.payload,
        row.prev_hash,
        row.hash,
        lookup={"entity": row.entity, "entity_id": row.entity_id},
    )


def audit(
    session: Session,
    kind: str,
    actor: str,
    payload: dict[str, Any],
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    flush: bool = True,
) -> m.AuditLog:
    """Append an entry to the chain in the session's transaction (commit with the change).

    The first entry of a transaction takes the write lock and reads the chain's head;
    the lock is held until the transaction ends, so the next entries of the same
    transaction follow the entry written last without reading the head again.
    `flush` False: the row is written with the session's next flush (a caller
    adding many entries writes them in one)."""
    prev = _transaction_head(session)
    body = jsonable({**payload, "entity": entity, "entity_id": entity_id})
    record = audit_chain.AuditRecord(uuid.uuid4().hex, now(), kind, actor, body)
    entry = audit_chain.append(prev, record)
    row = m.AuditLog(
        seq=entry.seq,
        entry_id=entry.entry_id,
        at=entry.at,
        kind=kind,
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        payload=body,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )
    session.add(row)
    if flush:
        session.flush()
    _remember_head(session, entry)
    return row


class AuditItem(NamedTuple):
    """An entry to append (`audit_many`): `audit`'s arguments."""

    kind: str
    actor: str
    payload: dict[str, Any]
    entity: str | None = None
    entity_id: str | None = None


def audit_many(session: Session, items: Sequence[AuditItem]) -> list[audit_chain.AuditEntry]:
    """`audit` of each item in order, written with one INSERT now (in the session's
    transaction, as `audit` writes them): the same entries, chained in one loop."""
    if not items:
        return []
    prev = _transaction_head(session)
    rows: list[dict[str, Any]] = []
    entries: list[audit_chain.AuditEntry] = []
    for item in items:
        body = jsonable({**item.payload, "entity": item.entity, "entity_id": item.entity_id})
        record = audit_chain.AuditRecord(uuid.uuid4().hex, now(), item.kind, item.actor, body)
        prev = audit_chain.append(prev, record)
        entries.append(prev)
        rows.append(
            {
                "seq": prev.seq,
                "entry_id": prev.entry_id,
                "at": prev.at,
                "kind": item.kind,
                "actor": item.actor,
                "entity": item.entity,
                "entity_id": item.entity_id,
                "payload": body,
                "prev_hash": prev.prev_hash,
                "hash": prev.hash,
            }
        )
    session.execute(_INSERT_LOG, rows)
    _remember_head(session, prev)
    return entries


def _transaction_head(session: Session) -> audit_chain.AuditEntry | None:
    """The entry the next one follows: the one this transaction wrote last, or, for
    the transaction's first entry, the chain's head read under the write lock (held
    until the transaction ends)."""
    transaction = (session.get_transaction(), session.get_nested_transaction())
    last = session.info.get(_AUDIT_HEAD)
    if transaction[0] is not None and last is not None and _same(last[0], transaction):
        return last[1]
    write_lock(session, "audit_log")
    return _head(session)


def _remember_head(session: Session, entry: audit_chain.AuditEntry | None) -> None:
    session.info[_AUDIT_HEAD] = (
        (session.get_transaction(), session.get_nested_transaction()),
        entry,
    )


def _head(session: Session) -> audit_chain.AuditEntry | None:
    """The chain's last entry, as far as the next one needs it: its seq and hash (read
    as two columns: loading the whole row, payload and all, cost more than the rest of
    an entry). The other fields are left empty: `audit_chain.append` reads only these."""
    head = session.execute(_HEAD).first()
    if head is None:
        return None
    seq, digest = head
    return audit_chain.AuditEntry(int(seq), "", _NO_TIME, "", "", {}, "", str(digest))


_NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)
# (Core statements of the table: no ORM machinery; `write_lock` flushed the session)
_LOG = cast(Table, m.AuditLog.__table__)
_HEAD = select(_LOG.c.seq, _LOG.c.hash).order_by(_LOG.c.seq.desc()).limit(1)
_INSERT_LOG = insert(_LOG)  # (the rows `audit` would add as ORM objects)


def _same(a: tuple[object, object], b: tuple[object, object]) -> bool:
    return a[0] is b[0] and a[1] is b[1]


def verify_audit(
    session: Session, checkpoint: tuple[int, str] | None = None
) -> tuple[int, audit_chain.VerifyResult, int | None]:
    """(entries, result, seq of the first broken entry); see `audit_report`."""
    report = audit_report(session, checkpoint)
    return report.entries, report.result, report.broken_seq


@dataclass(frozen=True)
class AuditReport:
    entries: int
    result: audit_chain.VerifyResult
    broken_seq: int | None  # the first broken entry, when one is to blame
    head: tuple[int, str] | None  # (seq, hash) of the last entry verified: keep it


def audit_report(session: Session, checkpoint: tuple[int, str] | None = None) -> AuditReport:
    """Verify the whole log: the hash chain, the lookup columns against the hashed
    entries, a recorded head (`checkpoint` = (seq, hash)) still present with its hash,
    and that every stored row that is recorded in the log has its entry there (scores
    with the same probability, lane and feature vector, outcomes, referrals and their
    decisions, personal-data views, rule versions, promotions)."""
    # The recorded rows first, then the log: a row committed meanwhile was committed
    # with its entry, which the log read afterwards holds.
    stored = _recorded_rows(session)
    rows = list(session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq)))
    entries = [_entry(r) for r in rows]
    result = audit_chain.verify(entries, checkpoint=checkpoint)
    if result.ok:
        missing = _unrecorded(stored, rows)
        if missing:
            result = audit_chain.VerifyResult(False, None, None, missing)
    seq = None
    if not result.ok and result.first_broken_index is not None:
        i = result.first_broken_index
        seq = entries[i].seq if i < len(entries) else None
    head = (rows[-1].seq, rows[-1].hash) if rows else None
    return AuditReport(len(entries), result, seq, head)


def feature_vector_hash(vector: Any) -> str:
    """SHA-256 of a stored feature vector's canonical JSON (recorded in score entries)."""
    return content_hash(vector)


def plain_vector_hash(vector: dict[str, Any]) -> str:
    """`feature_vector_hash` of a vector as stored (`jsonable` gave it): the same
    digest, without converting the vector again."""
    return hashlib.sha256(audit_chain.canonical_plain_json(vector).encode()).hexdigest()


@dataclass(frozen=True)
class _ScoreFacts:
    id: int
    shipment_id: str
    probability: float
    lane: str
    model_version: str
    vector_hash: str


def _score_facts(score: m.Score) -> _ScoreFacts:
    return _ScoreFacts(
        score.id,
        score.shipment_id,
        score.probability,
        score.lane,
        score.model_version,
        feature_vector_hash(score.feature_vector),
    )


def _score_differences(score: _ScoreFacts, entry: dict[str, Any]) -> list[str]:
    """How a stored score row differs from its audited entry (empty: it does not)."""
    found = []
    audited = entry.get("probability")
    if not isinstance(audited, int | float) or not math.isclose(
        score.probability, float(audited), rel_tol=1e-12, abs_tol=0.0
    ):
        found.append(f"probability {score.probability!r} (audited {audited!r})")
    if score.lane != entry.get("lane"):
        found.append(f"lane {score.lane} (audited {entry.get('lane')})")
    if str(score.model_version) != str(entry.get("model_version")):
        found.append(f"model {score.model_version} (audited {entry.get('model_version')})")
    digest = entry.get("feature_vector_sha256")
    if digest is not None and score.vector_hash != digest:
        found.append("feature vector (its hash differs from the audited one)")
    return found


@dataclass(frozen=True)
class _Recorded:
    scores: list[_ScoreFacts]
    outcomes: list[str]
    referrals: list[tuple[int, str]]
    views: list[tuple[str, str, int]]
    rule_versions: list[tuple[str, int]]
    promotions: list[int]


def _recorded_rows(session: Session) -> _Recorded:
    """What of the stored rows must match an audit entry."""
    query = select(m.Score).order_by(m.Score.id).execution_options(yield_per=1000)
    scores = []
    for score in session.scalars(query):
        scores.append(_score_facts(score))
        session.expunge(score)
    per_view = select(
        m.PersonalDataView.viewer, m.PersonalDataView.subject_id, func.count()
    ).group_by(m.PersonalDataView.viewer, m.PersonalDataView.subject_id)
    return _Recorded(
        scores=scores,
        outcomes=[str(o) for o in session.scalars(select(m.Outcome.outcome_id))],
        referrals=[
            (int(i), str(st))
            for i, st in session.execute(
                select(m.Referral.id, m.Referral.status).order_by(m.Referral.id)
            )
        ],
        views=[(str(v), str(sub), int(n)) for v, sub, n in session.execute(per_view)],
        rule_versions=[
            (str(r), int(v))
            for r, v in session.execute(select(m.RuleVersion.rule_id, m.RuleVersion.version))
        ],
        promotions=[int(i) for i in session.scalars(select(m.ModelPromotion.id))],
    )


def _unrecorded(stored: _Recorded, rows: Sequence[m.AuditLog]) -> str:
    """The first stored row that should have an audit entry and has none (or differs
    from it, for scores), as a sentence; '' when every one has its entry."""
    scores: dict[int, dict[str, Any]] = {}
    outcomes: set[str] = set()
    referrals: set[int] = set()
    waived: set[int] = set()
    inspected: set[int] = set()
    views: dict[tuple[str, str | None], int] = {}
    rule_versions: set[tuple[str, int]] = set()
    promoted: set[int] = set()
    for r in rows:
        p = r.payload
        if r.kind in ("score", "rescreen", "rule_apply") and isinstance(p.get("score_id"), int):
            scores[p["score_id"]] = p
        elif r.kind == "outcome":
            outcomes.add(str(p.get("outcome_id")))
            if isinstance(p.get("referral_id"), int):
                inspected.add(p["referral_id"])
        elif r.kind in ("queue_built", "queue_extended"):
            referrals.update(
                e["referral_id"]
                for e in p.get("entries") or []
                if isinstance(e, dict) and isinstance(e.get("referral_id"), int)
            )
        elif r.kind == "queue_decision" and p.get("action") == "waive":
            if isinstance(p.get("referral_id"), int):
                waived.add(p["referral_id"])
        elif r.kind == "personal_data_view":
            key = (r.actor, r.entity_id)
            views[key] = views.get(key, 0) + 1
        elif r.kind == "rule_change" and isinstance(p.get("rule"), dict):
            rule = p["rule"]
            if isinstance(rule.get("version"), int):
                rule_versions.add((str(rule.get("id")), rule["version"]))
        elif r.kind == "promotion" and isinstance(p.get("promotion_id"), int):
            promoted.add(p["promotion_id"])
    for score in stored.scores:
        entry = scores.get(score.id)
        if entry is None:
            return f"score {score.id} of shipment {score.shipment_id} has no audit entry"
        differs = _score_differences(score, entry)
        if differs:
            return (
                f"score {score.id} of shipment {score.shipment_id} differs from its audit "
                f"entry: {'; '.join(differs)}"
            )
    for oid in sorted(stored.outcomes):
        if oid not in outcomes:
            return f"outcome {oid} has no audit entry"
    for rid, status in stored.referrals:
        if rid not in referrals:
            return f"referral {rid} has no audit entry of its placement in a queue"
        if status == "waived" and rid not in waived:
            return f"referral {rid} is waived but no waiver is audited"
        if status == "inspected" and rid not in inspected:
            return f"referral {rid} is inspected but no outcome is audited"
    for viewer, subject, n in sorted(stored.views):
        if n > views.get((viewer, subject), 0):
            return (
                f"{n} view(s) of {subject} by {viewer} are logged but "
                f"{views.get((viewer, subject), 0)} audited"
            )
    for rule_id, version in sorted(stored.rule_versions):
        if (rule_id, version) not in rule_versions:
            return f"rule {rule_id} version {version} has no audit entry"
    for pid in sorted(stored.promotions):
        if pid not in promoted:
            return f"model promotion {pid} has no audit entry"
    return ""
