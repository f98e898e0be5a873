"""Targeting rules: declarative conditions written by analysts, interpreted by Caravan.

A rule is data, never code. Its condition is a nested mapping (YAML or JSON)::

    all:
      - {field: item.hs_code, op: starts_with, value: "9305"}
      - {field: origin_country, op: in, value: [TR, AE]}
      - {field: consignee_shipments_365d, op: lt, value: 3}

Combinators: ``all`` (non-empty list), ``any`` (non-empty list), ``not`` (one
condition) and ``line`` (one condition on a single goods line, below). A leaf is
``{field, op, value}``; ``is_null`` takes no value.

Fields
    * shipment fields: the columns of the SHIPMENTS contract (``origin_country``,
      ``transit_countries``, ``gross_mass_kg`` ...);
    * goods-line fields with the prefix ``item.`` (``item.hs_code``,
      ``item.description``, ``item.origin_country``, ``item.value`` ...);
    * feature names from the feature registry (``consignee_shipments_365d`` ...).
      A feature whose name is also a shipment column (``mode``) is reached through
      the shipment column, which wins. Categorical features take their category
      labels as values (``{field: origin_country_code, op: eq, value: AF}``);
    * derived ages: ``consignor_age``, ``consignee_age``, ``declarant_age``, the
      party's age in whole years on the day of ``declared_at`` (UTC) from its
      ``<role>_birth_date`` (a birthday on 29 February is reached on 1 March in other
      years); null when either date is missing;
    * a derived goods-line field, ``item.value_usd_per_kg``: the line's ``value`` in
      US dollars (the shipment's ``invoice_currency`` at the rates the features use,
      `features.context.Params.usd_per_unit`) per kg of its ``net_mass_kg``; null when
      the currency has no rate or a value or mass is missing (or the mass is not above
      zero). With ``line`` it ties a unit value to one line (``line: {all: [{field:
      item.hs_code, op: starts_with, value: "93"}, {field: item.value_usd_per_kg, op:
      lt, value: 40}]}``: a chapter-93 line declared below 40 USD/kg).

Multi-valued fields (``item.*`` and list columns such as ``transit_countries``)
are true when *any* element satisfies the leaf; ``ne`` and ``not_in`` are the
negations of ``eq`` and ``in`` (true when *no* element equals / is in the list),
and ``is_null`` is true when there is no non-null element. On a single-valued
field a missing value makes every operator false except ``is_null`` (as in SQL).

Goods lines. Outside ``line``, every ``item.`` leaf is evaluated on its own over
*any* line: ``all: [{field: item.hs_code, op: starts_with, value: "8708"},
{field: item.description, op: contains, value: затвор}]`` holds when one line is
in heading 8708 and one line (the same or another) says "затвор", and ``not:
{field: item.hs_code, op: starts_with, value: "93"}`` means "no line in chapter
93". To tie conditions to one and the same line, wrap them in ``line``::

    line:
      all:
        - {field: item.description, op: matches, value: "(?i)rifle|pistol"}
        - not: {field: item.hs_code, op: starts_with, value: "93"}

``line`` is true when at least one goods line satisfies the whole inner condition
(false for a shipment without goods lines). Inside it only ``item.`` fields may be
used, each is that line's single value (a missing value makes every operator false
except ``is_null``, as on any single-valued field), ``not`` negates for that line,
and ``line`` cannot be nested. Combine it with shipment fields and features outside
it (``all: [{line: ...}, {field: origin_country, op: in, value: [TR]}]``).

Operators by field type
    string      eq ne in not_in starts_with contains matches is_null
    number      eq ne lt le gt ge in not_in between is_null
    bool        eq ne is_null
    datetime    eq ne lt le gt ge between is_null
    date        eq ne lt le gt ge between is_null
    categorical eq ne in not_in is_null

``contains`` is a case-insensitive substring test. ``between`` is inclusive at
both ends. ``matches`` is a regular-expression *search*.

Dates and times. A datetime value is an ISO 8601 date-time (without an offset it
is UTC). A date alone (``2026-11-27``) stands for that whole day in UTC, inclusive
as ``effective_from``/``effective_to`` are: ``eq`` is "on that day", ``ne`` "not
on that day", ``lt`` "before the day", ``le`` "on or before the day" (up to its
last instant), ``gt`` "after the day" (from the next midnight), ``ge`` "on or
after the day", and ``between [2026-11-01, 2026-11-30]`` covers both days in
full; a bound with a time is exact (``le 2026-11-27T12:00:00Z``).

Date fields (``consignee_birth_date`` ...) hold a calendar date without a time; a
value is an ISO date ``YYYY-MM-DD`` (a time or any other form is refused), and the
comparisons are those of calendar dates (``lt 2003-01-01``: born before 2003).
A missing date never matches (only ``is_null`` is true), and neither does an age
derived from it.

Regular expressions and safety. Patterns run in Polars' linear-time Rust
``regex`` on both paths (one string at a time on the single-shipment path), so
no text can make a pattern backtrack (Python's ``re`` took 12-26 s on 512
characters for ``.*.*.*=``) and both paths agree by construction. A pattern is
also accepted only when: it is at most 200 characters; it compiles in both
Python's ``re`` and Rust's engine (which rules out back-references and
look-around); no repeated element sits inside another repeated element
(``(a+)+``), no alternation sits inside a repeated group (``(a|ab)*``), and it
has at most 3 repeats with an upper bound above 1 (readable profiles). Both
paths match against the first 512 characters of the text (the longest free
text the contracts allow).

Nothing here calls ``eval``/``exec``; a value such as ``"__import__('os')"`` is a
plain string compared with data, and field names must come from the catalogue
above (``__class__`` is an unknown field). YAML is read with a safe loader,
which refuses Python object tags and leaves unquoted dates as text (checked, with
their path, like any value).

Size. A rule has at most ``MAX_CONDITIONS`` conditions (leaves and combinators) and
``MAX_RULE_VALUES`` list values in all, counted after YAML aliases are expanded; the
batch path builds one n-ary expression per ``all``/``any`` (linear in the rule's size).

Code fields. Values of country, currency and HS code fields are checked against the
tables the data contracts use (ISO 3166-1 alpha-2 and ISO 4217 codes, upper case;
HS codes and prefixes digits only), so a rule that no valid shipment can satisfy
(``origin_country in [tr]``, ``item.hs_code starts_with "93.05"``) is refused.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from functools import cache, lru_cache, reduce
from typing import Any, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

Severity = Literal["info", "low", "medium", "high", "must_inspect"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "must_inspect")

ITEM_PREFIX = "item."
LINES_COLUMN = "__lines"  # the batch frame's goods lines as structs (not a field name)
BIRTH_DATE_SUFFIX = "_birth_date"
USD_PER_KG = "value_usd_per_kg"  # the derived goods-line field item.value_usd_per_kg
MAX_PATTERN_LENGTH = 200
MAX_REPEATS = 3
MATCH_TEXT_LIMIT = 512
MAX_LIST_VALUES = 1000
MAX_DEPTH = 12
# A rule's size, counted over the whole condition tree after YAML aliases are expanded
# (a 400-byte file of anchors can otherwise stand for millions of conditions).
MAX_CONDITIONS = 200  # nodes: leaves and all / any / not / line
MAX_RULE_VALUES = 5000  # list values (in / not_in / starts_with) across the tree

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63})?")
_RULE_ID = r"^[a-z0-9][a-z0-9_-]{1,63}$"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule: where (a JSON-pointer-like path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RuleValidationError(Exception):
    """A rule (or a rules file) was refused; `errors` lists every problem found.

    Deliberately not a ValueError, so that pydantic lets it through unchanged.
    `status` is the HTTP status it maps to: 422 (invalid) or 409 (conflicts with the
    stored rules, e.g. a file based on an older version than the stored one).
    """

    def __init__(self, errors: Sequence[RuleError], status: int = 422) -> None:
        self.errors = list(errors)
        self.status = status
        super().__init__("; ".join(str(e) for e in self.errors))


# --------------------------------------------------------------------------- fields


class FieldType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    DATETIME = "datetime"
    DATE = "date"
    CATEGORICAL = "categorical"


class Source(StrEnum):
    SHIPMENT = "shipment"
    ITEM = "item"
    FEATURE = "feature"


@dataclass(frozen=True)
class FieldInfo:
    """A field a rule may test."""

    name: str  # as written in rules, and the column name in `evaluate_frame`'s frame
    type: FieldType
    source: Source
    multi: bool  # list column or goods-line field: "any element" semantics
    key: str  # key in the shipment/item/features mapping
    values: tuple[str, ...] = ()  # allowed values (enum) or category labels (categorical)
    flag: bool = False  # a 0/1 feature: true/false accepted as 1/0
    code: str | None = None  # "country", "currency" or "hs_code": values checked as such
    # a derived field: "age", computed from the shipment columns `key` (the birth
    # date) and `declared_at`, which are the columns it reads; "usd_per_kg", the goods
    # line's value in USD per kg (`_usd_per_kg`), a list column `rule_frame` adds
    derived: str | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The fields (frame columns) the field is read from."""
        return (self.key, "declared_at") if self.derived == "age" else (self.name,)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The fields of the inputs (shipments, goods lines, features) it comes from."""
        if self.derived == "usd_per_kg":
            return (ITEM_PREFIX + "net_mass_kg", ITEM_PREFIX + "value", "invoice_currency")
        return self.reads


OPS_BY_TYPE: dict[FieldType, frozenset[str]] = {
    FieldType.STRING: frozenset(
        {"eq", "ne", "in", "not_in", "starts_with", "contains", "matches", "is_null"}
    ),
    FieldType.NUMBER: frozenset(
        {"eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null"}
    ),
    FieldType.BOOL: frozenset({"eq", "ne", "is_null"}),
    FieldType.DATETIME: frozenset({"eq", "ne", "lt", "le", "gt", "ge", "between", "is_null"}),
    FieldType.DATE: frozenset({"eq", "ne", "lt", "le", "gt", "ge", "between", "is_null"}),
    FieldType.CATEGORICAL: frozenset({"eq", "ne", "in", "not_in", "is_null"}),
}
ALL_OPS: frozenset[str] = frozenset().union(*OPS_BY_TYPE.values())


def _contract_field(col: Any, source: Source) -> FieldInfo | None:
    from data_contracts.fields import Kind

    kind = col.kind
    name = ITEM_PREFIX + col.name if source is Source.ITEM else col.name
    multi = source is Source.ITEM
    if kind in (Kind.STRING, Kind.ENUM):
        ftype = FieldType.STRING
    elif kind is Kind.STRING_LIST:
        ftype, multi = FieldType.STRING, True
    elif kind in (Kind.INT, Kind.FLOAT):
        ftype = FieldType.NUMBER
    elif kind is Kind.BOOL:
        ftype = FieldType.BOOL
    elif kind is Kind.DATETIME:
        ftype = FieldType.DATETIME
    elif kind is Kind.DATE:
        ftype = FieldType.DATE
    else:
        return None
    from data_contracts.fields import Check

    values = tuple(col.values) if kind is Kind.ENUM else ()
    code = (
        {
            Check.COUNTRY: "country",
            Check.COUNTRY_LIST: "country",
            Check.CURRENCY: "currency",
            Check.HS_CODE: "hs_code",
        }.get(col.check)
        if col.check is not None
        else None
    )
    return FieldInfo(name, ftype, source, multi, col.name, values, code=code)


@cache
def field_catalog() -> Mapping[str, FieldInfo]:
    """Every field a rule may name. Built on first use (imports the feature families)."""
    from data_contracts.schemas import ITEMS, SHIPMENTS
    from features.registry import Kind as FeatureKind
    from features.registry import specs

    catalog: dict[str, FieldInfo] = {}
    for col in SHIPMENTS.columns:
        info = _contract_field(col, Source.SHIPMENT)
        if info is not None:
            catalog[info.name] = info
    for col in SHIPMENTS.columns:  # a party's age at declaration, from its birth date
        if col.name.endswith(BIRTH_DATE_SUFFIX) and col.name in catalog:
            age = col.name.removesuffix(BIRTH_DATE_SUFFIX) + "_age"
            if age not in catalog:
                catalog[age] = FieldInfo(
                    age, FieldType.NUMBER, Source.SHIPMENT, False, col.name, derived="age"
                )
    for col in ITEMS.columns:
        if col.name in ("shipment_id",):
            continue
        info = _contract_field(col, Source.ITEM)
        if info is not None:
            catalog[info.name] = info
    name = ITEM_PREFIX + USD_PER_KG  # a line's value in USD per kg (`_usd_per_kg`)
    catalog[name] = FieldInfo(
        name, FieldType.NUMBER, Source.ITEM, True, USD_PER_KG, derived="usd_per_kg"
    )
    for spec in specs():
        if spec.name in catalog:
            continue  # the shipment column wins (e.g. `mode`)
        if spec.kind is FeatureKind.CATEGORICAL:
            catalog[spec.name] = FieldInfo(
                spec.name,
                FieldType.CATEGORICAL,
                Source.FEATURE,
                False,
                spec.name,
                tuple(spec.categories),
            )
        else:
            catalog[spec.name] = FieldInfo(
                spec.name,
                FieldType.NUMBER,
                Source.FEATURE,
                False,
                spec.name,
                flag=spec.kind is FeatureKind.FLAG,
            )
    return catalog


# --------------------------------------------------------------------------- compiled tree


@dataclass(frozen=True)
class _All:
    children: tuple[_Node, ...]


@dataclass(frozen=True)
class _Any:
    children: tuple[_Node, ...]


@dataclass(frozen=True)
class _Not:
    child: _Node


@dataclass(frozen=True)
class _Line:
    """True when one goods line satisfies `child`, whose leaves are all `item.` fields
    read as that line's single value (their FieldInfo has multi=False)."""

    child: _Node


