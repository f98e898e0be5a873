"""Decisions on referrals: claim, release, outcome, waiver, close, and the correction
of a recorded outcome or waiver. Each names the signed-in person who made it (API
keys are refused: a named person decides)."""

import pathlib
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy.orm import Session

from serving.auth import Principal, Role
from serving.deps import OfficerUser, SessionDep
from serving.orm import Outcome, Referral
from serving.policy import InspectionOutcome
from serving.routers import PROTECTED, ErrorOut, Responses
from serving.routers._common import ServicesDep, http_error
from serving.schemas import OutcomeCorrectionIn, OutcomeIn, OutcomeOut, ReferralOut, WaiverIn
from serving.services import (
    NOT_A_PERSON,
    ServiceError,
    Services,
    claim,
    close,
    correct_outcome,
    record_outcome,
    referrals_out,
    release,
    waive,
)

ReferralId = Annotated[int, Path(ge=1, le=2**62)]
router = APIRouter(prefix="/api/v1/referrals", tags=["decisions"], responses=PROTECTED)
ERRORS: Responses = {
    403: {
        "model": ErrorOut,
        "description": "Another office's referral, or not a signed-in person (an API key)",
    },
    404: {"model": ErrorOut, "description": "No such referral"},
    409: {"model": ErrorOut, "description": "The referral's status does not allow this"},
}


def _own(session: Session, referral_id: ReferralId, user: Principal) -> None:
    """A signed-in person (not an API key), of the referral's office unless an admin."""
    if user.auth_method != "token":
        raise HTTPException(403, NOT_A_PERSON)
    ref = session.get(Referral, referral_id)
    if ref is None:
        raise ServiceError(404, f"no referral {referral_id}")
    if user.role == "officer" and ref.office_code != user.office_code:
        raise HTTPException(403, "officers decide for their own office only")


@router.post(
    "/{referral_id}/claim",
    response_model=ReferralOut,
    responses=ERRORS,
    summary="Take an open referral",
)
def post_claim(
    referral_id: ReferralId, session: SessionDep, user: OfficerUser, services: ServicesDep
) -> dict[str, Any]:
    try:
        _own(session, referral_id, user)
        ref = claim(session, referral_id, user.username, user.office_code)
    except ServiceError as exc:
        raise http_error(exc) from None
    return referrals_out(session, [ref], services)[0]


@router.post(
    "/{referral_id}/release",
    response_model=ReferralOut,
    responses=ERRORS,
    summary="Hand a claimed referral back (the claimer; an admin for anyone's claim)",
)
def post_release(
    referral_id: ReferralId, session: SessionDep, user: OfficerUser, services: ServicesDep
) -> dict[str, Any]:
    try:
        _own(session, referral_id, user)
        ref = release(
            session,
            referral_id,
            user.username,
            user.office_code,
            override=user.role == Role.admin,
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    return referrals_out(session, [ref], services)[0]


@router.post(
    "/{referral_id}/outcome",
    response_model=OutcomeOut,
    responses=ERRORS,
    summary="Record what the inspection found; it becomes a label for the next training",
)
def post_outcome(
    referral_id: ReferralId,
    body: OutcomeIn,
    session: SessionDep,
    user: OfficerUser,
    services: ServicesDep,
) -> dict[str, Any]:
    outcome = InspectionOutcome.of(body)
    try:
        _own(session, referral_id, user)
        ref, row, path = record_outcome(
            session, services, referral_id, user.username, user.office_code, outcome
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    return _outcome_out(session, services, ref, row, path)


def _outcome_out(
    session: Session,
    services: Services,
    ref: Referral,
    row: Outcome,
    path: pathlib.Path | None,
) -> dict[str, Any]:
    """What recording or correcting an outcome answers: the outcome, its referral
    (its declaration day in the office's time zone), and the label file written for
    training."""
    return {
        "outcome_id": row.outcome_id,
        "referral": referrals_out(session, [ref], services)[0],
        "label_file": None if path is None else path.name,
    }


CORRECTION_ERRORS: Responses = {
    **ERRORS,
    403: {
        "model": ErrorOut,
        "description": "Not the officer who recorded the decision (nor an administrator), "
        "another office's referral, or not a signed-in person (an API key)",
    },
    409: {
        "model": ErrorOut,
        "description": "No outcome or waiver is recorded on the referral, or the outcome "
        "already holds these values",
    },
}


@router.post(
    "/{referral_id}/outcome/correct",
    response_model=OutcomeOut,
    responses=CORRECTION_ERRORS,
    summary="Correct a recorded outcome (or a waiver recorded by mistake), with a reason",
    description=(
        "By the officer who recorded it, of its office, or an administrator. The same "
        "body as recording an outcome, plus `reason` (required, visible text). An "
        "outcome is corrected in place (same `outcome_id`) and its label file under "
        "raw/outcomes/ rewritten; a waiver becomes an outcome (the goods were inspected "
        "after all). Audited with the values before and after; the original entry "
        "stays in the audit trail."
    ),
)
def post_correct_outcome(
    referral_id: ReferralId,
    body: OutcomeCorrectionIn,
    session: SessionDep,
    user: OfficerUser,
    services: ServicesDep,
) -> dict[str, Any]:
    outcome = InspectionOutcome.of(body)
    try:
        _own(session, referral_id, user)
        # (refused without a visible character: 422 on `reason`, by the service)
        ref, row, path = correct_outcome(
            session,
            services,
            referral_id,
            user.username,
            user.office_code,
            outcome,
            body.reason or "",
            override=user.role == Role.admin,
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    return _outcome_out(session, services, ref, row, path)


@router.post(
    "/{referral_id}/waive",
    response_model=ReferralOut,
    responses=ERRORS,
    summary="Waive the inspection; refused without a reason (visible text)",
)
def post_waive(
    referral_id: ReferralId,
    body: WaiverIn,
    session: SessionDep,
    user: OfficerUser,
    services: ServicesDep,
) -> dict[str, Any]:
    try:
        _own(session, referral_id, user)
        # (refused without a visible character: 422 on `reason`, by the service)
        ref = waive(session, referral_id, user.username, user.office_code, body.reason or "")
    except ServiceError as exc:
        raise http_error(exc) from None
    return referrals_out(session, [ref], services)[0]


@router.post(
    "/{referral_id}/close",
    response_model=ReferralOut,
    responses=ERRORS,
    summary="Close an inspected or waived referral (an officer of its office, or an admin)",
)
def post_close(
    referral_id: ReferralId, session: SessionDep, user: OfficerUser, services: ServicesDep
) -> dict[str, Any]:
    try:
        _own(session, referral_id, user)
        ref = close(session, referral_id, user.username, user.office_code)
    except ServiceError as exc:
        raise http_error(exc) from None
    return referrals_out(session, [ref], services)[0]
