"""The hash-chained audit log: appending an entry in the caller's transaction, verifying
the chain, and the checks of stored scores against their entries."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, Text, func, insert, select
from sqlalchemy import cast as sa_cast
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
_LAST_SEQ = select(func.max(_LOG.c.seq))
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
    that every stored row that is recorded in the log has its entry there (scores
    with the same probability, lane and feature vector, outcomes, referrals and their
    decisions, personal-data views, rule versions, promotions), that every entry that
    records a row finds it, with the values it recorded where the row holds them
    (`_rows_missing`), and that each stored declaration still has its content hash."""
    # The recorded rows first, then the log: a row committed meanwhile was committed
    # with its entry, which the log read afterwards holds. The head before both: the
    # entries up to it were committed before the rows were read, so their rows must be
    # there (an entry after it may belong to a row committed after they were read).
    read_from = int(session.scalar(_LAST_SEQ) or 0)
    stored = _recorded_rows(session)
    rows = list(session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq)))
    entries = [_entry(r) for r in rows]
    result = audit_chain.verify(entries, checkpoint=checkpoint)
    if result.ok:
        missing = _unrecorded(stored, rows)
        if missing:
            result = audit_chain.VerifyResult(False, None, None, missing)
    if result.ok:
        found = _rows_missing(session, stored, rows, read_from)
        if found is not None:
            i, reason = found
            result = audit_chain.VerifyResult(
                False, i, entries[i].entry_id if i is not None else None, reason
            )
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


class _ReferralFacts(NamedTuple):
    id: int
    status: str
    shipment_id: str
    rank: int
    priority: float
    score_id: int | None
    queue: str  # office_code/queue_date, as the queue's entries name it


class _OutcomeFacts(NamedTuple):
    outcome_id: str
    shipment_id: str
    referral_id: int | None
    finding: bool
    category: str | None
    quantity: float | None
    unit: str | None


class _ViewFacts(NamedTuple):
    viewer: str
    subject_id: str
    purpose: str


@dataclass(frozen=True)
class _Recorded:
    scores: list[_ScoreFacts]
    outcomes: dict[str, _OutcomeFacts]
    referrals: list[_ReferralFacts]
    views: list[_ViewFacts]
    rule_versions: dict[tuple[str, int], str]  # (rule, version) -> its stored definition
    rules: dict[str, bool]  # rule -> active
    promotions: dict[int, str]  # promotion -> the model version promoted


def _recorded_rows(session: Session) -> _Recorded:
    """What of the stored rows must match an audit entry (and what the entries that
    record rows are checked against: `_rows_missing`)."""
    query = select(m.Score).order_by(m.Score.id).execution_options(yield_per=1000)
    scores = []
    for score in session.scalars(query):
        scores.append(_score_facts(score))
        session.expunge(score)
    o, r, v = m.Outcome, m.Referral, m.PersonalDataView
    return _Recorded(
        scores=scores,
        outcomes={
            str(row[0]): _OutcomeFacts(
                str(row[0]),
                str(row[1]),
                None if row[2] is None else int(row[2]),
                bool(row[3]),
                row[4],
                None if row[5] is None else float(row[5]),
                row[6],
            )
            for row in session.execute(
                select(
                    o.outcome_id,
                    o.shipment_id,
                    o.referral_id,
                    o.finding,
                    o.category,
                    o.quantity,
                    o.unit,
                )
            )
        },
        referrals=[
            _ReferralFacts(
                int(i),
                str(st),
                str(sid),
                int(rank),
                float(priority),
                None if score_id is None else int(score_id),
                f"{office}/{_iso_day(day)}",
            )
            for i, st, sid, rank, priority, score_id, office, day in session.execute(
                select(
                    r.id,
                    r.status,
                    r.shipment_id,
                    r.rank,
                    r.priority,
                    r.score_id,
                    r.office_code,
                    r.queue_date,
                ).order_by(r.id)
            )
        ],
        views=[
            _ViewFacts(str(viewer), str(sub), str(purpose))
            for viewer, sub, purpose in session.execute(
                select(v.viewer, v.subject_id, v.purpose).order_by(v.id)
            )
        ],
        rule_versions={
            (str(rid), int(ver)): str(definition)
            for rid, ver, definition in session.execute(
                select(m.RuleVersion.rule_id, m.RuleVersion.version, m.RuleVersion.definition)
            )
        },
        rules={
            str(rid): bool(active)
            for rid, active in session.execute(select(m.Rule.rule_id, m.Rule.active))
        },
        promotions={
            int(i): str(version)
            for i, version in session.execute(
                select(m.ModelPromotion.id, m.ModelPromotion.model_version)
            )
        },
    )


