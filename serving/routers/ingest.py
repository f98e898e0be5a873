"""Ingest shipments (with their goods lines) and traveller records: validated against
the contracts, scored, stored; idempotent on the record id."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import ValidationError

from serving.auth import Principal, Role
from serving.deps import (
    CurrentUser,
    InSession,
    InSessionDep,
    SessionDep,
    ensure_office,
    require_roles,
    require_roles_in_session,
)
from serving.policy import has_visible_text
from serving.routers import PROTECTED, ErrorOut, Responses
from serving.routers._common import ServicesDep, http_error
from serving.schemas import (
    BatchIn,
    BatchOut,
    ShipmentOut,
    TravellerBatchOut,
    TravellerOut,
    not_a_record,
    shipment_in_model,
    traveller_in_model,
)
from serving.scoring import ModelNotReadyError
from serving.services import (
    Conflict,
    Prepared,
    RowError,
    ServiceError,
    Services,
    ingest_shipments,
    ingest_travellers,
    link_refusal,
    load_shipment,
    masked,
    prepare_shipment,
    prepare_traveller,
    prepare_validated_shipment,
    row_errors,
    rule_errors,
    shipment_out,
    traveller_rule_errors,
    view_traveller,
)

router = APIRouter(prefix="/api/v1", tags=["ingest"], responses=PROTECTED)

IngestUser = Annotated[Principal, Depends(require_roles(Role.officer, Role.analyst, Role.admin))]
# Traveller records (API/PNR) come from the feed (a service key) or an admin, never from
# an officer: they are bound to no office and feed the traveller features of every
# office's shipments (a record an officer made up would steer other offices' scores).
TravellerIngestUser = Annotated[Principal, Depends(require_roles(Role.analyst, Role.admin))]
# The same roles for the single-record routes, which take `InSessionDep` (their database
# and CPU work in one worker-thread call, not five: `serving.deps.InSession`).
SingleIngestUser = Annotated[
    Principal, Depends(require_roles_in_session(Role.officer, Role.analyst, Role.admin))
]
SingleTravellerUser = Annotated[
    Principal, Depends(require_roles_in_session(Role.analyst, Role.admin))
]
UNMASKING_ROLES = frozenset({Role.officer, Role.analyst, Role.admin})
ShipmentIn = shipment_in_model()
TravellerIn = traveller_in_model()

CONFLICT: Responses = {
    409: {
        "model": ErrorOut,
        "description": "The id is taken: stored or in the loaded history with other content, "
        "in the loaded history (never replaced), or a goods line's item_id belongs to "
        "another shipment",
    },
    503: {"model": ErrorOut, "description": "No scoring model is loaded"},
}
NOT_JSON: Responses = {
    415: {"model": ErrorOut, "description": "The body is not sent as application/json"}
}
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # as data_contracts.fields.ID_PATTERN


# (async: they only read a header, so the event loop runs them, without the
# worker-thread round trip FastAPI gives a plain function)
async def require_json(request: Request, _user: IngestUser) -> None:
    """415 unless the body is declared as JSON: after the caller's role is checked,
    before the body is read as a model (so that a wrong header is not reported as a
    malformed record)."""
    _refuse_not_json(request)


async def require_traveller_json(request: Request, _user: TravellerIngestUser) -> None:
    """As `require_json`, for the traveller routes (their own roles)."""
    _refuse_not_json(request)


async def require_json_single(request: Request, _user: SingleIngestUser) -> None:
    """As `require_json`, for `POST /shipments` (its caller read with `InSession`)."""
    _refuse_not_json(request)


async def require_traveller_json_single(request: Request, _user: SingleTravellerUser) -> None:
    """As `require_traveller_json`, for `POST /travellers`."""
    _refuse_not_json(request)


def _refuse_not_json(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json (got {media or 'none'!r})",
        )


JSON_BODY = [Depends(require_json)]
TRAVELLER_JSON_BODY = [Depends(require_traveller_json)]
SINGLE_JSON_BODY = [Depends(require_json_single)]
SINGLE_TRAVELLER_JSON_BODY = [Depends(require_traveller_json_single)]


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


def _conflict_errors(conflicts: list[Conflict], index: list[int]) -> list[RowError]:
    """Conflicts as row errors at the request's row numbers."""
    out = []
    for c in conflicts:
        reason = c.reason
        if c.earlier is not None:
            reason += f" (row {index[c.earlier]})"
        out.append(RowError(index[c.position], c.field, reason))
    return out


