"""The one place that wires the concrete pieces: contracts, history, scoring, policy,
rules engine, watchlists, the database and the audit log.

Every change of operational state is written with its audit entry in the same
transaction (`audit`): the writer takes `db.write_lock`, reads the chain's head,
appends, and the caller commits both together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import polars as pl
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from data_contracts.settings import DataLayout
from serving import audit_chain, policy
from serving import orm as m
from serving.db import write_lock
from serving.history import HistoryStore, frame_of
from serving.rules_engine import (
    Rule,
    RuleEntry,
    RuleError,
    RuleHit,
    RuleValidationError,
    parse_rule,
)
from serving.schemas import shipment_in_model, traveller_in_model
from serving.scoring import (
    ModelHandle,
    ModelHolder,
    ModelInputError,
    Scored,
    check_extras,
    explain_vector,
    score_shipments,
)

log = logging.getLogger(__name__)

PERSONAL_FIELDS = tuple(c.name for c in TRAVELLERS.columns if c.personal)
MASK = "***"


class QueueSettings(BaseSettings):
    """Queue settings from the environment (prefix CARAVAN_), checked when read: a
    value out of range stops the server at start, naming the setting, rather than
    failing an officer's queue later."""

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", extra="ignore")

    # inspections per office and day, unless the office has its own capacity
    queue_capacity: int = Field(20, ge=0)
    # CARAVAN_OFFICE_CAPACITIES='{"KZ-KHORGOS": 40, "KG-BISHKEK": 12}' (JSON)
    office_capacities: dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0)]] = {}
    # share of the capacity drawn at random (0 to 1: 0.05 is 5 %)
    exploration_share: float = Field(0.05, ge=0.0, le=1.0)
    overdue_hours: float = Field(24.0, gt=0.0)
    model_refresh_seconds: float = Field(5.0, gt=0.0)


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class RowError:
    index: int
    field: str
    reason: str


def row_errors(index: int, exc: ValidationError) -> list[RowError]:
    return [
        RowError(index, ".".join(str(p) for p in e["loc"]) or "record", str(e["msg"]))
        for e in exc.errors()
    ]


# --------------------------------------------------------------------------- the context


@dataclass
class Services:
    """What the API needs besides a database session."""

    layout: DataLayout
    holder: ModelHolder
    history: HistoryStore
    queue: QueueSettings = field(default_factory=QueueSettings)
    _rules_cache: tuple[int, list[Rule]] | None = None
    _export_lock: threading.Lock = field(default_factory=threading.Lock)

    def capacity(self, office: str) -> int:
        return int(self.queue.office_capacities.get(office, self.queue.queue_capacity))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def jsonable(value: Any) -> Any:
    """Plain JSON data (datetimes as UTC ISO text), as the audit chain hashes it."""
    return json.loads(audit_chain.canonical_json(_finite(value)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def content_hash(value: Any) -> str:
    return hashlib.sha256(audit_chain.canonical_json(value).encode()).hexdigest()


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
) -> m.AuditLog:
    """Append an entry to the chain in the session's transaction (commit with the change).

    The first entry of a transaction takes the write lock and reads the chain's head;
    the lock is held until the transaction ends, so the next entries of the same
    transaction follow the entry written last without reading the head again."""
    transaction = (session.get_transaction(), session.get_nested_transaction())
    last = session.info.get(_AUDIT_HEAD)
    if transaction[0] is not None and last is not None and _same(last[0], transaction):
        prev: audit_chain.AuditEntry | None = last[1]
    else:
        write_lock(session, "audit_log")
        head = session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq.desc()).limit(1)).first()
        prev = None if head is None else _entry(head)
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
    session.flush()
    session.info[_AUDIT_HEAD] = (
        (session.get_transaction(), session.get_nested_transaction()),
        entry,
    )
    return row


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


# --------------------------------------------------------------------------- rules


def _rule_of(version: m.RuleVersion) -> Rule:
    return parse_rule(json.loads(version.definition))


def active_rules(session: Session, services: Services) -> list[Rule]:
    """The newest version of every active rule (cached until the rules change: every
    new version and every (de)activation writes an audit entry on the entity "rule")."""
    versions = select(func.count(m.RuleVersion.id)).scalar_subquery()
    active = (
        select(func.count()).select_from(m.Rule).where(m.Rule.active.is_(True)).scalar_subquery()
    )
    changed = select(func.max(m.AuditLog.seq)).where(m.AuditLog.entity == "rule").scalar_subquery()
    marker, n_active, last = session.execute(select(versions, active, changed)).one()
    key = hash((int(marker or 0), int(n_active or 0), int(last or 0)))
    cached = services._rules_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    rules = [_rule_of(v) for v, _r in latest_versions(session, active_only=True)]
    services._rules_cache = (key, rules)
    return rules


def latest_versions(
    session: Session, *, active_only: bool = False
) -> list[tuple[m.RuleVersion, m.Rule]]:
    newest = (
        select(m.RuleVersion.rule_id, func.max(m.RuleVersion.version).label("v"))
        .group_by(m.RuleVersion.rule_id)
        .subquery()
    )
    query = (
        select(m.RuleVersion, m.Rule)
        .join(
            newest,
            (m.RuleVersion.rule_id == newest.c.rule_id) & (m.RuleVersion.version == newest.c.v),
        )
        .join(m.Rule, m.Rule.rule_id == m.RuleVersion.rule_id)
        .order_by(m.RuleVersion.rule_id)
    )
    if active_only:
        query = query.where(m.Rule.active.is_(True))
    return [(v, r) for v, r in session.execute(query)]