def _iso_day(day: Any) -> str:
    return day.isoformat() if isinstance(day, dt.date) else str(day)


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
    for rid, status, *_facts in stored.referrals:
        if rid not in referrals:
            return f"referral {rid} has no audit entry of its placement in a queue"
        if status == "waived" and rid not in waived:
            return f"referral {rid} is waived but no waiver is audited"
        if status == "inspected" and rid not in inspected:
            return f"referral {rid} is inspected but no outcome is audited"
    logged: dict[tuple[str, str], int] = {}
    for view in stored.views:
        logged[view.viewer, view.subject_id] = logged.get((view.viewer, view.subject_id), 0) + 1
    for (viewer, subject), n in sorted(logged.items()):
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


# ---------------------------------------------------------------- entries -> rows

# A finding of `_rows_missing`: the position in the log of the entry to blame (None:
# none records the row), and what is wrong.
_Finding = tuple[int | None, str]
_SCORE_KINDS = ("score", "rescreen", "rule_apply")
_QUEUE_KINDS = (
    "queue_built",
    "queue_extended",
    "queue_placement",
    "queue_displacement",
    "queue_rescore",
    "queue_decision",
    "outcome",
)
# What an outcome entry records of the outcome that a correction may change.
_OUTCOME_COLUMNS = ("finding", "category", "quantity", "unit")
# The declarations checked against their content hash per query (`_declarations`).
_DECLARATION_CHUNK = 1000


@dataclass
class _Timeline:
    """The values an entry after entry recorded of one column of one row, in the log's
    order: (seq, position in the log, value)."""

    values: list[tuple[int, int, Any]]

    def settled(self, read_from: int) -> tuple[int, list[Any]] | None:
        """The position of the last entry up to `read_from` that recorded a value, and
        the values the row may hold: that one, or one recorded after it (by an entry
        committed after `read_from`, with the change of the row read). None when no
        entry up to `read_from` recorded one."""
        upto = [v for v in self.values if v[0] <= read_from]
        if not upto:
            return None
        _seq, index, value = upto[-1]
        return index, [value] + [v[2] for v in self.values if v[0] > read_from]


@dataclass
class _Trail:
    """What the entries recorded of the rows, by row (see `_rows_missing`)."""

    # score -> (position, shipment, content hash if recorded) of its first entry
    scores: dict[int, tuple[int, str, str | None]] = field(default_factory=dict)
    first_score: dict[str, int] = field(default_factory=dict)  # shipment -> position
    # referral -> (position, shipment) of the first entry that names it
    referrals: dict[int, tuple[int, str | None]] = field(default_factory=dict)
    ranks: dict[int, tuple[int, int]] = field(default_factory=dict)  # -> (position, rank)
    queues: dict[int, tuple[int, str]] = field(default_factory=dict)  # -> (position, queue)
    priorities: dict[int, _Timeline] = field(default_factory=dict)
    score_ids: dict[int, _Timeline] = field(default_factory=dict)
    # outcome -> (position, shipment, referral) of its first entry
    outcomes: dict[str, tuple[int, str | None, Any]] = field(default_factory=dict)
    outcome_values: dict[str, _Timeline] = field(default_factory=dict)
    views: dict[_ViewFacts, list[int]] = field(default_factory=dict)  # -> positions
    rule_versions: dict[tuple[str, int], tuple[int, Any]] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)  # rule -> position of first entry
    rule_active: dict[str, _Timeline] = field(default_factory=dict)
    promotions: dict[int, tuple[int, Any]] = field(default_factory=dict)  # -> (pos, version)


def _timeline(timelines: dict[Any, _Timeline], key: Any, seq: int, i: int, value: Any) -> None:
    timelines.setdefault(key, _Timeline([])).values.append((seq, i, value))


