"""Targeting rules: analysts write them; every save is checked and versioned."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from data_contracts.schemas import ARMS_CATEGORIES
from serving.auth import Principal, Role
from serving.deps import AnalystUser, SessionDep, require_roles
from serving.orm import Rule as RuleRow
from serving.orm import RuleVersion
from serving.routers import PROTECTED, ErrorOut, Responses
from serving.routers._common import INVALID_UPLOAD, ServicesDep, http_error
from serving.rules_engine import (
    RuleValidationError,
    dump_rules_yaml,
    parse_rule,
    read_rules_yaml,
)
from serving.schemas import (
    RuleCreateIn,
    RuleImportOut,
    RuleIn,
    RuleOut,
    RulesApplyIn,
    RulesApplyOut,
)
from serving.scoring import ModelNotReadyError
from serving.services import (
    NO_RULE_FIGURES,
    ServiceError,
    apply_rules_to_pending,
    import_rules,
    latest_versions,
    rule_performance_rows,
    save_rule,
    set_rule_active,
)

RuleId = Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")]


class YAMLResponse(PlainTextResponse):
    media_type = "application/yaml"


router = APIRouter(prefix="/api/v1/rules", tags=["rules"], responses=PROTECTED)
RulesReader = Annotated[
    Principal,
    Depends(require_roles(Role.analyst, Role.data_scientist, Role.auditor, Role.admin)),
]
ERRORS: Responses = {
    404: {"model": ErrorOut, "description": "No such rule"},
    409: {"model": ErrorOut, "description": "The rule exists"},
}
STATUS_ERRORS: Responses = {
    404: {"model": ErrorOut, "description": "No such rule"},
    409: {"model": ErrorOut, "description": "The rule is already in that state"},
}


class RuleFiguresOut(BaseModel):
    """A rule's record over the shipments scored by the service."""

    hits: int = Field(description="Shipments hit")
    inspected: int = Field(description="Of those, shipments with a recorded outcome")
    findings: int = Field(
        description="Of those, shipments with a finding of any category "
        "(documentary irregularities and other contraband included)"
    )
    finding_rate: float | None = Field(description="findings / inspected (null: none inspected)")
    arms_findings: int = Field(
        description="Of the inspected, shipments with a finding in an arms category "
        f"({', '.join(ARMS_CATEGORIES)})"
    )
    arms_finding_rate: float | None = Field(
        description="arms_findings / inspected (null: none inspected)"
    )


class RuleVersionFiguresOut(RuleFiguresOut):
    version: int
    severity: str


class RuleVersionsPerformanceOut(RuleFiguresOut):
    """A rule's figures: the top-level figures are those of its current (newest)
    version, `version` and `severity`; `versions` gives each version's own; and
    `all_versions` the rule's whole history (a shipment hit by several versions
    counts once)."""

    rule_id: str
    version: int = Field(description="The current version: the figures beside it are its own")
    severity: str = Field(description="The current version's severity")
    active: bool
    all_versions: RuleFiguresOut
    versions: list[RuleVersionFiguresOut] = Field(description="Every version, oldest first")


class RuleVersionOut(RuleOut):
    """A version of a rule with its own figures (hits of that version only)."""

    performance: RuleFiguresOut


