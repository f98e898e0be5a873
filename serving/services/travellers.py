"""API/PNR traveller records: intake, masked and purpose-logged views, retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data_contracts.schemas import TRAVELLERS
from serving import orm as m
from serving.history import HistoryStore, frame_of
from serving.schemas import traveller_in_model
from serving.services._core import (
    MASK,
    PERSONAL_FIELDS,
    ServiceError,
    Services,
    content_hash,
    jsonable,
)
from serving.services.audit_log import audit
from serving.services.shipments import Conflict, _history_match, _in_history, _validate_json

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


def link_refusal(session: Session, viewer: str, shipment_id: str) -> tuple[str, str] | None:
    """Why the shipment cannot be the link through which `viewer` unmasks a traveller
    record (an officer's only way to), as (`"self_ingested"` or `"officer_key"`, the
    message): they ingested it themselves, and could have made it up to name the
    person; or it came with an officer's API key, behind which any officer of its
    office may be (found in review: an officer ingesting with such a key got round
    the rule). None when it qualifies."""
    ingester = shipment_ingester(session, shipment_id)
    if ingester == viewer:
        return (
            "self_ingested",
            f"shipment {shipment_id!r} was ingested by you ({viewer}): a shipment one "
            "ingested oneself cannot be the link for unmasking a traveller record; a "
            "shipment declared by someone else is needed",
        )
    key = _officer_key(session, ingester)
    if key is not None:
        return (
            "officer_key",
            f"shipment {shipment_id!r} was ingested with the officer API key {key}: an "
            "officer's key names no person, so such a shipment cannot be the link for an "
            "officer to unmask a traveller record; a shipment declared by someone else "
            "(a declaration system's key, another person) is needed",
        )
    return None


def _officer_key(session: Session, actor: str | None) -> str | None:
    """The actor `apikey:<id>:<name>` (`serving.auth.api_key_actor`) when that key has
    the officer role, else None."""
    if actor is None or not actor.startswith("apikey:"):
        return None
    key_id = actor.split(":", 2)[1]
    if not key_id.isdigit():
        return None
    role = session.scalar(select(m.ApiKey.role).where(m.ApiKey.id == int(key_id)))
    return actor if role == "officer" else None