@dataclass(frozen=True)
class _Leaf:
    field: FieldInfo
    op: str
    value: Any  # normalised: scalar, tuple of scalars, (lo, hi), prefixes tuple, lowered text
    regex: _LinearRegex | None = None


@dataclass(frozen=True)
class _LinearRegex:
    """A `matches` pattern searched with the batch path's engine (Rust's regex crate,
    through Polars): linear time in the text whatever the pattern, so a declarant's
    text cannot make an analyst's pattern backtrack for seconds (Python's `re` can),
    and the single-shipment path gives the batch path's answers by construction."""

    pattern: str

    def found(self, text: str) -> bool:
        known = _REGEX_FOUND.get()
        if known is not None:
            hit = known.get((self.pattern, text))
            if hit is not None:
                return hit
        return bool(pl.Series([text], dtype=pl.String).str.contains(self.pattern).item())


# (pattern, text) -> whether the pattern is found in the text: the answers `shipment_hits`
# computed ahead for the texts it will test, one Polars call per pattern for all of them
# (each call costs about 0.1 ms, whether for one text or a few); None outside it.
_REGEX_FOUND: ContextVar[dict[tuple[str, str], bool] | None] = ContextVar(
    "caravan_regex_found", default=None
)


_Node = _All | _Any | _Not | _Line | _Leaf


# --------------------------------------------------------------------------- checking


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _scalar(info: FieldInfo, value: Any, path: str, errors: list[RuleError]) -> Any:
    """Check one value against the field's type; return it normalised (or None on error)."""
    name = info.name
    if info.type is FieldType.STRING:
        if not isinstance(value, str):
            hint = f" (quote it: '{value}')" if isinstance(value, int | float) else ""
            errors.append(
                RuleError(
                    path,
                    f"{name} is a text field: expected a string, got {_type_name(value)}{hint}",
                )
            )
            return None
        if info.values and value not in info.values:
            errors.append(
                RuleError(
                    path,
                    f"'{value}' is not a valid {name}; expected one of {', '.join(info.values)}",
                )
            )
            return None
        problem = _code_problem(info, value)
        if problem:
            errors.append(RuleError(path, problem))
            return None
        return value
    if info.type is FieldType.NUMBER:
        if isinstance(value, bool):
            if info.flag:
                return int(value)
            errors.append(RuleError(path, f"{name} is a number: expected a number, got a boolean"))
            return None
        if not isinstance(value, int | float):
            errors.append(
                RuleError(path, f"{name} is a number: expected a number, got {_type_name(value)}")
            )
            return None
        if isinstance(value, float) and not math.isfinite(value):
            sign = "-" if value < 0 else ""
            got = (
                "NaN (not a number)"
                if math.isnan(value)
                else f"{sign}infinity (a number too large to hold, such as {sign}1e400, "
                f"reads as {sign}infinity)"
            )
            errors.append(
                RuleError(path, f"{name} is a number: expected a finite number, got {got}")
            )
            return None
        if info.flag and value not in (0, 1):
            errors.append(RuleError(path, f"{name} is a 0/1 flag: expected 0, 1, true or false"))
            return None
        return value
    if info.type is FieldType.BOOL:
        if not isinstance(value, bool):
            errors.append(
                RuleError(
                    path, f"{name} is true/false: expected a boolean, got {_type_name(value)}"
                )
            )
            return None
        return value
    if info.type is FieldType.DATETIME:
        parsed = _rule_datetime(value)
        if parsed is None:
            errors.append(
                RuleError(
                    path, f"{name} is a date-time: expected an ISO date or date-time, got {value!r}"
                )
            )
        return parsed
    if info.type is FieldType.DATE:
        day = _rule_date(value)
        if day is None:
            timed = isinstance(value, str) and len(value) > 10 and _ISO_DATE.match(value)
            hint = " (a date field takes a date without a time)" if timed else ""
            errors.append(
                RuleError(
                    path,
                    f"{name} is a date: expected an ISO date YYYY-MM-DD, got {value!r}{hint}",
                )
            )
        return day
    # categorical: a label, turned into its integer code (index + 1)
    if not isinstance(value, str) or value not in info.values:
        errors.append(RuleError(path, f"{value!r} is not a category of {name}"))
        return None
    return info.values.index(value) + 1


