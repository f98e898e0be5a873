"""Testing a rule on the loaded history (`serving.services.backtest`): a saved rule's
record, or a draft's, before anyone saves it."""

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from serving.auth import Principal, Role
from serving.deps import SessionDep, require_roles
from serving.orm import RuleVersion
from serving.routers import PROTECTED, ErrorOut
from serving.routers._common import ServicesDep, http_error
from serving.routers.rules import _data, _invalid
from serving.rules_engine import RuleValidationError, parse_rule
from serving.schemas import RuleIn
from serving.services import ServiceError
from serving.services.backtest import RECENT_HITS, backtest

router = APIRouter(prefix="/api/v1/rules", tags=["rules"], responses=PROTECTED)
Tester = Annotated[
    Principal,
    Depends(require_roles(Role.analyst, Role.data_scientist, Role.auditor, Role.admin)),
]
DRAFT_ID = "draft"


class BacktestIn(BaseModel):
    """What to test: a saved rule (`rule_id`, its newest version) or a draft (`rule`),
    exactly one; over the shipments declared in [since, until] (UTC days,
    inclusive; the whole history when left out)."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")
    rule: RuleIn | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    effective_dates: bool = Field(
        default=True,
        description="Apply the rule only on the days it is in force (as the service does); "
        "false: on every day of the window (a draft for the future measured on the past)",
    )

    @model_validator(mode="after")
    def _one(self) -> "BacktestIn":
        if (self.rule_id is None) == (self.rule is None):
            raise ValueError("give either rule_id (a saved rule) or rule (a draft), not both")
        return self


class RandomFiguresOut(BaseModel):
    inspected_at_random: int = Field(description="Shipments inspected as random draws")
    arms_findings: int
    arms_finding_rate: float | None = Field(description="The unbiased estimate")


class BaselineOut(BaseModel):
    """Every examined shipment of the window, whether the rule hits it or not."""

    inspected: int
    findings: int
    arms_findings: int
    finding_rate: float | None
    arms_finding_rate: float | None
    random: RandomFiguresOut


class WindowOut(BaseModel):
    since: dt.date | None
    until: dt.date | None
    first_declared: dt.datetime | None
    last_declared: dt.datetime | None


class MonthOut(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)")
    hits: int
    inspected: int
    arms_findings: int


class BacktestOut(BaseModel):
    rule_id: str = Field(description=f"The saved rule, or '{DRAFT_ID}'")
    version: int | None = Field(description="The saved version tested; null for a draft")
    effective_dates_applied: bool
    window: WindowOut
    examined: int = Field(description="History shipments of the window with batch features")
    without_features: int = Field(
        description="Shipments of the window held but not yet seen by `caravan features` (left out)"
    )
    hits: int
    hit_share: float | None = Field(description="hits / examined")
    hits_per_day: float | None = Field(description="Over the days from the first to the last")
    inspected: int = Field(description="Hit shipments that were inspected")
    findings: int = Field(description="... with a finding of any category")
    arms_findings: int = Field(description="... with firearms, parts, ammunition or explosives")
    finding_rate: float | None
    arms_finding_rate: float | None = Field(
        description="Over the inspected hits: biased by how past inspections were chosen"
    )
    lift: float | None = Field(
        description="arms_finding_rate / the baseline's (both over inspected shipments)"
    )
    random: RandomFiguresOut = Field(description="The hits that were inspected at random")
    baseline: BaselineOut
    by_month: list[MonthOut]
    recent_hits: list[str] = Field(description=f"Up to {RECENT_HITS} hit shipments, newest first")


@router.post(
    "/backtest",
    response_model=BacktestOut,
    responses={
        404: {"model": ErrorOut, "description": "No such rule"},
        409: {"model": ErrorOut, "description": "No batch features (or too old) to test on"},
    },
    summary="Test a saved or draft rule on the loaded history: hits, inspections, findings",
)
async def test_rule(
    body: BacktestIn, session: SessionDep, services: ServicesDep, user: Tester
) -> dict[str, Any]:
    if body.rule is not None:
        data = {**_data(body.rule), "id": DRAFT_ID, "version": 1}
    else:
        row = session.scalar(
            select(RuleVersion)
            .where(RuleVersion.rule_id == body.rule_id)
            .order_by(RuleVersion.version.desc())
            .limit(1)
        )
        if row is None:
            raise HTTPException(404, f"no rule {body.rule_id!r}")
        data = json.loads(row.definition)
    try:
        rule = parse_rule({**data, "author": data.get("author") or user.username}, "rule")
    except RuleValidationError as exc:
        raise _invalid(exc) from None
    try:
        out = await run_in_threadpool(
            backtest,
            services,
            rule,
            since=body.since,
            until=body.until,
            effective_dates=body.effective_dates,
        )
    except ServiceError as exc:
        raise http_error(exc) from None
    if body.rule is not None:
        out = {**out, "version": None}
    return out
