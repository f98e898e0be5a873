"""Bring your own declarations: a documented YAML mapping from an administration's
own export (CSV or Parquet, its own column names) onto Caravan's contracts.

A mapping says, for each contract column it can fill, where the value comes from:

    shipments:
      key: DECL_ID                   # one shipment per distinct value (line-level files)
      columns:
        shipment_id: DECL_ID         # shorthand for {column: DECL_ID}
        declared_at: {column: DECL_DATE, date_format: "%d.%m.%Y %H:%M"}
        mode: {column: TRANSPORT, values: {"30": road, "20": rail, "40": air}}
        office_code: {column: POST, prefix: "UZ-"}
        invoice_currency: {value: UZS}              # a constant
        item_id: {template: "{DECL_ID}-{LINE_NO}"}   # built from several columns
        transit_countries: {column: TRANSIT, split: "|"}
        gross_mass_kg: {column: GROSS_G, scale: 0.001}
    items: {columns: {...}}
    outcomes:
      columns: {...}
      finding: {column: RESULT, positive: [SEIZURE, VIOLATION]}
      inspected_only_when: RESULT     # rows with an empty RESULT were not inspected
      selection: census               # every declaration in the file was inspected
    extras:                           # unmapped columns kept as model features
      numeric: [DUTY_PAID]
      categorical: [REGIME]

Contract columns the mapping does not fill are declared absent: they stay empty,
their rules are not checked, and the features that need them are left out
rather than computed from made-up values. Parties known only by an id are
tracked by that id (map it to both `*_id` and `*_name`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_contracts.fields import Kind
from data_contracts.schemas import CONTRACTS

IMPORTED_TABLES = ("shipments", "items", "outcomes")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class MappingError(Exception):
    """The mapping or the file does not fit; `path` points at the faulty part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class ColumnSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    value: str | int | float | bool | None = None
    template: str | None = None
    values: dict[str, str] | None = None
    date_format: str | None = None
    prefix: str = ""
    split: str | None = None
    scale: float | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ColumnSource:
        given = [x for x in (self.column, self.template) if x is not None]
        if len(given) + (self.value is not None) != 1:
            raise ValueError("give exactly one of column, value, template")
        return self

    def source_columns(self) -> list[str]:
        if self.column is not None:
            return [self.column]
        if self.template is not None:
            return _PLACEHOLDER.findall(self.template)
        return []


def _sources(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: ({"column": v} if isinstance(v, str) else v) for k, v in raw.items()}


class TableMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    columns: dict[str, ColumnSource]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("columns"), dict):
            return {**data, "columns": _sources(data["columns"])}
        return data


class FindingMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    positive: list[str]


class OutcomeMapping(TableMapping):
    finding: FindingMapping
    inspected_only_when: str | None = None
    selection: Literal["census", "columns"] = "census"


class Extras(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)


class DeclarationMapping(BaseModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    delimiter: str = ","
    encoding: Literal["utf-8", "utf8", "utf8-lossy"] = "utf-8"
    date_format: str | None = None
    shipments: TableMapping
    items: TableMapping | None = None
    outcomes: OutcomeMapping | None = None
    extras: Extras = Field(default_factory=Extras)

    def check(self, file_columns: list[str], source: str) -> None:
        """Every contract column named exists and every source column is in the file."""
        have = set(file_columns)
        for table in IMPORTED_TABLES:
            tmap = getattr(self, table)
            if tmap is None:
                continue
            contract = CONTRACTS[table]
            for name, src in tmap.columns.items():
                where = f"{table}.columns.{name}"
                if name not in contract.column_names:
                    raise MappingError(where, f"the {table} contract has no column {name!r}")
                for col in src.source_columns():
                    if col not in have:
                        raise MappingError(where, f"column {col!r} is not in {source}")
            if tmap.key is not None and tmap.key not in have:
                raise MappingError(f"{table}.key", f"column {tmap.key!r} is not in {source}")
        if self.outcomes is not None:
            if self.outcomes.finding.column not in have:
                raise MappingError(
                    "outcomes.finding.column",
                    f"column {self.outcomes.finding.column!r} is not in {source}",
                )
            for needed in ("inspected_at", "shipment_id", "outcome_id"):
                if needed not in self.outcomes.columns:
                    raise MappingError(
                        f"outcomes.columns.{needed}",
                        "is required: a finding may only count from when it was recorded"
                        if needed == "inspected_at"
                        else "is required",
                    )
        for col in self.extras.numeric + self.extras.categorical:
            if col not in have:
                raise MappingError("extras", f"column {col!r} is not in {source}")


def _expr(name: str, src: ColumnSource, kind: Kind, default_date: str | None) -> pl.Expr:
    if src.value is not None:
        expr = pl.lit(src.value)
    elif src.template is not None:
        parts: list[pl.Expr] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(src.template):
            parts.append(pl.lit(src.template[pos : m.start()]))
            parts.append(pl.col(m.group(1)).cast(pl.String))
            pos = m.end()
        parts.append(pl.lit(src.template[pos:]))
        expr = pl.concat_str(parts)
    else:
        expr = pl.col(str(src.column))
    if src.values:
        expr = expr.cast(pl.String).replace(src.values)
    if src.prefix:
        expr = pl.lit(src.prefix) + expr.cast(pl.String)
    if src.scale is not None:
        expr = expr.cast(pl.Float64) * src.scale
    fmt = src.date_format or default_date
    if kind in (Kind.DATETIME, Kind.DATE) and fmt:
        text = expr.cast(pl.String).str.strip_chars()
        expr = (
            text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
            if kind is Kind.DATETIME
            else text.str.to_date(fmt, strict=False)
        )
    if kind is Kind.STRING_LIST:
        expr = (
            expr.cast(pl.String)
            .str.split(src.split or ";")
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter(pl.element() != ""))
        )
    return expr.alias(name)