def _code_problem(info: FieldInfo, value: str) -> str | None:
    """Why `value` can never equal a valid value of a code field (the contracts check
    the data with the same tables), or None."""
    from data_contracts import reference

    if info.code == "country" and value not in reference.COUNTRIES:
        hint = (
            f"; country codes are upper case: '{value.upper()}'"
            if value.upper() in reference.COUNTRIES
            else ""
        )
        return f"'{value}' is not an ISO 3166-1 alpha-2 country code ({info.name}){hint}"
    if info.code == "currency" and value not in reference.CURRENCIES:
        hint = (
            f"; currency codes are upper case: '{value.upper()}'"
            if value.upper() in reference.CURRENCIES
            else ""
        )
        return f"'{value}' is not an ISO 4217 currency code ({info.name}){hint}"
    if info.code == "hs_code":
        problem = reference.hs_code_problem(value)
        if problem and re.fullmatch(r"\d{2,5}", value):
            problem += "; to match a chapter or heading use starts_with"
        return problem
    return None


def _prefix_problem(info: FieldInfo, prefix: str) -> str | None:
    """Why no valid value of a code field can start with `prefix`, or None."""
    from data_contracts import reference

    if info.code == "hs_code":
        if not re.fullmatch(r"[0-9]{1,10}", prefix):
            return (
                f"HS code prefix '{prefix}' must be 1 to 10 digits "
                "(HS codes are written without dots or spaces)"
            )
        if len(prefix) >= 2 and prefix[:2] not in reference.HS_CHAPTERS:
            return f"HS code prefix '{prefix}' names chapter {prefix[:2]}, which does not exist"
        return None
    table, what, size = {
        "country": (reference.COUNTRIES, "ISO 3166-1 alpha-2 country code", 2),
        "currency": (reference.CURRENCIES, "ISO 4217 currency code", 3),
    }.get(info.code or "", (None, "", 0))
    if table is None:
        return None
    if len(prefix) > size or not any(c.startswith(prefix) for c in table):
        return f"no {what} starts with '{prefix}' ({info.name}; codes are upper case)"
    return None


def _parse_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return _utc(parsed)


@dataclass(frozen=True)
class _Day:
    """A date without a time in a condition on a date-time field: the whole calendar day
    in UTC, from midnight (`start`) up to, not including, the next midnight (`end`).
    Dates are inclusive, as in `effective_from`/`effective_to`: `eq D` is "on D",
    `le D` "on or before D" (up to 23:59:59.999… UTC), `lt D` "before D", `gt D` "after
    D" (from the next midnight), `ge D` "on or after D", `between [D1, D2]` "from D1 to
    D2, both days included" (`_bounds`)."""

    start: dt.datetime

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=1)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _rule_date(value: Any) -> dt.date | None:
    """A rule's value for a date field: an ISO date ``YYYY-MM-DD`` (text, or a date
    object from a Python caller), or None."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _rule_datetime(value: Any) -> dt.datetime | _Day | None:
    """A rule's value for a date-time field: a date-time (UTC; without an offset read
    as UTC), or a date alone (ISO text or a YAML date) as the whole `_Day`."""
    day: dt.date | None = None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        day = value
    elif isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            day = None
    if day is not None:
        return _Day(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    return _parse_datetime(value)


def _bounds(op: str, v: Any) -> list[tuple[str, Any]]:
    """`x op v` (op: eq lt le gt ge between) as comparisons of `x` with plain values,
    all of which must hold; a `_Day` stands for its whole day (see `_Day`)."""
    if op == "between":
        return [*_bounds("ge", v[0]), *_bounds("le", v[1])]
    if not isinstance(v, _Day):
        return [(op, v)]
    return {
        "eq": [("ge", v.start), ("lt", v.end)],
        "lt": [("lt", v.start)],
        "le": [("lt", v.end)],
        "gt": [("ge", v.end)],
        "ge": [("ge", v.start)],
    }[op]


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _empty_range(lo: Any, hi: Any) -> bool:
    """Whether `between [lo, hi]` holds for no value (a `_Day` as its whole day)."""
    low = lo.start if isinstance(lo, _Day) else lo
    if isinstance(hi, _Day):
        return bool(low >= hi.end)
    return bool(low > hi)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def regex_problem(pattern: str) -> str | None:
    """Why a `matches` pattern is refused, or None when it is acceptable."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    from re import _parser  # type: ignore[attr-defined]  # stdlib, no public parser API

    problem = _pattern_shape_problem(_parser.parse(pattern), inside_repeat=False, counter=[0])
    if problem:
        return problem
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()
        reason = next((line.strip() for line in first if line.strip().startswith("error:")), "")
        return f"regular expression not supported by the batch engine {reason}".strip()
    return None


def _pattern_shape_problem(parsed: Any, *, inside_repeat: bool, counter: list[int]) -> str | None:
    for op, av in parsed:
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS"):
            return "back-references are not allowed in a pattern"
        if name in ("ASSERT", "ASSERT_NOT"):
            return "look-ahead and look-behind are not allowed in a pattern"
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _lo, hi, inner = av
            repeats = hi > 1
            if repeats:
                if inside_repeat:
                    return (
                        "nested repetition (a repeated element inside a repeated group) "
                        "is not allowed: it can take exponential time"
                    )
                counter[0] += 1
                if counter[0] > MAX_REPEATS:
                    return f"at most {MAX_REPEATS} repeated elements (+, *, {{m,n}}) per pattern"
            problem = _pattern_shape_problem(
                inner, inside_repeat=inside_repeat or repeats, counter=counter
            )
            if problem:
                return problem
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
            inner = av[-1] if name == "SUBPATTERN" else av
            problem = _pattern_shape_problem(inner, inside_repeat=inside_repeat, counter=counter)
            if problem:
                return problem
        elif name == "BRANCH":
            if inside_repeat:
                return (
                    "alternation (|) inside a repeated group is not allowed; "
                    "use a character class or separate conditions"
                )
            for branch in av[1]:
                problem = _pattern_shape_problem(branch, inside_repeat=False, counter=counter)
                if problem:
                    return problem
    return None


@dataclass
class _Budget:
    """What is left of a rule's size limits while its condition is compiled."""

    conditions: int = MAX_CONDITIONS
    values: int = MAX_RULE_VALUES
    exceeded: bool = False

    def spend(
        self, errors: list[RuleError], *, conditions: int = 0, values: int = 0, path: str
    ) -> bool:
        """Take from the budget; False (and one error) once a limit is passed."""
        if self.exceeded:
            return False
        self.conditions -= conditions
        self.values -= values
        if self.conditions < 0:
            errors.append(
                RuleError(
                    "condition",
                    f"the rule has more than {MAX_CONDITIONS} conditions (leaves and "
                    f"all/any/not/line, counted with YAML aliases expanded); the limit is "
                    f"{MAX_CONDITIONS} per rule: split it into several rules",
                )
            )
        elif self.values < 0:
            errors.append(
                RuleError(
                    path,
                    f"the rule has more than {MAX_RULE_VALUES} list values in all "
                    f"(in / not_in / starts_with, counted with YAML aliases expanded); "
                    f"the limit is {MAX_RULE_VALUES} per rule",
                )
            )
        else:
            return True
        self.exceeded = True
        return False


