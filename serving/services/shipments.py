"""Shipments: intake (validate, score, store, audit), the stored record, explanations and
replays."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import polars as pl
from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data_contracts.schemas import ITEMS, SHIPMENTS
from features.state import FeatureState
from serving import orm as m
from serving.history import contract_schema, frame_of
from serving.schemas import shipment_in_model
from serving.scoring import (
    ModelHandle,
    ModelHolder,
    ModelInputError,
    Scored,
    check_extras,
    explain_vector,
    score_shipments,
    sequence_features,
)
from serving.services._core import RowError, ServiceError, Services, content_hash, jsonable, now
from serving.services.audit_log import (
    AuditItem,
    _score_differences,
    _score_facts,
    audit,
    audit_many,
    audited_scores,
    feature_vector_hash,
    plain_vector_hash,
)
from serving.services.rules import active_rules

log = logging.getLogger(__name__)


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
    return _prepared(_validate_json(shipment_in_model(), raw, stored=stored))


def prepare_validated_shipment(body: BaseModel) -> Prepared:
    """`prepare_shipment` of a shipment already validated as `shipment_in_model()`
    (the body of `POST /shipments`, which FastAPI validated against that model): the
    same `Prepared` (tests/serving/test_ingest_prepare_once.py), without dumping it
    to JSON and validating it a second time (a fifth of a millisecond of every single
    ingest). Raises TypeError for any other model."""
    model = shipment_in_model()
    if type(body) is not model:
        raise TypeError(f"expected a {model.__name__}, got {type(body).__name__}")
    return _prepared(body)


def _prepared(validated: BaseModel) -> Prepared:
    data = validated.model_dump()
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
    ships = frame_of([p.record for p in prepared], contract_schema(SHIPMENTS))
    items = frame_of([i for p in prepared for i in p.items], contract_schema(ITEMS))
    return ships, items


def _store_score(session: Session, s: Scored, actor: str, *, kind: str = "score") -> m.Score:
    score = _score_row(s)
    session.add(score)
    session.flush()
    _record_score(session, s, score, actor, kind)
    return score


def _score_row(s: Scored) -> m.Score:
    return m.Score(**_score_values(s))


def _score_values(s: Scored) -> dict[str, Any]:
    """The columns of a score row (but its id)."""
    extra = {
        "reasons": s.explanation,
        "context": s.context,
        "must_inspect": s.must_inspect,
        "watchlist_score": s.watchlist_score,
        "watchlist_exact": s.watchlist_exact,
        "watchlist_match": s.watchlist_match,
    }
    return {
        "shipment_id": s.shipment_id,
        "probability": s.probability,
        "priority": s.priority,
        "lane": s.lane,
        "model_version": s.model_version,
        "feature_set_version": s.feature_set_version,
        "feature_vector": jsonable(s.features),
        # (`jsonable` of the whole: the context's values as `jsonable` gives them)
        "explanation": jsonable(extra),
        "scored_at": now(),
    }


def _record_score(
    session: Session, s: Scored, score: m.Score, actor: str, kind: str, *, flush: bool = True
) -> None:
    """The rule hits and the audit entry of a score written (flushed: it has its id).
    `flush` False: written with the session's next flush."""
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
        _score_entry_payload(s, score.id, feature_vector_hash(score.feature_vector)),
        entity="shipment",
        entity_id=s.shipment_id,
        flush=flush,
    )


