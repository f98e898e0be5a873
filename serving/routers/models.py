"""Model versions and promotions: data scientists compare the challenger with the
champion and promote; every promotion names who decided it and is audited."""

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from models.assess import MissingInputError
from models.card import NoCardError, version_card
from models.card import UnknownVersionError as NoVersionError
from models.promotion import (
    PromotionError,
    ReasonRequiredError,
    UnknownVersionError,
    key_metrics,
    primary_metric_of,
)
from serving.auth import Principal, Role
from serving.deps import DataScientistUser, SessionDep, require_roles
from serving.promotions import model_versions, promote_model, promotion_out, promotions
from serving.routers import PROTECTED, ErrorOut, Responses, unprocessable
from serving.schemas import ModelsOut, PromoteIn, PromotionOut, PromotionResultOut

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=PROTECTED)

# who may read model versions, promotions and model cards (the /web/models page too)
MODEL_READERS = (Role.data_scientist, Role.auditor, Role.admin)
ModelReader = Annotated[Principal, Depends(require_roles(*MODEL_READERS))]
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,8}$", description="Version number")]
ERRORS: Responses = {
    404: {"model": ErrorOut, "description": "No such model version"},
    409: {
        "model": ErrorOut,
        "description": "Refused: worse than the champion (and not forced), already the "
        "champion, or cannot be evaluated on the current data",
    },
}


@router.get("", response_model=ModelsOut, summary="Registered versions, champion and challenger")
def list_models(request: Request, _user: ModelReader) -> dict[str, Any]:
    layout = request.app.state.layout
    return {**model_versions(layout), "primary_metric": primary_metric_of(layout)}


@router.get(
    "/promotions",
    response_model=list[PromotionOut],
    summary="Promotions, newest first: who, when, why, forced or not",
)
def list_promotions(
    session: SessionDep,
    _user: ModelReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return [promotion_out(r) for r in promotions(session, limit)]


@router.post(
    "/{version}/promote",
    response_model=PromotionResultOut,
    responses=ERRORS,
    summary="Make a version the champion after comparing it with the current champion "
    "on the same test window; the running server switches to it",
)
def post_promote(
    version: Version,
    body: PromoteIn,
    request: Request,
    session: SessionDep,
    user: DataScientistUser,
) -> dict[str, Any]:
    if user.auth_method != "token":  # (a person decides a promotion, not a program)
        raise HTTPException(
            403, "an API key cannot promote a model: a person must sign in and decide"
        )
    app = request.app
    services = getattr(app.state, "services", None)
    holder = services.holder if services is not None else None
    try:
        done = promote_model(
            session,
            app.state.layout,
            version,
            who=user.username,
            reason=body.reason,
            force=body.force,
            via="api",
            holder=holder,
        )
    except ReasonRequiredError as exc:  # (api_message: the body's fields, not CLI options)
        raise unprocessable("reason", exc.api_message) from None
    except UnknownVersionError as exc:
        raise HTTPException(404, exc.api_message) from None
    except PromotionError as exc:
        raise HTTPException(409, exc.api_message) from None
    except (MissingInputError, ValueError) as exc:
        raise HTTPException(409, str(exc)) from None
    if holder is not None and holder.ready:
        app.state.model = holder
    promo = done.promotion
    return {
        "promotion": promotion_out(done.row),
        "audit_seq": done.audit_seq,
        "serving_version": holder.handle.version if holder is not None and holder.ready else None,
        "challenger": key_metrics(promo.challenger),
        "champion": key_metrics(promo.champion) if promo.champion else None,
    }


class CardFeatureOut(BaseModel):
    name: str
    family: str
    description: str


class CardLeftOutOut(BaseModel):
    name: str
    reason: str


class ModelCardOut(BaseModel):
    """A version's model card as `caravan train` wrote it (reports/evaluation/vN/
    model_card.json, also logged with the MLflow run). Feature names and
    descriptions may come from an administration's own export: text, never markup."""

    model: str
    version: str
    purpose: str | None = None
    target: str | None = None
    algorithm: str | None = None
    data_windows: dict[str, list[str]] = Field(
        description="train, valid, test: first and last declaration time"
    )
    rows: dict[str, int] = Field(description="Inspected shipments per window")
    positives: dict[str, int] | None = Field(
        default=None,
        description="Positives for the model's target per window (arms findings, or any "
        "finding): whether a window's figures can be trusted; absent on cards written "
        "before it was recorded",
    )
    feature_set_version: str | None = None
    features: list[CardFeatureOut] = Field(description="The model's inputs")
    features_left_out: list[CardLeftOutOut] = Field(
        default_factory=list, description="Registered features not used, with why"
    )
    excluded_attributes: list[str] = Field(description="Attributes the model never uses")
    known_limits: list[str]
    data_hash: str | None = None
    code_version: str | None = None
    early_stopping: dict[str, Any] | None = Field(
        default=None, description="The validation metric that chose the number of trees, and why"
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="The evaluation on the test window at training"
    )
    outcomes_not_trained_on: dict[str, Any] | None = None
    readers: list[str] = Field(
        description="The roles that may read models and their cards (API and /web/models)"
    )


CARD_ERRORS: Responses = {
    404: {"model": ErrorOut, "description": "No such model version, or it has no model card"},
}


@router.get(
    "/{version}/card",
    response_model=ModelCardOut,
    responses=CARD_ERRORS,
    summary="A version's model card: data windows, inputs, features left out, attributes "
    "never used, known limits, data hash, code version, metrics",
)
def get_card(version: Version, request: Request, _user: ModelReader) -> dict[str, Any]:
    try:
        card = version_card(request.app.state.layout, version)
    except (NoVersionError, NoCardError) as exc:
        raise HTTPException(404, str(exc)) from None
    return {**_json_safe(card), "readers": sorted(r.value for r in MODEL_READERS)}


def _json_safe(value: Any) -> Any:
    """A stored card as JSON can carry it: NaN and infinities (Python's json writes
    them) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
