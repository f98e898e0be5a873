"""Contract rules: each rule is one definition that yields

* a Polars expression that is True on every row breaking it (used to route rows
  to `validated/` or `quarantine/`),
* a per-row human-readable message, and
* the Great Expectations expectations that check the same thing on a pandas view
  (built lazily by `data_contracts.gx_report`, never imported on the serving path).

Column rules are generated from the column definitions in `schemas.py`; table
rules (uniqueness, date order, references, vague descriptions) are listed here.
Rules are ordered: the first one a row breaks is its primary reason.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from data_contracts import reference
from data_contracts.fields import (
    ALWAYS_FORBIDDEN_CHARS,
    BIDI_CHARS,
    BLANK_TEXT,
    BLANK_TEXT_REGEX,
    CHAR_PROBLEMS,
    EARLIEST_DATE,
    EARLIEST_DATETIME,
    FUTURE_LIMIT,
    ID_PATTERN,
    Check,
    Column,
    Contract,
    Kind,
    char_class,
    id_problem,
)
from data_contracts.schemas import CONTRACTS, SHIPMENTS

# Columns joined onto a child table from its parent before the rules run.
PARENT_EXISTS = "__parent_exists"
PARENT_DECLARED_AT = "__parent_declared_at"
TYPE_ERROR_PREFIX = "__type_error__"


@dataclass(frozen=True)
class Expectation:
    """A Great Expectations expectation by class name and arguments."""

    type: str
    kwargs: dict[str, Any]


def _where(column: str, value: Any) -> dict[str, Any]:
    """A row condition of an expectation (the rows whose `column` equals `value`) in
    the dict form of Great Expectations' condition objects (string conditions with
    a `condition_parser` are deprecated since GX Core 1.9 and go in 2.0); GX reads
    it as a `ComparisonCondition`, and this module need not import GX."""
    return {"type": "comparison", "column": {"name": column}, "operator": "==", "parameter": value}


@dataclass(frozen=True)
class Rule:
    name: str  # "<kind>:<column>", e.g. "country:origin_country"
    table: str
    description: str
    violation: pl.Expr  # True where the row breaks the rule
    message: pl.Expr  # why, for that row
    expectations: tuple[Expectation, ...] = field(default_factory=tuple)
    cascade: bool = False  # follows from another table's rejection
    # The field a row breaking the rule is wrong in, when it is not the rule's column
    # (a String expression; None: the column named by the rule).
    field: pl.Expr | None = None

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]


def _str(expr: pl.Expr, col: Column) -> pl.Expr:
    if col.kind is Kind.STRING_LIST:
        return expr.list.join(";")
    return expr.cast(pl.String)


def _quoted(col: Column) -> pl.Expr:
    return _str(pl.col(col.name), col).fill_null("")


def _not_finite(c: pl.Expr) -> pl.Expr:
    """NaN or infinite (a CSV's "inf", a float beyond the largest): no measure."""
    return ~c.cast(pl.Float64).is_finite()


# GX's side of `_not_finite` for a lower bound's expectation: infinity lies beyond the
# largest float (NaN is outside every range GX checks).
_FINITE = {"max_value": sys.float_info.max}


# What a value of each kind must look like, in a type rule's message.
_FORMS = {
    Kind.STRING: "text",
    Kind.INT: "a whole number",
    Kind.FLOAT: "a number (with a decimal point, no thousands separator)",
    Kind.BOOL: "true or false",
    Kind.DATE: "a date (YYYY-MM-DD)",
    Kind.DATETIME: "a date-time with its offset (e.g. 2024-03-05T08:15:00+05:00)",
    Kind.ENUM: "text",
    Kind.STRING_LIST: "a list",
}
RAW_RECORD = "_raw_record"  # each row as received, in JSON (data_contracts.readers)


def _type_message(col: Column) -> pl.Expr:
    """Why a value could not be read as its column's type, naming the value as
    received (from the row's `_raw_record`) and the form expected."""
    plain = f"{col.name} could not be read as a {col.kind.value}"
    value = pl.col(RAW_RECORD).str.json_path_match(f"$.{col.name}")
    shown = pl.when(value.str.len_chars() > 60).then(
        pl.concat_str(value.str.slice(0, 60), pl.lit("…"))
    )
    return pl.coalesce(
        pl.concat_str(
            pl.lit(f"{col.name} '"),
            pl.coalesce(shown, value),
            pl.lit(f"' could not be read as {_FORMS[col.kind]}"),
        ),
        pl.lit(plain),
    )


def _fmt(template: str, *exprs: pl.Expr) -> pl.Expr:
    """Fill the `{}` places of a message with values (no other brace is special)."""
    parts = template.split("{}")
    if len(parts) != len(exprs) + 1:
        raise ValueError(f"message {template!r} needs {len(parts) - 1} values")
    pieces: list[pl.Expr] = [pl.lit(parts[0])]
    for expr, text in zip(exprs, parts[1:], strict=True):
        pieces += [expr.cast(pl.String).fill_null("null"), pl.lit(text)]
    return pl.concat_str(pieces)


def _value_set_regex(values: frozenset[str]) -> str:
    alternatives = "|".join(sorted(values))
    return rf"^(?:(?:{alternatives})(?:;(?:{alternatives}))*)?$"


def column_rules(contract: Contract) -> list[Rule]:
    """Presence, type, format and domain rules of every column."""
    rules: list[Rule] = []
    t = contract.name
    for col in contract.columns:
        c = pl.col(col.name)
        if col.required:
            blank = c.is_null()
            if col.kind is Kind.STRING:
                blank = blank | (c.str.strip_chars() == "")
            elif col.kind is Kind.STRING_LIST:  # (a required list holds one value or more)
                blank = blank | (c.list.len() == 0)
            exps = [Expectation("ExpectColumnValuesToNotBeNull", {"column": col.name})]
            if col.kind is Kind.STRING:
                exps.append(
                    Expectation(
                        "ExpectColumnValuesToNotMatchRegex", {"column": col.name, "regex": r"^\s*$"}
                    )
                )
            elif col.kind is Kind.STRING_LIST:  # (GX's value length of a list: its size)
                exps.append(
                    Expectation(
                        "ExpectColumnValueLengthsToBeBetween", {"column": col.name, "min_value": 1}
                    )
                )
            rules.append(
                Rule(
                    f"required:{col.name}",
                    t,
                    f"{col.name} is required",
                    blank.fill_null(True) & ~pl.col(TYPE_ERROR_PREFIX + col.name),
                    pl.lit(f"{col.name} is missing or blank"),
                    tuple(exps),
                )
            )
        rules.append(
            Rule(
                f"type:{col.name}",
                t,
                f"{col.name} must be a {col.kind.value}",
                pl.col(TYPE_ERROR_PREFIX + col.name),
                _type_message(col),
            )
        )
        if col.pattern:
            regex = f"^(?:{col.pattern})$"
            message = _fmt(f"{col.name} '{{}}' does not have the expected form {regex}", c)
            if col.pattern == ID_PATTERN:  # say why an id may not hold "/"
                message = (
                    pl.when(c.str.contains("/", literal=True))
                    .then(_fmt(id_problem(col.name, "'{}'"), c))
                    .otherwise(message)
                )
            rules.append(
                Rule(
                    f"pattern:{col.name}",
                    t,
                    f"{col.name} must match {regex}",
                    ~c.str.contains(regex),
                    message,
                    (
                        Expectation(
                            "ExpectColumnValuesToMatchRegex", {"column": col.name, "regex": regex}
                        ),
                    ),
                )
            )
        if col.max_length:
            rules.append(
                Rule(
                    f"max_length:{col.name}",
                    t,
                    f"{col.name} has at most {col.max_length} characters",
                    c.str.len_chars() > col.max_length,
                    _fmt(
                        f"{col.name} is {{}} characters long, more than {col.max_length}",
                        c.str.len_chars(),
                    ),
                    (
                        Expectation(
                            "ExpectColumnValueLengthsToBeBetween",
                            {"column": col.name, "max_value": col.max_length},
                        ),
                    ),
                )
            )
        if col.kind in (Kind.STRING, Kind.STRING_LIST):
            rules.append(_text_rule(contract, col))
        if col.kind is Kind.ENUM:
            rules.append(
                Rule(
                    f"enum:{col.name}",
                    t,
                    f"{col.name} is one of {', '.join(col.values)}",
                    ~c.is_in(list(col.values)),
                    _fmt(f"{col.name} '{{}}' is not one of: {', '.join(col.values)}", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeInSet",
                            {"column": col.name, "value_set": list(col.values)},
                        ),
                    ),
                )
            )
        rules.extend(_check_rules(t, col))
        rules.extend(_plausibility_rules(t, col))
    return rules