def _trail(rows: Sequence[m.AuditLog], read_from: int) -> _Trail:
    """One pass over the log: the rows its entries recorded. Existence and immutable
    values are taken from the entries up to `read_from` only; the values that later
    entries change (a referral's priority, an outcome corrected, a rule (de)activated)
    from every entry, as timelines."""
    t = _Trail()
    for i, r in enumerate(rows):
        p, seq, kind = r.payload, r.seq, r.kind
        early = seq <= read_from
        if kind in _SCORE_KINDS and isinstance(p.get("score_id"), int):
            sid = str(r.entity_id) if r.entity == "shipment" else str(p.get("shipment_id"))
            if early and p["score_id"] not in t.scores:
                digest = p.get("content_hash")
                t.scores[p["score_id"]] = (i, sid, digest if isinstance(digest, str) else None)
            if kind == "score" and r.entity == "shipment":
                t.first_score.setdefault(sid, i)
        elif kind in _QUEUE_KINDS:
            _queue_trail(t, r, i, early)
        elif kind == "personal_data_view" and early:
            view = _ViewFacts(r.actor, str(r.entity_id), str(p.get("purpose")))
            t.views.setdefault(view, []).append(i)
        elif kind == "rule_change":
            _rule_trail(t, r, i, early)
        elif kind == "promotion" and early and isinstance(p.get("promotion_id"), int):
            t.promotions.setdefault(p["promotion_id"], (i, p.get("version")))
    return t


def _queue_trail(t: _Trail, r: m.AuditLog, i: int, early: bool) -> None:
    p, seq = r.payload, r.seq
    named: list[dict[str, Any]] = [p]
    if r.kind in ("queue_built", "queue_extended"):
        named = [e for e in p.get("entries") or [] if isinstance(e, dict)]
    for e in named:
        rid = e.get("referral_id")
        if not isinstance(rid, int):
            continue
        if early:
            sid = e.get("shipment_id")
            t.referrals.setdefault(rid, (i, None if sid is None else str(sid)))
            if isinstance(e.get("rank"), int):
                t.ranks.setdefault(rid, (i, e["rank"]))
            queue = e.get("queue") if r.kind == "queue_placement" else None
            if r.kind in ("queue_built", "queue_extended") and r.entity == "queue":
                queue = r.entity_id
            if isinstance(queue, str):
                t.queues.setdefault(rid, (i, queue))
        if r.kind == "queue_placement":
            _timeline(t.priorities, rid, seq, i, e.get("priority"))
            _timeline(t.score_ids, rid, seq, i, e.get("score_id"))
        elif r.kind == "queue_rescore" and isinstance(e.get("after"), dict):
            _timeline(t.priorities, rid, seq, i, e["after"].get("priority"))
            _timeline(t.score_ids, rid, seq, i, e["after"].get("score_id"))
    if r.kind == "outcome" and isinstance(p.get("outcome_id"), str):
        oid = p["outcome_id"]
        if early:
            sid = p.get("shipment_id")
            t.outcomes.setdefault(oid, (i, None if sid is None else str(sid), p.get("referral_id")))
        if all(k in p for k in _OUTCOME_COLUMNS):
            _timeline(t.outcome_values, oid, seq, i, tuple(p[k] for k in _OUTCOME_COLUMNS))


def _rule_trail(t: _Trail, r: m.AuditLog, i: int, early: bool) -> None:
    p = r.payload
    rule_id = str(r.entity_id)
    if early:
        t.rules.setdefault(rule_id, i)
    rule = p.get("rule")
    if isinstance(rule, dict) and isinstance(rule.get("version"), int):
        if early:
            t.rule_versions.setdefault((str(rule.get("id")), rule["version"]), (i, rule))
        if p.get("action") == "create":
            _timeline(t.rule_active, rule_id, r.seq, i, True)
    elif p.get("action") in ("activate", "deactivate"):
        _timeline(t.rule_active, rule_id, r.seq, i, p["action"] == "activate")


