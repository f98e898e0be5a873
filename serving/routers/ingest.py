"""Ingest shipments (with their goods lines) and traveller records: validated against
the contracts, scored, stored; idempotent on the record id."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import ValidationError

from serving.auth import Principal, Role
from serving.deps import CurrentUser, SessionDep, ensure_office, require_roles
from serving.routers import PROTECTED, ErrorOut, Responses
from serving.routers._common import ServicesDep, http_error
from serving.schemas import (
    BatchIn,
    BatchOut,
    ShipmentOut,
    TravellerBatchOut,
    TravellerOut,
    shipment_in_model,
    traveller_in_model,
)
from serving.scoring import ModelNotReadyError
from serving.services import (
    Prepared,
    RowError,
    ServiceError,
    ingest_shipments,
    ingest_travellers,
    masked,
    prepare_shipment,
    prepare_traveller,
    row_errors,
    rule_errors,
    shipment_out,
    traveller_rule_errors,
    view_traveller,
)

router = APIRouter(prefix="/api/v1", tags=["ingest"], responses=PROTECTED)

IngestUser = Annotated[Principal, Depends(require_roles(Role.officer, Role.analyst, Role.admin))]
UNMASKING_ROLES = frozenset({Role.officer, Role.analyst, Role.admin})
ShipmentIn = shipment_in_model()
TravellerIn = traveller_in_model()

CONFLICT: Responses = {
    409: {"model": ErrorOut, "description": "The id is stored with different content"},
    503: {"model": ErrorOut, "description": "No scoring model is loaded"},
}


def _loc(field: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in field.split(".")]


def _refuse_broken(broken: list[RowError] | None) -> None:
    """422 naming each field a single record breaks, as FastAPI's own errors do."""
    if broken:
        raise HTTPException(
            422,
            detail=[
                {"type": "value_error", "loc": ["body", *_loc(e.field)], "msg": e.reason}
                for e in broken
            ],
        )


def _row_errors_out(errors: list[RowError]) -> list[dict[str, Any]]:
    return [{"index": e.index, "field": e.field, "reason": e.reason} for e in errors]


@router.post(
    "/shipments",
    response_model=ShipmentOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": ShipmentOut, "description": "Already stored (same content)"},
        **CONFLICT,
    },
    summary="Ingest one shipment with its goods lines: validate, score, store",
)
def post_shipment(
    body: ShipmentIn,  # type: ignore[valid-type]
    session: SessionDep,
    user: IngestUser,
    response: Response,
    services: ServicesDep,
) -> dict[str, Any]:
    prepared = prepare_shipment(body.model_dump(mode="json"))  # type: ignore[attr-defined]
    ensure_office(user, str(prepared.record["office_code"]))
    _refuse_broken(rule_errors([prepared]).get(0))
    try:
        stored, unchanged, conflicts = ingest_shipments(
            session, services, [prepared], user.username
        )
    except (ServiceError, ModelNotReadyError) as exc:
        raise http_error(exc) from None
    if conflicts:
        raise HTTPException(409, f"shipment {conflicts[0][1]!r} is stored with different content")
    if unchanged:
        response.status_code = status.HTTP_200_OK
        return shipment_out(unchanged[0])
    return shipment_out(stored[0])


@router.post(
    "/shipments/batch",
    response_model=BatchOut,
    responses={503: CONFLICT[503]},
    summary="Ingest many shipments: each bad row is reported (index, field, reason), "
    "the good ones are stored",
)
def post_shipments_batch(
    body: BatchIn, session: SessionDep, user: IngestUser, services: ServicesDep
) -> dict[str, Any]:
    errors: list[RowError] = []
    good: list[Prepared] = []
    index: list[int] = []
    for i, raw in enumerate(body.records):
        try:
            p = prepare_shipment(raw)
        except ValidationError as exc:
            errors += row_errors(i, exc)
            continue
        if user.role is Role.officer and p.record["office_code"] != user.office_code:
            errors.append(RowError(i, "office_code", "officers ingest for their own office only"))
            continue
        good.append(p)
        index.append(i)
    broken = rule_errors(good)
    if broken:
        for j, found in broken.items():
            errors += [RowError(index[j], e.field, e.reason) for e in found]
        good = [p for j, p in enumerate(good) if j not in broken]
        index = [i for j, i in enumerate(index) if j not in broken]
    try:
        stored, unchanged, conflicts = ingest_shipments(session, services, good, user.username)
    except (ServiceError, ModelNotReadyError) as exc:
        raise http_error(exc) from None
    for j, sid in conflicts:
        errors.append(
            RowError(index[j], "shipment_id", f"{sid!r} is stored with different content")
        )
    errors.sort(key=lambda e: e.index)
    return {
        "stored": [shipment_out(s) for s in stored],
        "unchanged": [shipment_out(s) for s in unchanged],
        "errors": _row_errors_out(errors),
    }


