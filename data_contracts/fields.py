"""One definition of every input column, from which the Polars schema, the strict
pydantic model and the row-level contract rules are all generated."""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
)

from data_contracts import reference


class Kind(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    ENUM = "enum"
    STRING_LIST = "string_list"


class Check(StrEnum):
    """Domain checks a column's values must pass (besides type and presence)."""

    COUNTRY = "country"  # ISO 3166-1 alpha-2
    CURRENCY = "currency"  # ISO 4217 alphabetic
    POSITIVE = "positive"  # > 0
    NON_NEGATIVE = "non_negative"  # >= 0
    PROBABILITY = "probability"  # 0 < p <= 1
    HS_CODE = "hs_code"  # 6-10 digits, chapter exists in HS 2022
    COUNTRY_LIST = "country_list"  # every element ISO 3166-1 alpha-2


_POLARS: dict[Kind, pl.DataType] = {
    Kind.STRING: pl.String(),
    Kind.INT: pl.Int64(),
    Kind.FLOAT: pl.Float64(),
    Kind.BOOL: pl.Boolean(),
    Kind.DATE: pl.Date(),
    Kind.DATETIME: pl.Datetime("us", "UTC"),
    Kind.STRING_LIST: pl.List(pl.String()),
}

# Plausibility bounds of dates and times (F4 of the acceptance test): a declaration
# lodged before 1990 or more than a year ahead, or a date of birth in the future, is
# a data error that would poison the history ("trader first seen 46 350 days ago").
EARLIEST_DATETIME = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
EARLIEST_DATE = dt.date(1900, 1, 1)
FUTURE_LIMIT = dt.timedelta(days=366)  # how far ahead a DATETIME may be
# The largest INT a column may hold when it names no smaller bound (Int64 storage).
INT64_MAX = 2**63 - 1
# Control characters text may not hold (tab, line feed and carriage return may):
# PostgreSQL refuses NUL, and none of them belongs in a name or a description.
CONTROL_CHARS = frozenset(
    chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)
)
# The replacement character: a decoder's mark for bytes it could not read (a cp1251
# export read as UTF-8 with `utf8-lossy` turns every Cyrillic letter into it). No
# name holds it; a name that does can never be screened: refused, like control
# characters, in every contract.
UNDECODED_CHARS = frozenset({"\ufffd"})
ALWAYS_FORBIDDEN_CHARS = CONTROL_CHARS | UNDECODED_CHARS
# Bidirectional formatting characters (embeddings, overrides, isolates and marks):
# they change the order in which text is shown, so that a name held backwards after a
# RIGHT-TO-LEFT OVERRIDE shows as the name while screening reads it backwards (sec
# F5). No declared name, address or description needs them: text may not hold them,
# except in reference lists from a trusted publisher (`Contract.allow_bidi`).
BIDI_CHARS = frozenset(
    (
        "\u061c",
        "\u200e",
        "\u200f",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    )
)
# Characters that show nothing: a value made only of these and white space is blank.
INVISIBLE_CHARS = "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
# Record ids (shipment_id, item_id, traveller_record_id, outcome_id) are part of web
# addresses (/api/v1/shipments/<id>, /web/shipments/<id>): they may not hold "/"
# (sec F9: "A/../B" opened another shipment's page, "A/B" could not be read at all).
# A declaration number with slashes belongs in declaration_ref.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
# The form ids had before "/" was refused: a record stored earlier is re-typed with it.
STORED_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}"