def _rows_missing(
    session: Session, stored: _Recorded, rows: Sequence[m.AuditLog], read_from: int
) -> _Finding | None:
    """The first entry (its position in `rows`) that records a row the database does
    not hold as recorded, with what is wrong; None when every one finds its row.

    Checked: a score entry's score row (and its shipment, and the shipment's content
    hash if the entry records it); the referrals the queue entries, decisions and
    outcomes name (shipment, queue and rank as placed; priority and score as the
    latest placement or rescore recorded them); outcomes (shipment, referral, and
    finding / category / quantity / unit as the latest entry recorded them, so a
    correction is followed); personal-data views (viewer, record and purpose); rule
    versions (their definition), rules (active as the latest (de)activation left
    them); promotions (the version promoted). What the product changes or deletes
    (a referral's status and holder, checked the other way by `_unrecorded`; an
    outcome's seizure lines, replaced by a correction; traveller records, purged) is
    not compared here. And every stored declaration (shipment and goods lines) must
    still have its content hash, blamed on the shipment's first score entry.
    Only entries up to `read_from` (the head read before the rows were) must find
    their rows: a later one's may have been committed after they were read."""
    t = _trail(rows, read_from)
    found: list[_Finding] = []
    found += _score_findings(t, {s.id: s for s in stored.scores})
    found += _referral_findings(t, {r.id: r for r in stored.referrals}, read_from)
    found += _outcome_findings(t, stored.outcomes, read_from)
    found += _view_findings(t, stored.views)
    found += _rule_findings(t, stored, read_from)
    ships = _declarations(session, t)
    found += ships.findings
    for score_id, (i, sid, _digest) in sorted(t.scores.items(), key=lambda s: s[1][0]):
        if sid not in ships.ids:
            found.append(
                (
                    i,
                    f"shipment {sid} of score {score_id} audited here has no row in "
                    "the database: deleted",
                )
            )
            break
    blamed = [f for f in found if f[0] is not None]
    if blamed:
        return min(blamed, key=lambda f: f[0] or 0)
    return found[0] if found else None


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


def _score_findings(t: _Trail, scores: dict[int, _ScoreFacts]) -> list[_Finding]:
    for score_id, (i, sid, _digest) in sorted(t.scores.items(), key=lambda s: s[1][0]):
        row = scores.get(score_id)
        if row is None:
            return [
                (
                    i,
                    f"score {score_id} of shipment {sid} is audited here but has no row in "
                    "the database: deleted",
                )
            ]
        if row.shipment_id != sid:
            return [
                (
                    i,
                    f"score {score_id} is stored for shipment {row.shipment_id} but audited "
                    f"for shipment {sid}",
                )
            ]
    return []


def _referral_findings(
    t: _Trail, referrals: dict[int, _ReferralFacts], read_from: int
) -> list[_Finding]:
    found: list[_Finding] = []
    for rid, (i, sid) in sorted(t.referrals.items(), key=lambda r: r[1][0]):
        row = referrals.get(rid)
        name = f"referral {rid} of shipment {sid}" if sid else f"referral {rid}"
        if row is None:
            found.append((i, f"{name} is audited here but has no row in the database: deleted"))
            break
        if sid is not None and row.shipment_id != sid:
            found.append(
                (
                    i,
                    f"referral {rid} is stored for shipment {row.shipment_id} but audited for "
                    f"shipment {sid}",
                )
            )
            break
    differs: list[_Finding] = []
    for rid, row in referrals.items():
        name = f"referral {rid} of shipment {row.shipment_id} differs from its audit entry"
        if rid in t.ranks and t.ranks[rid][1] != row.rank:
            i, rank = t.ranks[rid]
            differs.append((i, f"{name}: rank {row.rank} (audited {rank})"))
        if rid in t.queues and t.queues[rid][1] != row.queue:
            i, queue = t.queues[rid]
            differs.append((i, f"{name}: queue {row.queue} (audited {queue})"))
        priority = t.priorities[rid].settled(read_from) if rid in t.priorities else None
        if priority is not None and not any(_same_number(row.priority, v) for v in priority[1]):
            differs.append(
                (priority[0], f"{name}: priority {row.priority!r} (audited {priority[1][0]!r})")
            )
        score = t.score_ids[rid].settled(read_from) if rid in t.score_ids else None
        if score is not None and row.score_id not in score[1]:
            differs.append((score[0], f"{name}: score {row.score_id} (audited {score[1][0]})"))
    if differs:
        found.append(min(differs, key=lambda f: f[0] or 0))
    return found


