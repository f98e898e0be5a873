"""Watchlists (load, store, rescreen) and restoring what the service ingested into the
feature history at start."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from data_contracts.schemas import TRAVELLERS, WATCHLIST
from serving import orm as m
from serving import policy
from serving.history import frame_of
from serving.rules_engine import (
    Rule,
    RuleHit,
)
from serving.scoring import (
    ModelInputError,
    Scored,
    score_shipments,
)
from serving.services._core import ServiceError, Services, content_hash, jsonable, now
from serving.services.audit_log import audit
from serving.services.decisions import outcome_frame
from serving.services.queues import requeue_rescored
from serving.services.rules import active_rules
from serving.services.shipments import (
    StoredShipment,
    _extras_of,
    _frames,
    _store_score,
    load_shipment,
    prepare_shipment,
)
from serving.services.travellers import prepare_traveller

log = logging.getLogger(__name__)


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
