"""The seizure lines of outcomes (table outcome_seizures): written with their outcome,
read with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from serving import orm as m
from serving import policy


def seizure_values(lines: Sequence[policy.SeizureLine]) -> list[dict[str, Any]]:
    """The lines as the API, the audit entries and the page hold them, in order."""
    return [{"category": s.category, "quantity": s.quantity, "unit": s.unit} for s in lines]


def write_seizures(session: Session, outcome_id: str, lines: Sequence[policy.SeizureLine]) -> None:
    """Store (or replace) the seizure lines of an outcome, in the caller's
    transaction."""
    session.execute(delete(m.OutcomeSeizure).where(m.OutcomeSeizure.outcome_id == outcome_id))
    session.flush()
    for no, line in enumerate(lines, start=1):
        assert line.category is not None  # (checked: policy.seizure_problems)
        session.add(
            m.OutcomeSeizure(
                outcome_id=outcome_id,
                line_no=no,
                category=line.category,
                quantity=line.quantity,
                unit=line.unit,
            )
        )


def seizures_of(session: Session, outcome_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The seizure lines of each outcome, in the order recorded (none: an empty
    list)."""
    ids = sorted(set(outcome_ids))
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = session.scalars(
        select(m.OutcomeSeizure)
        .where(m.OutcomeSeizure.outcome_id.in_(ids))
        .order_by(m.OutcomeSeizure.outcome_id, m.OutcomeSeizure.line_no)
    )
    for r in rows:
        out[r.outcome_id].append({"category": r.category, "quantity": r.quantity, "unit": r.unit})
    return out