def _text_rule(contract: Contract, col: Column) -> Rule:
    """What the strict model checks on text (`data_contracts.fields.text_problem`), as
    a rule on files: no control character, no bidirectional formatting character
    (unless the contract allows them), not only invisible characters. The message
    names the first such character, as the API does."""
    forbidden = ALWAYS_FORBIDDEN_CHARS | (frozenset() if contract.allow_bidi else BIDI_CHARS)
    chars = char_class(forbidden)
    reasons = {ch: CHAR_PROBLEMS[ch] for ch in forbidden}
    bad = f"{chars}|{BLANK_TEXT_REGEX}"  # one pass over the text
    n = col.name
    kinds = "control characters" if contract.allow_bidi else "control or bidirectional characters"

    def why(first: pl.Expr) -> pl.Expr:
        reason = first.replace_strict(reasons, default=None, return_dtype=pl.String)
        return pl.concat_str(pl.lit(f"{n} "), reason)

    if col.kind is Kind.STRING_LIST:
        values = pl.col(n).list.eval(pl.element().str.contains(bad))
        first = pl.col(n).list.eval(pl.element().str.extract(f"({chars})", 1)).list.drop_nulls()
        return Rule(
            f"text:{n}",
            contract.name,
            f"no element of {n} holds {kinds} or only invisible characters",
            values.list.any(),
            pl.when(first.list.len() > 0)
            .then(why(first.list.first()))
            .otherwise(pl.lit(f"{n} has an element that {BLANK_TEXT}")),
        )
    c = pl.col(n)
    first = c.str.extract(f"({chars})", 1)
    return Rule(
        f"text:{n}",
        contract.name,
        f"{n} holds no {kinds} and not only invisible characters",
        c.str.contains(bad),
        pl.when(first.is_not_null()).then(why(first)).otherwise(pl.lit(f"{n} {BLANK_TEXT}")),
    )