@router.post(
    "/shipments",
    response_model=ShipmentOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": ShipmentOut, "description": "Already stored (same content)"},
        **CONFLICT,
        **NOT_JSON,
    },
    dependencies=SINGLE_JSON_BODY,
    summary="Ingest one shipment with its goods lines: validate, score, store",
)
async def post_shipment(
    body: ShipmentIn,  # type: ignore[valid-type]
    bound: InSessionDep,
    user: SingleIngestUser,
    response: Response,
    services: ServicesDep,
) -> dict[str, Any]:
    out, fresh = await bound.run(_ingest_one_shipment, bound, body, user, services)
    if not fresh:
        response.status_code = status.HTTP_200_OK
    return out


def _ingest_one_shipment(
    bound: InSession, body: Any, user: Principal, services: Services
) -> tuple[dict[str, Any], bool]:
    """(The worker-thread part of `post_shipment`.) The answer, and whether it was stored
    now (201) rather than found stored with the same content (200)."""
    prepared = prepare_validated_shipment(body)  # (FastAPI validated it: not again)
    ensure_office(user, str(prepared.record["office_code"]))
    _refuse_broken(rule_errors([prepared]).get(0))
    try:
        stored, unchanged, conflicts = ingest_shipments(
            bound.session, services, [prepared], user.username
        )
    except (ServiceError, ModelNotReadyError) as exc:
        raise http_error(exc) from None
    if conflicts:
        if conflicts[0].status == 422:  # the record does not fit the served model
            _refuse_broken([RowError(0, conflicts[0].field, conflicts[0].reason)])
        raise HTTPException(409, conflicts[0].reason)
    if unchanged:
        return shipment_out(unchanged[0]), False
    return shipment_out(stored[0]), True


@router.post(
    "/shipments/batch",
    response_model=BatchOut,
    responses={503: CONFLICT[503], **NOT_JSON},
    dependencies=JSON_BODY,
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
        if (problem := not_a_record(raw)) is not None:
            errors.append(RowError(i, "record", problem))
            continue
        try:
            p = prepare_shipment(raw)
        except ValidationError as exc:
            errors += row_errors(i, exc)
            continue
        except ValueError as exc:  # any other refusal of the row is the row's, not the batch's
            errors.append(RowError(i, "record", str(exc)))
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
    errors += _conflict_errors(conflicts, index)
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
        **NOT_JSON,
    },
    dependencies=SINGLE_TRAVELLER_JSON_BODY,
    summary="Ingest one traveller record (API/PNR; the feed's key or an admin, not an "
    "officer); the answer is masked",
)
async def post_traveller(
    body: TravellerIn,  # type: ignore[valid-type]
    bound: InSessionDep,
    user: SingleTravellerUser,
    response: Response,
    services: ServicesDep,
) -> dict[str, Any]:
    out, fresh = await bound.run(_ingest_one_traveller, bound, body, user, services)
    if not fresh:
        response.status_code = status.HTTP_200_OK
    return out