def _score_entry_payload(
    s: Scored, score_id: int, vector_hash: str, content: str | None = None
) -> dict[str, Any]:
    """What the audit entry of a score written records (`vector_hash`: the
    `feature_vector_hash` of the stored vector; `content`: the declaration's content
    hash, recorded by the score written at ingest, so that `caravan audit verify`
    finds a declaration replaced together with its stored hash)."""
    extra = {} if content is None else {"content_hash": content}
    return {
        "shipment_id": s.shipment_id,
        "score_id": score_id,
        "probability": s.probability,
        "priority": s.priority,
        "lane": s.lane,
        "model_version": s.model_version,
        "feature_set_version": s.feature_set_version,
        "rule_hits": [f"{h.rule_id}@v{h.rule_version}" for h in s.rule_hits],
        "watchlist_exact": s.watchlist_exact,
        # the listed entry that produced the exact or best match (None: none)
        "watchlist_match": _audited_match(s.watchlist_match),
        "feature_vector_sha256": vector_hash,
        **extra,
    }


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
    combine: bool = True,
) -> tuple[list[StoredShipment], list[StoredShipment], list[Conflict]]:
    """Score and store shipments. Returns (stored, unchanged, conflicts).

    Idempotent: the same content again is `unchanged` (also a repeat within the
    request, answered with the first's result); other content under an id that is
    stored, in the loaded history or earlier in the request is a conflict, and so is
    a goods line whose item_id belongs to another shipment. A shipment of the loaded
    history (validated/) is never replaced: the same content again is a conflict
    saying it is known (it has no stored score to return). When another request
    stores one of the ids at the same time, the ingest is tried once more, which then
    answers those as stored ones.

    One new shipment (a request of one record, after the checks above, which stay
    the request's own) is handed to `Services.shipment_combiner` (`combine`, on the
    first try): shipments of single-shipment requests that arrive together are
    scored in one pass and written in one transaction by one of those requests,
    the group's leader, in its own session (`_store_group`), as a batch's are; each
    request gets its own shipment's result, and each audit entry names its own
    request's actor. A request alone in its group stores its shipment as before
    (`_store_fresh`, in its own session). A request whose shipment its group did not
    store (another of the group has the same id or a goods line of the same
    item_id, it is a late arrival, or its group's storing failed) is ingested again
    alone, checks included, in its own session, without combining, once its group
    is done (so it sees what the group stored)."""
    unchanged: list[StoredShipment] = []
    conflicts: list[Conflict] = []
    fresh: list[Prepared] = []
    first: dict[str, tuple[int, str]] = {}  # id -> (position, content hash) of its first row
    repeats: list[tuple[int, str]] = []  # same content as an earlier row of the request
    ids = list({str(p.record["shipment_id"]) for p in prepared})
    known: dict[str, str] = {  # one query for the stored ones, not one per shipment
        str(sid): str(digest)  # (id -> content hash: a Core query of two columns)
        for start in range(0, len(ids), 1000)
        for sid, digest in session.execute(_STORED_HASHES, {"ids": ids[start : start + 1000]})
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
            if old == p.content_hash:
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
    alone = False  # (its combined group did not store the one shipment: see below)
    if fresh:
        try:
            if combine and retry and len(prepared) == 1 and len(fresh) == 1:
                combined = services.shipment_combiner.submit(
                    Single(fresh[0], actor),
                    lambda group: _store_group(session, services, group),
                    lambda: _store_fresh(session, services, fresh, actor, stored),
                )
                alone = combined is None
                stored = combined or []
            else:
                _store_fresh(session, services, fresh, actor, stored)
        except IntegrityError:
            session.rollback()
            if not retry:
                raise ServiceError(
                    409, "a shipment with this id was stored concurrently; retry"
                ) from None
            # Another request stored some of these ids meanwhile: answer as it stands now
            # (the runs this call stored are its own, not found unchanged).
            done = {s.shipment.shipment_id for s in stored}
            now_stored, now_unchanged, now_conflicts = ingest_shipments(
                session, services, prepared, actor, retry=False
            )
            ours = [u for u in now_unchanged if u.shipment.shipment_id not in done]
            return [*stored, *now_stored], ours, now_conflicts
    if alone:  # (the path of one shipment, as without combining, checks included)
        return ingest_shipments(session, services, prepared, actor, combine=False)
    by_id = {s.shipment.shipment_id: s for s in [*stored, *unchanged]}
    refused = {c.record_id: c for c in conflicts if c.earlier is None}
    for i, sid in repeats:
        if sid in by_id:
            unchanged.append(by_id[sid])
        elif sid in refused:
            conflicts.append(refused[sid]._replace(position=i, earlier=first[sid][0]))
    conflicts.sort(key=lambda c: c.position)
    return stored, unchanged, conflicts


class Single(NamedTuple):
    """A new shipment of a single-shipment request, and who sent it (an item of
    `Services.shipment_combiner`)."""

    prepared: Prepared
    actor: str


def _store_fresh(
    session: Session,
    services: Services,
    fresh: Sequence[Prepared],
    actor: str,
    stored: list[StoredShipment],
) -> list[StoredShipment]:
    """Score and store the new shipments of a request (checked by `ingest_shipments`),
    appending what is stored to `stored` (so that the caller knows what was stored
    should a later run raise), and return `stored`. In one pass when they can be
    (`_store_sequence`); else late arrivals run by run, then the others."""
    together = _store_sequence(session, services, fresh, actor)
    if together is not None:
        stored += together
        return stored
    # (some declared before the state's latest: those run by run, as before, then
    # the others in one pass: see `_late_first`)
    late, on_time = _late_first(services, fresh)
    for run in in_sequence(late) if late else []:
        stored += _store_shipments(session, services, run, actor)
    rest = _store_sequence(session, services, on_time, actor) if late else None
    if rest is not None:
        stored += rest
    else:
        for run in in_sequence(on_time) if on_time else []:
            stored += _store_shipments(session, services, run, actor)
    return stored


def _store_group(
    session: Session, services: Services, group: Sequence[Single]
) -> list[list[StoredShipment] | None]:
    """Store the shipments of concurrent single-shipment requests together (the
    `group` of `Services.shipment_combiner`, processed by its leader in the leader's
    session): one pass and one transaction (`_store_sequence`), each audit entry
    naming its own request's actor. Returns, per request, its stored shipment, or
    None for those left to their own path (`ingest_shipments` ingests them again
    alone): a shipment whose id or a goods line's item_id an earlier one of the
    group has, one whose id or item_id was stored meanwhile (by another request:
    its checks ran before it waited), a late arrival (declared before the newest
    shipment the feature state holds: `_late_first`), and all of them when fewer
    than two are left or `_store_sequence` declines the group (the state took a
    newer shipment meanwhile, from a request stored by its own path).
    Exceptions reach the combiner (every request then takes its own path), after
    the leader's session is rolled back."""
    out: list[list[StoredShipment] | None] = [None] * len(group)
    try:
        ids: set[str] = set()
        item_ids: set[str] = set()
        chosen: list[int] = []
        for k, one in enumerate(group):
            sid = str(one.prepared.record["shipment_id"])
            lines = {str(line["item_id"]) for line in one.prepared.items}
            if sid in ids or not item_ids.isdisjoint(lines):
                continue
            ids.add(sid)
            item_ids |= lines
            chosen.append(k)
        # (the checks of `ingest_shipments` ran before the request waited: what was
        # stored meanwhile, an id or a goods line's item_id, leaves it to its own path)
        taken = {str(sid) for sid, _ in session.execute(_STORED_HASHES, {"ids": sorted(ids)})}
        owners = services.history.item_owners(item_ids)
        chosen = [
            k
            for k in chosen
            if str(group[k].prepared.record["shipment_id"]) not in taken
            and _taken_item(group[k].prepared, owners, {}) is None
        ]
        # (late arrivals, declared before the newest shipment the feature state
        # holds, are scored one by one, by their own path: the others still together)
        late = {id(p) for p in _late_first(services, [group[k].prepared for k in chosen])[0]}
        chosen = [k for k in chosen if id(group[k].prepared) not in late]
        if len(chosen) < 2:
            return out
        together = _store_sequence(
            session,
            services,
            [group[k].prepared for k in chosen],
            [group[k].actor for k in chosen],
        )
    except BaseException:
        session.rollback()
        raise
    if together is None:
        return out
    by_id = {s.shipment.shipment_id: s for s in together}
    for k in chosen:
        found = by_id.get(str(group[k].prepared.record["shipment_id"]))
        out[k] = None if found is None else [found]
    return out


def in_sequence(fresh: Sequence[Prepared]) -> list[list[Prepared]]:
    """The new shipments of a request in declaration order, cut into runs (the path
    of a batch's late arrivals, `_late_first`; the others are scored in one pass,
    `_store_sequence`): a run
    ends before a shipment that shares a party, phone, e-mail, address or road
    vehicle (a node of `features.network`) with a shipment of the run declared
    before it (not at the same instant), or that is declared in another calendar
    month (the goods references are monthly). Each run
    is scored once the runs before it are in the history, so a shipment's features
    count the earlier shipments of its own request as they would count them sent one
    by one, and as `caravan features` counts them: a trader's five shipments of one
    batch are not each its first. Shipments that share nothing are scored together
    (one call: the batch's speed). Left out: two shipments that share no node but
    whose parties the history already joins in one component read that component's
    size without each other's new edges (the component size only)."""
    if len(fresh) < 2:
        return [list(fresh)]
    order = sorted(range(len(fresh)), key=lambda i: _utc(fresh[i].record["declared_at"]))
    nodes = _network_nodes(fresh)
    runs: list[list[Prepared]] = []
    seen: dict[str, dt.datetime] = {}  # node -> when a shipment of the run touched it
    month: tuple[int, int] | None = None
    for i in order:
        at = _utc(fresh[i].record["declared_at"])
        # (features read what came strictly before: one instant's shipments never
        # count each other, and may share a run)
        earlier = any(seen.get(node, at) < at for node in nodes[i])
        if not runs or (at.year, at.month) != month or earlier:
            runs.append([])
            seen = {}
            month = (at.year, at.month)
        runs[-1].append(fresh[i])
        seen.update((node, seen.get(node, at)) for node in nodes[i])
    return runs


def _late_first(
    services: Services, fresh: Sequence[Prepared]
) -> tuple[list[Prepared], list[Prepared]]:
    """The new shipments declared before the newest one the feature state holds
    (late arrivals), and the others, each in request order. The late ones are all
    declared before the others, so `in_sequence` of the whole would score them
    first, in the same runs; the state does not take them (a background rebuild
    does), so the others are scored without them either way, and can then be
    scored in one pass (`_store_sequence`), as a batch without late ones is."""
    with services.history.scoring() as state:
        as_of = state.as_of
    if as_of is None:
        return [], list(fresh)
    newest = _utc(as_of)
    late = [p for p in fresh if _utc(p.record["declared_at"]) < newest]
    return late, [p for p in fresh if _utc(p.record["declared_at"]) >= newest]


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC) if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _network_nodes(fresh: Sequence[Prepared]) -> list[set[str]]:
    """Per shipment, the nodes it touches in `features.network`'s graph (its
    parties by key, their phones, e-mails and addresses, a road vehicle), which the
    trader and network features of other shipments read."""
    from features.context import party_keys
    from features.network import PREFIX, mentions, vehicle_key

    ships = party_keys(frame_of([p.record for p in fresh], contract_schema(SHIPMENTS)))
    nodes: list[set[str]] = [set() for _ in fresh]
    for row in mentions(ships).iter_rows(named=True):
        found = nodes[int(row["__row"])]
        found.add(str(row["party"]))
        found.update(PREFIX[c] + row[c] for c in PREFIX if row[c])
    vehicles = ships.select(
        pl.when(pl.col("mode").cast(pl.String) == "road")
        .then(vehicle_key(pl.col("conveyance_ref")))
        .alias("v")
    )["v"]
    for i, v in enumerate(vehicles):
        if v:
            nodes[i].add("r|" + v)
    return nodes


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
    out = _write_scored(session, fresh, scored, actor)
    services.history.add_shipments(ships, items)
    return out