def _compile_node(
    node: Any,
    path: str,
    errors: list[RuleError],
    depth: int = 0,
    budget: _Budget | None = None,
    *,
    in_line: bool = False,
) -> _Node | None:
    """The compiled condition, or None with the problems added to `errors`. `in_line`:
    inside a `line` combinator (only `item.` fields, each one line's value)."""
    if budget is None:
        budget = _Budget()
    if not budget.spend(errors, conditions=1, path=path):
        return None
    if depth > MAX_DEPTH:
        errors.append(RuleError(path, f"conditions are nested more than {MAX_DEPTH} levels deep"))
        return None
    if not isinstance(node, Mapping):
        errors.append(RuleError(path, f"a condition must be a mapping, got {_type_name(node)}"))
        return None
    keys = set(node)
    combinators = keys & {"all", "any", "not", "line"}
    if combinators:
        if len(keys) != 1:
            extra = sorted(str(k) for k in keys - {next(iter(combinators))})
            errors.append(
                RuleError(
                    path,
                    "a combinator must stand alone in its mapping; "
                    f"unexpected key(s): {', '.join(extra)}",
                )
            )
            return None
        key = next(iter(combinators))
        sub = node[key]
        if key == "not":
            child = _compile_node(sub, f"{path}.not", errors, depth + 1, budget, in_line=in_line)
            return _Not(child) if child is not None else None
        if key == "line":
            return _compile_line(sub, f"{path}.line", errors, depth, budget, in_line=in_line)
        if not isinstance(sub, list):
            errors.append(
                RuleError(
                    f"{path}.{key}", f"'{key}' takes a list of conditions, got {_type_name(sub)}"
                )
            )
            return None
        if not sub:
            errors.append(RuleError(f"{path}.{key}", f"'{key}' needs at least one condition"))
            return None
        children: list[_Node | None] = []
        for i, c in enumerate(sub):
            if budget.exceeded:
                return None
            children.append(
                _compile_node(c, f"{path}.{key}[{i}]", errors, depth + 1, budget, in_line=in_line)
            )
        if any(c is None for c in children):
            return None
        kids = tuple(c for c in children if c is not None)
        return _All(kids) if key == "all" else _Any(kids)
    return _compile_leaf(node, path, errors, budget, in_line=in_line)


def _compile_line(
    sub: Any,
    path: str,
    errors: list[RuleError],
    depth: int,
    budget: _Budget,
    *,
    in_line: bool,
) -> _Line | None:
    """`line: <condition>`: one goods line satisfies the whole condition."""
    if in_line:
        errors.append(
            RuleError(
                path,
                "'line' cannot be nested inside 'line': its conditions already refer to "
                "one goods line",
            )
        )
        return None
    if not isinstance(sub, Mapping):
        errors.append(
            RuleError(
                path,
                "'line' takes one condition (a mapping such as {all: [...]}) on the "
                f"fields of a goods line, got {_type_name(sub)}",
            )
        )
        return None
    child = _compile_node(sub, path, errors, depth + 1, budget, in_line=True)
    return _Line(child) if child is not None else None


def _compile_leaf(
    node: Mapping[str, Any],
    path: str,
    errors: list[RuleError],
    budget: _Budget | None = None,
    *,
    in_line: bool = False,
) -> _Leaf | None:
    unknown = sorted(str(k) for k in set(node) - {"field", "op", "value"})
    if unknown:
        errors.append(
            RuleError(
                f"{path}.{unknown[0]}",
                f"unknown key '{unknown[0]}'; a condition is "
                "{field, op, value} or one of all / any / not / line",
            )
        )
        return None
    if "field" not in node or "op" not in node:
        missing = "field" if "field" not in node else "op"
        errors.append(RuleError(path, f"a condition needs '{missing}'"))
        return None
    field_name, op = node["field"], node["op"]
    if not isinstance(field_name, str) or not _FIELD_NAME.fullmatch(field_name):
        errors.append(RuleError(f"{path}.field", f"{field_name!r} is not a valid field name"))
        return None
    info = field_catalog().get(field_name)
    if info is None:
        item_name = ITEM_PREFIX + field_name
        meaning = "" if in_line else " (true when any goods line matches)"
        hint = f"; did you mean '{item_name}'{meaning}?" if item_name in field_catalog() else ""
        errors.append(RuleError(f"{path}.field", f"unknown field '{field_name}'{hint}"))
        return None
    if in_line:
        if info.source is not Source.ITEM:
            kind = "a feature" if info.source is Source.FEATURE else "a shipment field"
            errors.append(
                RuleError(
                    f"{path}.field",
                    f"inside 'line' only goods-line fields (item.…) may be used; "
                    f"'{field_name}' is {kind}: put it beside the 'line' condition "
                    "(for example in an 'all' that holds both)",
                )
            )
            return None
        info = replace(info, multi=False)  # one line's value
    if not isinstance(op, str) or op not in ALL_OPS:
        errors.append(
            RuleError(
                f"{path}.op",
                f"unknown operator {op!r}; expected one of {', '.join(sorted(ALL_OPS))}",
            )
        )
        return None
    if op not in OPS_BY_TYPE[info.type]:
        errors.append(
            RuleError(
                f"{path}.op",
                f"operator '{op}' does not apply to {field_name} "
                f"({info.type} field); use one of "
                f"{', '.join(sorted(OPS_BY_TYPE[info.type]))}",
            )
        )
        return None
    vpath = f"{path}.value"
    if op == "is_null":
        if "value" in node:
            errors.append(
                RuleError(vpath, "'is_null' takes no value (wrap it in 'not' for 'is not null')")
            )
            return None
        return _Leaf(info, op, None)
    if "value" not in node:
        errors.append(RuleError(path, f"operator '{op}' needs a 'value'"))
        return None
    value = node["value"]
    n_before = len(errors)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            errors.append(
                RuleError(vpath, f"'{op}' takes a non-empty list, got {_type_name(value)}")
            )
            return None
        if len(value) > MAX_LIST_VALUES:
            errors.append(RuleError(vpath, f"'{op}' takes at most {MAX_LIST_VALUES} values"))
            return None
        if budget is not None and not budget.spend(errors, values=len(value), path=vpath):
            return None
        norm: Any = tuple(_scalar(info, v, f"{vpath}[{i}]", errors) for i, v in enumerate(value))
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            errors.append(RuleError(vpath, "'between' takes a list of two values [low, high]"))
            return None
        lo = _scalar(info, value[0], f"{vpath}[0]", errors)
        hi = _scalar(info, value[1], f"{vpath}[1]", errors)
        if len(errors) == n_before and _empty_range(lo, hi):
            errors.append(
                RuleError(
                    vpath, f"'between' low value {value[0]!r} is above the high value {value[1]!r}"
                )
            )
        norm = (lo, hi)
    elif op == "starts_with":
        prefixes = value if isinstance(value, list) else [value]
        if not prefixes:
            errors.append(RuleError(vpath, "'starts_with' needs a prefix or a non-empty list"))
            return None
        if len(prefixes) > MAX_LIST_VALUES:
            errors.append(RuleError(vpath, f"'{op}' takes at most {MAX_LIST_VALUES} prefixes"))
            return None
        if budget is not None and not budget.spend(errors, values=len(prefixes), path=vpath):
            return None
        for i, p in enumerate(prefixes):
            ppath = f"{vpath}[{i}]" if isinstance(value, list) else vpath
            if not isinstance(p, str) or not p:
                errors.append(
                    RuleError(ppath, f"a prefix must be a non-empty string, got {_type_name(p)}")
                )
            else:
                problem = _prefix_problem(info, p)
                if problem:
                    errors.append(RuleError(ppath, problem))
        norm = tuple(prefixes)
    elif op in ("contains", "matches"):
        if not isinstance(value, str) or not value:
            errors.append(
                RuleError(vpath, f"'{op}' takes a non-empty string, got {_type_name(value)}")
            )
            return None
        if op == "contains" and info.code == "hs_code" and not re.fullmatch(r"[0-9]+", value):
            errors.append(RuleError(vpath, f"HS codes are digits only; '{value}' never occurs"))
            return None
        if op == "matches":
            problem = regex_problem(value)
            if problem:
                errors.append(RuleError(vpath, problem))
                return None
            return _Leaf(info, op, value, _LinearRegex(value))
        norm = value.lower()
    else:  # eq ne lt le gt ge
        if isinstance(value, list | dict):
            errors.append(RuleError(vpath, f"'{op}' takes a single value, got {_type_name(value)}"))
            return None
        norm = _scalar(info, value, vpath, errors)
    if len(errors) > n_before:
        return None
    return _Leaf(info, op, norm)


def check_condition(condition: Any, path: str = "condition") -> list[RuleError]:
    """Every problem in a condition tree, each with the path of the faulty part."""
    errors: list[RuleError] = []
    _compile_node(condition, path, errors)
    return errors


# --------------------------------------------------------------------------- the rule