_PYTHON: dict[Kind, Any] = {
    Kind.STRING: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: bool,
    # Dates come as ISO strings in JSON: parse them (only them) laxly.
    Kind.DATE: Annotated[dt.date, Field(strict=False)],
    Kind.DATETIME: Annotated[dt.datetime, Field(strict=False)],
    Kind.STRING_LIST: list[str],
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    description: str
    required: bool = True
    values: tuple[str, ...] = ()  # for Kind.ENUM
    pattern: str | None = None  # regex the whole value must match
    check: Check | None = None
    max_length: int | None = None
    wco: str | None = None  # WCO Data Model name or ID, where one fits
    maximum: int | None = None  # for Kind.INT: the largest plausible value (else INT64_MAX)
    # Personal data of a traveller or a natural person (masked on display).
    personal: bool = False

    @property
    def polars_dtype(self) -> pl.DataType:
        if self.kind is Kind.ENUM:
            return pl.Enum(list(self.values))
        return _POLARS[self.kind]

    @property
    def raw_dtype(self) -> pl.DataType:
        """Type used while a row is not yet validated: enums stay strings so a bad
        value is reported, not silently nulled."""
        return pl.String() if self.kind is Kind.ENUM else self.polars_dtype

    def python_annotation(self, *, allow_bidi: bool = False) -> Any:
        """The pydantic type of the column; `allow_bidi`: text may hold bidirectional
        formatting characters (see `BIDI_CHARS`)."""
        if self.kind is Kind.ENUM:
            base: Any = Literal[self.values]
        else:
            base = _PYTHON[self.kind]
        constraints: dict[str, Any] = {"description": self.description}
        is_id = self.kind is Kind.STRING and self.pattern == ID_PATTERN
        if self.kind is Kind.STRING:
            constraints["min_length"] = 1
            if is_id:
                # The form of stored ids here; "/" is refused by `_record_id` (on new
                # records only), with its own message. The schema shows the strict form.
                constraints["pattern"] = f"^(?:{STORED_ID_PATTERN})$"
                constraints["json_schema_extra"] = {"pattern": f"^(?:{ID_PATTERN})$"}
            elif self.pattern:
                constraints["pattern"] = f"^(?:{self.pattern})$"
            if self.max_length:
                constraints["max_length"] = self.max_length
        if self.kind is Kind.FLOAT:  # (JSON's 1e400 reads as infinity: no measure)
            constraints["allow_inf_nan"] = False
        if self.kind is Kind.STRING_LIST and self.required:  # (as the rule `required:`)
            constraints["min_length"] = 1
        if self.kind is Kind.INT:
            constraints["le"] = INT64_MAX
            if self.maximum is not None:
                constraints["json_schema_extra"] = {"maximum": self.maximum}
        if self.check is Check.POSITIVE:
            constraints["gt"] = 0
        elif self.check is Check.NON_NEGATIVE:
            constraints["ge"] = 0
        elif self.check is Check.PROBABILITY:
            constraints["gt"] = 0
            constraints["le"] = 1
        validators: list[Any] = []
        if self.kind in (Kind.DATE, Kind.DATETIME):
            validators.append(BeforeValidator(_not_a_number))
        if self.kind is Kind.INT and self.maximum is not None:
            validators.append(AfterValidator(_at_most(self.maximum)))
        if self.kind is Kind.DATETIME:
            validators.append(AfterValidator(_plausible_datetime))
        elif self.kind is Kind.DATE:
            validators.append(AfterValidator(_plausible_date))
        elif self.kind is Kind.STRING:
            validators.append(AfterValidator(_visible_text(allow_bidi)))
        elif self.kind is Kind.STRING_LIST:
            validators.append(AfterValidator(_visible_texts(allow_bidi)))
        if is_id:
            validators.append(AfterValidator(_record_id(self.name)))
        if self.check is Check.COUNTRY:
            validators.append(AfterValidator(_country))
        elif self.check is Check.CURRENCY:
            validators.append(AfterValidator(_currency))
        elif self.check is Check.HS_CODE:
            validators.append(AfterValidator(_hs_code))
        elif self.check is Check.COUNTRY_LIST:
            validators.append(AfterValidator(_country_list))
        annotated: Any = Annotated[base, Field(**constraints), *validators]
        if not self.required:
            return annotated | None
        return annotated


STORED = "stored"  # validation context key: re-typing a record stored earlier


def _stored(info: ValidationInfo) -> bool:
    """Whether a record stored earlier is being re-typed (`context={STORED: True}`):
    then only types are checked, not the plausibility checks added since, so that a
    record accepted by an earlier version can still be read."""
    return bool(info.context and info.context.get(STORED))


def _at_most(maximum: int) -> Any:
    def check(value: int, info: ValidationInfo) -> int:
        if value > maximum and not _stored(info):
            raise ValueError(f"{value} is implausible: it must be at most {maximum}")
        return value

    return check


def _not_a_number(value: Any) -> Any:
    """Dates and times come as ISO 8601 text: a number (a Unix time?) is refused."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be an ISO 8601 date or date-time text, not a number")
    return value


def _plausible_datetime(value: dt.datetime, info: ValidationInfo) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} needs a time zone (e.g. 'Z' for UTC or '+05:00'); "
            "a date-time without one is ambiguous"
        )
    latest = dt.datetime.now(dt.UTC) + FUTURE_LIMIT
    if not EARLIEST_DATETIME <= value <= latest and not _stored(info):
        raise ValueError(
            f"{value.isoformat()} is implausible: it must lie between "
            f"{EARLIEST_DATETIME:%Y-%m-%d} and one year from now ({latest:%Y-%m-%d})"
        )
    return value


def _plausible_date(value: dt.date, info: ValidationInfo) -> dt.date:
    today = dt.datetime.now(dt.UTC).date()
    if not EARLIEST_DATE <= value <= today and not _stored(info):
        raise ValueError(
            f"{value.isoformat()} is implausible: it must lie between {EARLIEST_DATE} and "
            f"today ({today})"
        )
    return value


def text_problem(value: str, *, allow_bidi: bool = False) -> str | None:
    """Why a text value is not acceptable (a control character or U+FFFD; a bidirectional
    formatting character, unless `allow_bidi`; nothing visible but invisible format
    characters such as a zero-width space), or None. Text of white space only is
    left to the contract rule `required:` ("missing or blank"). Other invisible
    format characters (zero-width space and joiners, soft hyphen) within visible text
    are kept: screening and the features ignore them."""
    forbidden = ALWAYS_FORBIDDEN_CHARS if allow_bidi else FORBIDDEN_TEXT_CHARS
    for ch in value:
        if ch in forbidden:
            return CHAR_PROBLEMS[ch]
    if value.strip() and all(ch.isspace() or _invisible(ch) for ch in value):
        return BLANK_TEXT
    return None


def _char_problem(ch: str) -> str:
    if ch in CONTROL_CHARS:
        return f"holds the control character U+{ord(ch):04X}; remove it"
    if ch in UNDECODED_CHARS:
        return (
            "holds U+FFFD (REPLACEMENT CHARACTER), which stands for bytes that could not "
            "be decoded: read the file in its own encoding (e.g. cp1251), not as UTF-8"
        )
    return (
        f"holds the bidirectional formatting character U+{ord(ch):04X} "
        f"({unicodedata.name(ch)}), which makes text show in another order than it is "
        "held (a name written backwards shows as the name); remove it"
    )


FORBIDDEN_TEXT_CHARS = ALWAYS_FORBIDDEN_CHARS | BIDI_CHARS
# character -> why text may not hold it (as `text_problem` says)
CHAR_PROBLEMS: dict[str, str] = {ch: _char_problem(ch) for ch in sorted(FORBIDDEN_TEXT_CHARS)}
BLANK_TEXT = "is blank: it holds only invisible characters (e.g. zero-width spaces)"


def char_class(chars: frozenset[str]) -> str:
    """A regular expression class of `chars` that Python's re and Rust's regex
    (Polars) read alike."""
    return "[" + "".join(f"\\u{ord(ch):04X}" for ch in sorted(chars)) + "]"


# Text `text_problem` calls blank (for Polars): only white space and invisible format
# characters, at least one of them.
BLANK_TEXT_REGEX = r"^[\s\p{Cf}]*\p{Cf}[\s\p{Cf}]*$"


def id_problem(name: str, value: str | None = None) -> str:
    """Why the id column `name` (holding `value`, when given) may not hold "/" (see
    `ID_PATTERN`)."""
    held = f" ({value})" if value is not None else ""
    where = (
        "; a declaration number with slashes belongs in declaration_ref"
        if name == "shipment_id"
        else ""
    )
    return (
        f"'/' is not allowed in {name}{held}: ids are part of web addresses, in which "
        f"'/' separates the parts{where}"
    )


def _record_id(name: str) -> Any:
    def check(value: str, info: ValidationInfo) -> str:
        if "/" in value and not _stored(info):
            raise ValueError(id_problem(name))
        return value

    return check


def _invisible(ch: str) -> bool:
    return ch in INVISIBLE_CHARS or unicodedata.category(ch) == "Cf"


def _visible_text(allow_bidi: bool) -> Any:
    def check(value: str, info: ValidationInfo) -> str:
        problem = text_problem(value, allow_bidi=allow_bidi)
        if problem and not _stored(info):
            raise ValueError(problem)
        return value

    return check


def _visible_texts(allow_bidi: bool) -> Any:
    def check(values: list[str], info: ValidationInfo) -> list[str]:
        if _stored(info):
            return values
        for i, value in enumerate(values):
            problem = text_problem(value, allow_bidi=allow_bidi)
            if problem:
                raise ValueError(f"element {i} {problem}")
        return values

    return check


def _country(value: str) -> str:
    if value not in reference.COUNTRIES:
        raise ValueError(f"'{value}' is not an ISO 3166-1 alpha-2 country code")
    return value


def _country_list(values: list[str]) -> list[str]:
    for value in values:
        _country(value)
    return values


def _currency(value: str) -> str:
    if value not in reference.CURRENCIES:
        raise ValueError(f"'{value}' is not an ISO 4217 currency code")
    return value


def _hs_code(value: str) -> str:
    problem = reference.hs_code_problem(value)
    if problem:
        raise ValueError(problem)
    return value


@dataclass(frozen=True)
class Contract:
    """A table every input of one kind must match."""

    name: str
    id_column: str
    columns: tuple[Column, ...]
    description: str
    parents: dict[str, str] = field(default_factory=dict)  # column -> parent contract
    # Text may hold bidirectional formatting characters (`BIDI_CHARS`): a reference
    # list from a trusted publisher, whose original-script names may carry a
    # right-to-left mark; never a declaration.
    allow_bidi: bool = False

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.polars_dtype for c in self.columns})

    @property
    def raw_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.raw_dtype for c in self.columns})

    def pydantic_model(self) -> type[BaseModel]:
        return _model_cache(self)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)


_MODELS: dict[str, type[BaseModel]] = {}


def _model_cache(contract: Contract) -> type[BaseModel]:
    model = _MODELS.get(contract.name)
    if model is None:
        fields: dict[str, Any] = {}
        for col in contract.columns:
            default = ... if col.required else None
            fields[col.name] = (col.python_annotation(allow_bidi=contract.allow_bidi), default)
        model = create_model(
            "".join(part.title() for part in contract.name.split("_")) + "Record",
            __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
            __doc__=contract.description,
            **fields,
        )
        _MODELS[contract.name] = model
    return model