def _store_sequence(
    session: Session, services: Services, fresh: Sequence[Prepared], actor: str | Sequence[str]
) -> list[StoredShipment] | None:
    """Score and store the new shipments of a request in one pass and one
    transaction: their features come from the state with the shipments appended
    in declaration order (`serving.scoring.sequence_features`: each counts the
    shipments of the request declared before it, as one by one), then the model,
    explanations, rules and watchlists once for all of them; the history learns
    them after the commit. None (nothing done) when one is declared before the
    newest shipment the state holds (a late arrival: `in_sequence` runs are
    scored as before). Should the storing fail, the state, which took the
    shipments, is dropped (rebuilt from the history on next use). `actor`: who
    sent them, or one per shipment (of `fresh`: its audit entry names it).
    Raises IntegrityError (rolled back by the caller) when an id was taken meanwhile."""
    if len(fresh) < 2:
        return None  # (one shipment: the online path)
    handle = services.holder.handle
    order = sorted(range(len(fresh)), key=lambda i: _utc(fresh[i].record["declared_at"]))
    ordered = [fresh[i] for i in order]  # (stable)
    actors = actor if isinstance(actor, str) else [actor[i] for i in order]
    try:
        ships, items = _frames(ordered)
    except (pl.exceptions.PolarsError, OverflowError) as exc:
        raise ServiceError(422, f"the records cannot be stored: {exc}") from None
    rules = active_rules(session, services)
    taken: FeatureState | None = None  # (the state, once it took the shipments)
    try:
        with services.history.scoring() as state:
            as_of = state.as_of
            if as_of is not None and bool((ships["declared_at"] < as_of).any()):
                return None
            taken = state  # (the same test as `append_sequence`'s: it appends)
            feats = sequence_features(state, ships, items)
            scored = score_shipments(
                ships, items, state, handle, rules, extras=_extras_of(ordered), features=feats
            )
        out = _write_scored(session, ordered, scored, actors)
    except ModelInputError as exc:
        services.history.drop_state(taken)
        raise ServiceError(503, str(exc)) from None
    except BaseException:
        services.history.drop_state(taken)
        raise
    services.history.add_shipments(ships, items, held_by=taken)
    return out