def _outcome_findings(
    t: _Trail, outcomes: dict[str, _OutcomeFacts], read_from: int
) -> list[_Finding]:
    found: list[_Finding] = []
    for oid, (i, sid, rid) in sorted(t.outcomes.items(), key=lambda o: o[1][0]):
        row = outcomes.get(oid)
        if row is None:
            found.append(
                (
                    i,
                    f"outcome {oid} of shipment {sid} is audited here but has no row in the "
                    "database: deleted",
                )
            )
            break
        if (sid is not None and row.shipment_id != sid) or (
            isinstance(rid, int) and row.referral_id != rid
        ):
            found.append(
                (
                    i,
                    f"outcome {oid} is stored for shipment {row.shipment_id} (referral "
                    f"{row.referral_id}) but audited for shipment {sid} (referral {rid})",
                )
            )
            break
    differs: list[_Finding] = []
    for oid, row in outcomes.items():
        timeline = t.outcome_values.get(oid)
        settled = timeline.settled(read_from) if timeline is not None else None
        if settled is None:
            continue
        held = (row.finding, row.category, row.quantity, row.unit)
        if any(_same_outcome(held, v) for v in settled[1]):
            continue
        audited = settled[1][0]
        what = [
            f"{name} {mine!r} (audited {theirs!r})"
            for name, mine, theirs in zip(_OUTCOME_COLUMNS, held, audited, strict=True)
            if not _same_outcome((mine,), (theirs,))
        ]
        differs.append(
            (
                settled[0],
                f"outcome {oid} of shipment {row.shipment_id} differs from its audit "
                f"entry: {'; '.join(what)}",
            )
        )
    if differs:
        found.append(min(differs, key=lambda f: f[0] or 0))
    return found


def _same_outcome(held: tuple[Any, ...], audited: tuple[Any, ...]) -> bool:
    for mine, theirs in zip(held, audited, strict=True):
        if isinstance(mine, bool) or isinstance(theirs, bool):
            if bool(mine) is not theirs:
                return False
        elif isinstance(mine, int | float) or isinstance(theirs, int | float):
            if not _same_number(mine, theirs):
                return False
        elif mine != theirs:
            return False
    return True


def _view_findings(t: _Trail, views: Sequence[_ViewFacts]) -> list[_Finding]:
    logged: dict[_ViewFacts, int] = {}
    for view in views:
        logged[view] = logged.get(view, 0) + 1
    found: list[_Finding] = []
    for view, positions in t.views.items():
        n = logged.get(view, 0)
        if len(positions) > n:
            found.append(
                (
                    positions[n],
                    f"personal-data view of {view.subject_id} by {view.viewer} for "
                    f"{view.purpose!r} is audited here but has no row in the database: deleted "
                    f"or changed ({len(positions)} such view(s) audited, {n} logged; this "
                    "entry's or an earlier one's)",
                )
            )
    return [min(found, key=lambda f: f[0] or 0)] if found else []


def _rule_findings(t: _Trail, stored: _Recorded, read_from: int) -> list[_Finding]:
    found: list[_Finding] = []
    for (rule_id, version), (i, rule) in t.rule_versions.items():
        definition = stored.rule_versions.get((rule_id, version))
        if definition is None:
            found.append(
                (
                    i,
                    f"rule {rule_id} version {version} is audited here but has no row in the "
                    "database: deleted",
                )
            )
        elif _parsed(definition) != rule:
            found.append(
                (
                    i,
                    f"rule {rule_id} version {version} differs from its audit entry: its "
                    "definition",
                )
            )
    for rule_id, i in t.rules.items():
        if rule_id not in stored.rules:
            found.append(
                (i, f"rule {rule_id} is audited here but has no row in the database: deleted")
            )
            continue
        timeline = t.rule_active.get(rule_id)
        settled = timeline.settled(read_from) if timeline is not None else None
        if settled is not None and stored.rules[rule_id] not in settled[1]:
            state = "active" if stored.rules[rule_id] else "inactive"
            audited = "active" if settled[1][0] else "inactive"
            found.append((settled[0], f"rule {rule_id} is {state} but audited {audited}"))
    for pid, (i, version) in t.promotions.items():
        promoted = stored.promotions.get(pid)
        if promoted is None:
            found.append(
                (
                    i,
                    f"model promotion {pid} is audited here but has no row in the database: "
                    "deleted",
                )
            )
        elif promoted != str(version):
            found.append(
                (
                    i,
                    f"model promotion {pid} differs from its audit entry: version {promoted} "
                    f"(audited {version})",
                )
            )
    return [min(found, key=lambda f: f[0] or 0)] if found else []


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Declarations:
    ids: set[str]  # the stored shipments
    findings: list[_Finding]