def _plausibility_rules(t: str, col: Column) -> list[Rule]:
    """The bounds the strict model checks on records (`data_contracts.fields`), as
    rules on files: integers at most their realistic maximum, date-times from
    1990-01-01 to one year from now, dates from 1900-01-01 to today (the bounds of
    `now` are taken when the rules are built)."""
    c = pl.col(col.name)
    n = col.name
    if col.kind is Kind.INT and col.maximum is not None:
        return [
            Rule(
                f"maximum:{n}",
                t,
                f"{n} is at most {col.maximum}",
                c > col.maximum,
                _fmt(f"{n} is {{}}, more than the plausible {col.maximum}", c),
                (
                    Expectation(
                        "ExpectColumnValuesToBeBetween", {"column": n, "max_value": col.maximum}
                    ),
                ),
            )
        ]
    if col.kind is Kind.DATETIME:
        latest = dt.datetime.now(dt.UTC) + FUTURE_LIMIT
        return [
            Rule(
                f"date_range:{n}",
                t,
                f"{n} lies between {EARLIEST_DATETIME:%Y-%m-%d} and one year from now",
                (c < EARLIEST_DATETIME) | (c > latest),
                _fmt(
                    f"{n} {{}} is implausible: it must lie between "
                    f"{EARLIEST_DATETIME:%Y-%m-%d} and {latest:%Y-%m-%d}",
                    c,
                ),
            )
        ]
    if col.kind is Kind.DATE:
        today = dt.datetime.now(dt.UTC).date()
        return [
            Rule(
                f"date_range:{n}",
                t,
                f"{n} lies between {EARLIEST_DATE} and today",
                (c < EARLIEST_DATE) | (c > today),
                _fmt(
                    f"{n} {{}} is implausible: it must lie between {EARLIEST_DATE} and {today}",
                    c,
                ),
            )
        ]
    return []