def _write_scored(
    session: Session,
    fresh: Sequence[Prepared],
    scored: Sequence[Scored],
    actor: str | Sequence[str],
) -> list[StoredShipment]:
    """Write scored shipments with their lines, scores, rule hits and audit entries,
    and commit (as `_store_shipments` does), in one transaction: one Core INSERT per
    table (of the mapped tables, without the ORM's unit of work or bulk-insert
    machinery: 0.7 ms of a single ingest) for the shipments, the lines, the
    scores (RETURNING their ids), the rule hits and the audit entries (chained in one
    loop: `audit_many`). The rows are those the ORM objects of `_score_row` and
    `_record_score` would write; the shipments are returned as (transient) ORM
    objects of the rows written, holding every value `shipment_out` reads (they
    are in no session: nothing is loaded later, from any thread). `actor`: the
    audit entries' actor, or one per shipment of `fresh`."""
    by_id = {p.record["shipment_id"]: p for p in fresh}
    one = actor if isinstance(actor, str) else None
    actor_of = (
        {}
        if one is not None
        else {p.record["shipment_id"]: a for p, a in zip(fresh, actor, strict=True)}
    )
    received = now()
    ships: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for s in scored:
        p = by_id[s.shipment_id]
        declared = p.record["declared_at"]
        ships.append(
            {
                "shipment_id": s.shipment_id,
                "office_code": str(p.record["office_code"]),
                # in UTC, as the database gives it back
                "declared_at": declared.astimezone(dt.UTC) if declared.tzinfo else declared,
                "payload": jsonable(p.record),
                "content_hash": p.content_hash,
                "received_at": received,
            }
        )
        lines += [
            {"shipment_id": s.shipment_id, "line_no": line["line_no"], "payload": jsonable(line)}
            for line in p.items
        ]
        scores.append(_score_values(s))
    if not ships:
        return []
    # (no ORM relationships: shipments before their lines and scores, scores before
    # their rule hits). The shipments first: a taken id raises IntegrityError there.
    session.execute(_INSERT_SHIPMENTS, ships)
    rows = [m.Shipment(**ship) for ship in ships]  # (what was written; not in the session)
    if lines:
        session.execute(_INSERT_ITEMS, lines)
    # (the ids by shipment: RETURNING in parameter order would make SQLite insert the
    # rows one statement each)
    ids: dict[str, int] = {
        str(sid): int(i) for sid, i in session.execute(_INSERT_SCORES_RETURNING, scores)
    }
    hits = [
        {
            "shipment_id": s.shipment_id,
            "score_id": ids[s.shipment_id],
            "rule_id": hit.rule_id,
            "rule_version": hit.rule_version,
        }
        for s in scored
        for hit in s.rule_hits
    ]
    if hits:
        session.execute(_INSERT_RULE_HITS, hits)
    audit_many(
        session,
        [
            AuditItem(
                "score",
                one if one is not None else actor_of[s.shipment_id],
                _score_entry_payload(
                    s,
                    ids[s.shipment_id],
                    plain_vector_hash(row["feature_vector"]),
                    by_id[s.shipment_id].content_hash,
                ),
                "shipment",
                s.shipment_id,
            )
            for s, row in zip(scored, scores, strict=True)
        ],
    )
    session.commit()
    # What `load_shipment` would read back, from the rows just written.
    return [
        StoredShipment(
            ship,
            m.Score(id=ids[s.shipment_id], **row),
            sorted(
                ((h.rule_id, h.rule_version, h.severity) for h in s.rule_hits), key=lambda h: h[0]
            ),
        )
        for s, ship, row in zip(scored, rows, scores, strict=True)
    ]


