"""Inspection queues per office and day (officers: their own office only)."""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from serving.auth import Principal, Role
from serving.deps import SessionDep, ensure_office, require_roles
from serving.policy import queue_day_problem
from serving.routers import PROTECTED, ErrorOut
from serving.routers._common import ServicesDep
from serving.schemas import QueueOut, ReferralOut
from serving.services import (
    get_queue,
    left_out,
    overdue_referrals,
    referrals_out,
    unknown_office,
)

router = APIRouter(prefix="/api/v1/queues", tags=["queues"], responses=PROTECTED)

QueueUser = Annotated[
    Principal, Depends(require_roles(Role.officer, Role.analyst, Role.auditor, Role.admin))
]
Office = Annotated[str, Path(pattern=r"^[A-Z]{2}[A-Z0-9-]{2,30}$")]


@router.get(
    "/{office}/overdue",
    response_model=list[ReferralOut],
    summary="Referrals of the office still awaiting a decision (open or claimed) past the "
    "overdue limit, oldest first",
)
def get_overdue(
    office: Office, session: SessionDep, user: QueueUser, services: ServicesDep
) -> list[dict[str, Any]]:
    ensure_office(user, office)
    return referrals_out(session, overdue_referrals(session, services, office), services)


@router.get(
    "/{office}/{day}",
    response_model=QueueOut,
    responses={404: {"model": ErrorOut, "description": "An office the deployment does not know"}},
    summary="The office's queue for the day (built on first request): ranked referrals, "
    "and the red/yellow shipments of the day that did not fit",
    description="`day` is the office's local calendar day: the queue holds the office's "
    "shipments declared from local midnight to the next, in the office's time zone "
    "(`CARAVAN_OFFICE_TIMEZONES`, else `CARAVAN_QUEUE_TIMEZONE`, UTC by default; on a "
    "daylight-saving change the day lasts 23 or 25 hours). With KG-BISHKEK on "
    "Asia/Bishkek, a shipment declared at 2026-11-25T19:30Z (01:30 local) is in the "
    "queue of 2026-11-26. Today's queue (the office's today) also takes in the forced "
    "shipments of earlier days that no queue holds (`declared_on` shows their day).\n\n"
    "`entries` come in rank order. A rank is given once, when the entry is placed, and "
    "is never renumbered (it is audited): a forced shipment (must-inspect rule or exact "
    "watchlist hit) that arrives after the queue was built gets the next rank, below "
    "entries placed earlier. Each entry's `forced` flag says whether it is forced in; the "
    "working order an officer should follow (the web queue's default) is forced entries "
    "first, then the rest, each by `rank`.",
)
def get_day_queue(
    office: Office,
    day: dt.date,
    session: SessionDep,
    user: QueueUser,
    services: ServicesDep,
) -> dict[str, Any]:
    ensure_office(user, office)
    problem = queue_day_problem(day, services.queue.today(office))
    if problem is not None:
        raise HTTPException(
            422, detail=[{"type": "value_error", "loc": ["path", "day"], "msg": problem}]
        )
    # New shipments are placed by the engine (audited as system:queue), not by the reader.
    refs, built = get_queue(session, services, office, day)
    outside = left_out(session, office, day, services)
    if not refs and not outside and (unknown := unknown_office(session, services, office)):
        raise HTTPException(404, unknown)
    return {
        "office_code": office,
        "day": day,
        "capacity": services.capacity(office),
        "exploration_share": services.queue.exploration_share,
        "built_now": built,
        "entries": referrals_out(session, refs, services),
        "left_out": outside,
    }
