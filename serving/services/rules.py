"""Targeting rules: the active versions, saving, activating, importing, and each version's
figures."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import polars as pl
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from serving import orm as m
from serving import policy
from serving.rules_engine import (
    Rule,
    RuleEntry,
    RuleError,
    RuleValidationError,
    parse_rule,
)
from serving.services._core import ServiceError, Services
from serving.services.audit_log import audit

# --------------------------------------------------------------------------- rules


def _rule_of(version: m.RuleVersion) -> Rule:
    return parse_rule(json.loads(version.definition))


def active_rules(session: Session, services: Services) -> list[Rule]:
    """The newest version of every active rule (cached until the rules change: every
    new version and every (de)activation writes an audit entry on the entity "rule")."""
    row = session.execute(_RULES_MARK).one()
    marker, n_active, last = row[0], row[1], row[2]
    key = hash((int(marker or 0), int(n_active or 0), int(last or 0)))
    cached = services._rules_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    rules = [_rule_of(v) for v, _r in latest_versions(session, active_only=True)]
    services._rules_cache = (key, rules)
    return rules


def _rules_mark() -> Select[Any]:
    """The rules' marker: versions, active rules and the last audit entry of a rule
    change, in one query built once, as a Core query of the tables (without the ORM's
    statement machinery: a third of its cost on every ingest)."""
    versions, rules, log = m.RuleVersion.__table__, m.Rule.__table__, m.AuditLog.__table__
    return select(
        select(func.count(versions.c.id)).scalar_subquery(),
        select(func.count()).select_from(rules).where(rules.c.active.is_(True)).scalar_subquery(),
        select(func.max(log.c.seq)).where(log.c.entity == "rule").scalar_subquery(),
    )


_RULES_MARK = _rules_mark()


def latest_versions(
    session: Session, *, active_only: bool = False
) -> list[tuple[m.RuleVersion, m.Rule]]:
    newest = (
        select(m.RuleVersion.rule_id, func.max(m.RuleVersion.version).label("v"))
        .group_by(m.RuleVersion.rule_id)
        .subquery()
    )
    query = (
        select(m.RuleVersion, m.Rule)
        .join(
            newest,
            (m.RuleVersion.rule_id == newest.c.rule_id) & (m.RuleVersion.version == newest.c.v),
        )
        .join(m.Rule, m.Rule.rule_id == m.RuleVersion.rule_id)
        .order_by(m.RuleVersion.rule_id)
    )
    if active_only:
        query = query.where(m.Rule.active.is_(True))
    return [(v, r) for v, r in session.execute(query)]


def _midnight(day: dt.date | None, default: dt.datetime | None) -> dt.datetime | None:
    if day is None:
        return default
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# Words of the rules' own addresses: /web/rules/new, /web/rules/apply, /web/rules/test,
# /api/v1/rules/apply, /backtest, /export, /import, /performance. A rule of such an id
# could not be opened at /web/rules/{id} (the fixed page comes first), so no new rule
# takes one; a rule stored under one before keeps its id and works as before (hits,
# list, export, import, changes and (de)activation over the API), except for its web
# page. tests/serving/test_rule_ids_reserved.py checks that every fixed word is here.
RESERVED_RULE_IDS = frozenset(
    {"new", "apply", "test", "backtest", "export", "import", "performance"}
)


def reserved_id_error(rule_id: str, path: str = "id") -> RuleError | None:
    """The error of a new rule's id that is a reserved word, else None."""
    if rule_id not in RESERVED_RULE_IDS:
        return None
    return RuleError(
        path,
        f"'{rule_id}' is reserved: the rules' pages and API use it for an action "
        f"(/web/rules/{rule_id} would not open the rule); reserved ids are "
        f"{', '.join(sorted(RESERVED_RULE_IDS))}: choose another id",
    )