# Core INSERTs of the mapped tables, built once (`_write_scored`): the same rows (the
# columns' Python defaults apply as in the ORM's), without the ORM's per-statement work.
_SHIPMENTS_TABLE = cast(Table, m.Shipment.__table__)
_SCORES_TABLE = cast(Table, m.Score.__table__)
_INSERT_SHIPMENTS = insert(_SHIPMENTS_TABLE)
_INSERT_ITEMS = insert(cast(Table, m.Item.__table__))
_INSERT_SCORES_RETURNING = insert(_SCORES_TABLE).returning(
    _SCORES_TABLE.c.shipment_id, _SCORES_TABLE.c.id
)
_INSERT_RULE_HITS = insert(cast(Table, m.RuleHit.__table__))
# The content hashes of the stored shipments among `ids` (`ingest_shipments`).
_STORED_HASHES = select(_SHIPMENTS_TABLE.c.shipment_id, _SHIPMENTS_TABLE.c.content_hash).where(
    _SHIPMENTS_TABLE.c.shipment_id.in_(bindparam("ids", expanding=True))
)


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
    contrib = None if model is None else model.contributions(model.matrix([vector]))
    if on_demand:
        assert model is not None
        reasons = jsonable(explain_vector(model, vector, context, contrib=contrib))
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
            raise _no_score(session, shipment_id)
        score = stored.score
    else:
        found = session.get(m.Score, score_id)
        if found is None or found.shipment_id != shipment_id:
            raise _no_score(session, shipment_id, score_id)
        score = found
    model: ModelHandle = holder.version(score.model_version)
    recomputed = float(model.predict_vectors([score.feature_vector])[0])
    same = math.isclose(score.probability, recomputed, rel_tol=1e-9, abs_tol=1e-12)
    entry = _score_entry(session, shipment_id, score.id)
    if entry is None:
        differences = ["the score has no audit entry"]
    else:
        differences = _score_differences(_score_facts(score), entry.payload)
    if score_id is None:  # the shipment's latest score: none of its audited ones is gone
        differences += [_deleted(shipment_id, i, seq) for i, seq in _rowless(session, shipment_id)]
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
    """`replay` of every stored score of the shipment, and a mismatch for each audited
    score whose row is gone (`stored` None), oldest first."""
    ids = list(
        session.scalars(
            select(m.Score.id).where(m.Score.shipment_id == shipment_id).order_by(m.Score.id)
        )
    )
    if not ids:
        raise _no_score(session, shipment_id)
    results = [replay(session, holder, shipment_id, i) for i in ids]
    results += [
        {
            "shipment_id": shipment_id,
            "score_id": score_id,
            "model_version": None,
            "stored": None,
            "recomputed": None,
            "recomputed_matches": False,
            "audit_seq": seq,
            "differences": [_deleted(shipment_id, score_id, seq)],
            "matches": False,
        }
        for score_id, seq in _rowless(session, shipment_id)
    ]
    return sorted(results, key=lambda r: int(r["score_id"]))