class RuleStatusIn(BaseModel):
    """Why a rule is (de)activated: recorded in the audit log."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000)


YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    }
}
MAX_YAML = 512 * 1024


def _loc(path: str) -> list[str | int]:
    parts = path.replace("[", ".").replace("]", "").split(".")
    return [int(p) if p.isdigit() else p for p in parts if p]


def _invalid(exc: RuleValidationError) -> HTTPException:
    return HTTPException(
        exc.status,
        detail=[
            {
                "type": "rule_error",
                "loc": ["body", *e.path.replace("[", ".").replace("]", "").split(".")],
                "msg": e.message,
                "path": e.path,
            }
            for e in exc.errors
        ],
    )


def _out(v: RuleVersion, row: RuleRow) -> dict[str, Any]:
    import json

    d = json.loads(v.definition)
    return {
        "id": v.rule_id,
        "version": v.version,
        "name": d["name"],
        "description": d.get("description", ""),
        "severity": v.severity,
        "effective_from": d.get("effective_from"),
        "effective_to": d.get("effective_to"),
        "author": v.author,
        "active": row.active,
        "condition": d["condition"],
        "created_at": v.created_at,
    }


@router.get("", response_model=list[RuleOut], summary="The newest version of every rule")
def list_rules(session: SessionDep, _user: RulesReader) -> list[dict[str, Any]]:
    return [_out(v, r) for v, r in latest_versions(session)]


@router.get(
    "/export",
    response_model=None,
    responses={
        200: {
            "content": {
                "application/yaml": {
                    "schema": {
                        "type": "object",
                        "required": ["rules"],
                        "properties": {"rules": {"type": "array", "items": {"type": "object"}}},
                    }
                }
            }
        }
    },
    summary="Every rule's newest version as YAML",
)
def export_rules(session: SessionDep, _user: RulesReader) -> YAMLResponse:
    import json

    rows = latest_versions(session)
    rules = [parse_rule(json.loads(v.definition)) for v, _r in rows]
    return YAMLResponse(
        dump_rules_yaml(rules, inactive=[r.rule_id for _v, r in rows if not r.active])
    )


PERFORMANCE_DESCRIPTION = (
    "Counted over the shipments scored by this service, per rule version: the figures "
    "beside `version` and `severity` are the current version's own; `versions` lists "
    "every version's; `all_versions` sums the rule's history. `findings` counts a "
    "finding of any category (documentary included); `arms_findings` only firearms, "
    "parts, ammunition and explosives."
)


@router.get(
    "/performance",
    response_model=list[RuleVersionsPerformanceOut],
    summary="Per rule and version: shipments hit, inspected, findings, arms findings, rates",
    description=PERFORMANCE_DESCRIPTION,
)
def performance(session: SessionDep, _user: RulesReader) -> list[dict[str, Any]]:
    return rule_performance_rows(session)


@router.post(
    "/import",
    response_model=RuleImportOut,
    responses=INVALID_UPLOAD,
    openapi_extra=YAML_BODY,
    summary="Import rules from YAML (each changed rule becomes its next version)",
    description=(
        "All or nothing. A rule whose content equals its stored version is unchanged; "
        "other content becomes the rule's next version, authored by the importing user "
        "(`version` and `author` are optional and informative). A rule whose `version` "
        "is older than the stored one and whose content differs is refused with 409, "
        "so an old export cannot revert newer versions; so is an `active` status that "
        "differs from the stored one (use /deactivate, with a reason, or /activate)."
    ),
)
async def import_yaml(request: Request, session: SessionDep, user: AnalystUser) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_YAML:
        raise HTTPException(413, "rules file too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise http_error(ServiceError(422, "the rules file is not UTF-8", "yaml")) from None
    from fastapi.concurrency import run_in_threadpool

    def work() -> dict[str, Any]:
        entries = read_rules_yaml(text)
        created, unchanged = import_rules(session, entries, user.username)
        session.commit()
        return {
            "created": [_version_out(session, c.id, c.version) for c in created],
            "unchanged": unchanged,
        }

    try:
        return await run_in_threadpool(work)
    except RuleValidationError as exc:
        session.rollback()
        raise _invalid(exc) from None
    except ServiceError as exc:
        session.rollback()
        raise http_error(exc) from None


@router.post(
    "/apply",
    response_model=RulesApplyOut,
    responses={503: {"model": ErrorOut, "description": "No scoring model loaded"}},
    summary="Apply the current rules to the shipments still awaiting a decision",
    description=(
        "Evaluates the newest version of the rules named (`rule_ids`; left out: every "
        "active rule) on the stored shipments of the queue days `day_from`..`day_to` "
        "(each office's local calendar days, as its queue, UTC unless "
        "`CARAVAN_OFFICE_TIMEZONES`/`CARAVAN_QUEUE_TIMEZONE` say otherwise; default "
        "each office's today; at most 30 days back) that await a "
        "decision: no outcome, and no referral inspected, waived or closed after a "
        "decision. A shipment whose rule hits change gets a new score (audited as "
        "`rule_apply`): priority, lane and must-inspect follow the hits; its queue "
        "entries awaiting a decision follow the score as after a watchlist rescreen (a "
        "forced one is never displaced); a forced shipment not queued enters the queue "
        "at its next view. A hit already made by a rule's current version is kept; a "
        "hit of an older version gives way to the current version's verdict. Decided "
        "shipments are never touched. The application is audited (`rule_apply`: the "
        "rule versions, the days, the time applied, the counts). Applying again "
        "changes nothing."
    ),
)
def apply_rules(
    session: SessionDep,
    user: AnalystUser,
    services: ServicesDep,
    body: RulesApplyIn | None = None,
) -> dict[str, Any]:
    from dataclasses import asdict

    given = body or RulesApplyIn()
    try:
        done = apply_rules_to_pending(
            session,
            services,
            user.username,
            rule_ids=given.rule_ids,
            day_from=given.day_from,
            day_to=given.day_to,
        )
    except (ServiceError, ModelNotReadyError) as exc:
        session.rollback()
        raise http_error(exc) from None
    return asdict(done)


def _version_out(session: SessionDep, rule_id: str, version: int) -> dict[str, Any]:
    row = session.get(RuleRow, rule_id)
    v = session.scalar(
        select(RuleVersion).where(RuleVersion.rule_id == rule_id, RuleVersion.version == version)
    )
    assert row is not None and v is not None
    return _out(v, row)


def _data(body: RuleIn) -> dict[str, Any]:
    """The rule as sent, for the rule checks: the condition's values as parsed (JSON
    mode would make an infinite or NaN number null, and the checks report what was
    sent)."""
    return {**body.model_dump(mode="json"), "condition": body.condition}


@router.post(
    "",
    response_model=RuleOut,
    status_code=201,
    responses=ERRORS,
    summary="Create a rule (checked: errors point at the faulty part)",
)
def create_rule(body: RuleCreateIn, session: SessionDep, user: AnalystUser) -> dict[str, Any]:
    return _save(session, _data(body), user.username, create=True)


@router.put(
    "/{rule_id}",
    response_model=RuleOut,
    responses=ERRORS,
    summary="Save a new version of a rule",
)
def update_rule(
    rule_id: RuleId, body: RuleIn, session: SessionDep, user: AnalystUser
) -> dict[str, Any]:
    return _save(session, {**_data(body), "id": rule_id}, user.username, create=False)


def _save(
    session: SessionDep, data: dict[str, Any], author: str, *, create: bool
) -> dict[str, Any]:
    try:
        rule = save_rule(session, data, author, create=create)
        session.commit()
    except RuleValidationError as exc:
        session.rollback()
        raise _invalid(exc) from None
    except ServiceError as exc:
        session.rollback()
        raise http_error(exc) from None
    rows = {v.rule_id: (v, r) for v, r in latest_versions(session)}
    return _out(*rows[rule.id])


@router.get(
    "/{rule_id}/performance",
    response_model=RuleVersionsPerformanceOut,
    responses=ERRORS,
    summary="One rule's figures, per version and over all versions",
    description=PERFORMANCE_DESCRIPTION,
)
def rule_performance(rule_id: RuleId, session: SessionDep, _user: RulesReader) -> dict[str, Any]:
    rows = rule_performance_rows(session, rule_id)
    if not rows:
        raise HTTPException(404, f"no rule {rule_id!r}")
    return rows[0]


@router.get(
    "/{rule_id}/versions",
    response_model=list[RuleVersionOut],
    responses=ERRORS,
    summary="Every version of a rule, oldest first, each with its own figures",
)
def rule_versions(rule_id: RuleId, session: SessionDep, _user: RulesReader) -> list[dict[str, Any]]:
    row = session.get(RuleRow, rule_id)
    if row is None:
        raise HTTPException(404, f"no rule {rule_id!r}")
    versions = session.scalars(
        select(RuleVersion).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version)
    )
    perf = rule_performance_rows(session, rule_id)
    figures = {f["version"]: f for f in perf[0]["versions"]} if perf else {}
    return [
        {
            **_out(v, row),
            "performance": figures.get(v.version) or NO_RULE_FIGURES,
        }
        for v in versions
    ]


@router.post(
    "/{rule_id}/deactivate",
    response_model=RuleOut,
    responses=STATUS_ERRORS,
    summary="Deactivate (retire) a rule at once: it no longer hits; a reason is required",
)
def deactivate_rule(
    rule_id: RuleId, body: RuleStatusIn, session: SessionDep, user: AnalystUser
) -> dict[str, Any]:
    return _set_active(session, rule_id, False, user.username, body.reason)


@router.post(
    "/{rule_id}/activate",
    response_model=RuleOut,
    responses=STATUS_ERRORS,
    summary="Reactivate a deactivated rule (its newest version)",
)
def activate_rule(
    rule_id: RuleId, session: SessionDep, user: AnalystUser, body: RuleStatusIn | None = None
) -> dict[str, Any]:
    return _set_active(session, rule_id, True, user.username, body.reason if body else None)


def _set_active(
    session: SessionDep, rule_id: str, active: bool, actor: str, reason: str | None
) -> dict[str, Any]:
    try:
        set_rule_active(session, rule_id, active, actor, reason)
        session.commit()
    except ServiceError as exc:
        session.rollback()
        raise http_error(exc) from None
    rows = {v.rule_id: (v, r) for v, r in latest_versions(session)}
    return _out(*rows[rule_id])
