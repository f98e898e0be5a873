"""One definition of every input column, from which the Polars schema, the strict
pydantic model and the row-level contract rules are all generated."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

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

    def python_annotation(self) -> Any:
        if self.kind is Kind.ENUM:
            base: Any = Literal[self.values]
        else:
            base = _PYTHON[self.kind]
        constraints: dict[str, Any] = {"description": self.description}
        if self.kind is Kind.STRING:
            constraints["min_length"] = 1
            if self.pattern:
                constraints["pattern"] = f"^(?:{self.pattern})$"
            if self.max_length:
                constraints["max_length"] = self.max_length
        if self.check is Check.POSITIVE:
            constraints["gt"] = 0
        elif self.check is Check.NON_NEGATIVE:
            constraints["ge"] = 0
        elif self.check is Check.PROBABILITY:
            constraints["gt"] = 0
            constraints["le"] = 1
        validators: list[Any] = []
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
            fields[col.name] = (col.python_annotation(), default)
        model = create_model(
            "".join(part.title() for part in contract.name.split("_")) + "Record",
            __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
            __doc__=contract.description,
            **fields,
        )
        _MODELS[contract.name] = model
    return model