def _check_rules(t: str, col: Column) -> list[Rule]:
    c = pl.col(col.name)
    n = col.name
    match col.check:
        case Check.COUNTRY:
            return [
                Rule(
                    f"country:{n}",
                    t,
                    f"{n} is an ISO 3166-1 alpha-2 code",
                    ~c.is_in(sorted(reference.COUNTRIES)),
                    _fmt(f"{n} '{{}}' is not an ISO 3166-1 alpha-2 country code", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeInSet",
                            {"column": n, "value_set": sorted(reference.COUNTRIES)},
                        ),
                    ),
                )
            ]
        case Check.COUNTRY_LIST:
            return [
                Rule(
                    f"country:{n}",
                    t,
                    f"every element of {n} is an ISO 3166-1 alpha-2 code",
                    c.list.eval(~pl.element().is_in(sorted(reference.COUNTRIES))).list.any(),
                    _fmt(
                        f"{n} '{{}}' holds a code that is not ISO 3166-1 alpha-2", c.list.join(";")
                    ),
                    (
                        Expectation(
                            "ExpectColumnValuesToMatchRegex",
                            {"column": n, "regex": _value_set_regex(reference.COUNTRIES)},
                        ),
                    ),
                )
            ]
        case Check.CURRENCY:
            return [
                Rule(
                    f"currency:{n}",
                    t,
                    f"{n} is an ISO 4217 currency code",
                    ~c.is_in(sorted(reference.CURRENCIES)),
                    _fmt(f"{n} '{{}}' is not an ISO 4217 currency code", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeInSet",
                            {"column": n, "value_set": sorted(reference.CURRENCIES)},
                        ),
                    ),
                )
            ]
        case Check.POSITIVE:
            return [
                Rule(
                    f"positive:{n}",
                    t,
                    f"{n} is greater than zero (and finite)",
                    (c <= 0) | _not_finite(c),
                    _fmt(f"{n} is {{}}, it must be a finite number greater than zero", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeBetween",
                            {"column": n, "min_value": 0, "strict_min": True, **_FINITE},
                        ),
                    ),
                )
            ]
        case Check.NON_NEGATIVE:
            return [
                Rule(
                    f"non_negative:{n}",
                    t,
                    f"{n} is zero or more (and finite)",
                    (c < 0) | _not_finite(c),
                    _fmt(f"{n} is {{}}, it must be a finite number, not negative", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeBetween",
                            {"column": n, "min_value": 0, **_FINITE},
                        ),
                    ),
                )
            ]
        case Check.PROBABILITY:
            return [
                Rule(
                    f"probability:{n}",
                    t,
                    f"{n} is a probability in (0, 1]",
                    (c <= 0) | (c > 1) | c.cast(pl.Float64).is_nan(),
                    _fmt(f"{n} is {{}}, it must be above 0 and at most 1", c),
                    (
                        Expectation(
                            "ExpectColumnValuesToBeBetween",
                            {"column": n, "min_value": 0, "max_value": 1, "strict_min": True},
                        ),
                    ),
                )
            ]
        case Check.HS_CODE:
            fmt = f"^{reference.HS_CODE_PATTERN}$"
            chapter_ok = f"^{reference.HS_CHAPTER_PATTERN}$"
            return [
                Rule(
                    f"hs_format:{n}",
                    t,
                    f"{n} has 6 to 10 digits",
                    ~c.str.contains(fmt),
                    _fmt(f"{n} '{{}}' must be 6 to 10 digits", c),
                    (Expectation("ExpectColumnValuesToMatchRegex", {"column": n, "regex": fmt}),),
                ),
                Rule(
                    f"hs_chapter:{n}",
                    t,
                    f"the chapter of {n} exists in HS 2022",
                    c.str.contains(fmt) & ~c.str.contains(chapter_ok),
                    _fmt(
                        f"{n} '{{}}' names chapter {{}}, which does not exist in HS 2022",
                        c,
                        c.str.slice(0, 2),
                    ),
                    # Python's re has look-ahead: rows with a bad format are left to hs_format.
                    (
                        Expectation(
                            "ExpectColumnValuesToMatchRegex",
                            {
                                "column": n,
                                "regex": rf"^(?:{reference.HS_CHAPTER_PATTERN}"
                                rf"|(?!{reference.HS_CODE_PATTERN}$).*)$",
                            },
                        ),
                    ),
                ),
            ]
        case _:
            return []