def _ingest_one_traveller(
    bound: InSession, body: Any, user: Principal, services: Services
) -> tuple[dict[str, Any], bool]:
    """(The worker-thread part of `post_traveller`.) The masked answer, and whether the
    record was stored now (201) rather than found stored (200)."""
    data, digest = prepare_traveller(body.model_dump(mode="json"))
    _refuse_broken(traveller_rule_errors([data]).get(0))
    try:
        _stored, unchanged, conflicts = ingest_travellers(
            bound.session, services, [(data, digest)], user.username
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    if conflicts:
        raise HTTPException(409, conflicts[0].reason)
    rid = str(data["traveller_record_id"])
    out = {
        "traveller_record_id": rid,
        "content_hash": digest,
        "masked": True,
        "record": masked(_json(data)),
    }
    return out, not unchanged


def _json(data: dict[str, Any]) -> dict[str, Any]:
    from serving.services import jsonable

    return dict(jsonable(data))


@router.post(
    "/travellers/batch",
    response_model=TravellerBatchOut,
    responses=NOT_JSON,
    dependencies=TRAVELLER_JSON_BODY,
    summary="Ingest many traveller records (the feed's key or an admin, not an officer); "
    "bad rows are reported, good ones stored",
)
def post_travellers_batch(
    body: BatchIn, session: SessionDep, user: TravellerIngestUser, services: ServicesDep
) -> dict[str, Any]:
    errors: list[RowError] = []
    good: list[tuple[dict[str, Any], str]] = []
    index: list[int] = []
    for i, raw in enumerate(body.records):
        if (problem := not_a_record(raw)) is not None:
            errors.append(RowError(i, "record", problem))
            continue
        try:
            good.append(prepare_traveller(raw))
            index.append(i)
        except ValidationError as exc:
            errors += row_errors(i, exc)
        except ValueError as exc:
            errors.append(RowError(i, "record", str(exc)))
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
    errors += _conflict_errors(conflicts, index)
    errors.sort(key=lambda e: e.index)
    return {"stored": stored, "unchanged": unchanged, "errors": _row_errors_out(errors)}


@router.get(
    "/travellers/{record_id}",
    response_model=TravellerOut,
    responses={
        404: {"model": ErrorOut, "description": "No such record (linked to that shipment)"},
    },
    summary="A traveller record, masked; unmasked only with a stated purpose (logged). "
    "Officers unmask only records linked to a shipment of their office, named by shipment_id",
)
def get_traveller(
    record_id: Annotated[str, Path(pattern=ID_PATTERN)],
    session: SessionDep,
    user: CurrentUser,
    services: ServicesDep,
    response: Response,
    purpose: Annotated[
        str | None,
        Query(
            min_length=5,
            max_length=500,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="Why the personal data is needed; unmasks the record and is logged",
        ),
    ] = None,
    shipment_id: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            description="The shipment the record is linked to, for which it is unmasked "
            "(required for officers: a shipment of their office); logged with the purpose",
        ),
    ] = None,
) -> dict[str, Any]:
    if purpose is not None:
        if user.role not in UNMASKING_ROLES:
            raise HTTPException(403, f"role {user.role} may not see unmasked personal data")
        if user.auth_method == "api_key":
            # (a view of personal data names the person who looked, as decisions do)
            raise HTTPException(
                403, "an API key cannot unmask personal data: a person must sign in and state why"
            )
        if not has_visible_text(purpose):
            raise HTTPException(
                422,
                detail=[
                    {
                        "type": "value_error",
                        "loc": ["query", "purpose"],
                        "msg": "a purpose needs visible text (not only spaces or invisible "
                        "characters)",
                    }
                ],
            )
        if user.role is Role.officer and shipment_id is None:
            raise HTTPException(
                422,
                detail=[
                    {
                        "type": "missing",
                        "loc": ["query", "shipment_id"],
                        "msg": "officers unmask a traveller record only for a shipment of "
                        "their office it is linked to: name it with shipment_id",
                    }
                ],
            )
        if shipment_id is not None:
            _ensure_linked(session, services, user, record_id, shipment_id)
    try:
        row, is_masked = view_traveller(
            session,
            record_id,
            user.username,
            purpose,
            shipment_id=shipment_id,
            history=services.history,
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    # (personal data: kept by no cache, as the web pages)
    response.headers["Cache-Control"] = "no-store"
    return {
        "traveller_record_id": row.traveller_record_id,
        # The record's hash with the record only: a hash of the unmasked record beside
        # the masked one let a guess of a hidden field (a date of birth) be checked.
        "content_hash": None if is_masked else row.content_hash,
        "masked": is_masked,
        "record": masked(row.payload) if is_masked else row.payload,
    }


def _ensure_linked(
    session: Any, services: Services, user: Principal, record_id: str, shipment_id: str
) -> None:
    """The shipment exists, the user may see it (officers: their office) and the
    record is one of its linked travellers (as on the shipment page: of the loaded
    history or stored), else 403/404; an officer did not ingest it himself (else he
    could make up a shipment naming anyone he wants to unmask), else 403."""
    from serving.web.views import linked_travellers

    stored = load_shipment(session, shipment_id)
    if stored is None:
        raise HTTPException(404, f"no scored shipment {shipment_id!r}")
    ensure_office(user, stored.shipment.office_code)
    links = linked_travellers(session, stored.shipment.payload, services.history)
    linked = {link.record_id for link in links}
    if record_id not in linked:
        raise HTTPException(
            404, f"no traveller record {record_id!r} linked to shipment {shipment_id!r}"
        )
    if user.role is Role.officer:  # (the link is what lets an officer unmask)
        refused = link_refusal(session, user.username, shipment_id)
        if refused is not None:
            raise HTTPException(403, refused[1])
