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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ValidationError
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
from serving.rules_engine import Rule, parse_rule
from serving.schemas import shipment_in_model, traveller_in_model
from serving.scoring import ModelHandle, ModelHolder, Scored, explain_vector, score_shipments

log = logging.getLogger(__name__)

PERSONAL_FIELDS = tuple(c.name for c in TRAVELLERS.columns if c.personal)
MASK = "***"


class QueueSettings(BaseSettings):
    """Queue settings from the environment (prefix CARAVAN_)."""

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", extra="ignore")

    queue_capacity: int = 20
    office_capacities: dict[str, int] = {}
    exploration_share: float = 0.05
    overdue_hours: float = 24.0
    model_refresh_seconds: float = 5.0


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
    return audit_chain.AuditEntry(
        row.seq, row.entry_id, row.at, row.kind, row.actor, row.payload, row.prev_hash, row.hash
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


def verify_audit(session: Session) -> tuple[int, audit_chain.VerifyResult, int | None]:
    """(entries, result, seq of the first broken entry)."""
    rows = list(session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq)))
    entries = [_entry(r) for r in rows]
    result = audit_chain.verify(entries)
    seq = None
    if not result.ok and result.first_broken_index is not None:
        i = result.first_broken_index
        seq = entries[i].seq if i < len(entries) else None
    return len(entries), result, seq


# --------------------------------------------------------------------------- rules


def _rule_of(version: m.RuleVersion) -> Rule:
    return parse_rule(json.loads(version.definition))


def active_rules(session: Session, services: Services) -> list[Rule]:
    """The newest version of every active rule (cached until the rules change)."""
    versions = select(func.count(m.RuleVersion.id)).scalar_subquery()
    active = (
        select(func.count()).select_from(m.Rule).where(m.Rule.active.is_(True)).scalar_subquery()
    )
    marker, n_active = session.execute(select(versions, active)).one()  # one round trip
    key = int(marker or 0) * 100_003 + int(n_active or 0)
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
    else:
        existing.name = rule.name
        existing.active = True
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


def import_rules(
    session: Session, rules: Sequence[Rule], author: str
) -> tuple[list[Rule], list[str]]:
    """Store each imported rule as the next version of its id, unless unchanged."""
    created: list[Rule] = []
    unchanged: list[str] = []
    current = {v.rule_id: _rule_of(v) for v, _r in latest_versions(session)}
    ignore = {"version", "author"}
    for rule in rules:
        old = current.get(rule.id)
        if old is not None and old.model_dump(exclude=ignore) == rule.model_dump(exclude=ignore):
            unchanged.append(rule.id)
            continue
        data = rule.model_dump(mode="json", exclude=ignore)
        created.append(save_rule(session, data, author, create=old is None))
        current[rule.id] = created[-1]
    return created, unchanged


def rule_performance_rows(session: Session) -> list[dict[str, Any]]:
    from serving.rules_engine import rule_performance

    hits = pl.DataFrame(
        session.execute(
            select(m.RuleHit.rule_id, m.RuleHit.rule_version, m.RuleHit.shipment_id)
        ).all(),
        schema={"rule_id": pl.String, "rule_version": pl.Int64, "shipment_id": pl.String},
        orient="row",
    )
    outcomes = pl.DataFrame(
        session.execute(select(m.Outcome.shipment_id, m.Outcome.finding, m.Outcome.category)).all(),
        schema={"shipment_id": pl.String, "finding": pl.Boolean, "finding_category": pl.String},
        orient="row",
    )
    perf = {r["rule_id"]: r for r in rule_performance(hits, outcomes).to_dicts()}
    out = []
    for v, _r in latest_versions(session):
        row = perf.get(v.rule_id)
        out.append(
            {
                "rule_id": v.rule_id,
                "hits": int(row["hits"]) if row else 0,
                "inspected": int(row["inspected"]) if row else 0,
                "findings": int(row["findings"]) if row else 0,
                "finding_rate": row["finding_rate"] if row else None,
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


def prepare_shipment(raw: Any) -> Prepared:
    """Validate one shipment payload against the contracts (raises ValidationError)."""
    data = _validate_json(shipment_in_model(), raw).model_dump()
    lines = data.pop("items")
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


def _validate_json(model: type[BaseModel], raw: Any) -> BaseModel:
    """Validate already-parsed JSON data in JSON mode (ISO datetimes as text)."""
    return model.model_validate_json(json.dumps(raw))


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
        },
        entity="shipment",
        entity_id=s.shipment_id,
    )


