"""Retention of traveller (API/PNR) records: personal data kept no longer than set.

`purge_travellers(session, cutoff, actor, files=...)` deletes the stored traveller
records whose journey departed before `cutoff`, and records the purge (cutoff and
counts, never the data) in the audit log in the same transaction: `records` in the
database, `file_records` per file (e.g. validated/travellers.parquet) that the caller
purges with it, and `total`. The log of who viewed personal data
(`personal_data_views`) is kept: it names records, it does not hold them.

The retention period may not be shorter than the longest feature window that reads
travellers (`features.travellers.WINDOW`, 180 days): a shorter one would change the
features of shipments still being scored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from features.travellers import WINDOW
from serving import orm as m
from serving.services import audit

CHUNK = 1_000


class RetentionError(ValueError):
    pass


def cutoff_for(days: int, at: dt.datetime) -> dt.datetime:
    """The departure time before which traveller records are purged."""
    if dt.timedelta(days=days) < WINDOW:
        raise RetentionError(
            f"retention of {days} days is shorter than the {WINDOW.days}-day traveller "
            "feature window: shipments still being scored would lose their features"
        )
    return at - dt.timedelta(days=days)


def _departure(payload: dict[str, object]) -> dt.datetime | None:
    value = payload.get("departure_at")
    if not isinstance(value, str):
        return None
    at = dt.datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def purge_travellers(
    session: Session, cutoff: dt.datetime, actor: str, files: Mapping[str, int] | None = None
) -> int:
    """Delete traveller records that departed before `cutoff`; audit the purge with the
    database count and the counts of the files the caller purges (path -> records).
    Returns the database count."""
    expired: list[str] = []
    rows = session.execute(select(m.Traveller.traveller_record_id, m.Traveller.payload))
    for rid, payload in rows:
        departed = _departure(payload)
        if departed is not None and departed < cutoff:
            expired.append(rid)
    for i in range(0, len(expired), CHUNK):
        chunk = expired[i : i + CHUNK]
        session.execute(delete(m.Traveller).where(m.Traveller.traveller_record_id.in_(chunk)))
    audit(
        session,
        "traveller_purge",
        actor,
        {
            "departed_before": cutoff.isoformat(),
            "records": len(expired),
            "file_records": dict(files or {}),
            "total": len(expired) + sum((files or {}).values()),
        },
        entity="traveller",
    )
    session.commit()
    return len(expired)