class Rule(BaseModel):
    """A targeting profile. Immutable: a change is a new version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_RULE_ID)
    version: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    severity: Severity
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None
    author: str = Field(min_length=1, max_length=128)
    condition: dict[str, Any]

    _compiled: _Node = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> Rule:
        errors: list[RuleError] = []
        if self.effective_from and self.effective_to and self.effective_to < self.effective_from:
            errors.append(
                RuleError(
                    "effective_to",
                    f"effective_to {self.effective_to} is before "
                    f"effective_from {self.effective_from}",
                )
            )
        compiled = _compile_node(self.condition, "condition", errors)
        if errors or compiled is None:
            raise RuleValidationError(errors)  # not a ValueError: pydantic passes it through
        self._compiled = compiled
        return self

    @property
    def key(self) -> str:
        return f"{self.id}@v{self.version}"

    def in_force(self, at: dt.datetime | dt.date) -> bool:
        """Whether the rule applies at `at` (dates inclusive, compared in UTC)."""
        day = _utc(at).date() if isinstance(at, dt.datetime) else at
        if self.effective_from and day < self.effective_from:
            return False
        return not (self.effective_to and day > self.effective_to)


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "rule"


def parse_rule(data: Any, path: str = "") -> Rule:
    """A checked rule from plain data, or RuleValidationError listing every problem."""
    prefix = f"{path}." if path else ""
    if not isinstance(data, Mapping):
        raise RuleValidationError(
            [RuleError(path or "rule", f"a rule must be a mapping, got {_type_name(data)}")]
        )
    try:
        return Rule.model_validate(dict(data))
    except RuleValidationError as exc:
        raise RuleValidationError(
            [RuleError(prefix + e.path, e.message) for e in exc.errors]
        ) from None
    except ValidationError as exc:
        errors = [RuleError(prefix + _loc_path(e["loc"]), e["msg"]) for e in exc.errors()]
        condition = data.get("condition")
        if isinstance(condition, Mapping):  # report condition problems too
            errors += [RuleError(prefix + e.path, e.message) for e in check_condition(condition)]
        raise RuleValidationError(errors) from None


# --------------------------------------------------------------------------- YAML


class _RulesYAMLLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that leaves unquoted dates as text: the rule checks then report
    an impossible date (``2026-02-30``) with its path, where PyYAML's timestamp
    constructor would raise a bare ValueError."""


_RulesYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def safe_load_yaml(text: str) -> Any:
    """YAML as plain data (no Python tags, unquoted dates kept as text). Every failure,
    including a value an explicit tag cannot build (``!!timestamp 2026-02-30``) or
    nesting too deep to read, is a `yaml.YAMLError`."""
    return _load_yaml(text)[0]


def _load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """`safe_load_yaml`'s data, and the document's node tree it was built from (None
    for an empty document): an alias is the very node of its anchor there."""
    loader = _RulesYAMLLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise yaml.YAMLError(f"a value cannot be read: {exc}") from None
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply") from None
    finally:
        loader.dispose()


def _nodes_under(node: yaml.Node) -> set[int]:
    """The ids of `node` and of every node within it (each node once: aliases share
    their anchor's node, and may even hold it)."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(part for pair in n.value for part in pair)
    return seen


def _unread_keys(node: yaml.Node | None) -> list[RuleError]:
    """The top-level keys of a rules file that the import would not read, each an
    error: a key besides `rules`, unless its value is, or holds, a node the `rules`
    list uses through an alias (``modes: &m [rail, road]`` ... ``value: *m``: a place
    to keep shared values); and every `rules` key but the last (YAML keeps the last
    of repeated keys). So a `version:` header, a misspelt `rule:` holding rules or a
    second `rules:` block is named, never silently dropped."""
    if not isinstance(node, yaml.MappingNode):
        return []
    others: list[tuple[str, yaml.Node]] = []
    lists: list[yaml.Node] = []
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else f"<{key.id}>"
        if name == "rules" and key.tag == "tag:yaml.org,2002:str":
            lists.append(value)
        else:
            others.append((str(name), value))
    used = _nodes_under(lists[-1]) if lists else set()
    errors = [
        RuleError(
            name,
            f"unexpected top-level key {name!r}: only 'rules' is read (another top-level "
            "key may only hold values the rules use through YAML aliases, such as "
            "'modes: &m [rail, road]' with 'value: *m')",
        )
        for name, value in others
        if not _nodes_under(value) & used
    ]
    if len(lists) > 1:
        errors.append(
            RuleError(
                "rules",
                f"the key 'rules' appears {len(lists)} times and only the last would be "
                "read: put all the rules in one 'rules' list",
            )
        )
    return errors


@dataclass(frozen=True)
class RuleEntry:
    """One rule of a rules file, with what the file states beside its content.

    `version` is the version the file says the rule is (None when not given): the
    stored history numbers versions, so it is only checked against it (an import
    refuses a file based on an older version than the stored one). `active` is the
    status the file gives (None when not given; an export writes ``active: false``
    for a deactivated rule). `path` locates the rule in the file (``rules[2]``)."""

    rule: Rule
    version: int | None
    active: bool | None
    path: str


def read_rules_yaml(text: str) -> list[RuleEntry]:
    """Rules from YAML: a list of rules, or a mapping with a `rules` list (its other
    keys may only hold values the rules use through YAML aliases: any other key is
    refused, named, rather than ignored).

    `version` and `author` are optional (the stored history numbers versions and the
    importing user is the author); a rule id given more than once must give each
    occurrence a different version. Raises RuleValidationError listing every problem
    with its path (``rules[2].condition.all[0].value``). Reads with a safe loader: no
    Python tags; YAML aliases are expanded and count towards a rule's size limits.
    """
    try:
        doc, node = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise RuleValidationError([RuleError("yaml", f"not valid YAML: {exc}")]) from None
    if isinstance(doc, Mapping) and "rules" in doc:
        unread = _unread_keys(node)
        if unread:
            raise RuleValidationError(unread)
        doc = doc["rules"]
    if not isinstance(doc, list):
        raise RuleValidationError(
            [RuleError("rules", "expected a list of rules (or a mapping with a 'rules' list)")]
        )
    entries: list[RuleEntry] = []
    errors: list[RuleError] = []
    for i, item in enumerate(doc):
        path = f"rules[{i}]"
        if not isinstance(item, Mapping):
            errors.append(RuleError(path, f"a rule must be a mapping, got {_type_name(item)}"))
            continue
        data = dict(item)
        stated = data.get("version")
        active = data.pop("active", None)
        if active is not None and not isinstance(active, bool):
            errors.append(RuleError(f"{path}.active", "active must be true or false"))
            continue
        data.setdefault("version", 1)  # placeholders: the import numbers and signs
        data.setdefault("author", "rules-file")
        try:
            rule = parse_rule(data, path)
        except RuleValidationError as exc:
            errors += exc.errors
            continue
        entries.append(RuleEntry(rule, rule.version if stated is not None else None, active, path))
    by_id: dict[str, list[RuleEntry]] = {}
    for e in entries:
        by_id.setdefault(e.rule.id, []).append(e)
    for rule_id, same in by_id.items():
        if len(same) < 2:
            continue
        seen: set[int] = set()
        for e in same:
            if e.version is None:
                errors.append(
                    RuleError(
                        f"{e.path}.version",
                        f"rule {rule_id} appears {len(same)} times in the file: "
                        "give each occurrence its version",
                    )
                )
            elif e.version in seen:
                errors.append(
                    RuleError(
                        f"{e.path}.version", f"rule {rule_id} version {e.version} appears twice"
                    )
                )
            else:
                seen.add(e.version)
    if errors:
        raise RuleValidationError(errors)
    return entries


def load_rules_yaml(text: str) -> list[Rule]:
    """The rules of a rules file (see `read_rules_yaml`); a rule without a version is
    given version 1, without an author ``rules-file``."""
    return [e.rule for e in read_rules_yaml(text)]


def dump_rules_yaml(rules: Iterable[Rule], inactive: Iterable[str] = ()) -> str:
    """YAML text that `read_rules_yaml` reads back into equal rules; the rules whose id
    is in `inactive` are marked ``active: false``."""
    off = set(inactive)
    docs = []
    for r in rules:
        doc = r.model_dump(mode="json", exclude_none=True)
        if r.id in off:
            doc["active"] = False
        docs.append(doc)
    return yaml.safe_dump({"rules": docs}, sort_keys=False, allow_unicode=True, width=100)


# --------------------------------------------------------------------------- evaluation (one)


def _clean(value: Any, info: FieldInfo) -> Any:
    """An actual data value made comparable with the normalised rule values."""
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and math.isnan(value):
        return None
    if info.type is FieldType.DATETIME:
        if isinstance(value, dt.datetime):
            return _utc(value)
        return _parse_datetime(value)
    if info.type is FieldType.DATE:
        if isinstance(value, dt.datetime):
            return _utc(value).date()
        if isinstance(value, dt.date):
            return value
        return _rule_date(value)
    if info.type is FieldType.NUMBER and isinstance(value, bool):
        return int(value)
    return value


def _test(leaf: _Leaf, x: Any) -> bool:
    """A positive operator on one non-null value."""
    op, v = leaf.op, leaf.value
    try:
        if op in _COMPARE or op == "between":
            return all(bool(_COMPARE[c](x, b)) for c, b in _bounds(op, v))
        if op == "in":
            return x in v
        if op == "starts_with":
            return any(str(x).startswith(p) for p in v)
        if op == "contains":
            return v in str(x).lower()
        if op == "matches":
            assert leaf.regex is not None
            return leaf.regex.found(str(x)[:MATCH_TEXT_LIMIT])
    except TypeError:
        return False  # data of the wrong type never matches
    raise AssertionError(f"unhandled operator {op}")


def _eval_leaf(leaf: _Leaf, raw: Any) -> bool:
    info = leaf.field
    if info.multi:
        elements = [_clean(e, info) for e in (raw or [])]
        present = [e for e in elements if e is not None]
        if leaf.op == "is_null":
            return not present
        if leaf.op in ("ne", "not_in"):
            positive = _Leaf(info, "eq" if leaf.op == "ne" else "in", leaf.value)
            return not any(_test(positive, e) for e in present)
        return any(_test(leaf, e) for e in present)
    x = _clean(raw, info)
    if leaf.op == "is_null":
        return x is None
    if x is None:
        return False
    if leaf.op in ("ne", "not_in"):
        return not _test(_Leaf(info, "eq" if leaf.op == "ne" else "in", leaf.value), x)
    return _test(leaf, x)


def _eval(
    node: _Node,
    shipment: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    features: Mapping[str, Any],
) -> bool:
    if isinstance(node, _All):
        return all(_eval(c, shipment, items, features) for c in node.children)
    if isinstance(node, _Any):
        return any(_eval(c, shipment, items, features) for c in node.children)
    if isinstance(node, _Not):
        return not _eval(node.child, shipment, items, features)
    if isinstance(node, _Line):
        return any(_eval_line(node.child, line, shipment) for line in items)
    info = node.field
    if info.derived == "age":
        raw: Any = _age(shipment.get(info.key), shipment.get("declared_at"))
    elif info.source is Source.ITEM:
        raw = [_line_value(info, it, shipment) for it in items]
    elif info.source is Source.SHIPMENT:
        raw = shipment.get(info.key)
    else:
        raw = features.get(info.key)
    return _eval_leaf(node, raw)


def _eval_line(node: _Node, line: Mapping[str, Any], shipment: Mapping[str, Any]) -> bool:
    """A condition inside `line` on one goods line (its leaves are single-valued)."""
    if isinstance(node, _All):
        return all(_eval_line(c, line, shipment) for c in node.children)
    if isinstance(node, _Any):
        return any(_eval_line(c, line, shipment) for c in node.children)
    if isinstance(node, _Not):
        return not _eval_line(node.child, line, shipment)
    if isinstance(node, _Line):  # refused when a rule is checked
        raise AssertionError("'line' inside 'line'")
    return _eval_leaf(node, _line_value(node.field, line, shipment))


@cache
def _usd_rates() -> Mapping[str, float]:
    """USD per unit of each currency: the table the goods features convert with."""
    from features.context import Params

    return dict(Params().usd_per_unit)


def _usd_per_kg(value: Any, mass: Any, currency: Any) -> float | None:
    """A goods line's value in USD per kg of net mass: null when a value, the mass or
    the currency's rate is missing, or the mass is not above zero (as `_with_usd_per_kg`)."""
    rate = _usd_rates().get(currency) if isinstance(currency, str) else None
    if value is None or mass is None or rate is None or not mass > 0:
        return None
    return float(value) * rate / float(mass)


