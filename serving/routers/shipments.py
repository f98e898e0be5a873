"""Shipment detail and explanation (officers: their own office only)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path

from serving.deps import CurrentUser, SessionDep, ensure_office
from serving.routers import PROTECTED, ErrorOut, Responses
from serving.routers._common import ServicesDep, http_error
from serving.schemas import ExplanationOut, ShipmentOut
from serving.services import ServiceError, explanation, shipment_out, visible_shipment

ShipmentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]  # no "/"
router = APIRouter(prefix="/api/v1/shipments", tags=["shipments"], responses=PROTECTED)
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such scored shipment"}}


@router.get(
    "/{shipment_id}",
    response_model=ShipmentOut,
    responses=NOT_FOUND,
    summary="Score, priority, lane, rule and watchlist hits, model and feature-set version",
)
def get_shipment(shipment_id: ShipmentId, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    try:
        stored = visible_shipment(session, shipment_id)
    except ServiceError as exc:
        raise http_error(exc) from None
    ensure_office(user, stored.shipment.office_code)
    return shipment_out(stored)


@router.get(
    "/{shipment_id}/explanation",
    response_model=ExplanationOut,
    responses=NOT_FOUND,
    summary="Reason codes (en/ru) with their contributions, next to rule and watchlist hits",
)
def get_explanation(
    shipment_id: ShipmentId, session: SessionDep, user: CurrentUser, services: ServicesDep
) -> dict[str, Any]:
    try:
        stored = visible_shipment(session, shipment_id)
    except ServiceError as exc:
        raise http_error(exc) from None
    ensure_office(user, stored.shipment.office_code)
    return explanation(services, stored)
