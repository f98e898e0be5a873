"""The contracts' row rules on ingested shipments: the same rules `caravan validate`
applies to files (data_contracts.rules), run on the records the API received.

The strict pydantic models check types and single values; these rules add what
only the batch rules knew: blank required text, HS codes whose chapter does not
exist, goods descriptions that do not say what the goods are, dates out of order.
Rules that concern a file rather than a record are left out: `type:` (the API's
JSON is typed already), `unique:` (a repeated id is the idempotency check's
business) and `parent_missing:` (a goods line always comes with its shipment).
A breach is reported with the field and the rule's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import polars as pl

from data_contracts.rules import (
    PARENT_DECLARED_AT,
    PARENT_EXISTS,
    TYPE_ERROR_PREFIX,
    Rule,
    rules_for,
)
from data_contracts.schemas import CONTRACTS, ITEMS, SHIPMENTS, TRAVELLERS

NOT_FOR_RECORDS = ("type", "unique", "parent_missing")
SHIP = "__ship"  # position of the shipment in the request
LINE = "__line"  # position of the goods line in its shipment's list


@dataclass(frozen=True)
class RuleBreach:
    shipment: int  # position of the record (shipment, traveller) in the checked sequence
    field: str  # "origin_country", "items.2.description"
    rule: str  # "<kind>:<column>"
    reason: str


@cache
def record_rules(table: str) -> tuple[Rule, ...]:
    return tuple(
        r for r in rules_for(CONTRACTS[table]) if not r.cascade and r.kind not in NOT_FOR_RECORDS
    )


def _column(rule: Rule) -> str:
    return rule.name.split(":", 1)[1]


def _frame(rows: list[dict[str, Any]], schema: pl.Schema, extra: dict[str, Any]) -> pl.DataFrame:
    names = schema.names()
    data = [{n: row.get(n) for n in names} for row in rows]
    frame = pl.DataFrame(data, schema=schema, orient="row")
    return frame.with_columns(
        *[v.alias(k) if isinstance(v, pl.Series) else pl.Series(k, v) for k, v in extra.items()],
        *[pl.lit(False).alias(TYPE_ERROR_PREFIX + n) for n in names],
    )


def _breaches(frame: pl.DataFrame, rules: tuple[Rule, ...], field_of: Any) -> list[RuleBreach]:
    if frame.is_empty() or not rules:
        return []
    flags = frame.select(
        *[r.violation.fill_null(False).alias(f"__r{i}") for i, r in enumerate(rules)]
    )
    mask = flags.select(pl.any_horizontal(pl.all())).to_series()
    if not mask.any():
        return []
    rows = frame.filter(mask)
    hits = flags.filter(mask)
    out: list[RuleBreach] = []
    for k in range(rows.height):
        row = rows.slice(k, 1)
        flags_row = hits.row(k, named=True)
        for i, rule in enumerate(rules):
            if flags_row[f"__r{i}"]:
                reason = str(row.select(rule.message.fill_null(rule.description)).item())
                out.append(
                    RuleBreach(int(row[SHIP][0]), field_of(row, _column(rule)), rule.name, reason)
                )
    return out


def rule_breaches(
    records: Sequence[dict[str, Any]], lines: Sequence[Sequence[dict[str, Any]]]
) -> list[RuleBreach]:
    """Every rule each shipment (`records[i]` with its goods lines `lines[i]`, in the
    order they were submitted) breaks, in rule order, shipments first."""
    if not records:
        return []
    ships = _frame(list(records), SHIPMENTS.polars_schema, {SHIP: list(range(len(records)))})
    flat = [(i, j, line) for i, ls in enumerate(lines) for j, line in enumerate(ls)]
    items = _frame(
        [line for _i, _j, line in flat],
        ITEMS.polars_schema,
        {
            SHIP: [i for i, _j, _l in flat],
            LINE: [j for _i, j, _l in flat],
            PARENT_EXISTS: [True] * len(flat),
            PARENT_DECLARED_AT: pl.Series(
                [records[i].get("declared_at") for i, _j, _l in flat],
                dtype=SHIPMENTS.polars_schema["declared_at"],
            ),
        },
    )
    found = _breaches(ships, record_rules("shipments"), lambda _row, col: col)
    found += _breaches(
        items,
        record_rules("items"),
        lambda row, col: f"items.{int(row[LINE][0])}.{col}",
    )
    return sorted(found, key=lambda b: b.shipment)


def traveller_breaches(records: Sequence[dict[str, Any]]) -> list[RuleBreach]:
    """Every rule each traveller record breaks (birth and booking before departure,
    one country per port of the route, blank required text ...)."""
    if not records:
        return []
    frame = _frame(list(records), TRAVELLERS.polars_schema, {SHIP: list(range(len(records)))})
    found = _breaches(frame, record_rules("travellers"), lambda _row, col: col)
    return sorted(found, key=lambda b: b.shipment)