def _rowless(session: Session, shipment_id: str) -> list[tuple[int, int]]:
    """(score id, seq of its entry) of the shipment's audited scores that have no row
    of the shipment in the database (deleted behind the log's back), oldest first."""
    audited = audited_scores(session, shipment_id)
    if not audited:
        return []
    stored = set(
        session.scalars(
            select(m.Score.id).where(
                m.Score.shipment_id == shipment_id, m.Score.id.in_([i for i, _ in audited])
            )
        )
    )
    return [(i, seq) for i, seq in audited if i not in stored]


def _deleted(shipment_id: str, score_id: int, seq: int) -> str:
    return (
        f"score {score_id} of shipment {shipment_id} is recorded by audit entry seq={seq} "
        "but has no row in the database: it was deleted (tampering)"
    )


def _no_score(session: Session, shipment_id: str, score_id: int | None = None) -> ServiceError:
    """No score row to replay: 404, unless the audit log records the score (the
    shipment's latest, or `score_id`): then its row was deleted, 409 naming the entry."""
    gone = [g for g in _rowless(session, shipment_id) if score_id in (None, g[0])]
    if gone:
        return ServiceError(409, _deleted(shipment_id, *gone[-1]))
    if score_id is None:
        return ServiceError(404, f"no scored shipment {shipment_id!r}")
    return ServiceError(404, f"no score {score_id} of shipment {shipment_id!r}")


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
