"""The contracts' row rules on ingested shipments: the same rules `caravan validate`
applies to files (data_contracts.rules), run on the records the API received.

The strict pydantic models check types and single values; these rules add what
only the batch rules knew: blank required text, HS codes whose chapter does not
exist, goods descriptions that do not say what the goods are, dates out of order.
Rules that concern a file rather than a record are left out: `type:` (the API's
JSON is typed already), `unique:` (a repeated id is the idempotency check's
business) and `parent_missing:` (a goods line always comes with its shipment).
A breach is reported with the field and the rule's message.

A request of a few records (the API's usual single shipment) is first screened in
plain Python: each rule's test, read from the same column definitions the rules are
generated from, costs microseconds where building and planning the Polars frame costs
milliseconds. The screen only decides whether a record *may* break a rule: a record
it flags (or cannot judge: a rule kind it does not know, text where Python's and
Rust's regular expressions could disagree) goes through the Polars rules, which
write every reported breach and message. So the breaches reported are the Polars
rules' in every case; the screen must only never pass a record the rules refuse.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

import polars as pl

from data_contracts import reference
from data_contracts.fields import Column, Contract, Kind
from data_contracts.rules import (
    PARENT_DECLARED_AT,
    PARENT_EXISTS,
    TYPE_ERROR_PREFIX,
    Rule,
    rules_for,
)
from data_contracts.schemas import CONTRACTS, ITEMS, SHIPMENTS, TRAVELLERS

# `maximum:`, `date_range:` and `text:` are checked on records by the strict model
# already (data_contracts.fields), which skips them when re-typing a record stored earlier.
NOT_FOR_RECORDS = ("type", "unique", "parent_missing", "maximum", "date_range", "text")
SMALL_BATCH = 32  # up to this many records, the Python screen runs first
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
                column = _column(rule)
                if rule.field is not None:  # the rule knows which field of the row is wrong
                    column = str(row.select(rule.field.fill_null(column)).item())
                out.append(RuleBreach(int(row[SHIP][0]), field_of(row, column), rule.name, reason))
    return out


def rule_breaches(
    records: Sequence[dict[str, Any]],
    lines: Sequence[Sequence[dict[str, Any]]],
    *,
    screen: bool | None = None,
) -> list[RuleBreach]:
    """Every rule each shipment (`records[i]` with its goods lines `lines[i]`, in the
    order they were submitted) breaks, in rule order, shipments first.

    screen: run the Python screen first (None: for up to SMALL_BATCH records)."""
    if not records:
        return []
    positions = list(range(len(records)))
    if screen or (screen is None and len(records) <= SMALL_BATCH):
        positions = [
            i
            for i in positions
            if _suspect(records[i], "shipments")
            or any(_suspect(line, "items") for line in lines[i])
        ]
        if not positions:
            return []
    return _polars_breaches(records, lines, positions)


def _polars_breaches(
    records: Sequence[dict[str, Any]],
    lines: Sequence[Sequence[dict[str, Any]]],
    positions: list[int],
) -> list[RuleBreach]:
    """The Polars rules on the shipments at `positions` (reported at those positions)."""
    ships = _frame([records[i] for i in positions], SHIPMENTS.polars_schema, {SHIP: positions})
    flat = [(i, j, line) for i in positions for j, line in enumerate(lines[i])]
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


def traveller_breaches(
    records: Sequence[dict[str, Any]], *, screen: bool | None = None
) -> list[RuleBreach]:
    """Every rule each traveller record breaks (birth and booking before departure,
    one country per port of the route, blank required text ...).

    screen: run the Python screen first (None: for up to SMALL_BATCH records)."""
    if not records:
        return []
    positions = list(range(len(records)))
    if screen or (screen is None and len(records) <= SMALL_BATCH):
        positions = [i for i in positions if _suspect(records[i], "travellers")]
        if not positions:
            return []
    frame = _frame([records[i] for i in positions], TRAVELLERS.polars_schema, {SHIP: positions})
    found = _breaches(frame, record_rules("travellers"), lambda _row, col: col)
    return sorted(found, key=lambda b: b.shipment)


# --------------------------------------------------------------------------- the screen


class _UnsureError(Exception):
    """The screen cannot judge this value the way the Polars rules would."""


Test = Callable[[dict[str, Any]], bool]  # True: the record may break the rule

# Characters whose class (word, digit, case) Python's `re` and Rust's `regex` see alike:
# letters and decimal digits of the Latin and Cyrillic blocks, spaces, punctuation and
# symbols. Marks, other numbers (2 as a superscript, fractions) and the dotless and
# dotted i / long s (special case folding in Python) are left to the Polars rules.
_SAFE_CATEGORIES = frozenset(
    {"Lu", "Ll", "Lt", "Lo", "Nd", "Zs", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So"}
)
# What Polars' strip_chars() removes (Rust's char::is_whitespace, Unicode White_Space);
# Python's str.strip() removes a few more (\x1c-\x1f).
_RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_UNSAFE_LETTERS = frozenset("\u0130\u0131\u017f")


@cache
def _safe_char(ch: str) -> bool:
    code = ord(ch)
    if code < 0x80:
        return ch.isprintable() or ch in " \t"
    in_blocks = code < 0x250 or 0x400 <= code < 0x530
    return in_blocks and ch not in _UNSAFE_LETTERS and unicodedata.category(ch) in _SAFE_CATEGORIES


def _value(record: dict[str, Any], name: str) -> Any:
    v = record.get(name)
    return v.value if isinstance(v, Enum) else v


def _text(v: Any, *, ascii_only: bool) -> str:
    if not isinstance(v, str):
        raise _UnsureError
    if ascii_only and not v.isascii():
        raise _UnsureError
    if not ascii_only and not all(_safe_char(ch) for ch in v):
        raise _UnsureError
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _UnsureError
    return float(v)


def _aware(v: Any) -> dt.datetime:
    if not isinstance(v, dt.datetime) or v.tzinfo is None:
        raise _UnsureError
    return v


def _fullmatch(pattern: str) -> Callable[[str], bool]:
    regex = re.compile(f"(?:{pattern})")
    return lambda text: regex.fullmatch(text) is not None


def _column_test(kind: str, col: Column) -> Test | None:
    n = col.name
    if kind == "required":
        if col.kind is Kind.STRING:
            return lambda r: (
                (v := _value(r, n)) is None or not _length_text(v).strip(_RUST_WHITESPACE)
            )
        return lambda r: _value(r, n) is None
    if kind == "pattern" and col.pattern:
        ok = _fullmatch(col.pattern)
        return lambda r: (v := _value(r, n)) is not None and not ok(_text(v, ascii_only=True))
    if kind == "max_length" and col.max_length:
        limit = col.max_length
        return lambda r: (v := _value(r, n)) is not None and _length(v) > limit
    if kind == "enum":
        return _not_in(n, frozenset(col.values))
    if kind == "country" and col.kind is Kind.STRING_LIST:
        countries = frozenset(reference.COUNTRIES)
        return lambda r: (
            (v := _value(r, n)) is not None
            and any(e is not None and e not in countries for e in _elements(v))
        )
    if kind == "country":
        return _not_in(n, frozenset(reference.COUNTRIES))
    if kind == "currency":
        return _not_in(n, frozenset(reference.CURRENCIES))
    if kind == "positive":
        return lambda r: (v := _value(r, n)) is not None and (math.isnan(x := _number(v)) or x <= 0)
    if kind == "non_negative":
        return lambda r: (v := _value(r, n)) is not None and (math.isnan(x := _number(v)) or x < 0)
    if kind == "probability":
        return lambda r: (
            (v := _value(r, n)) is not None and (math.isnan(x := _number(v)) or x <= 0 or x > 1)
        )
    if kind == "hs_format":
        code = _fullmatch(reference.HS_CODE_PATTERN)
        return lambda r: (v := _value(r, n)) is not None and not code(_text(v, ascii_only=True))
    if kind == "hs_chapter":
        code = _fullmatch(reference.HS_CODE_PATTERN)
        chapter = _fullmatch(reference.HS_CHAPTER_PATTERN)
        return lambda r: (
            (v := _value(r, n)) is not None
            and (code(t := _text(v, ascii_only=True)) and not chapter(t))
        )
    return None


def _length_text(v: Any) -> str:
    if not isinstance(v, str):
        raise _UnsureError
    return v


def _length(v: Any) -> int:
    if not isinstance(v, str):
        raise _UnsureError
    return len(v)  # code points, as Polars' len_chars


def _elements(v: Any) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _UnsureError
    return [e.value if isinstance(e, Enum) else e for e in v]


def _not_in(name: str, allowed: frozenset[str]) -> Test:
    return lambda r: (v := _value(r, name)) is not None and v not in allowed


def _utc_date(v: Any) -> dt.date:
    return _aware(v).astimezone(dt.UTC).date()


def _table_test(rule: Rule) -> Test | None:
    if rule.name == "date_order:expected_arrival_at":

        def arrival_first(r: dict[str, Any]) -> bool:
            a, d = _value(r, "expected_arrival_at"), _value(r, "declared_at")
            return a is not None and d is not None and _aware(a) < _aware(d)

        return arrival_first
    if rule.name == "vague_description:description":
        vague = re.compile(reference.vague_description_regex())

        def is_vague(r: dict[str, Any]) -> bool:
            v = _value(r, "description")
            return v is not None and vague.fullmatch(_text(v, ascii_only=False)) is not None

        return is_vague
    if rule.name == "date_order:departure_at":

        def after_departure(r: dict[str, Any]) -> bool:
            dep = _value(r, "departure_at")
            if dep is None:
                return False
            birth, booked = _value(r, "date_of_birth"), _value(r, "booked_at")
            if birth is not None:
                if not isinstance(birth, dt.date) or isinstance(birth, dt.datetime):
                    raise _UnsureError
                if birth > _utc_date(dep):
                    return True
            return booked is not None and _aware(booked) > _aware(dep)

        return after_departure
    if rule.name == "route_mismatch:route_countries":

        def mismatch(r: dict[str, Any]) -> bool:
            route, countries = _value(r, "route"), _value(r, "route_countries")
            if route is None or countries is None:
                return False
            return len(_elements(route)) != len(_elements(countries))

        return mismatch
    return None


def _contract(table: str) -> Contract:
    return CONTRACTS[table]


@cache
def screen_tests(table: str) -> tuple[tuple[str, Test], ...] | None:
    """(rule name, test) for every record rule of the table, or None when a rule has
    no Python test (then every record goes through the Polars rules)."""
    columns = {c.name: c for c in _contract(table).columns}
    out: list[tuple[str, Test]] = []
    for rule in record_rules(table):
        col = columns.get(_column(rule))
        test = _table_test(rule)
        if test is None and col is not None:
            test = _column_test(rule.kind, col)
        if test is None:
            return None
        out.append((rule.name, test))
    return tuple(out)


def screened(record: dict[str, Any], table: str) -> set[str] | None:
    """The names of the rules the screen says `record` breaks; None when it cannot
    judge the record (then only the Polars rules can)."""
    tests = screen_tests(table)
    if tests is None:
        return None
    try:
        return {name for name, test in tests if test(record)}
    except (_UnsureError, TypeError):
        return None


def _suspect(record: dict[str, Any], table: str) -> bool:
    return screened(record, table) != set()