def ingest_shipments(
    session: Session, services: Services, prepared: Sequence[Prepared], actor: str
) -> tuple[list[StoredShipment], list[StoredShipment], list[tuple[int, str]]]:
    """Score and store shipments. Returns (stored, unchanged, conflicts as (index, id)).
    Idempotent: the same content again is `unchanged`; different content is a conflict."""
    unchanged: list[StoredShipment] = []
    conflicts: list[tuple[int, str]] = []
    fresh: list[Prepared] = []
    seen: dict[str, str] = {}
    ids = list({str(p.record["shipment_id"]) for p in prepared})
    known = {  # one query for the stored ones, not one per shipment
        row.shipment_id: row
        for start in range(0, len(ids), 1000)
        for row in session.scalars(
            select(m.Shipment).where(m.Shipment.shipment_id.in_(ids[start : start + 1000]))
        )
    }
    for i, p in enumerate(prepared):
        sid = str(p.record["shipment_id"])
        if sid in seen:
            if seen[sid] != p.content_hash:
                conflicts.append((i, sid))
            continue
        seen[sid] = p.content_hash
        old = known.get(sid)
        if old is None:
            fresh.append(p)
        elif old.content_hash == p.content_hash:
            same = load_shipment(session, sid)
            if same is not None:
                unchanged.append(same)
        else:
            conflicts.append((i, sid))
    if not fresh:
        return [], unchanged, conflicts
    handle = services.holder.handle
    ships, items = _frames(fresh)
    rules = active_rules(session, services)
    with services.history.scoring() as state:
        scored = score_shipments(ships, items, state, handle, rules)
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
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ServiceError(409, "a shipment with this id was stored concurrently; retry") from None
    services.history.add_shipments(ships, items)
    # What `load_shipment` would read back, from the rows just written.
    stored = [
        StoredShipment(
            rows[s.shipment_id],
            scores[s.shipment_id],
            sorted(
                ((h.rule_id, h.rule_version, h.severity) for h in s.rule_hits), key=lambda h: h[0]
            ),
        )
        for s in scored
    ]
    return stored, unchanged, conflicts


def visible_shipment(session: Session, shipment_id: str) -> StoredShipment:
    stored = load_shipment(session, shipment_id)
    if stored is None:
        raise ServiceError(404, f"no scored shipment {shipment_id!r}")
    return stored


def explanation(services: Services, stored: StoredShipment) -> dict[str, Any]:
    extra = stored.score.explanation or {}
    reasons = extra.get("reasons")
    on_demand = reasons is None
    if on_demand:
        model = services.holder.version(stored.score.model_version)
        reasons = jsonable(
            explain_vector(
                model,
                stored.score.feature_vector,
                dict(extra.get("context") or {}),
                stored.shipment.shipment_id,
            )
        )
    out = shipment_out(stored)
    return {
        "shipment_id": out["shipment_id"],
        "score_id": out["score_id"],
        "model_version": out["model_version"],
        "feature_set_version": out["feature_set_version"],
        "computed_on_demand": on_demand,
        "reasons": reasons,
        "rule_hits": out["rule_hits"],
        "watchlist": out["watchlist"],
    }


def replay(session: Session, holder: ModelHolder, shipment_id: str) -> dict[str, Any]:
    """Recompute the stored probability from the stored vector and model version."""
    stored = load_shipment(session, shipment_id)
    if stored is None:
        raise ServiceError(404, f"no scored shipment {shipment_id!r}")
    model: ModelHandle = holder.version(stored.score.model_version)
    recomputed = float(model.predict_vectors([stored.score.feature_vector])[0])
    return {
        "shipment_id": shipment_id,
        "score_id": stored.score.id,
        "model_version": stored.score.model_version,
        "stored": stored.score.probability,
        "recomputed": recomputed,
        "matches": math.isclose(stored.score.probability, recomputed, rel_tol=1e-9, abs_tol=1e-12),
    }


# --------------------------------------------------------------------------- travellers


def prepare_traveller(raw: Any) -> tuple[dict[str, Any], str]:
    parsed = _validate_json(traveller_in_model(), raw)
    data = parsed.model_dump()
    return data, content_hash(data)


def ingest_travellers(
    session: Session, services: Services, records: Sequence[tuple[dict[str, Any], str]], actor: str
) -> tuple[list[str], list[str], list[tuple[int, str]]]:
    stored: list[str] = []
    unchanged: list[str] = []
    conflicts: list[tuple[int, str]] = []
    fresh: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for i, (data, digest) in enumerate(records):
        rid = str(data["traveller_record_id"])
        if rid in seen:
            if seen[rid] != digest:
                conflicts.append((i, rid))
            continue
        seen[rid] = digest
        old = session.get(m.Traveller, rid)
        if old is None:
            session.add(
                m.Traveller(traveller_record_id=rid, payload=jsonable(data), content_hash=digest)
            )
            fresh.append(data)
            stored.append(rid)
        elif old.content_hash == digest:
            unchanged.append(rid)
        else:
            conflicts.append((i, rid))
    if stored:
        audit(session, "traveller_ingest", actor, {"records": stored}, entity="traveller")
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ServiceError(409, "a record with this id was stored concurrently; retry") from None
    if fresh:
        services.history.add_travellers(frame_of(fresh, TRAVELLERS.polars_schema))
    return stored, unchanged, conflicts