def _line_value(info: FieldInfo, line: Mapping[str, Any], shipment: Mapping[str, Any]) -> Any:
    """A goods-line field's value on one line (a derived one computed)."""
    if info.derived == "usd_per_kg" and USD_PER_KG not in line:
        return _usd_per_kg(
            line.get("value"), line.get("net_mass_kg"), shipment.get("invoice_currency")
        )
    return line.get(info.key)


def _as_date(value: Any) -> dt.date | None:
    """A birth date or a declaration time as a calendar date (a date-time in UTC)."""
    if isinstance(value, dt.datetime):
        return _utc(value).date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        parsed = _parse_datetime(value)
        return parsed.date() if parsed is not None else None
    return None


def _age(birth: Any, declared: Any) -> int | None:
    """Age in whole years on the declaration's day (UTC); a birthday on 29 February
    is reached on 1 March in other years. None when either date is missing."""
    born, on = _as_date(birth), _as_date(declared)
    if born is None or on is None:
        return None
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def evaluate(
    rule: Rule,
    shipment: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    features: Mapping[str, Any],
    at: dt.datetime,
) -> bool:
    """Whether `rule` hits one shipment (False when the rule is not in force at `at`)."""
    if not rule.in_force(at):
        return False
    return _eval(rule._compiled, shipment, items, features)


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    rule_version: int
    severity: str


def hits(
    rules: Iterable[Rule],
    shipment: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    features: Mapping[str, Any],
    at: dt.datetime,
) -> list[RuleHit]:
    """The rules that hit one shipment, with the version that hit."""
    return [
        RuleHit(r.id, r.version, r.severity)
        for r in rules
        if evaluate(r, shipment, items, features, at)
    ]


# --------------------------------------------------------------------------- evaluation (batch)