def _unique(contract: Contract) -> Rule:
    c = pl.col(contract.id_column)
    return Rule(
        f"unique:{contract.id_column}",
        contract.name,
        f"{contract.id_column} is unique (the first row with an id is kept)",
        c.is_not_null() & ~c.is_first_distinct(),
        _fmt(f"{contract.id_column} '{{}}' was already used by an earlier row", c),
        (Expectation("ExpectColumnValuesToBeUnique", {"column": contract.id_column}),),
    )


def _parent_missing(contract: Contract) -> Rule:
    return Rule(
        "parent_missing:shipment_id",
        contract.name,
        "shipment_id names a declared shipment",
        pl.col("shipment_id").is_not_null() & ~pl.col(PARENT_EXISTS),
        _fmt("shipment_id '{}' names no shipment in the input", pl.col("shipment_id")),
        (
            Expectation(
                "ExpectColumnValuesToBeInSet", {"column": PARENT_EXISTS, "value_set": [True]}
            ),
        ),
    )


def table_rules(contract: Contract) -> list[Rule]:
    t = contract.name
    rules = [_unique(contract)]
    if t == "shipments":
        rules.append(
            Rule(
                "date_order:expected_arrival_at",
                t,
                "expected_arrival_at is not before declared_at",
                pl.col("expected_arrival_at") < pl.col("declared_at"),
                _fmt(
                    "expected_arrival_at {} is before declared_at {}",
                    pl.col("expected_arrival_at"),
                    pl.col("declared_at"),
                ),
                (
                    Expectation(
                        "ExpectColumnPairValuesAToBeGreaterThanB",
                        {
                            "column_A": "expected_arrival_at",
                            "column_B": "declared_at",
                            "or_equal": True,
                            "ignore_row_if": "either_value_is_missing",
                        },
                    ),
                ),
            )
        )
    elif t == "items":
        rules.append(_parent_missing(contract))
        regex = reference.vague_description_regex()
        rules.append(
            Rule(
                "vague_description:description",
                t,
                "the description says what the goods are (not only 'parts', 'gift', 'see invoice', "
                "'запчасти', 'товар', ...)",
                pl.col("description").str.contains(regex),
                _fmt(
                    "description '{}' does not say what the goods are; name the goods "
                    "specifically (what, of what material, for what use)",
                    pl.col("description"),
                ),
                (
                    Expectation(
                        "ExpectColumnValuesToNotMatchRegex",
                        {"column": "description", "regex": regex},
                    ),
                ),
            )
        )
    elif t == "outcomes":
        rules.append(_parent_missing(contract))
        rules.append(
            Rule(
                "date_order:inspected_at",
                t,
                "inspected_at is not before the shipment's declared_at",
                pl.col("inspected_at") < pl.col(PARENT_DECLARED_AT),
                _fmt(
                    "inspected_at {} is before the shipment's declared_at {}",
                    pl.col("inspected_at"),
                    pl.col(PARENT_DECLARED_AT),
                ),
                (
                    Expectation(
                        "ExpectColumnPairValuesAToBeGreaterThanB",
                        {
                            "column_A": "inspected_at",
                            "column_B": PARENT_DECLARED_AT,
                            "or_equal": True,
                            "ignore_row_if": "either_value_is_missing",
                        },
                    ),
                ),
            )
        )
        finding, category = pl.col("finding"), pl.col("finding_category")
        rules.append(
            Rule(
                "finding_category:finding_category",
                t,
                "finding_category is given exactly when finding is true",
                (finding & category.is_null()) | (~finding & category.is_not_null()),
                pl.when(finding)
                .then(pl.lit("finding is true but finding_category is empty"))
                .otherwise(_fmt("finding is false but finding_category is '{}'", category)),
                (
                    Expectation(
                        "ExpectColumnValuesToNotBeNull",
                        {
                            "column": "finding_category",
                            "row_condition": _where("finding", True),
                        },
                    ),
                    Expectation(
                        "ExpectColumnValuesToBeNull",
                        {
                            "column": "finding_category",
                            "row_condition": _where("finding", False),
                        },
                    ),
                ),
            )
        )
    elif t == "travellers":
        rules.append(
            Rule(
                "date_order:departure_at",
                t,
                "date_of_birth and booked_at are not after departure_at",
                (pl.col("date_of_birth") > pl.col("departure_at").dt.date())
                | (pl.col("booked_at") > pl.col("departure_at")),
                pl.when((pl.col("booked_at") > pl.col("departure_at")).fill_null(False))
                .then(
                    _fmt(
                        "booked_at {} is after departure_at {}",
                        pl.col("booked_at"),
                        pl.col("departure_at"),
                    )
                )
                .otherwise(
                    _fmt(
                        "date_of_birth {} is after departure_at {}",
                        pl.col("date_of_birth"),
                        pl.col("departure_at"),
                    )
                ),
                (
                    Expectation(
                        "ExpectColumnPairValuesAToBeGreaterThanB",
                        {
                            "column_A": "departure_at",
                            "column_B": "booked_at",
                            "or_equal": True,
                            "ignore_row_if": "either_value_is_missing",
                        },
                    ),
                    Expectation(
                        "ExpectColumnPairValuesAToBeGreaterThanB",
                        {
                            "column_A": "departure_at",
                            "column_B": "date_of_birth",
                            "or_equal": True,
                            "ignore_row_if": "either_value_is_missing",
                        },
                    ),
                ),
                field=pl.when((pl.col("booked_at") > pl.col("departure_at")).fill_null(False))
                .then(pl.lit("booked_at"))
                .otherwise(pl.lit("date_of_birth")),
            )
        )
        rules.append(
            Rule(
                "route_mismatch:route_countries",
                t,
                "route_countries has one country per port",
                pl.col("route").list.len() != pl.col("route_countries").list.len(),
                _fmt(
                    "route has {} ports but route_countries has {} countries",
                    pl.col("route").list.len(),
                    pl.col("route_countries").list.len(),
                ),
            )
        )
    return rules


def cascade_rules(contract: Contract) -> list[Rule]:
    """Rules whose violation is decided by the other tables' results (see validate)."""
    t = contract.name
    if t == "shipments":
        return [
            Rule(
                "child_rejected:items",
                t,
                "every goods line of the declaration is acceptable",
                pl.col("__child_rejected"),
                _fmt(
                    "goods line(s) of this declaration were rejected: {}", pl.col("__child_reason")
                ),
                cascade=True,
            )
        ]
    if "shipment_id" in contract.parents:
        return [
            Rule(
                "parent_rejected:shipment_id",
                t,
                "the shipment itself was accepted",
                pl.col("__parent_rejected"),
                _fmt(
                    "shipment '{}' was rejected: {}",
                    pl.col("shipment_id"),
                    pl.col("__parent_reason"),
                ),
                cascade=True,
            )
        ]
    return []


def rules_for(contract: Contract) -> list[Rule]:
    return column_rules(contract) + table_rules(contract) + cascade_rules(contract)


def all_rules() -> dict[str, list[Rule]]:
    return {name: rules_for(c) for name, c in CONTRACTS.items()}


__all__ = ["SHIPMENTS", "Expectation", "Rule", "all_rules", "rules_for"]