def masked(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (MASK if k in PERSONAL_FIELDS and v is not None else v) for k, v in record.items()}


def view_traveller(
    session: Session, record_id: str, viewer: str, purpose: str | None
) -> tuple[m.Traveller, bool]:
    """The record; unmasked (and logged with its purpose, audited) when a purpose is given."""
    row = session.get(m.Traveller, record_id)
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
        {"subject_type": "traveller", "fields": list(PERSONAL_FIELDS), "purpose": purpose},
        entity="traveller",
        entity_id=record_id,
    )
    session.commit()
    return row, False


# --------------------------------------------------------------------------- queues


def _age(ref: m.Referral, at: dt.datetime) -> float:
    end = ref.decided_at if ref.status == "closed" and ref.decided_at else at
    return max((end - ref.created_at).total_seconds(), 0.0)


def referral_out(ref: m.Referral, lane: str, at: dt.datetime | None = None) -> dict[str, Any]:
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
        "age_seconds": _age(ref, at or now()),
    }


def lanes_of(session: Session, refs: Iterable[m.Referral]) -> dict[int, str]:
    ids = {r.score_id for r in refs if r.score_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(m.Score.id, m.Score.lane).where(m.Score.id.in_(ids)))
    return {int(i): str(lane) for i, lane in rows}


def referrals_out(session: Session, refs: Sequence[m.Referral]) -> list[dict[str, Any]]:
    lanes = lanes_of(session, refs)
    at = now()
    return [
        referral_out(
            r,
            lanes.get(r.score_id or -1, policy.lane(r.priority, r.priority >= policy.TOP_BAND)),
            at,
        )
        for r in refs
    ]


def _queue_rows(session: Session, office: str, day: dt.date) -> list[m.Referral]:
    return list(
        session.scalars(
            select(m.Referral)
            .where(m.Referral.office_code == office, m.Referral.queue_date == day)
            .order_by(m.Referral.rank)
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


def _place(
    session: Session,
    services: Services,
    office: str,
    day: dt.date,
    scores: Sequence[m.Score],
    queued: Sequence[m.Referral],
    actor: str,
) -> list[m.Referral]:
    """Referrals for `scores` within what is left of the day's capacity after the
    `queued` entries, audited with what was decided; nothing when nothing is picked.
    Must-inspect rules and exact watchlist hits always enter (over capacity if full)."""
    candidates = []
    for s in scores:
        extra = s.explanation or {}
        exact = bool(extra.get("watchlist_exact", False))
        must = bool(extra.get("must_inspect", False)) and not exact
        candidates.append(policy.Candidate(s.shipment_id, office, day, s.priority, must, exact))
    capacity = services.capacity(office)
    left = max(capacity - sum(1 for r in queued if not r.over_capacity), 0)
    share = services.queue.exploration_share
    seed = int(
        hashlib.sha256(f"{office}|{day.isoformat()}|{len(queued)}".encode()).hexdigest()[:8], 16
    )
    entries = policy.build_queue(candidates, left, share, rng_seed=seed)
    if not entries:
        return []
    score_of = {s.shipment_id: s.id for s in scores}
    created = now()
    refs = []
    for e in entries:
        ref = m.Referral(
            office_code=office,
            queue_date=day,
            shipment_id=e.shipment_id,
            score_id=score_of[e.shipment_id],
            rank=len(queued) + e.rank,
            priority=e.priority,
            selection_method=e.selection_method,
            selection_probability=e.selection_probability,
            status="open",
            over_capacity=e.over_capacity,
            created_at=created,
        )
        session.add(ref)
        refs.append(ref)
    session.flush()
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
        },
        entity="queue",
        entity_id=f"{office}/{day.isoformat()}",
    )
    return refs


def get_queue(
    session: Session, services: Services, office: str, day: dt.date, actor: str
) -> tuple[list[m.Referral], bool]:
    """The queue of an office for a day: built (and audited) on first request, then
    extended with the shipments scored since its last entries were placed (new
    arrivals, or a rescreen that made a hit exact) within the capacity left.
    Returns the entries and whether any was placed by this call."""
    rows = _queue_rows(session, office, day)
    since = max((r.created_at for r in rows), default=None)
    referred = {r.shipment_id for r in rows}
    if not [s for s in _day_scores(session, office, day, since) if s.shipment_id not in referred]:
        return rows, False
    write_lock(session, "queue")
    rows = _queue_rows(session, office, day)
    since = max((r.created_at for r in rows), default=None)
    referred = {r.shipment_id for r in rows}
    fresh = [s for s in _day_scores(session, office, day, since) if s.shipment_id not in referred]
    placed = _place(session, services, office, day, fresh, rows, actor) if fresh else []
    if not placed:
        session.rollback()
        return rows, False
    session.commit()
    return _queue_rows(session, office, day), True