def rule_frame(
    shipments: pl.DataFrame, items: pl.DataFrame, features: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The frame `evaluate_frame` reads: one row per shipment, its goods-line fields as
    list columns named ``item.<column>`` and its features (a feature column whose name
    is a shipment column is dropped: the shipment column wins)."""
    if {"value", "net_mass_kg"} <= set(items.columns) and "invoice_currency" in shipments.columns:
        items = _with_usd_per_kg(shipments, items)
    item_cols = [c for c in items.columns if c != "shipment_id"]
    lines = (
        items.sort("shipment_id", *(["line_no"] if "line_no" in items.columns else []))
        .group_by("shipment_id")
        .agg([pl.col(c).alias(ITEM_PREFIX + c) for c in item_cols])
    )
    out = shipments.join(lines, on="shipment_id", how="left", maintain_order="left")
    if features is not None:
        keep = [c for c in features.columns if c == "shipment_id" or c not in out.columns]
        out = out.join(features.select(keep), on="shipment_id", how="left", maintain_order="left")
    return out


def _with_usd_per_kg(shipments: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """`items` with the derived column `USD_PER_KG` (as `_usd_per_kg`, line by line)."""
    rate = "__usd_rate"
    rates = shipments.select(
        "shipment_id",
        pl.col("invoice_currency")
        .cast(pl.String)
        .replace_strict(_usd_rates(), default=None, return_dtype=pl.Float64)
        .alias(rate),
    ).unique("shipment_id", keep="first", maintain_order=True)
    mass = pl.col("net_mass_kg").cast(pl.Float64)
    return (
        items.join(rates, on="shipment_id", how="left", maintain_order="left")
        .with_columns(
            pl.when(mass > 0)
            .then(pl.col("value").cast(pl.Float64) * pl.col(rate) / mass)
            .otherwise(None)
            .alias(USD_PER_KG)
        )
        .drop(rate)
    )


def _lit(value: Any) -> pl.Expr:
    return pl.lit(value)


def _positive_expr(leaf: _Leaf, x: pl.Expr) -> pl.Expr:
    op, v = leaf.op, leaf.value
    if op in _COMPARE or op == "between":
        tests = [_COMPARE[c](x, _lit(b)) for c, b in _bounds(op, v)]
        return reduce(operator.and_, tests)
    if op == "in":
        if leaf.field.type is FieldType.NUMBER:  # ints and floats compare as numbers
            return x.cast(pl.Float64).is_in(pl.Series([float(e) for e in v]).implode())
        return x.is_in(pl.Series(list(v)).implode())
    if op == "starts_with":
        if len(v) == 1:
            return x.str.starts_with(v[0])
        return pl.any_horizontal(*(x.str.starts_with(p) for p in v))
    if op == "contains":
        return x.str.to_lowercase().str.contains(v, literal=True)
    if op == "matches":
        return x.str.slice(0, MATCH_TEXT_LIMIT).str.contains(v)
    raise AssertionError(f"unhandled operator {op}")


def _element_expr(
    x: pl.Expr, dtype: object, ftype: FieldType | None = None
) -> tuple[pl.Expr, pl.Expr]:
    """(value, is-present) for one column or list element, NaN counted as missing; a
    date field held as a date-time is read as its day in UTC (as `_clean` does)."""
    if dtype in (pl.Float32, pl.Float64):
        x = x.fill_nan(None)
    if ftype is FieldType.DATE and isinstance(dtype, pl.Datetime):
        x = _utc_day(x, dtype)
    return x, x.is_not_null()


def _utc_day(x: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """The calendar day in UTC of a date-time expression (a naive one read as UTC)."""
    if dtype.time_zone not in (None, "UTC"):
        x = x.dt.convert_time_zone("UTC")
    return x.dt.date()


def _age_expr(schema: pl.Schema, birth: str) -> pl.Expr:
    """`_age` as an expression: whole years from the `birth` date column to the day of
    `declared_at` (UTC; a naive time read as UTC), null when either is missing."""
    on, _ = _element_expr(pl.col("declared_at"), schema["declared_at"], FieldType.DATE)
    born, _ = _element_expr(pl.col(birth), schema[birth], FieldType.DATE)

    def month_day(d: pl.Expr) -> pl.Expr:
        return d.dt.month().cast(pl.Int32) * 100 + d.dt.day().cast(pl.Int32)

    before_birthday = (month_day(on) < month_day(born)).cast(pl.Int32)
    return on.dt.year().cast(pl.Int32) - born.dt.year().cast(pl.Int32) - before_birthday


def _leaf_expr(leaf: _Leaf, schema: pl.Schema, *, in_line: bool = False) -> pl.Expr:
    """A leaf over a `rule_frame`; `in_line`: inside `line`'s `list.eval` over the
    goods-line structs, each `item.` field one line's value."""
    info = leaf.field
    for name in info.reads:
        if name not in schema:
            raise KeyError(f"the frame has no column '{name}' needed by a rule")
    positive_op = {"ne": "eq", "not_in": "in"}.get(leaf.op)
    test = _Leaf(info, positive_op, leaf.value, leaf.regex) if positive_op else leaf
    if info.derived == "age":
        age = _age_expr(schema, info.key)
        return _single_expr(leaf.op, test, age, age.is_not_null())
    dtype = schema[info.name]
    if in_line:
        inner = dtype.inner if isinstance(dtype, pl.List) else dtype
        x, present = _element_expr(pl.element().struct.field(info.name), inner, info.type)
        return _single_expr(leaf.op, test, x, present)
    if info.multi:
        inner = dtype.inner if isinstance(dtype, pl.List) else dtype
        x, present = _element_expr(pl.element(), inner, info.type)
        if leaf.op == "is_null":
            return ~pl.col(info.name).list.eval(present).list.any().fill_null(False)
        hit = pl.when(present).then(_positive_expr(test, x)).otherwise(False).fill_null(False)
        any_hit = pl.col(info.name).list.eval(hit).list.any().fill_null(False)
        return ~any_hit if positive_op else any_hit
    x, present = _element_expr(pl.col(info.name), dtype, info.type)
    return _single_expr(leaf.op, test, x, present)


def _single_expr(op: str, test: _Leaf, x: pl.Expr, present: pl.Expr) -> pl.Expr:
    """A leaf on a single value `x` (`test`: the leaf, `ne`/`not_in` as `eq`/`in`):
    a missing value makes every operator false except `is_null`."""
    if op == "is_null":
        return ~present
    result = _positive_expr(test, x).fill_null(False)
    if op in ("ne", "not_in"):
        result = ~result
    return pl.when(present).then(result).otherwise(False)


def _expr(node: _Node, schema: pl.Schema) -> pl.Expr:
    if isinstance(node, _All | _Any):
        # one n-ary expression, not a left-deep chain of `&`/`|`: Polars plans a chain of
        # n operators in superlinear time (1,000 leaves took 20 s; now well under 1 s)
        parts = [_expr(c, schema) for c in node.children]
        if len(parts) == 1:
            return parts[0]
        return pl.all_horizontal(*parts) if isinstance(node, _All) else pl.any_horizontal(*parts)
    if isinstance(node, _Not):
        return ~_expr(node.child, schema)
    if isinstance(node, _Line):
        each = _line_expr(node.child, schema)
        return pl.col(LINES_COLUMN).list.eval(each).list.any().fill_null(False)
    return _leaf_expr(node, schema)


def _line_expr(node: _Node, schema: pl.Schema) -> pl.Expr:
    """A condition inside `line`, on one element of the goods-line structs."""
    if isinstance(node, _All | _Any):
        parts = [_line_expr(c, schema) for c in node.children]
        if len(parts) == 1:
            return parts[0]
        return pl.all_horizontal(*parts) if isinstance(node, _All) else pl.any_horizontal(*parts)
    if isinstance(node, _Not):
        return ~_line_expr(node.child, schema)
    if isinstance(node, _Line):  # refused when a rule is checked
        raise AssertionError("'line' inside 'line'")
    return _leaf_expr(node, schema, in_line=True)


def condition_expr(rule: Rule, schema: pl.Schema) -> pl.Expr:
    """The rule's condition as a boolean Polars expression over a `rule_frame` schema."""
    return _expr(rule._compiled, schema)


def rule_fields(rule: Rule) -> tuple[str, ...]:
    """The columns a rule reads: shipment columns, `item.<column>` goods-line fields
    and feature names (a derived field such as an age reads its birth date and
    `declared_at`; `item.value_usd_per_kg` a line's value and net mass and the
    shipment's invoice currency), sorted."""
    return _inputs_of(rule._compiled)


@cache
def _inputs_of(node: _Node) -> tuple[str, ...]:
    """The input fields a condition reads (sorted, once per condition)."""
    if isinstance(node, _All | _Any):
        return tuple(sorted({f for c in node.children for f in _inputs_of(c)}))
    if isinstance(node, _Not | _Line):
        return _inputs_of(node.child)
    return node.field.inputs


@cache
def _fields_of(node: _Node) -> tuple[str, ...]:
    """The names of the fields a condition reads (sorted, once per condition)."""
    if isinstance(node, _All | _Any):
        return tuple(sorted({f for c in node.children for f in _fields_of(c)}))
    if isinstance(node, _Not | _Line):
        return _fields_of(node.child)
    return node.field.reads


@cache
def _line_fields(node: _Node) -> tuple[str, ...]:
    """The goods-line fields read inside `line` combinators (sorted, once per condition)."""
    if isinstance(node, _All | _Any):
        return tuple(sorted({f for c in node.children for f in _line_fields(c)}))
    if isinstance(node, _Not):
        return _line_fields(node.child)
    if isinstance(node, _Line):
        return _fields_of(node.child)
    return ()


@lru_cache(maxsize=4096)
def _cached_expr(node: _Node, dtypes: tuple[tuple[str, Any], ...]) -> pl.Expr:
    return _expr(node, pl.Schema(dict(dtypes)))


def _condition_expr_cached(rule: Rule, schema: pl.Schema) -> pl.Expr:
    """`condition_expr`, built once per condition and column types. The compiled tree is
    a frozen value (a rule version never changes), so it is its own cache key."""
    names = _fields_of(rule._compiled)
    missing = next((n for n in names if n not in schema), None)
    if missing is not None:
        raise KeyError(f"the frame has no column '{missing}' needed by a rule")
    return _cached_expr(rule._compiled, tuple((n, schema[n]) for n in names))


def _with_lines(frame: pl.DataFrame, fields: Sequence[str]) -> pl.DataFrame:
    """`frame` with `LINES_COLUMN`: each shipment's goods lines as a list of structs of
    the `fields` (the `item.` list columns, zipped line by line), which the `line`
    combinator reads with one `list.eval`; null for a shipment without lines."""
    for name in fields:
        if not isinstance(frame.schema[name], pl.List):
            raise TypeError(
                f"the frame's column '{name}' must be a list (one element per goods line)"
            )
    row = "__row"
    numbered = frame.select(*fields).with_row_index(row)
    lines = (
        numbered.filter(pl.col(fields[0]).list.len() > 0)
        .explode(*fields)
        .group_by(row)
        .agg(pl.struct(*fields).alias(LINES_COLUMN))
    )
    joined = numbered.select(row).join(lines, on=row, how="left", maintain_order="left")
    return frame.with_columns(joined.get_column(LINES_COLUMN))


def _in_force_expr(rule: Rule, at: dt.datetime | None) -> pl.Expr:
    if at is not None:
        return pl.lit(rule.in_force(at))
    day = pl.col("declared_at").dt.date()
    expr = pl.lit(True)
    if rule.effective_from:
        expr = expr & (day >= pl.lit(rule.effective_from))
    if rule.effective_to:
        expr = expr & (day <= pl.lit(rule.effective_to))
    return expr.fill_null(False)


HITS_SCHEMA = pl.Schema(
    {
        "shipment_id": pl.String(),
        "rule_id": pl.String(),
        "rule_version": pl.Int64(),
        "severity": pl.String(),
    }
)


def evaluate_frame(
    rules: Iterable[Rule], frame: pl.DataFrame, at: dt.datetime | None = None
) -> pl.DataFrame:
    """Hits of every rule over a `rule_frame`: one row per (shipment, rule) that hit,
    with the rule's version and severity. A rule applies when in force at `at`, or,
    when `at` is None, on each shipment's own `declared_at` day.

    All rules are evaluated in one pass (one `select`), each condition's expression
    built once per rule version and kept."""
    rules = list(rules)
    if not rules:
        return pl.DataFrame(schema=HITS_SCHEMA)
    schema = frame.schema
    conditions = [_condition_expr_cached(rule, schema) for rule in rules]  # checks columns
    line_fields = sorted({f for rule in rules for f in _line_fields(rule._compiled)})
    if line_fields:
        frame = _with_lines(frame, line_fields)
    flags = frame.select(
        pl.col("shipment_id").cast(pl.String),
        *[
            (condition & _in_force_expr(rule, at)).alias(f"__r{i}")
            for i, (rule, condition) in enumerate(zip(rules, conditions, strict=True))
        ],
    )
    meta = pl.DataFrame(
        {
            "variable": [f"__r{i}" for i in range(len(rules))],
            "rule_id": [r.id for r in rules],
            "rule_version": [r.version for r in rules],
            "severity": [r.severity for r in rules],
        },
        schema={
            "variable": pl.String(),
            **{k: v for k, v in HITS_SCHEMA.items() if k != "shipment_id"},
        },
    )
    return (
        flags.unpivot(index="shipment_id")
        .filter(pl.col("value"))
        .join(meta, on="variable", how="inner")
        .select(HITS_SCHEMA.names())
        .sort("shipment_id", "rule_id", "rule_version")
    )


# --------------------------------------------------------------------------- evaluation (serving)

SMALL_BATCH = 64  # up to this many shipments, rules are interpreted in Python


def _line_map(items: pl.DataFrame) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for row in items.to_dicts():
        out.setdefault(row.get("shipment_id"), []).append(row)
    return out


def shipment_hits(
    rules: Iterable[Rule],
    shipments: pl.DataFrame,
    items: pl.DataFrame,
    features: pl.DataFrame | None = None,
) -> dict[str, list[RuleHit]]:
    """shipment id -> the rules that hit it (ordered by rule id and version), each rule
    applied when in force on the shipment's `declared_at` day.

    The same answer as `evaluate_frame` over `rule_frame(shipments, items, features)`:
    a few shipments (the API's usual request) are interpreted in Python, which costs
    microseconds where building and planning Polars expressions costs milliseconds; a
    batch takes the one-pass Polars path."""
    rules = sorted(rules, key=lambda r: (r.id, r.version))
    if not rules or shipments.is_empty():
        return {}
    if shipments.height > SMALL_BATCH:
        table = evaluate_frame(rules, rule_frame(shipments, items, features))
        out: dict[str, list[RuleHit]] = {}
        for sid, rid, version, severity in table.iter_rows():
            out.setdefault(sid, []).append(RuleHit(rid, int(version), severity))
        return out
    catalog = field_catalog()
    needed = {catalog[f] for r in rules for f in _fields_of(r._compiled)}
    wanted = sorted(i.key for i in needed if i.source is Source.FEATURE)
    # (each frame's columns read once: a frame builds the list anew on every read)
    ship_columns, item_columns = set(shipments.columns), set(items.columns)
    columns_of = {
        Source.SHIPMENT: ship_columns,
        Source.ITEM: item_columns,
        Source.FEATURE: ship_columns.union(features.columns if features is not None else ()),
    }
    for info in needed:  # a missing column is an error, as in the frame path
        if info.derived == "usd_per_kg":
            if not (
                {"value", "net_mass_kg"} <= item_columns and "invoice_currency" in ship_columns
            ):
                raise KeyError(f"the frame has no column '{info.name}' needed by a rule")
            continue
        if info.key not in columns_of[info.source]:
            raise KeyError(f"the frame has no column '{info.name}' needed by a rule")
    ship_rows = shipments.to_dicts()
    lines = _line_map(items) if any(i.source is Source.ITEM for i in needed) else {}
    feats: dict[Any, dict[str, Any]] = {}
    if features is not None and wanted:
        held = set(features.columns)
        present = [c for c in wanted if c in held]
        for row in features.select("shipment_id", *present).to_dicts():
            feats.setdefault(row["shipment_id"], row)  # one feature row per shipment
    out = {}
    # a feature named like a shipment column is read from the shipment (as in the frame)
    values_of = [{**feats.get(ship.get("shipment_id"), {}), **ship} for ship in ship_rows]
    known = _regex_answers(rules, ship_rows, lines, values_of)
    token = _REGEX_FOUND.set(known) if known else None
    try:
        for ship, values in zip(ship_rows, values_of, strict=True):
            sid = ship.get("shipment_id")
            at = ship.get("declared_at")
            found = [
                RuleHit(r.id, r.version, r.severity)
                for r in rules
                if _in_force_on(r, at) and _eval(r._compiled, ship, lines.get(sid, ()), values)
            ]
            if found:
                out[str(sid)] = found
    finally:
        if token is not None:
            _REGEX_FOUND.reset(token)
    return out


def _regex_leaves(node: _Node) -> Iterator[_Leaf]:
    if isinstance(node, _All | _Any):
        for child in node.children:
            yield from _regex_leaves(child)
    elif isinstance(node, _Not | _Line):
        yield from _regex_leaves(node.child)
    elif node.regex is not None:
        yield node


def _regex_answers(
    rules: Sequence[Rule],
    ship_rows: Sequence[Mapping[str, Any]],
    lines: Mapping[Any, Sequence[Mapping[str, Any]]],
    values_of: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str], bool]:
    """Whether each `matches` pattern of `rules` is found in each text of its field
    that the evaluation may test (`_eval_leaf`'s texts), computed with one Polars call
    per pattern. A text left out is searched when tested, as before: the answers
    are the same either way (the same engine on the same text)."""
    texts: dict[str, set[str]] = {}
    for rule in rules:
        for leaf in _regex_leaves(rule._compiled):
            info = leaf.field
            assert leaf.regex is not None
            wanted = texts.setdefault(leaf.regex.pattern, set())
            if info.derived == "age":
                continue
            for ship, values in zip(ship_rows, values_of, strict=True):
                if info.source is Source.ITEM:
                    sid = ship.get("shipment_id")
                    raws = [_line_value(info, it, ship) for it in lines.get(sid, ())]
                elif info.source is Source.SHIPMENT:
                    raws = [ship.get(info.key)]
                else:
                    raws = [values.get(info.key)]
                for raw in raws:
                    for value in raw if isinstance(raw, list | tuple) else (raw,):
                        x = _clean(value, info)
                        if x is not None:
                            wanted.add(str(x)[:MATCH_TEXT_LIMIT])
    known: dict[tuple[str, str], bool] = {}
    for pattern, found in texts.items():
        if not found:
            continue
        ordered = sorted(found)
        hits = pl.Series(ordered, dtype=pl.String).str.contains(pattern).to_list()
        known.update(((pattern, t), bool(h)) for t, h in zip(ordered, hits, strict=True))
    return known