def _declarations(session: Session, t: _Trail) -> _Declarations:
    """Every stored declaration (the shipment's payload and its goods lines') against
    its stored content hash (as ingest computed it: `shipments.prepare_shipment`), and
    against the hash a score entry records, if it records one. In chunks of shipments
    (in the database's order of their ids), each with one query of their goods lines
    (the range of the chunk's ids), the JSON read as stored and parsed here."""
    ships, items = cast(Table, m.Shipment.__table__), cast(Table, m.Item.__table__)
    recorded = {sid: (i, digest) for i, sid, digest in t.scores.values() if digest is not None}
    ids: set[str] = set()
    found: list[_Finding] = []
    query = select(ships.c.shipment_id, sa_cast(ships.c.payload, Text), ships.c.content_hash)
    goods = select(items.c.shipment_id, items.c.line_no, sa_cast(items.c.payload, Text))
    last: str | None = None
    while True:
        page = query if last is None else query.where(ships.c.shipment_id > last)
        chunk = session.execute(page.order_by(ships.c.shipment_id).limit(_DECLARATION_CHUNK)).all()
        if not chunk:
            break
        first, last = str(chunk[0][0]), str(chunk[-1][0])
        lines: dict[str, list[tuple[int, str]]] = {}
        for sid, no, line in session.execute(
            goods.where(items.c.shipment_id >= first, items.c.shipment_id <= last)
        ):
            lines.setdefault(str(sid), []).append((int(no), str(line)))
        for sid, payload, digest in chunk:
            sid = str(sid)
            ids.add(sid)
            if sid in recorded and recorded[sid][1] != digest:
                found.append(
                    (
                        recorded[sid][0],
                        f"shipment {sid} is stored with content hash {str(digest)[:16]}... "
                        f"but its score entry records {str(recorded[sid][1])[:16]}...: the "
                        "declaration was replaced",
                    )
                )
            declared = sorted(lines.get(sid, []))
            if _declaration_hash(payload, [line for _no, line in declared]) != digest:
                found.append(
                    (
                        t.first_score.get(sid),
                        f"shipment {sid}: its stored declaration (or a goods line) no longer "
                        "has its content hash: edited after it was scored",
                    )
                )
    return _Declarations(ids, found)


def _declaration_hash(payload: str, goods: list[str]) -> str | None:
    """`content_hash` of a declaration as stored (the JSON text of its payload and of its
    goods lines' in order: `jsonable` of what ingest hashed, `shipments.prepare_shipment`),
    without converting the parsed data again; None when it is not JSON."""
    try:
        body = {"shipment": json.loads(payload), "items": [json.loads(g) for g in goods]}
        text = audit_chain.canonical_plain_json(body)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def audited_scores(session: Session, shipment_id: str) -> list[tuple[int, int]]:
    """(score id, seq of its first entry) of every score the log records for the
    shipment, in the log's order."""
    seen: dict[int, int] = {}
    for seq, payload in session.execute(
        select(m.AuditLog.seq, m.AuditLog.payload)
        .where(
            m.AuditLog.entity == "shipment",
            m.AuditLog.entity_id == shipment_id,
            m.AuditLog.kind.in_(_SCORE_KINDS),
        )
        .order_by(m.AuditLog.seq)
    ):
        score_id = payload.get("score_id") if isinstance(payload, dict) else None
        if isinstance(score_id, int):
            seen.setdefault(score_id, int(seq))
    return list(seen.items())