def overdue_referrals(session: Session, services: Services, office: str) -> list[m.Referral]:
    limit = now() - dt.timedelta(hours=services.queue.overdue_hours)
    return list(
        session.scalars(
            select(m.Referral)
            .where(
                m.Referral.office_code == office,
                m.Referral.status.in_(("open", "claimed", "inspected", "waived")),
                m.Referral.created_at < limit,
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


def claim(session: Session, referral_id: int, username: str, office: str | None) -> m.Referral:
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.claim(_domain(ref), _officer(username, office, ref), at)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
    ref.status, ref.claimed_by, ref.claimed_at = "claimed", username, at
    audit(
        session,
        "queue_decision",
        username,
        {"action": "claim", "referral_id": ref.id, "shipment_id": ref.shipment_id},
        entity="shipment",
        entity_id=ref.shipment_id,
    )
    session.commit()
    return ref


def waive(
    session: Session, referral_id: int, username: str, office: str | None, reason: str
) -> m.Referral:
    ref = _locked_referral(session, referral_id)
    at = now()
    try:
        policy.waive(_domain(ref), _officer(username, office, ref), at, reason)
    except policy.TransitionError as exc:
        raise ServiceError(409, str(exc)) from None
    ref.status, ref.decided_by, ref.decided_at = "waived", username, at
    ref.waiver_reason = reason.strip()
    audit(
        session,
        "queue_decision",
        username,
        {
            "action": "waive",
            "referral_id": ref.id,
            "shipment_id": ref.shipment_id,
            "reason": ref.waiver_reason,
        },
        entity="shipment",
        entity_id=ref.shipment_id,
    )
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
    from pipelines.validate import write_parquet

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
            if not ship_path.exists():
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
    session: Session, services: Services, entries: pl.DataFrame, actor: str
) -> dict[str, Any]:
    """Replace the entries of the list(s) in `entries`, audit, and rescreen stored shipments."""
    names = sorted(set(entries["list_name"].to_list()))
    rows = entries.to_dicts()
    current = {
        e.entry_id: e
        for e in session.scalars(
            select(m.WatchlistEntry).where(m.WatchlistEntry.list_name.in_(names))
        )
    }
    added = changed = 0
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
            added += 1
        elif old.content_hash != digest or not old.active:
            old.payload, old.content_hash, old.active, old.name = data, digest, True, row["name"]
            old.loaded_at = now()
            changed += 1
    removed = 0
    for entry_id, old in current.items():
        if entry_id not in new_ids and old.active:
            old.active = False
            removed += 1
    audit(
        session,
        "watchlist_change",
        actor,
        {
            "lists": names,
            "entries": len(rows),
            "added": added,
            "changed": changed,
            "removed": removed,
        },
        entity="watchlist",
        entity_id=",".join(names),
    )
    session.commit()
    services.history.replace_watchlist(names, entries.select(WATCHLIST.polars_schema.names()))
    screened, rescored = rescreen(session, services, actor)
    return {
        "list_name": ",".join(names),
        "entries": len(rows),
        "added": added,
        "removed": removed,
        "changed": changed,
        "rescreened": screened,
        "rescored": rescored,
    }


def rescreen(session: Session, services: Services, actor: str) -> tuple[int, int]:
    """Score every stored shipment again against the current watchlists; store (and
    audit) a new score where its watchlist result changed. Returns (screened, rescored)."""
    ships = list(session.scalars(select(m.Shipment).order_by(m.Shipment.shipment_id)))
    if not ships:
        return 0, 0
    prepared = []
    for ship in ships:
        lines = [
            i.payload
            for i in session.scalars(select(m.Item).where(m.Item.shipment_id == ship.shipment_id))
        ]
        prepared.append(prepare_shipment({**ship.payload, "items": lines}))
    frames = _frames(prepared)
    history = services.history.snapshot()
    scored = score_shipments(
        frames[0], frames[1], history, services.holder.handle, active_rules(session, services)
    )
    rescored = 0
    for s in scored:
        stored = load_shipment(session, s.shipment_id)
        extra = (stored.score.explanation or {}) if stored else {}
        before = (
            round(float(extra.get("watchlist_score", 0.0)), 6),
            bool(extra.get("watchlist_exact")),
        )
        if stored is None or before != (round(s.watchlist_score, 6), s.watchlist_exact):
            _store_score(session, s, actor, kind="rescreen")
            rescored += 1
    session.commit()
    return len(scored), rescored