@router.post(
    "/travellers",
    response_model=TravellerOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": TravellerOut, "description": "Already stored"},
        409: CONFLICT[409],
    },
    summary="Ingest one traveller record (API/PNR); the answer is masked",
)
def post_traveller(
    body: TravellerIn,  # type: ignore[valid-type]
    session: SessionDep,
    user: IngestUser,
    response: Response,
    services: ServicesDep,
) -> dict[str, Any]:
    data, digest = prepare_traveller(body.model_dump(mode="json"))  # type: ignore[attr-defined]
    _refuse_broken(traveller_rule_errors([data]).get(0))
    try:
        _stored, unchanged, conflicts = ingest_travellers(
            session, services, [(data, digest)], user.username
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    if conflicts:
        raise HTTPException(409, f"record {conflicts[0][1]!r} is stored with different content")
    if unchanged:
        response.status_code = status.HTTP_200_OK
    rid = str(data["traveller_record_id"])
    return {
        "traveller_record_id": rid,
        "content_hash": digest,
        "masked": True,
        "record": masked(_json(data)),
    }


def _json(data: dict[str, Any]) -> dict[str, Any]:
    from serving.services import jsonable

    return dict(jsonable(data))


@router.post(
    "/travellers/batch",
    response_model=TravellerBatchOut,
    summary="Ingest many traveller records; bad rows are reported, good ones stored",
)
def post_travellers_batch(
    body: BatchIn, session: SessionDep, user: IngestUser, services: ServicesDep
) -> dict[str, Any]:
    errors: list[RowError] = []
    good: list[tuple[dict[str, Any], str]] = []
    index: list[int] = []
    for i, raw in enumerate(body.records):
        try:
            good.append(prepare_traveller(raw))
            index.append(i)
        except ValidationError as exc:
            errors += row_errors(i, exc)
    broken = traveller_rule_errors([data for data, _digest in good])
    if broken:
        for j, found in broken.items():
            errors += [RowError(index[j], e.field, e.reason) for e in found]
        good = [g for j, g in enumerate(good) if j not in broken]
        index = [i for j, i in enumerate(index) if j not in broken]
    try:
        stored, unchanged, conflicts = ingest_travellers(session, services, good, user.username)
    except ServiceError as exc:
        raise http_error(exc) from None
    for j, rid in conflicts:
        errors.append(
            RowError(index[j], "traveller_record_id", f"{rid!r} is stored with different content")
        )
    errors.sort(key=lambda e: e.index)
    return {"stored": stored, "unchanged": unchanged, "errors": _row_errors_out(errors)}


@router.get(
    "/travellers/{record_id}",
    response_model=TravellerOut,
    responses={404: {"model": ErrorOut, "description": "No such record"}},
    summary="A traveller record, masked; unmasked only with a stated purpose (logged)",
)
def get_traveller(
    record_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")],
    session: SessionDep,
    user: CurrentUser,
    purpose: Annotated[
        str | None,
        Query(
            min_length=5,
            max_length=500,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="Why the personal data is needed; unmasks the record and is logged",
        ),
    ] = None,
) -> dict[str, Any]:
    if purpose is not None and user.role not in UNMASKING_ROLES:
        raise HTTPException(403, f"role {user.role} may not see unmasked personal data")
    try:
        row, is_masked = view_traveller(session, record_id, user.username, purpose)
    except ServiceError as exc:
        raise http_error(exc) from None
    return {
        "traveller_record_id": row.traveller_record_id,
        "content_hash": row.content_hash,
        "masked": is_masked,
        "record": masked(row.payload) if is_masked else row.payload,
    }