def _in_force_on(rule: Rule, at: dt.datetime | None) -> bool:
    """`in_force` on the declared day; with no day only an undated rule applies (as in
    the frame path, where a missing date compares as false)."""
    if at is None:
        return rule.effective_from is None and rule.effective_to is None
    return rule.in_force(at)


# --------------------------------------------------------------------------- performance


def rule_performance(
    hits: pl.DataFrame,
    outcomes: pl.DataFrame,
    *,
    categories: Sequence[str] | None = None,
    by_version: bool = False,
) -> pl.DataFrame:
    """Per rule: shipments hit, how many of those were inspected (have an outcome),
    how many had a finding, and finding_rate = findings / inspected (null when none
    inspected). `categories` counts only findings in those categories (e.g. arms)."""
    keys = ["rule_id", "rule_version"] if by_version else ["rule_id"]
    finding = pl.col("finding").fill_null(False)
    if categories is not None:
        finding = finding & pl.col("finding_category").is_in(list(categories)).fill_null(False)
    per_shipment = (
        outcomes.group_by("shipment_id")
        .agg(finding.any().alias("_finding"))
        .with_columns(pl.lit(True).alias("_inspected"))
    )
    joined = (
        hits.select(*keys, "shipment_id").unique().join(per_shipment, on="shipment_id", how="left")
    )
    return (
        joined.group_by(keys)
        .agg(
            pl.len().cast(pl.Int64).alias("hits"),
            pl.col("_inspected").fill_null(False).sum().cast(pl.Int64).alias("inspected"),
            pl.col("_finding").fill_null(False).sum().cast(pl.Int64).alias("findings"),
        )
        .with_columns(
            pl.when(pl.col("inspected") > 0)
            .then(pl.col("findings") / pl.col("inspected"))
            .otherwise(None)
            .alias("finding_rate")
        )
        .sort(keys)
    )