def save_rule(session: Session, data: dict[str, Any], author: str, *, create: bool) -> Rule:
    """Check and store a new rule (create) or a new version of one; audited.
    Raises RuleValidationError (422; a new rule's id may not be reserved,
    `RESERVED_RULE_IDS`) or ServiceError (404/409)."""
    rule_id = str(data["id"])
    existing = session.get(m.Rule, rule_id)
    reserved = reserved_id_error(rule_id) if existing is None else None
    if reserved is not None:
        raise RuleValidationError([reserved])
    if create and existing is not None:
        raise ServiceError(409, f"rule {rule_id!r} exists: PUT a new version", "id")
    if not create and existing is None:
        raise ServiceError(404, f"no rule {rule_id!r}")
    last = session.scalar(
        select(func.max(m.RuleVersion.version)).where(m.RuleVersion.rule_id == rule_id)
    )
    version = int(last or 0) + 1
    rule = parse_rule({**data, "version": version, "author": author})
    if existing is None:
        existing = m.Rule(rule_id=rule_id, name=rule.name, active=True, created_by=author)
        session.add(existing)
    else:  # a new version of a deactivated rule stays inactive until reactivated
        existing.name = rule.name
    session.flush()
    definition = rule.model_dump(mode="json")
    session.add(
        m.RuleVersion(
            rule_id=rule_id,
            version=version,
            definition=json.dumps(definition, sort_keys=True),
            severity=rule.severity,
            must_inspect=rule.severity == "must_inspect",
            effective_from=_midnight(rule.effective_from, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
            effective_to=_midnight(rule.effective_to, None),
            author=author,
        )
    )
    audit(
        session,
        "rule_change",
        author,
        {"rule": definition, "action": "create" if version == 1 else "new_version"},
        entity="rule",
        entity_id=rule_id,
    )
    session.flush()
    return rule


MAX_REASON = 1000


def set_rule_active(
    session: Session, rule_id: str, active: bool, actor: str, reason: str | None
) -> m.Rule:
    """Deactivate (retire) or reactivate a rule, audited with who and why. An inactive
    rule is never evaluated (`active_rules`), stays listed and exported as inactive,
    and keeps its versions and hits. A reason is required to deactivate.
    Raises ServiceError: 404 no such rule, 409 already in that state, 422 no reason."""
    reason = (reason or "").strip()
    if not active and not policy.has_visible_text(reason):
        raise ServiceError(
            422, "a reason (with visible text) is required to deactivate a rule", "reason"
        )
    if len(reason) > MAX_REASON:
        raise ServiceError(422, f"the reason is longer than {MAX_REASON} characters", "reason")
    row = session.get(m.Rule, rule_id, with_for_update=True)
    if row is None:
        raise ServiceError(404, f"no rule {rule_id!r}")
    if row.active == active:
        state = "active" if active else "inactive"
        raise ServiceError(409, f"rule {rule_id!r} is already {state}", "active")
    version = session.scalar(
        select(func.max(m.RuleVersion.version)).where(m.RuleVersion.rule_id == rule_id)
    )
    row.active = active
    session.flush()
    audit(
        session,
        "rule_change",
        actor,
        {
            "action": "activate" if active else "deactivate",
            "rule_id": rule_id,
            "version": version,
            "reason": reason or None,
        },
        entity="rule",
        entity_id=rule_id,
    )
    session.flush()
    return row


def _content(rule: Rule) -> dict[str, Any]:
    """What a rule says (a version's number and author are bookkeeping)."""
    return rule.model_dump(exclude={"version", "author"})


def import_rules(
    session: Session, rules: Sequence[Rule | RuleEntry], author: str, *, keep_newer: bool = False
) -> tuple[list[Rule], list[str]]:
    """Import rules (as read by `read_rules_yaml`); all or nothing.

    The stored history is the source of truth; a file's version is informative:
    - a rule whose content equals its stored current version is unchanged, and so is
      an earlier version in a file that holds several versions of one rule when it
      equals the stored version of its number (a re-import changes nothing);
    - other content becomes the next stored version, authored by `author` (the
      importing user); a new rule starts at version 1 whatever the file says;
    - but content based on an older version than the stored current one (the file
      gives version 2, the rule is at version 3 here) is refused (409), so that an old
      export cannot silently revert newer versions; so is a file stating a status
      (`active`) different from the stored one ((de)activation needs its reason);
      a rule new here marked ``active: false`` is created inactive.
    Occurrences of one id are applied in the order of their versions. With
    `keep_newer` (a seed file loaded at start-up) such conflicting rules are left as
    stored and counted unchanged instead of refused.
    Returns the stored rules, each with its own version, and the unchanged ids.
    Raises RuleValidationError (409) listing every conflict with the rule's path, or
    (422) listing the new rules whose id is reserved (`RESERVED_RULE_IDS`)."""
    entries = [
        r if isinstance(r, RuleEntry) else RuleEntry(r, r.version, None, f"rules[{i}]")
        for i, r in enumerate(rules)
    ]
    first = {e.rule.id: i for i, e in reversed(list(enumerate(entries)))}
    entries.sort(key=lambda e: (first[e.rule.id], e.version or 0))
    last = {e.rule.id: e for e in entries}
    ids = sorted(first)
    history: dict[str, dict[int, dict[str, Any]]] = {}
    for v in session.scalars(select(m.RuleVersion).where(m.RuleVersion.rule_id.in_(ids))):
        history.setdefault(v.rule_id, {})[v.version] = _content(_rule_of(v))
    status: dict[str, bool] = {
        rid: bool(act)
        for rid, act in session.execute(
            select(m.Rule.rule_id, m.Rule.active).where(m.Rule.rule_id.in_(ids))
        )
    }
    reserved = [
        err
        for e in entries
        if e.rule.id not in status
        for err in [reserved_id_error(e.rule.id, f"{e.path}.id")]
        if err is not None
    ]
    if reserved:  # a new rule of a reserved id: 422, before anything is stored
        raise RuleValidationError(reserved)
    conflicts: list[RuleError] = []
    plan: list[RuleEntry] = []
    unchanged: list[str] = []
    for e in entries:
        rid, content = e.rule.id, _content(e.rule)
        stored = history.get(rid, {})
        current = max(stored) if stored else None
        stale = current is not None and e.version is not None and e.version < current
        if keep_newer and (stale or (rid in status and e.active not in (None, status[rid]))):
            if rid not in unchanged:
                unchanged.append(rid)
            continue
        if rid in status and e.active is not None and e.active != status[rid]:
            now_is, file_says = ("active", "inactive") if status[rid] else ("inactive", "active")
            how = (  # deactivating takes a reason; activating none (an optional one)
                f'deactivate it with POST /api/v1/rules/{rid}/deactivate and a "reason"'
                if status[rid]
                else f"activate it with POST /api/v1/rules/{rid}/activate (a reason is optional)"
            )
            conflicts.append(
                RuleError(
                    f"{e.path}.active",
                    f"rule {rid} is {now_is} here but {file_says} in the file: {how}",
                )
            )
            continue
        earlier = e is not last[rid]  # the file also holds a newer version of this rule
        if current is not None and (
            stored[current] == content
            or (earlier and e.version in stored and stored[e.version] == content)
        ):
            if rid not in unchanged:
                unchanged.append(rid)
            continue
        if stale:
            conflicts.append(
                RuleError(
                    f"{e.path}.version",
                    f"rule {rid}: the file's version {e.version} is older than the stored "
                    f"version {current} and differs from it; importing it would revert "
                    f"the newer version(s). Export the current rules and edit those, or "
                    f"give version {current} to replace it deliberately",
                )
            )
            continue
        stored[(current or 0) + 1] = content
        history[rid] = stored
        plan.append(e)
    if conflicts:
        raise RuleValidationError(conflicts, status=409)
    created: list[Rule] = []
    for e in plan:
        rid = e.rule.id
        data = e.rule.model_dump(mode="json", exclude={"version", "author"})
        new = rid not in status
        created.append(save_rule(session, data, author, create=new))
        status[rid] = status.get(rid, True)
        if new and e.active is False:
            set_rule_active(session, rid, False, author, f"imported as inactive ({e.path})")
            status[rid] = False
    return created, [r for r in unchanged if r not in {c.id for c in created}]


# A rule version's figures before any hit.
NO_RULE_FIGURES: dict[str, Any] = {
    "hits": 0,
    "inspected": 0,
    "findings": 0,
    "finding_rate": None,
    "arms_findings": 0,
    "arms_finding_rate": None,
}


def rule_performance_rows(session: Session, rule_id: str | None = None) -> list[dict[str, Any]]:
    """Per rule (all rules, or only `rule_id`), figures over the shipments scored by
    the service: its newest version's figures at the top level (`version`, `severity`
    are that version's), `versions` with each version's own figures (oldest first), and
    `all_versions` over the rule's whole history (a shipment hit by two versions counts
    once). Figures: shipments hit, inspected (an outcome recorded), `findings` (a
    finding of any category, documentary irregularities included) and `arms_findings`
    (a finding in an arms category: firearms, parts, ammunition, explosives), each
    rate over the inspected shipments (None when none was inspected)."""
    from data_contracts.schemas import ARMS_CATEGORIES
    from serving.rules_engine import rule_performance

    hit_query = select(m.RuleHit.rule_id, m.RuleHit.rule_version, m.RuleHit.shipment_id)
    outcome_query = select(m.Outcome.shipment_id, m.Outcome.finding, m.Outcome.category)
    version_query = select(m.RuleVersion.rule_id, m.RuleVersion.version, m.RuleVersion.severity)
    if rule_id is not None:
        hit_query = hit_query.where(m.RuleHit.rule_id == rule_id)
        outcome_query = outcome_query.where(
            m.Outcome.shipment_id.in_(
                select(m.RuleHit.shipment_id).where(m.RuleHit.rule_id == rule_id)
            )
        )
        version_query = version_query.where(m.RuleVersion.rule_id == rule_id)
    hits = pl.DataFrame(
        session.execute(hit_query).all(),
        schema={"rule_id": pl.String, "rule_version": pl.Int64, "shipment_id": pl.String},
        orient="row",
    )
    outcomes = pl.DataFrame(
        session.execute(outcome_query).all(),
        schema={"shipment_id": pl.String, "finding": pl.Boolean, "finding_category": pl.String},
        orient="row",
    )
    empty = NO_RULE_FIGURES
    figures: dict[tuple[str, int | None], dict[str, Any]] = {}
    for by_version in (False, True):
        arms = {
            (r["rule_id"], r.get("rule_version")): r
            for r in rule_performance(
                hits, outcomes, by_version=by_version, categories=ARMS_CATEGORIES
            ).to_dicts()
        }
        for r in rule_performance(hits, outcomes, by_version=by_version).to_dicts():
            key = (r["rule_id"], r.get("rule_version"))
            a = arms[key]
            figures[key] = {
                "hits": int(r["hits"]),
                "inspected": int(r["inspected"]),
                "findings": int(r["findings"]),
                "finding_rate": r["finding_rate"],
                "arms_findings": int(a["findings"]),
                "arms_finding_rate": a["finding_rate"],
            }
    versions: dict[str, list[dict[str, Any]]] = {}
    for rid, version, severity in session.execute(
        version_query.order_by(m.RuleVersion.rule_id, m.RuleVersion.version)
    ):
        versions.setdefault(rid, []).append(
            {"version": version, "severity": severity, **figures.get((rid, version), empty)}
        )
    out = []
    for v, rule in latest_versions(session):
        if rule_id is not None and v.rule_id != rule_id:
            continue
        out.append(
            {
                "rule_id": v.rule_id,
                "version": v.version,
                "severity": v.severity,
                "active": rule.active,
                **figures.get((v.rule_id, v.version), empty),
                "all_versions": figures.get((v.rule_id, None), empty),
                "versions": versions.get(v.rule_id, []),
            }
        )
    return out