def _midnight(day: dt.date | None, default: dt.datetime | None) -> dt.datetime | None:
    if day is None:
        return default
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def save_rule(session: Session, data: dict[str, Any], author: str, *, create: bool) -> Rule:
    """Check and store a new rule (create) or a new version of one; audited.
    Raises RuleValidationError (422) or ServiceError (404/409)."""
    rule_id = str(data["id"])
    existing = session.get(m.Rule, rule_id)
    if create and existing is not None:
        raise ServiceError(409, f"rule {rule_id!r} exists: PUT a new version", "id")
    if not create and existing is None:
        raise ServiceError(404, f"no rule {rule_id!r}")
    last = session.scalar(
        select(func.max(m.RuleVersion.version)).where(m.RuleVersion.rule_id == rule_id)
    )
    version = int(last or 0) + 1
    rule = parse_rule({**data, "version": version, "author": author})
    if existing is None:
        existing = m.Rule(rule_id=rule_id, name=rule.name, active=True, created_by=author)
        session.add(existing)
    else:  # a new version of a deactivated rule stays inactive until reactivated
        existing.name = rule.name
    session.flush()
    definition = rule.model_dump(mode="json")
    session.add(
        m.RuleVersion(
            rule_id=rule_id,
            version=version,
            definition=json.dumps(definition, sort_keys=True),
            severity=rule.severity,
            must_inspect=rule.severity == "must_inspect",
            effective_from=_midnight(rule.effective_from, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
            effective_to=_midnight(rule.effective_to, None),
            author=author,
        )
    )
    audit(
        session,
        "rule_change",
        author,
        {"rule": definition, "action": "create" if version == 1 else "new_version"},
        entity="rule",
        entity_id=rule_id,
    )
    session.flush()
    return rule


MAX_REASON = 1000


def set_rule_active(
    session: Session, rule_id: str, active: bool, actor: str, reason: str | None
) -> m.Rule:
    """Deactivate (retire) or reactivate a rule, audited with who and why. An inactive
    rule is never evaluated (`active_rules`), stays listed and exported as inactive,
    and keeps its versions and hits. A reason is required to deactivate.
    Raises ServiceError: 404 no such rule, 409 already in that state, 422 no reason."""
    reason = (reason or "").strip()
    if not active and not policy.has_visible_text(reason):
        raise ServiceError(
            422, "a reason (with visible text) is required to deactivate a rule", "reason"
        )
    if len(reason) > MAX_REASON:
        raise ServiceError(422, f"the reason is longer than {MAX_REASON} characters", "reason")
    row = session.get(m.Rule, rule_id, with_for_update=True)
    if row is None:
        raise ServiceError(404, f"no rule {rule_id!r}")
    if row.active == active:
        state = "active" if active else "inactive"
        raise ServiceError(409, f"rule {rule_id!r} is already {state}", "active")
    version = session.scalar(
        select(func.max(m.RuleVersion.version)).where(m.RuleVersion.rule_id == rule_id)
    )
    row.active = active
    session.flush()
    audit(
        session,
        "rule_change",
        actor,
        {
            "action": "activate" if active else "deactivate",
            "rule_id": rule_id,
            "version": version,
            "reason": reason or None,
        },
        entity="rule",
        entity_id=rule_id,
    )
    session.flush()
    return row


def _content(rule: Rule) -> dict[str, Any]:
    """What a rule says (a version's number and author are bookkeeping)."""
    return rule.model_dump(exclude={"version", "author"})


def import_rules(
    session: Session, rules: Sequence[Rule | RuleEntry], author: str, *, keep_newer: bool = False
) -> tuple[list[Rule], list[str]]:
    """Import rules (as read by `read_rules_yaml`); all or nothing.

    The stored history is the source of truth; a file's version is informative:
    - a rule whose content equals its stored current version is unchanged, and so is
      an earlier version in a file that holds several versions of one rule when it
      equals the stored version of its number (a re-import changes nothing);
    - other content becomes the next stored version, authored by `author` (the
      importing user); a new rule starts at version 1 whatever the file says;
    - but content based on an older version than the stored current one (the file
      gives version 2, the rule is at version 3 here) is refused (409), so that an old
      export cannot silently revert newer versions; so is a file stating a status
      (`active`) different from the stored one ((de)activation needs its reason);
      a rule new here marked ``active: false`` is created inactive.
    Occurrences of one id are applied in the order of their versions. With
    `keep_newer` (a seed file loaded at start-up) such conflicting rules are left as
    stored and counted unchanged instead of refused.
    Returns the stored rules, each with its own version, and the unchanged ids.
    Raises RuleValidationError (409) listing every conflict with the rule's path."""
    entries = [
        r if isinstance(r, RuleEntry) else RuleEntry(r, r.version, None, f"rules[{i}]")
        for i, r in enumerate(rules)
    ]
    first = {e.rule.id: i for i, e in reversed(list(enumerate(entries)))}
    entries.sort(key=lambda e: (first[e.rule.id], e.version or 0))
    last = {e.rule.id: e for e in entries}
    ids = sorted(first)
    history: dict[str, dict[int, dict[str, Any]]] = {}
    for v in session.scalars(select(m.RuleVersion).where(m.RuleVersion.rule_id.in_(ids))):
        history.setdefault(v.rule_id, {})[v.version] = _content(_rule_of(v))
    status: dict[str, bool] = {
        rid: bool(act)
        for rid, act in session.execute(
            select(m.Rule.rule_id, m.Rule.active).where(m.Rule.rule_id.in_(ids))
        )
    }
    conflicts: list[RuleError] = []
    plan: list[RuleEntry] = []
    unchanged: list[str] = []
    for e in entries:
        rid, content = e.rule.id, _content(e.rule)
        stored = history.get(rid, {})
        current = max(stored) if stored else None
        stale = current is not None and e.version is not None and e.version < current
        if keep_newer and (stale or (rid in status and e.active not in (None, status[rid]))):
            if rid not in unchanged:
                unchanged.append(rid)
            continue
        if rid in status and e.active is not None and e.active != status[rid]:
            now_is, file_says = ("active", "inactive") if status[rid] else ("inactive", "active")
            verb = "deactivate" if status[rid] else "activate"
            conflicts.append(
                RuleError(
                    f"{e.path}.active",
                    f"rule {rid} is {now_is} here but {file_says} in the file: {verb} it "
                    f"with POST /api/v1/rules/{rid}/{verb} (and a reason)",
                )
            )
            continue
        earlier = e is not last[rid]  # the file also holds a newer version of this rule
        if current is not None and (
            stored[current] == content
            or (earlier and e.version in stored and stored[e.version] == content)
        ):
            if rid not in unchanged:
                unchanged.append(rid)
            continue
        if stale:
            conflicts.append(
                RuleError(
                    f"{e.path}.version",
                    f"rule {rid}: the file's version {e.version} is older than the stored "
                    f"version {current} and differs from it; importing it would revert "
                    f"the newer version(s). Export the current rules and edit those, or "
                    f"give version {current} to replace it deliberately",
                )
            )
            continue
        stored[(current or 0) + 1] = content
        history[rid] = stored
        plan.append(e)
    if conflicts:
        raise RuleValidationError(conflicts, status=409)
    created: list[Rule] = []
    for e in plan:
        rid = e.rule.id
        data = e.rule.model_dump(mode="json", exclude={"version", "author"})
        new = rid not in status
        created.append(save_rule(session, data, author, create=new))
        status[rid] = status.get(rid, True)
        if new and e.active is False:
            set_rule_active(session, rid, False, author, f"imported as inactive ({e.path})")
            status[rid] = False
    return created, [r for r in unchanged if r not in {c.id for c in created}]


# A rule version's figures before any hit.
NO_RULE_FIGURES: dict[str, Any] = {
    "hits": 0,
    "inspected": 0,
    "findings": 0,
    "finding_rate": None,
    "arms_findings": 0,
    "arms_finding_rate": None,
}


def rule_performance_rows(session: Session, rule_id: str | None = None) -> list[dict[str, Any]]:
    """Per rule (all rules, or only `rule_id`), figures over the shipments scored by
    the service: its newest version's figures at the top level (`version`, `severity`
    are that version's), `versions` with each version's own figures (oldest first), and
    `all_versions` over the rule's whole history (a shipment hit by two versions counts
    once). Figures: shipments hit, inspected (an outcome recorded), `findings` (a
    finding of any category, documentary irregularities included) and `arms_findings`
    (a finding in an arms category: firearms, parts, ammunition, explosives), each
    rate over the inspected shipments (None when none was inspected)."""
    from data_contracts.schemas import ARMS_CATEGORIES
    from serving.rules_engine import rule_performance

    hit_query = select(m.RuleHit.rule_id, m.RuleHit.rule_version, m.RuleHit.shipment_id)
    outcome_query = select(m.Outcome.shipment_id, m.Outcome.finding, m.Outcome.category)
    version_query = select(m.RuleVersion.rule_id, m.RuleVersion.version, m.RuleVersion.severity)
    if rule_id is not None:
        hit_query = hit_query.where(m.RuleHit.rule_id == rule_id)
        outcome_query = outcome_query.where(
            m.Outcome.shipment_id.in_(
                select(m.RuleHit.shipment_id).where(m.RuleHit.rule_id == rule_id)
            )
        )
        version_query = version_query.where(m.RuleVersion.rule_id == rule_id)
    hits = pl.DataFrame(
        session.execute(hit_query).all(),
        schema={"rule_id": pl.String, "rule_version": pl.Int64, "shipment_id": pl.String},
        orient="row",
    )
    outcomes = pl.DataFrame(
        session.execute(outcome_query).all(),
        schema={"shipment_id": pl.String, "finding": pl.Boolean, "finding_category": pl.String},
        orient="row",
    )
    empty = NO_RULE_FIGURES
    figures: dict[tuple[str, int | None], dict[str, Any]] = {}
    for by_version in (False, True):
        arms = {
            (r["rule_id"], r.get("rule_version")): r
            for r in rule_performance(
                hits, outcomes, by_version=by_version, categories=ARMS_CATEGORIES
            ).to_dicts()
        }
        for r in rule_performance(hits, outcomes, by_version=by_version).to_dicts():
            key = (r["rule_id"], r.get("rule_version"))
            a = arms[key]
            figures[key] = {
                "hits": int(r["hits"]),
                "inspected": int(r["inspected"]),
                "findings": int(r["findings"]),
                "finding_rate": r["finding_rate"],
                "arms_findings": int(a["findings"]),
                "arms_finding_rate": a["finding_rate"],
            }
    versions: dict[str, list[dict[str, Any]]] = {}
    for rid, version, severity in session.execute(
        version_query.order_by(m.RuleVersion.rule_id, m.RuleVersion.version)
    ):
        versions.setdefault(rid, []).append(
            {"version": version, "severity": severity, **figures.get((rid, version), empty)}
        )
    out = []
    for v, rule in latest_versions(session):
        if rule_id is not None and v.rule_id != rule_id:
            continue
        out.append(
            {
                "rule_id": v.rule_id,
                "version": v.version,
                "severity": v.severity,
                "active": rule.active,
                **figures.get((v.rule_id, v.version), empty),
                "all_versions": figures.get((v.rule_id, None), empty),
                "versions": versions.get(v.rule_id, []),
            }
        )
    return out


# --------------------------------------------------------------------------- shipments


@dataclass(frozen=True)
class Prepared:
    record: dict[str, Any]  # the shipment (contract columns)
    items: list[dict[str, Any]]  # goods lines (contract columns), by line_no
    content_hash: str
    submitted: tuple[int, ...] = ()  # line_no of the goods lines in the order received

    def submitted_items(self) -> list[dict[str, Any]]:
        by_no = {line["line_no"]: line for line in self.items}
        return [by_no[n] for n in self.submitted] if self.submitted else list(self.items)


def prepare_shipment(raw: Any, *, stored: bool = False) -> Prepared:
    """Validate one shipment payload against the contracts (raises ValidationError).
    stored: the payload of a shipment stored earlier, re-typed: only types are checked,
    not the plausibility checks (dates, maxima, visible text) added since."""
    data = _validate_json(shipment_in_model(), raw, stored=stored).model_dump()
    lines = data.pop("items")
    if not data.get("extras"):  # (none given: the content and its hash as before extras)
        data.pop("extras", None)
    sid = data["shipment_id"]
    items = [{**line, "shipment_id": sid} for line in sorted(lines, key=lambda x: x["line_no"])]
    submitted = tuple(int(line["line_no"]) for line in lines)
    return Prepared(data, items, content_hash({"shipment": data, "items": items}), submitted)


def rule_errors(prepared: Sequence[Prepared]) -> dict[int, list[RowError]]:
    """The contracts' row rules (as `caravan validate` applies them) on shipments that
    passed the pydantic checks: position in `prepared` -> its errors (field, reason)."""
    from serving.intake import rule_breaches

    found: dict[int, list[RowError]] = {}
    breaches = rule_breaches([p.record for p in prepared], [p.submitted_items() for p in prepared])
    for b in breaches:
        found.setdefault(b.shipment, []).append(RowError(b.shipment, b.field, b.reason))
    return found


def traveller_rule_errors(records: Sequence[dict[str, Any]]) -> dict[int, list[RowError]]:
    """The contracts' row rules on traveller records: position -> its errors."""
    from serving.intake import traveller_breaches

    found: dict[int, list[RowError]] = {}
    for b in traveller_breaches(records):
        found.setdefault(b.shipment, []).append(RowError(b.shipment, b.field, b.reason))
    return found


def _validate_json(model: type[BaseModel], raw: Any, *, stored: bool = False) -> BaseModel:
    """Validate already-parsed JSON data in JSON mode (ISO datetimes as text)."""
    from data_contracts.fields import STORED

    return model.model_validate_json(json.dumps(raw), context={STORED: True} if stored else None)


def _stored_payload(p: Prepared) -> dict[str, Any]:
    return jsonable(p.record)


@dataclass(frozen=True)
class StoredShipment:
    shipment: m.Shipment
    score: m.Score
    hits: list[tuple[str, int, str | None]]


def load_shipment(session: Session, shipment_id: str) -> StoredShipment | None:
    ship = session.get(m.Shipment, shipment_id)
    if ship is None:
        return None
    score = session.scalars(
        select(m.Score)
        .where(m.Score.shipment_id == shipment_id)
        .order_by(m.Score.scored_at.desc(), m.Score.id.desc())
        .limit(1)
    ).first()
    if score is None:
        return None
    rows = session.execute(
        select(m.RuleHit.rule_id, m.RuleHit.rule_version, m.RuleVersion.severity)
        .outerjoin(
            m.RuleVersion,
            (m.RuleVersion.rule_id == m.RuleHit.rule_id)
            & (m.RuleVersion.version == m.RuleHit.rule_version),
        )
        .where(m.RuleHit.score_id == score.id)
        .order_by(m.RuleHit.rule_id)
    )
    return StoredShipment(ship, score, [(r, int(v), s) for r, v, s in rows])


def shipment_out(s: StoredShipment) -> dict[str, Any]:
    extra = s.score.explanation or {}
    return {
        "shipment_id": s.shipment.shipment_id,
        "office_code": s.shipment.office_code,
        "declared_at": s.shipment.declared_at,
        "content_hash": s.shipment.content_hash,
        "score_id": s.score.id,
        "probability": s.score.probability,
        "priority": s.score.priority,
        "lane": s.score.lane,
        "must_inspect": bool(extra.get("must_inspect", False)),
        "rule_hits": [{"rule_id": r, "rule_version": v, "severity": sev} for r, v, sev in s.hits],
        "watchlist": {
            "best_score": float(extra.get("watchlist_score", 0.0)),
            "exact": bool(extra.get("watchlist_exact", False)),
            "match": extra.get("watchlist_match"),
        },
        "model_version": s.score.model_version,
        "feature_set_version": s.score.feature_set_version,
        "scored_at": s.score.scored_at,
    }


def _frames(prepared: Sequence[Prepared]) -> tuple[pl.DataFrame, pl.DataFrame]:
    ships = frame_of([p.record for p in prepared], SHIPMENTS.polars_schema)
    items = frame_of([i for p in prepared for i in p.items], ITEMS.polars_schema)
    return ships, items


def _store_score(session: Session, s: Scored, actor: str, *, kind: str = "score") -> m.Score:
    score = _score_row(s)
    session.add(score)
    session.flush()
    _record_score(session, s, score, actor, kind)
    return score


def _score_row(s: Scored) -> m.Score:
    extra = {
        "reasons": s.explanation,
        "context": jsonable(s.context),
        "must_inspect": s.must_inspect,
        "watchlist_score": s.watchlist_score,
        "watchlist_exact": s.watchlist_exact,
        "watchlist_match": s.watchlist_match,
    }
    return m.Score(
        shipment_id=s.shipment_id,
        probability=s.probability,
        priority=s.priority,
        lane=s.lane,
        model_version=s.model_version,
        feature_set_version=s.feature_set_version,
        feature_vector=jsonable(s.features),
        explanation=jsonable(extra),
        scored_at=now(),
    )


def _record_score(session: Session, s: Scored, score: m.Score, actor: str, kind: str) -> None:
    """The rule hits and the audit entry of a score written (flushed: it has its id)."""
    for hit in s.rule_hits:
        session.add(
            m.RuleHit(
                shipment_id=s.shipment_id,
                score_id=score.id,
                rule_id=hit.rule_id,
                rule_version=hit.rule_version,
            )
        )
    audit(
        session,
        kind,
        actor,
        {
            "shipment_id": s.shipment_id,
            "score_id": score.id,
            "probability": s.probability,
            "priority": s.priority,
            "lane": s.lane,
            "model_version": s.model_version,
            "feature_set_version": s.feature_set_version,
            "rule_hits": [f"{h.rule_id}@v{h.rule_version}" for h in s.rule_hits],
            "watchlist_exact": s.watchlist_exact,
            # the listed entry that produced the exact or best match (None: none)
            "watchlist_match": _audited_match(s.watchlist_match),
            "feature_vector_sha256": feature_vector_hash(score.feature_vector),
        },
        entity="shipment",
        entity_id=s.shipment_id,
    )


def _audited_match(match: dict[str, Any] | None) -> dict[str, Any] | None:
    """The watchlist match of a score as its audit entry records it: the entry id,
    the party role, by name or document, the similarity and the linked traveller
    record (no personal data of the party)."""
    if not match:
        return None
    keys = ("entry_id", "party", "by", "exact", "traveller_record_id", "weak_reason")
    return {k: match.get(k) for k in keys}


class Conflict(NamedTuple):
    """A record ingest refuses although it is valid: its id (or a goods line's id) is
    taken. `position`: the record's position in the records given; `earlier`: the
    position of the earlier record of the same request it repeats, if that is why."""

    position: int
    record_id: str
    reason: str
    field: str = "shipment_id"
    earlier: int | None = None
    status: int = 409  # 422: the record does not fit the served model (its `extras`)


def _history_match(raw: dict[str, Any], digest: str, prepare: Any) -> bool:
    """Whether a record of the loaded history has the content `digest` (as the API
    would hash it when submitted)."""
    try:
        return bool(prepare(jsonable(raw)) == digest)
    except (ValidationError, ValueError):
        return False


def _in_history(record_id: str, same: bool, what: str) -> str:
    if same:
        return (
            f"{what} {record_id!r} is already in the loaded history (validated/) with the "
            "same content; it is known, so it is not stored or scored again"
        )
    return f"{what} {record_id!r} is already in the loaded history (validated/) with other content"


def ingest_shipments(
    session: Session,
    services: Services,
    prepared: Sequence[Prepared],
    actor: str,
    *,
    retry: bool = True,
) -> tuple[list[StoredShipment], list[StoredShipment], list[Conflict]]:
    """Score and store shipments. Returns (stored, unchanged, conflicts).

    Idempotent: the same content again is `unchanged` (also a repeat within the
    request, answered with the first's result); other content under an id that is
    stored, in the loaded history or earlier in the request is a conflict, and so is
    a goods line whose item_id belongs to another shipment. A shipment of the loaded
    history (validated/) is never replaced: the same content again is a conflict
    saying it is known (it has no stored score to return). When another request
    stores one of the ids at the same time, the ingest is tried once more, which then
    answers those as stored ones."""
    unchanged: list[StoredShipment] = []
    conflicts: list[Conflict] = []
    fresh: list[Prepared] = []
    first: dict[str, tuple[int, str]] = {}  # id -> (position, content hash) of its first row
    repeats: list[tuple[int, str]] = []  # same content as an earlier row of the request
    ids = list({str(p.record["shipment_id"]) for p in prepared})
    known = {  # one query for the stored ones, not one per shipment
        row.shipment_id: row
        for start in range(0, len(ids), 1000)
        for row in session.scalars(
            select(m.Shipment).where(m.Shipment.shipment_id.in_(ids[start : start + 1000]))
        )
    }
    held = services.history.held_shipments(i for i in ids if i not in known)
    owners = services.history.item_owners(
        str(line["item_id"]) for p in prepared for line in p.items
    )
    claimed: dict[str, str] = {}  # item_id -> shipment, of the fresh rows of this request
    for i, p in enumerate(prepared):
        sid = str(p.record["shipment_id"])
        if sid in first:
            j, digest = first[sid]
            if digest != p.content_hash:
                reason = f"{sid!r} repeats an earlier record of this request with other content"
                conflicts.append(Conflict(i, sid, reason, earlier=j))
            else:
                repeats.append((i, sid))
            continue
        first[sid] = (i, p.content_hash)
        old = known.get(sid)
        if old is not None:
            if old.content_hash == p.content_hash:
                same = load_shipment(session, sid)
                if same is not None:
                    unchanged.append(same)
            else:
                conflicts.append(Conflict(i, sid, f"shipment {sid!r} is stored with other content"))
            continue
        if sid in held:
            same_content = _history_match(
                held[sid],
                p.content_hash,
                lambda raw: prepare_shipment(raw, stored=True).content_hash,
            )
            conflicts.append(Conflict(i, sid, _in_history(sid, same_content, "shipment")))
            continue
        if p.record.get("extras"):
            problems = check_extras(services.holder.handle, p.record["extras"])
            if problems:
                field, reason = problems[0]
                conflicts.append(Conflict(i, sid, reason, field=field, status=422))
                continue
        taken = _taken_item(p, owners, claimed)
        if taken is not None:
            conflicts.append(taken._replace(position=i))
            continue
        claimed.update((str(line["item_id"]), sid) for line in p.items)
        fresh.append(p)
    stored: list[StoredShipment] = []
    if fresh:
        try:
            stored = _store_shipments(session, services, fresh, actor)
        except IntegrityError:
            session.rollback()
            if not retry:
                raise ServiceError(
                    409, "a shipment with this id was stored concurrently; retry"
                ) from None
            # Another request stored some of these ids meanwhile: answer as it stands now.
            return ingest_shipments(session, services, prepared, actor, retry=False)
    by_id = {s.shipment.shipment_id: s for s in [*stored, *unchanged]}
    refused = {c.record_id: c for c in conflicts if c.earlier is None}
    for i, sid in repeats:
        if sid in by_id:
            unchanged.append(by_id[sid])
        elif sid in refused:
            conflicts.append(refused[sid]._replace(position=i, earlier=first[sid][0]))
    conflicts.sort(key=lambda c: c.position)
    return stored, unchanged, conflicts


def _taken_item(p: Prepared, owners: dict[str, str], claimed: dict[str, str]) -> Conflict | None:
    """A conflict when a goods line's item_id belongs to another shipment (of the
    history, or an earlier one of the request)."""
    sid = str(p.record["shipment_id"])
    for k, line in enumerate(p.submitted_items()):
        item_id = str(line["item_id"])
        owner = owners.get(item_id) or claimed.get(item_id)
        if owner is not None and owner != sid:
            return Conflict(
                0,
                sid,
                f"item_id {item_id!r} is a goods line of shipment {owner!r}",
                field=f"items.{k}.item_id",
            )
    return None


def _store_shipments(
    session: Session, services: Services, fresh: Sequence[Prepared], actor: str
) -> list[StoredShipment]:
    """Score the new shipments and write them with their lines, scores and audit
    entries in one transaction; the history learns them after the commit.
    Raises IntegrityError (rolled back by the caller) when an id was taken meanwhile."""
    handle = services.holder.handle
    try:
        ships, items = _frames(fresh)
    except (pl.exceptions.PolarsError, OverflowError) as exc:
        # The contract's bounds are meant to make this impossible; never store half.
        raise ServiceError(422, f"the records cannot be stored: {exc}") from None
    rules = active_rules(session, services)
    try:
        with services.history.scoring() as state:
            scored = score_shipments(ships, items, state, handle, rules, extras=_extras_of(fresh))
    except ModelInputError as exc:
        raise ServiceError(503, str(exc)) from None
    by_id = {p.record["shipment_id"]: p for p in fresh}
    received = now()
    rows: dict[str, m.Shipment] = {}
    for s in scored:
        p = by_id[s.shipment_id]
        declared = p.record["declared_at"]
        rows[s.shipment_id] = m.Shipment(
            shipment_id=s.shipment_id,
            office_code=str(p.record["office_code"]),
            # in UTC, as the database gives it back
            declared_at=declared.astimezone(dt.UTC) if declared.tzinfo else declared,
            payload=_stored_payload(p),
            content_hash=p.content_hash,
            received_at=received,
        )
        session.add(rows[s.shipment_id])
    session.flush()  # no ORM relationships: shipments before their lines and scores
    # Lines and scores (both refer to the shipment only) in one flush, which gives the
    # scores their ids; then their rule hits and audit entries.
    for s in scored:
        p = by_id[s.shipment_id]
        for line in p.items:
            session.add(
                m.Item(shipment_id=s.shipment_id, line_no=line["line_no"], payload=jsonable(line))
            )
    scores = {s.shipment_id: _score_row(s) for s in scored}
    session.add_all(list(scores.values()))
    session.flush()
    for s in scored:
        _record_score(session, s, scores[s.shipment_id], actor, "score")
    session.commit()
    services.history.add_shipments(ships, items)
    # What `load_shipment` would read back, from the rows just written.
    return [
        StoredShipment(
            rows[s.shipment_id],
            scores[s.shipment_id],
            sorted(
                ((h.rule_id, h.rule_version, h.severity) for h in s.rule_hits), key=lambda h: h[0]
            ),
        )
        for s in scored
    ]


def _extras_of(prepared: Sequence[Prepared]) -> dict[str, dict[str, Any]]:
    """Shipment id -> the export columns (`extras`) its declaration brought."""
    return {
        str(p.record["shipment_id"]): dict(p.record["extras"])
        for p in prepared
        if p.record.get("extras")
    }


def visible_shipment(session: Session, shipment_id: str) -> StoredShipment:
    stored = load_shipment(session, shipment_id)
    if stored is None:
        raise ServiceError(404, f"no scored shipment {shipment_id!r}")
    return stored


def explanation(services: Services, stored: StoredShipment) -> dict[str, Any]:
    """The reasons (texts rendered with today's wording from the stored values), and
    every feature's contribution with the base value and the raw score (log-odds), so
    that base value + contributions = raw score = logit(probability) can be checked."""
    from features.registry import refresh_reason_texts
    from models.explain import contributions

    extra = stored.score.explanation or {}
    context = dict(extra.get("context") or {})
    stored_reasons = extra.get("reasons")
    on_demand = stored_reasons is None
    reasons: list[dict[str, Any]] = list(stored_reasons or [])
    vector = stored.score.feature_vector
    model: ModelHandle | None
    try:
        model = services.holder.version(stored.score.model_version)
    except Exception:
        if on_demand:  # nothing to explain with
            raise
        log.warning("model version %s cannot be loaded", stored.score.model_version)
        model = None
    # The contributions once: the reasons computed on demand and the whole list below.
    contrib = None if model is None else contributions(model.booster, model.matrix([vector]))
    if on_demand:
        assert model is not None
        reasons = jsonable(
            explain_vector(model, vector, context, stored.shipment.shipment_id, contrib=contrib)
        )
    out = shipment_out(stored)
    return {
        "shipment_id": out["shipment_id"],
        "score_id": out["score_id"],
        "model_version": out["model_version"],
        "feature_set_version": out["feature_set_version"],
        "computed_on_demand": on_demand,
        "reasons": refresh_reason_texts(reasons, context),
        "rule_hits": out["rule_hits"],
        "watchlist": out["watchlist"],
        **_all_contributions(model, contrib, vector),
    }


def _all_contributions(
    model: ModelHandle | None, contrib: Any, vector: dict[str, float | None]
) -> dict[str, Any]:
    """Base value, raw score and the contribution of every feature (largest first) for
    the stored vector; nulls when its model version cannot be loaded."""
    if model is None or contrib is None:
        return {"base_value": None, "raw_score": None, "contributions": None}
    row = contrib[0]
    names = list(model.names)
    order = sorted(range(len(names)), key=lambda i: (-abs(float(row[i])), i))
    return {
        "base_value": float(row[-1]),
        "raw_score": float(row.sum()),
        "contributions": [
            {"feature": names[i], "value": vector.get(names[i]), "log_odds": float(row[i])}
            for i in order
        ],
    }


def replay(
    session: Session, holder: ModelHolder, shipment_id: str, score_id: int | None = None
) -> dict[str, Any]:
    """Recompute a stored score (the shipment's latest, or `score_id`) from its stored
    vector and model version, and compare the stored row with its audited entry
    (probability, lane, model, feature-vector hash): `matches` only when both agree;
    `differences` says what differs from the audited entry."""
    if score_id is None:
        stored = load_shipment(session, shipment_id)
        if stored is None:
            raise ServiceError(404, f"no scored shipment {shipment_id!r}")
        score = stored.score
    else:
        found = session.get(m.Score, score_id)
        if found is None or found.shipment_id != shipment_id:
            raise ServiceError(404, f"no score {score_id} of shipment {shipment_id!r}")
        score = found
    model: ModelHandle = holder.version(score.model_version)
    recomputed = float(model.predict_vectors([score.feature_vector])[0])
    same = math.isclose(score.probability, recomputed, rel_tol=1e-9, abs_tol=1e-12)
    entry = _score_entry(session, shipment_id, score.id)
    if entry is None:
        differences = ["the score has no audit entry"]
    else:
        differences = _score_differences(_score_facts(score), entry.payload)
    return {
        "shipment_id": shipment_id,
        "score_id": score.id,
        "model_version": score.model_version,
        "stored": score.probability,
        "recomputed": recomputed,
        "recomputed_matches": same,
        "audit_seq": entry.seq if entry is not None else None,
        "differences": differences,
        "matches": same and not differences,
    }


def replay_all(session: Session, holder: ModelHolder, shipment_id: str) -> list[dict[str, Any]]:
    """`replay` of every stored score of the shipment, oldest first."""
    ids = list(
        session.scalars(
            select(m.Score.id).where(m.Score.shipment_id == shipment_id).order_by(m.Score.id)
        )
    )
    if not ids:
        raise ServiceError(404, f"no scored shipment {shipment_id!r}")
    return [replay(session, holder, shipment_id, i) for i in ids]


def _score_entry(session: Session, shipment_id: str, score_id: int) -> m.AuditLog | None:
    """The audit entry that recorded score `score_id` (None when there is none)."""
    rows = session.scalars(
        select(m.AuditLog)
        .where(
            m.AuditLog.entity == "shipment",
            m.AuditLog.entity_id == shipment_id,
            m.AuditLog.kind.in_(("score", "rescreen", "rule_apply")),
        )
        .order_by(m.AuditLog.seq)
    )
    return next((r for r in rows if r.payload.get("score_id") == score_id), None)


# --------------------------------------------------------------------------- travellers


def prepare_traveller(raw: Any, *, stored: bool = False) -> tuple[dict[str, Any], str]:
    """Validate one traveller record (raises ValidationError); `stored`: as for
    `prepare_shipment`."""
    parsed = _validate_json(traveller_in_model(), raw, stored=stored)
    data = parsed.model_dump()
    return data, content_hash(data)


def ingest_travellers(
    session: Session,
    services: Services,
    records: Sequence[tuple[dict[str, Any], str]],
    actor: str,
    *,
    retry: bool = True,
) -> tuple[list[str], list[str], list[Conflict]]:
    """Store traveller records. Returns (stored, unchanged, conflicts): the same
    content again (also a repeat within the request) is unchanged; other content
    under a stored id, an id of the loaded history or an earlier record of the
    request is a conflict. Everything that can fail runs before the commit."""
    stored: list[str] = []
    unchanged: list[str] = []
    conflicts: list[Conflict] = []
    fresh: list[tuple[dict[str, Any], str]] = []
    first: dict[str, tuple[int, str]] = {}
    repeats: list[tuple[int, str]] = []
    ids = list({str(data["traveller_record_id"]) for data, _digest in records})
    known = {
        row.traveller_record_id: row
        for start in range(0, len(ids), 1000)
        for row in session.scalars(
            select(m.Traveller).where(
                m.Traveller.traveller_record_id.in_(ids[start : start + 1000])
            )
        )
    }
    held = services.history.held_travellers(i for i in ids if i not in known)
    field_name = "traveller_record_id"
    for i, (data, digest) in enumerate(records):
        rid = str(data["traveller_record_id"])
        if rid in first:
            j, earlier = first[rid]
            if earlier != digest:
                reason = f"{rid!r} repeats an earlier record of this request with other content"
                conflicts.append(Conflict(i, rid, reason, field_name, j))
            else:
                repeats.append((i, rid))
            continue
        first[rid] = (i, digest)
        old = known.get(rid)
        if old is not None:
            if old.content_hash == digest:
                unchanged.append(rid)
            else:
                reason = f"record {rid!r} is stored with other content"
                conflicts.append(Conflict(i, rid, reason, field_name))
        elif rid in held:
            same = _history_match(
                held[rid], digest, lambda raw: prepare_traveller(raw, stored=True)[1]
            )
            conflicts.append(Conflict(i, rid, _in_history(rid, same, "record"), field_name))
        else:
            fresh.append((data, digest))
    frame = None
    if fresh:
        try:  # built before anything is written: a record that cannot be held stores nothing
            frame = frame_of([data for data, _digest in fresh], TRAVELLERS.polars_schema)
        except (pl.exceptions.PolarsError, OverflowError) as exc:
            raise ServiceError(422, f"the records cannot be stored: {exc}") from None
        for data, digest in fresh:
            rid = str(data["traveller_record_id"])
            session.add(
                m.Traveller(traveller_record_id=rid, payload=jsonable(data), content_hash=digest)
            )
            stored.append(rid)
        try:
            session.flush()
            audit(session, "traveller_ingest", actor, {"records": stored}, entity="traveller")
            session.commit()
        except IntegrityError:
            session.rollback()
            if not retry:
                raise ServiceError(
                    409, "a record with this id was stored concurrently; retry"
                ) from None
            return ingest_travellers(session, services, records, actor, retry=False)
        services.history.add_travellers(frame)
    done = set(stored) | set(unchanged)
    refused = {c.record_id: c for c in conflicts if c.earlier is None}
    for i, rid in repeats:
        if rid in done:
            unchanged.append(rid)
        elif rid in refused:
            conflicts.append(refused[rid]._replace(position=i, earlier=first[rid][0]))
    conflicts.sort(key=lambda c: c.position)
    return stored, unchanged, conflicts


def masked(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (MASK if k in PERSONAL_FIELDS and v is not None else v) for k, v in record.items()}


def view_traveller(
    session: Session,
    record_id: str,
    viewer: str,
    purpose: str | None,
    *,
    shipment_id: str | None = None,
    history: HistoryStore | None = None,
) -> tuple[m.Traveller, bool]:
    """The record; unmasked (and logged with its purpose, audited) when a purpose is
    given. `shipment_id`: the shipment the record was unmasked for (the caller has
    checked the viewer may see it and that the record is linked to it); recorded.
    A record stored by the API, else (with `history`) one of the loaded history
    (validated/, which the traveller features read: returned unsaved, as a row)."""
    row = session.get(m.Traveller, record_id)
    if row is None and history is not None:
        row = _history_traveller(session, history, record_id)
    if row is None:
        raise ServiceError(404, f"no traveller record {record_id!r}")
    if purpose is None:
        return row, True
    session.add(
        m.PersonalDataView(
            viewer=viewer,
            subject_type="traveller",
            subject_id=record_id,
            fields={"fields": list(PERSONAL_FIELDS)},
            purpose=purpose,
        )
    )
    audit(
        session,
        "personal_data_view",
        viewer,
        {
            "subject_type": "traveller",
            "fields": list(PERSONAL_FIELDS),
            "purpose": purpose,
            "shipment_id": shipment_id,
        },
        entity="traveller",
        entity_id=record_id,
    )
    session.commit()
    return row, False


def _held_traveller(held: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A traveller record of the loaded history as the API stores one: its payload
    and content hash (as if submitted; a record the contract now refuses: as held)."""
    raw = jsonable(held)
    try:
        data, digest = prepare_traveller(raw, stored=True)
    except (ValidationError, ValueError):
        return dict(raw), content_hash(raw)
    return dict(jsonable(data)), digest


def traveller_payload(held: dict[str, Any]) -> dict[str, Any]:
    """A traveller record of the loaded history as the API stores one (its payload)."""
    return _held_traveller(held)[0]


def purged_before(session: Session) -> dt.datetime | None:
    """The latest departure cutoff of the traveller purges recorded (None: none). A
    running server keeps the records it loaded until it restarts (the features read
    them); those that departed before it were purged, and are not shown."""
    cutoffs = [
        _utc(dt.datetime.fromisoformat(str(p["departed_before"])))
        for p in session.scalars(
            select(m.AuditLog.payload).where(m.AuditLog.kind == "traveller_purge")
        )
        if p.get("departed_before")
    ]
    return max(cutoffs, default=None)


def was_purged(payload: dict[str, Any], cutoff: dt.datetime | None) -> bool:
    """Whether a traveller record (payload) departed before a purge's `cutoff`."""
    value = payload.get("departure_at")
    if cutoff is None or not isinstance(value, str):
        return False
    return _utc(dt.datetime.fromisoformat(value)) < cutoff


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _history_traveller(
    session: Session, history: HistoryStore, record_id: str
) -> m.Traveller | None:
    """The record of the loaded history with this id, as an unsaved row (None: none,
    or purged since it was loaded)."""
    held = history.held_travellers([record_id]).get(record_id)
    if held is None:
        return None
    payload, digest = _held_traveller(held)
    if was_purged(payload, purged_before(session)):
        return None
    return m.Traveller(traveller_record_id=record_id, payload=payload, content_hash=digest)


def shipment_ingester(session: Session, shipment_id: str) -> str | None:
    """Who ingested the shipment: the actor of its first score's audit entry (written
    with the shipment, in the same transaction); None when none is recorded."""
    return session.scalars(
        select(m.AuditLog.actor)
        .where(
            m.AuditLog.entity == "shipment",
            m.AuditLog.entity_id == shipment_id,
            m.AuditLog.kind == "score",
        )
        .order_by(m.AuditLog.seq)
        .limit(1)
    ).first()


def self_ingested_link(session: Session, viewer: str, shipment_id: str) -> str | None:
    """Why the shipment cannot be the link through which `viewer` unmasks a traveller
    record (an officer's only way to): they ingested it themselves, and could have
    made it up to name the person. None when it qualifies."""
    if shipment_ingester(session, shipment_id) != viewer:
        return None
    return (
        f"shipment {shipment_id!r} was ingested by you ({viewer}): a shipment one "
        "ingested oneself cannot be the link for unmasking a traveller record; a "
        "shipment declared by someone else is needed"
    )


# --------------------------------------------------------------------------- queues


# Placing shipments in a queue is the engine's act, whoever's read triggered it.
QUEUE_ACTOR = "system:queue"
NOT_A_PERSON = "decisions are made by a named, signed-in person"


def _age(ref: m.Referral, at: dt.datetime, closed_at: dt.datetime | None = None) -> float:
    """Seconds from creation to the decision (inspection or waiver), or to the closure
    of an entry closed without one (displaced), or to `at` while awaiting a decision."""
    end = ref.decided_at or (closed_at if ref.status == "closed" else None) or at
    return max((end - ref.created_at).total_seconds(), 0.0)


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
) -> dict[str, Any]:
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
        "age_seconds": _age(ref, at or now(), closing.get("closed_at")),
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
    rows = session.scalars(
        select(m.Outcome)
        .where(m.Outcome.referral_id.in_(ids))
        .order_by(m.Outcome.recorded_at, m.Outcome.outcome_id)
    )
    return {
        int(o.referral_id): {
            "outcome_id": o.outcome_id,
            "finding": o.finding,
            "category": o.category,
            "quantity": o.quantity,
            "unit": o.unit,
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


def referrals_out(session: Session, refs: Sequence[m.Referral]) -> list[dict[str, Any]]:
    """Referrals as the API shows them, with the shipment's declaration day
    (`declared_on`: earlier than `queue_date` for a forced shipment of an earlier day
    carried into this queue). A displaced entry is never shown over capacity (entries
    displaced before that was fixed still carry the flag in the database)."""
    lanes = lanes_of(session, refs)
    outcomes = _outcomes_of(session, refs)
    closings = _closings_of(session, refs)
    days = _declared_days(session, refs)
    at = now()
    outs = []
    for r in refs:
        out = referral_out(
            r,
            lanes.get(r.score_id or -1, policy.lane(r.priority, r.priority >= policy.TOP_BAND)),
            at,
            outcome=outcomes.get(r.id),
            closing=closings.get(r.id),
        )
        out["over_capacity"] = bool(r.over_capacity) and not displaced(r)
        out["declared_on"] = days.get(r.shipment_id)
        outs.append(out)
    return outs


def _declared_days(session: Session, refs: Iterable[m.Referral]) -> dict[str, dt.date]:
    """The UTC day of each referred shipment's declaration."""
    ids = {r.shipment_id for r in refs}
    if not ids:
        return {}
    rows = session.execute(
        select(m.Shipment.shipment_id, m.Shipment.declared_at).where(
            m.Shipment.shipment_id.in_(ids)
        )
    )
    return {str(sid): _utc_day(at) for sid, at in rows}


def _utc_day(at: dt.datetime) -> dt.date:
    return (at if at.tzinfo is None else at.astimezone(dt.UTC)).date()


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
    session: Session, office: str, day: dt.date, since: dt.datetime | None = None
) -> list[m.Score]:
    """The latest score of each shipment of the office declared that day (scored
    after `since`, when given)."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    latest = (
        select(m.Score.shipment_id, func.max(m.Score.id).label("sid"))
        .join(m.Shipment, m.Shipment.shipment_id == m.Score.shipment_id)
        .where(
            m.Shipment.office_code == office,
            m.Shipment.declared_at >= start,
            m.Shipment.declared_at < start + dt.timedelta(days=1),
        )
        .group_by(m.Score.shipment_id)
        .subquery()
    )
    query = select(m.Score).join(latest, m.Score.id == latest.c.sid)
    if since is not None:
        query = query.where(m.Score.scored_at > since)
    return list(session.scalars(query.order_by(m.Score.id)))


def _stray_forced(session: Session, office: str, day: dt.date) -> list[tuple[m.Score, dt.date]]:
    """Forced shipments of the office declared before `day` (latest score a
    must-inspect rule or an exact watchlist hit) that no queue holds: no referral
    anywhere but displaced ones, none in `day`'s queue. With their declaration day.
    A late submission, a declaration past midnight UTC or a rescreen can make such a
    shipment after its own day's queue was last looked at; today's queue takes it in."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    latest = (
        select(m.Score.shipment_id, func.max(m.Score.id).label("sid"))
        .join(m.Shipment, m.Shipment.shipment_id == m.Score.shipment_id)
        .where(m.Shipment.office_code == office, m.Shipment.declared_at < start)
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
    return [(s, _utc_day(at)) for s, at in rows]


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
    latest score (`_refresh_referral`). Today's queue (UTC) also takes in the forced
    shipments of earlier days that no queue holds (`_stray_forced`), as forced
    entries of today (over capacity if full).
    Placement is the engine's act: it is audited as `QUEUE_ACTOR`, never as `reader`
    (whoever's read found the new shipments; an auditor's read writes nothing in
    their name). Returns the entries and whether any was placed or changed by this
    call."""
    del reader
    rows = _queue_rows(session, office, day)
    if not any(_queue_work(session, office, day, rows)):
        return rows, False
    write_lock(session, "queue")
    rows = _queue_rows(session, office, day)
    stale, fresh, strays = _queue_work(session, office, day, rows)
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
    session: Session, office: str, day: dt.date, rows: Sequence[m.Referral]
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
        if r.shipment_id in latest and _needs_refresh(r, latest[r.shipment_id])
    ]
    fresh = [s for s in _day_scores(session, office, day, since) if s.shipment_id not in referred]
    held = _held_elsewhere(session, office, day, [s.shipment_id for s in fresh])
    fresh = [s for s in fresh if s.shipment_id not in held]
    strays = _stray_forced(session, office, day) if day == now().date() else []
    return stale, fresh, strays


_AWAITING = tuple(str(st) for st in policy.AWAITING_DECISION)


def _needs_refresh(ref: m.Referral, score: m.Score) -> bool:
    """The entry awaits a decision and its shipment was scored again since its
    placement, or it was displaced and its shipment is now forced (from today's
    queue on: an earlier day's displaced shipment goes to today's queue instead)."""
    if score.id == ref.score_id:
        return False
    if ref.status in _AWAITING:
        return True
    return displaced(ref) and score.priority >= policy.TOP_BAND and ref.queue_date >= now().date()


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
    if not _needs_refresh(ref, score):
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


def left_out(session: Session, office: str, day: dt.date) -> list[dict[str, Any]]:
    """Red and yellow shipments of the office's day without a live entry in its queue:
    never placed for want of capacity, or displaced by a later arrival. Best first.
    A shipment another queue holds (a forced one taken into a later day's) is not
    left out."""
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
        for s in _day_scores(session, office, day)
        if s.lane in ("red", "yellow") and s.shipment_id not in live
    ]
    held = _held_elsewhere(session, office, day, [str(o["shipment_id"]) for o in out])
    out = [o for o in out if o["shipment_id"] not in held]
    return sorted(out, key=lambda o: (-o["priority"], o["shipment_id"]))


def overdue_referrals(session: Session, services: Services, office: str) -> list[m.Referral]:
    """Referrals of the office still awaiting a decision (open or claimed) past the
    overdue limit, oldest first; an inspected, waived or closed one is never overdue.
    A forced entry (a must-inspect rule or an exact watchlist hit, by its current
    priority) of a queue whose day is over (UTC) is overdue at once, however recently
    it was placed: a must-inspect shipment of a past day still waiting is late (it
    may have been placed only when somebody opened that day's queue again)."""
    at = now()
    limit = at - dt.timedelta(hours=services.queue.overdue_hours)
    return list(
        session.scalars(
            select(m.Referral)
            .where(
                m.Referral.office_code == office,
                m.Referral.status.in_(_AWAITING),
                (m.Referral.created_at < limit)
                | ((m.Referral.priority >= policy.TOP_BAND) & (m.Referral.queue_date < at.date())),
            )
            .order_by(m.Referral.created_at, m.Referral.id)
        )
    )


# --------------------------------------------------------------------------- decisions


def _domain(ref: m.Referral) -> policy.Referral:
    last = max(t for t in (ref.created_at, ref.claimed_at, ref.decided_at) if t is not None)
    status = policy.Status(ref.status)
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
    )


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
    _decider(session, username)
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.record_outcome(_domain(ref), _officer(username, office, ref), at, outcome)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
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


def _outcome_values(row: m.Outcome) -> dict[str, Any]:
    """What an officer records of an outcome (what a correction may change)."""
    return {name: getattr(row, name) for name in OUTCOME_FIELDS}


def _outcome_problem(outcome: policy.InspectionOutcome) -> ServiceError | None:
    """A corrected outcome the rules refuse, as a 422 naming its field."""
    try:
        policy.check_outcome(outcome)
    except policy.TransitionError as exc:
        text = str(exc)
        field = "unit" if "unit" in text else "quantity" if "quantity" in text else "category"
        return ServiceError(422, text, field)
    return None


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
    quantity, unit, notes); a waiver recorded by mistake, when the goods were
    inspected after all, becomes this outcome (a new one, inspected now). The
    correction is audited as an `outcome` entry with `action: "correct"`, who, why,
    and the values before and after (the original entry stays in the chain); the
    label file under raw/outcomes/ is rewritten, so that the next `caravan
    validate` / `train` read the corrected label once. The feature history is
    brought up to date (see `_history_after_correction`)."""
    _decider(session, username)
    if not policy.has_visible_text(reason):
        raise ServiceError(
            422, "a correction needs a reason (it has no visible character)", "reason"
        )
    problem = _outcome_problem(outcome)
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
    }
    if row is not None and _outcome_values(row) == after:
        raise ServiceError(
            409,
            f"nothing to correct: outcome {row.outcome_id} of referral {ref.id} already "
            "holds these values",
        )
    at = now()
    try:
        policy.correct_outcome(
            _domain(ref), _officer(username, office, ref), at, outcome, reason, override=override
        )
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
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
            **after,
        )
        session.add(row)
        if ref.status == "waived":
            ref.status = "inspected"
        ref.waiver_reason = None
    else:
        before = {"decision": "outcome", **_outcome_values(row)}
        for name, value in after.items():
            setattr(row, name, value)
    session.flush()
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


def outcome_frame(rows: Sequence[m.Outcome]) -> pl.DataFrame:
    """Outcomes in the OUTCOMES contract (what `caravan validate` reads)."""
    return frame_of(
        [
            {
                "outcome_id": r.outcome_id,
                "shipment_id": r.shipment_id,
                "inspected_at": r.inspected_at,
                "officer_id": r.recorded_by,
                "selection_method": r.selection_method,
                "selection_rule": None,
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
            write_parquet(outcome_frame([row]), last)
    return last


# --------------------------------------------------------------------------- watchlists


def load_watchlist(
    session: Session,
    services: Services,
    entries: pl.DataFrame,
    actor: str,
    list_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Replace the entries of the named list(s) (default: the lists in `entries`) in
    the database, the operational source of truth, with `entries`; audit; write the
    same entries to validated/watchlist.parquet (other lists in the file kept); and,
    when anything changed, screen with them and rescreen stored shipments.

    A load without entries is refused (422): an empty export must not empty a
    sanctions list by accident."""
    names = sorted(set(list_names) if list_names else set(entries["list_name"].to_list()))
    if entries.is_empty():
        shown = ", ".join(names) or "none named"
        raise ServiceError(422, f"no entries: the file lists none; list {shown} unchanged", "file")
    strays = sorted(set(entries["list_name"].to_list()) - set(names))
    if strays:
        raise ServiceError(422, f"entries of list(s) not loaded here: {', '.join(strays)}", "file")
    entries = entries.select(WATCHLIST.polars_schema.names())
    counts = _store_watchlist(session, names, entries, actor)
    session.commit()
    write_watchlist_file(session, services, names)
    screened = rescored = 0
    if any(counts.values()) or not _screening_with(services, names, entries):
        services.history.replace_watchlist(names, entries)
        screened, rescored = rescreen(session, services, actor)
    return {
        "list_name": ",".join(names),
        "entries": entries.height,
        **counts,
        "rescreened": screened,
        "rescored": rescored,
    }


def _store_watchlist(
    session: Session, names: Sequence[str], entries: pl.DataFrame, actor: str
) -> dict[str, int]:
    """Make `entries` the active entries of the lists `names` in the database, with
    the audit entry (the caller commits). Returns the counts added/removed/changed."""
    rows = entries.to_dicts()
    current = {
        e.entry_id: e
        for e in session.scalars(
            select(m.WatchlistEntry).where(m.WatchlistEntry.list_name.in_(names))
        )
    }
    added: list[tuple[str, str]] = []
    changed: list[tuple[str, str]] = []
    new_ids = set()
    for row in rows:
        data = jsonable(row)
        digest = content_hash(data)
        new_ids.add(row["entry_id"])
        old = current.get(row["entry_id"])
        if old is None:
            session.add(
                m.WatchlistEntry(
                    entry_id=row["entry_id"],
                    list_name=row["list_name"],
                    entity_type=str(row["entity_type"]),
                    name=row["name"],
                    payload=data,
                    content_hash=digest,
                    active=True,
                )
            )
            added.append((row["entry_id"], row["name"]))
        elif old.content_hash != digest or not old.active:
            old.payload, old.content_hash, old.active, old.name = data, digest, True, row["name"]
            old.loaded_at = now()
            changed.append((row["entry_id"], row["name"]))
    removed: list[tuple[str, str]] = []
    for entry_id, old in current.items():
        if entry_id not in new_ids and old.active:
            old.active = False
            removed.append((entry_id, old.name))
    audit(
        session,
        "watchlist_change",
        actor,
        {
            "lists": list(names),
            "entries": len(rows),
            "added": len(added),
            "changed": len(changed),
            "removed": len(removed),
            **_entry_changes(added=added, changed=changed, removed=removed),
        },
        entity="watchlist",
        entity_id=",".join(names),
    )
    return {"added": len(added), "removed": len(removed), "changed": len(changed)}


# A watchlist change's audit entry names the entries it touched up to this many;
# past it (a whole list loaded anew) it keeps every id but not the names, which the
# `watchlist_entries` table holds under the same ids.
AUDITED_ENTRY_NAMES = 200


def _entry_changes(**changes: list[tuple[str, str]]) -> dict[str, Any]:
    """The entries a watchlist change added, changed and removed, for its audit
    entry: `<kind>_ids` (every id, sorted) and `names` (id -> listed name, for
    the first `AUDITED_ENTRY_NAMES` ids in that order; `names_complete` says
    whether all are there)."""
    out: dict[str, Any] = {}
    named: dict[str, str] = {}
    for kind, entries in changes.items():
        ordered = sorted(entries)
        out[f"{kind}_ids"] = [entry_id for entry_id, _ in ordered]
        for entry_id, name in ordered:
            if len(named) < AUDITED_ENTRY_NAMES:
                named[entry_id] = name
    total = sum(len(e) for e in changes.values())
    return {**out, "names": named, "names_complete": len(named) == total}


def _screening_with(services: Services, names: Sequence[str], entries: pl.DataFrame) -> bool:
    """Whether the service already screens with exactly `entries` as the lists `names`."""
    held = services.history.snapshot().watchlist
    if held is None:
        return entries.is_empty()
    mine = held.filter(pl.col("list_name").is_in(list(names))).select(entries.columns)
    return mine.sort("entry_id").equals(entries.sort("entry_id"))


def stored_watchlist(session: Session, names: Sequence[str] | None = None) -> pl.DataFrame:
    """The active entries held in the database (of the lists `names`, default all), as
    a WATCHLIST frame ordered by list and entry id."""
    query = select(m.WatchlistEntry.payload).where(m.WatchlistEntry.active.is_(True))
    if names is not None:
        query = query.where(m.WatchlistEntry.list_name.in_(list(names)))
    query = query.order_by(m.WatchlistEntry.list_name, m.WatchlistEntry.entry_id)
    rows = []
    for payload in session.scalars(query):
        row = dict(payload)
        if isinstance(row.get("listed_on"), str):
            row["listed_on"] = dt.date.fromisoformat(row["listed_on"])
        rows.append(row)
    schema = WATCHLIST.polars_schema
    return pl.DataFrame(
        [{n: r.get(n) for n in schema.names()} for r in rows], schema=schema, orient="row"
    )


_WATCHLIST_FILE_LOCK = threading.Lock()


def write_watchlist_file(session: Session, services: Services, names: Sequence[str]) -> bool:
    """Write the database's active entries of the lists `names` to
    validated/watchlist.parquet, atomically, keeping the file's other lists (what
    `caravan watchlist import` does), so that batch features and training read the
    lists the service screens with. A failure is logged (the database stays the
    source of truth; the next start-up reports the difference); returns success."""
    from pipelines.features import WATCHLIST_FILE
    from pipelines.validate import write_parquet

    path = services.layout.validated / WATCHLIST_FILE
    with _WATCHLIST_FILE_LOCK:
        try:
            frame = stored_watchlist(session, names)
            if path.exists():
                schema = WATCHLIST.polars_schema
                old = pl.read_parquet(path).select([pl.col(n).cast(t) for n, t in schema.items()])
                frame = pl.concat([old.filter(~pl.col("list_name").is_in(list(names))), frame])
            write_parquet(frame, path)
        except (OSError, pl.exceptions.PolarsError):
            log.exception("could not write the watchlist(s) %s to %s", ", ".join(names), path)
            return False
    return True


_LABEL_COLUMNS = ("finding", "finding_category", "quantity_seized", "seized_unit", "notes")


def _label_values(row: m.Outcome) -> tuple[Any, ...]:
    """An outcome's values as its label row holds them (`_LABEL_COLUMNS`)."""
    return (row.finding, row.category, row.quantity, row.unit, row.notes)


def _held_outcomes(outcomes: pl.DataFrame, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Outcome id -> its values in `outcomes` (`_LABEL_COLUMNS`), for these ids."""
    if not ids:
        return {}
    held = outcomes.filter(pl.col("outcome_id").is_in(list(ids)))
    rows = held.select("outcome_id", *_LABEL_COLUMNS).iter_rows()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def restore_ingested(session: Session, services: Services) -> dict[str, int]:
    """Put back into the feature history what the API recorded before a restart.

    The history is loaded from validated/, which holds what `caravan validate`
    accepted; shipments (with their goods lines), traveller records and outcomes
    recorded over the API since live in the database. Without them, the features
    of the next shipments would not count them (a trader's recent shipments, its
    inspections, linked travellers) and would differ from what they were before the
    restart. Rows already in the history are left as they are, but for outcomes
    corrected since (`correct_outcome`): the database's row replaces the held one.
    Returns the counts added per table."""
    history = services.history
    held = history.snapshot()
    known = set(held.shipments.get_column("shipment_id").to_list())
    ships = [
        s
        for s in session.scalars(
            select(m.Shipment).order_by(m.Shipment.declared_at, m.Shipment.shipment_id)
        )
        if s.shipment_id not in known
    ]
    added = {"shipments": 0, "travellers": 0, "outcomes": 0}
    if ships:
        wanted = {s.shipment_id for s in ships}
        lines: dict[str, list[dict[str, Any]]] = {}
        for item in session.scalars(select(m.Item).order_by(m.Item.shipment_id, m.Item.line_no)):
            if item.shipment_id in wanted:
                lines.setdefault(item.shipment_id, []).append(item.payload)
        prepared = [
            prepare_shipment({**s.payload, "items": lines.get(s.shipment_id, [])}, stored=True)
            for s in ships
        ]
        history.add_shipments(*_frames(prepared))
        added["shipments"] = len(prepared)
    seen = set(held.travellers.get_column("traveller_record_id").to_list())
    records = [
        prepare_traveller(t.payload, stored=True)[0]
        for t in session.scalars(select(m.Traveller).order_by(m.Traveller.traveller_record_id))
        if t.traveller_record_id not in seen
    ]
    if records:
        history.add_travellers(frame_of(records, TRAVELLERS.polars_schema))
        added["travellers"] = len(records)
    stored = list(session.scalars(select(m.Outcome).order_by(m.Outcome.inspected_at)))
    done = _held_outcomes(held.outcomes, [o.outcome_id for o in stored])
    # (an outcome corrected since validated/ was written is put back as corrected)
    outcomes = [o for o in stored if done.get(o.outcome_id) != _label_values(o)]
    if outcomes:
        history.add_outcomes(outcome_frame(outcomes))
        added["outcomes"] = len(outcomes)
    return added


def restore_watchlists(session: Session, services: Services, actor: str = "system") -> list[str]:
    """At start-up: screen with the lists held in the database (the operational
    source of truth), whatever validated/watchlist.parquet holds.

    A list of the file that the database has never held (`caravan watchlist
    import` before the first start) is loaded into the database first, audited
    (no rescreen: the shipments stored before were scored without it, as before).
    A list the database holds but the file holds differently is screened as the
    database holds it, and a warning names it. Returns the warnings."""
    from_file = services.history.snapshot().watchlist
    known = set(session.scalars(select(m.WatchlistEntry.list_name).distinct()))
    warnings = []
    if from_file is not None and not from_file.is_empty():
        from_file = from_file.select(WATCHLIST.polars_schema.names())
        for name in sorted(set(from_file["list_name"].to_list())):
            entries = from_file.filter(pl.col("list_name") == name)
            if name not in known:
                _store_watchlist(session, [name], entries, actor)
                session.commit()
                log.info("watchlist %s: %d entries loaded from the file", name, entries.height)
                continue
            stored = {
                (e.entry_id, e.content_hash)
                for e in session.scalars(
                    select(m.WatchlistEntry).where(
                        m.WatchlistEntry.list_name == name, m.WatchlistEntry.active.is_(True)
                    )
                )
            }
            wanted = {(r["entry_id"], content_hash(jsonable(r))) for r in entries.to_dicts()}
            if stored != wanted:
                warnings.append(
                    f"watchlist {name}: validated/watchlist.parquet ({len(wanted)} entries) "
                    f"differs from the database ({len(stored)} active entries); the service "
                    "screens with the database's: load the file over the API "
                    "(POST /api/v1/watchlists/...) to change it"
                )
                log.warning(warnings[-1])
    held = stored_watchlist(session)
    services.history.set_watchlist(None if held.is_empty() else held)
    return warnings


def rescreen(session: Session, services: Services, actor: str) -> tuple[int, int]:
    """Score every stored shipment again against the current watchlists; store (and
    audit) a new score where its watchlist result changed. Returns (screened, rescored).

    Only the watchlist part changes: a new score keeps the rule hits (rule versions)
    of the score it replaces, so that a rule saved since is not applied to just the
    shipments whose screening happened to change (rules act on shipments scored while
    they are in force; their hit counts and finding rates stay comparable)."""
    ships = list(session.scalars(select(m.Shipment).order_by(m.Shipment.shipment_id)))
    if not ships:
        return 0, 0
    prepared = []
    for ship in ships:
        lines = [
            i.payload
            for i in session.scalars(select(m.Item).where(m.Item.shipment_id == ship.shipment_id))
        ]
        prepared.append(prepare_shipment({**ship.payload, "items": lines}, stored=True))
    frames = _frames(prepared)
    history = services.history.snapshot()
    try:
        scored = score_shipments(
            frames[0],
            frames[1],
            history,
            services.holder.handle,
            active_rules(session, services),
            extras=_extras_of(prepared),
        )
    except ModelInputError as exc:
        raise ServiceError(503, str(exc)) from None
    rescored = 0
    for s in scored:
        stored = load_shipment(session, s.shipment_id)
        extra = (stored.score.explanation or {}) if stored else {}
        before: tuple[Any, ...] = (
            round(float(extra.get("watchlist_score", 0.0)), 6),
            bool(extra.get("watchlist_exact")),
        )
        after: tuple[Any, ...] = (round(s.watchlist_score, 6), s.watchlist_exact)
        if "watchlist_match" in extra:  # (scores stored before it was recorded: not compared)
            before += (_match_key(extra["watchlist_match"]),)
            after += (_match_key(s.watchlist_match),)
        if stored is None or before != after:
            new = s if stored is None else _with_hits_of(s, stored, active_rules(session, services))
            _store_score(session, new, actor, kind="rescreen")
            requeue_rescored(session, services, s.shipment_id, actor)
            rescored += 1
    session.commit()
    return len(scored), rescored


# --------------------------------------------------------------------------- applying rules

MAX_APPLY_DAYS = 31  # queue days an application reaches: today and the 30 before (UTC)
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
            f"day_to {last} is after today ({today}, UTC): rules are applied to the "
            f"shipments of queue days up to today",
            "day_to",
        )
    if first > last:
        raise ServiceError(422, f"day_from {first} is after day_to {last}", "day_from")
    if first < earliest:
        raise ServiceError(
            422,
            f"day_from {first} is more than {MAX_APPLY_DAYS - 1} days ago: rules are applied "
            f"to the shipments of the queue days from {earliest} to today ({today}, UTC)",
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


def _pending_scores(session: Session, first: dt.date, last: dt.date) -> dict[str, m.Score]:
    """The latest score of each stored shipment declared on the days `first`..`last`
    (UTC) that awaits a decision (`_decided_shipments`)."""
    start = _midnight(first, None)
    assert start is not None
    end = start + dt.timedelta(days=(last - first).days + 1)
    ids = list(
        session.scalars(
            select(m.Shipment.shipment_id)
            .where(m.Shipment.declared_at >= start, m.Shipment.declared_at < end)
            .order_by(m.Shipment.shipment_id)
        )
    )
    decided = _decided_shipments(session, ids)
    pending = [s for s in ids if s not in decided]
    latest: dict[str, m.Score] = {}
    for chunk in _chunks(pending):
        latest.update(_latest_scores(session, chunk))
    return latest


def pending_count(session: Session, day: dt.date | None = None) -> int:
    """How many scored shipments of `day` (UTC; default today) await a decision: what
    `apply_rules_to_pending` of that day examines."""
    when = day or now().date()
    return len(_pending_scores(session, when, when))


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
    declared on the queue days `day_from`..`day_to` (UTC; today by default, at most
    MAX_APPLY_DAYS back) with a score, no outcome and no decided referral (queued and
    open or claimed, displaced, or not queued). A profile saved on this morning's
    intelligence thus reaches this morning's declarations.

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
    first, last = _apply_days(day_from, day_to, applied_at.date())
    rules, active = _rules_to_apply(session, services, rule_ids)
    latest = _pending_scores(session, first, last)
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


def _match_key(match: dict[str, Any] | None) -> tuple[Any, ...]:
    """What of a stored watchlist match a rescreen compares: which entry matched,
    how, and whom (a change of the matched entry alone is a new score)."""
    if not match:
        return ()
    keys = ("entry_id", "by", "party", "traveller_record_id")
    # (whether it is weak: a score stored before weak matches were told apart
    # counted one as an alert; a rescreen stores it again as a near miss)
    return (*(match.get(k) for k in keys), bool(match.get("weak")))


def _with_hits_of(s: Scored, stored: StoredShipment, active: Iterable[Rule]) -> Scored:
    """`s` with the rule hits of the stored score that belong to a rule still active
    (`active`: a rule deactivated since never hits again, README), its priority, lane
    and must-inspect recomputed from them and from `s`'s model probability and
    watchlist result."""
    in_force = {r.id for r in active}
    hits = [RuleHit(r, v, sev) for r, v, sev in stored.hits if sev is not None and r in in_force]
    severities = [h.severity for h in hits]
    pri = policy.priority(
        s.probability,
        severities,
        watchlist_score=min(s.watchlist_score / 100.0, 1.0),
        watchlist_exact=s.watchlist_exact,
        watchlist_weak=s.watchlist_weak,
    )
    forced = policy.is_forced(severities, s.watchlist_exact)
    return replace(
        s,
        rule_hits=hits,
        priority=pri,
        lane=policy.lane(pri, forced, None),
        must_inspect=forced,
    )