def apply_mapping(
    mapping: DeclarationMapping, frame: pl.DataFrame
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, list[str]]]:
    """Map an export onto the contracts.

    Returns the contract tables (raw form: strings where the contract is an enum),
    the extra features (shipment_id + the extra columns) and, per table, the
    contract columns the export does not have.
    """
    tables: dict[str, pl.DataFrame] = {}
    absent: dict[str, list[str]] = {}
    for table in IMPORTED_TABLES:
        tmap = getattr(mapping, table)
        if tmap is None:
            continue
        contract = CONTRACTS[table]
        rows = frame
        if table == "outcomes" and mapping.outcomes is not None:
            gate = mapping.outcomes.inspected_only_when or mapping.outcomes.finding.column
            rows = rows.filter(
                pl.col(gate).is_not_null() & (pl.col(gate).cast(pl.String).str.strip_chars() != "")
            )
        if tmap.key is not None:
            rows = rows.unique(subset=[tmap.key], keep="first", maintain_order=True)
        exprs = []
        missing = []
        for col in contract.columns:
            src = tmap.columns.get(col.name)
            if src is not None:
                exprs.append(_expr(col.name, src, col.kind, mapping.date_format))
            elif table == "outcomes" and col.name in (
                "finding",
                "selection_method",
                "selection_probability",
            ):
                continue
            else:
                exprs.append(pl.lit(None, dtype=col.raw_dtype).alias(col.name))
                missing.append(col.name)
        out = rows.select(exprs) if exprs else rows.select([])
        if table == "outcomes" and mapping.outcomes is not None:
            positive = [p.strip() for p in mapping.outcomes.finding.positive]
            fcol = mapping.outcomes.finding.column
            finding = rows.select(
                pl.col(fcol).cast(pl.String).str.strip_chars().is_in(positive).alias("finding")
            )
            out = out.with_columns(finding["finding"])
            if mapping.outcomes.selection == "census":
                out = out.with_columns(
                    pl.lit("random").alias("selection_method"),
                    pl.lit(1.0).alias("selection_probability"),
                )
            if "finding_category" in missing:
                missing.remove("finding_category")
            # A category only means something with a finding; a finding without
            # one in the export is recorded as other contraband.
            category = pl.col("finding_category").cast(pl.String)
            out = out.with_columns(
                pl.when(pl.col("finding"))
                .then(
                    pl.coalesce(pl.when(category != "").then(category), pl.lit("other_contraband"))
                )
                .alias("finding_category")
            )
        casts = []
        for c in contract.columns:
            if c.name not in out.columns:
                continue
            src_dtype = out.schema[c.name]
            target = c.raw_dtype
            if src_dtype != target and c.kind not in (Kind.STRING_LIST,):
                casts.append(pl.col(c.name).cast(target, strict=False))
        out = out.with_columns(casts).select(contract.column_names)
        out = out.with_columns(
            pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c)).alias(c)
            for c, t in out.schema.items()
            if t == pl.String
        )
        tables[table] = out
        if missing:
            absent[table] = [m for m in missing if m in contract.column_names]
    ship_map = mapping.shipments
    id_src = ship_map.columns.get("shipment_id")
    extra_cols = mapping.extras.numeric + mapping.extras.categorical
    if id_src is None:
        raise MappingError("shipments.columns.shipment_id", "is required")
    base = (
        frame
        if ship_map.key is None
        else frame.unique(subset=[ship_map.key], keep="first", maintain_order=True)
    )
    extras = base.select(
        _expr("shipment_id", id_src, Kind.STRING, None),
        *[pl.col(c).cast(pl.Float64, strict=False) for c in mapping.extras.numeric],
        *[pl.col(c).cast(pl.String) for c in mapping.extras.categorical],
    )
    if not extra_cols:
        extras = extras.select("shipment_id")
    return tables, extras, absent
