"""Bring your own declarations: a documented YAML mapping from an administration's
own export (CSV or Parquet, its own column names) onto Caravan's contracts.

A mapping says, for each contract column it can fill, where the value comes from:

    shipments:
      key: DECL_ID                   # one shipment per distinct value (line-level files)
      columns:
        shipment_id: DECL_ID         # shorthand for {column: DECL_ID}
        declared_at: {column: DECL_DATE, date_format: "%d.%m.%Y %H:%M", timezone: Asia/Tashkent}
        mode: {column: TRANSPORT, values: {"30": road, "20": rail, "40": air}}
        office_code: {column: POST, prefix: "UZ-"}
        invoice_currency: {value: UZS}              # a constant
        item_id: {template: "{DECL_ID}-{LINE_NO}"}   # built from several columns
        transit_countries: {column: TRANSIT, split: "|"}
        gross_mass_kg: {column: GROSS_G, scale: 0.001}
    items: {columns: {...}}
    outcomes:
      columns: {...}
      finding: {column: RESULT, positive: [SEIZURE, VIOLATION], negative: [CLEAR]}
      inspected_only_when: RESULT     # rows with an empty RESULT were not inspected
      selection: census               # every declaration in the file was inspected
    extras:                           # unmapped columns kept as model features
      numeric: [DUTY_PAID]
      categorical: [REGIME]

Contract columns the mapping does not fill are declared absent: they stay empty,
their rules are not checked, and the features that need them are left out
rather than computed from made-up values. Parties known only by an id are
tracked by that id (map it to both `*_id` and `*_name`). A mapping must fill
`shipments.columns.shipment_id` and `declared_at` (every point-in-time feature and
the time split hang on it), `items.columns.item_id` and `shipment_id`, and
`outcomes.columns.outcome_id`, `shipment_id` and `inspected_at`.

The label: `finding.positive` values are a finding, `finding.negative` values are
none, matched ignoring case and surrounding spaces; with `negative` given any other
value rejects the row (`type:finding`, naming the value). Without it (older
mappings) every other value is read as none, and `caravan import` lists those
values. A category given where nothing was found is kept, so that validation
rejects the contradiction (`finding_category:finding_category`).

Times: a `date_format` (at the top, or on a column) that reads no offset (`%z`)
needs `timezone` (an IANA name, at the top or on the column): the export's times
are wall-clock times of that zone, stored as UTC. Without `date_format`, a
date-time is ISO 8601 with its offset (or, with `timezone`, without one: in that
zone) and a date is `YYYY-MM-DD`, as `caravan validate` reads text. `encoding`
is the file's (any codec Python knows: cp1251, cp866, koi8-r, ...).

Nothing is silently emptied: a value that cannot be read as its column's type
(a date not in `date_format`, a number that is not one) is written empty with the
problem in `_import_errors` (see `data_contracts.readers.IMPORT_ERRORS`); validation
rejects the row with a message naming the field, the value and the reason, and its
quarantine record holds the value as the export gave it.
"""

from __future__ import annotations

import codecs
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from data_contracts.fields import Column, Kind
from data_contracts.readers import (
    EXPORT_ROW,
    IMPORT_ERRORS,
    NAIVE_DATETIME,
    iso_datetime,
    text_date,
)
from data_contracts.schemas import CONTRACTS

IMPORTED_TABLES = ("shipments", "items", "outcomes")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


# Contract columns an import cannot declare absent: without them no shipment can
# be placed in time (every point-in-time feature and the time split hang on
# declared_at) or tied to its goods lines and inspection results.
_NEEDED: dict[str, dict[str, str]] = {
    "shipments": {"shipment_id": "is required", "declared_at": "is required"},
    "items": {"item_id": "is required", "shipment_id": "is required"},
}


class MappingError(Exception):
    """The mapping or the file does not fit; `path` points at the faulty part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _zone(name: str | None) -> str | None:
    """An IANA time zone name, checked."""
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: give an IANA name such as Asia/Bishkek, "
            "Asia/Almaty, Asia/Tashkent, Asia/Dushanbe or Asia/Ashgabat"
        ) from None
    return name


# An IANA time zone name, checked when the mapping is read.
Zone = Annotated[str | None, AfterValidator(_zone)]


def has_offset(date_format: str) -> bool:
    """Whether a strftime format reads the offset from UTC (%z, %:z, %#z)."""
    return re.search(r"%[:#]?z", date_format) is not None


class ColumnSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    value: str | int | float | bool | None = None
    template: str | None = None
    values: dict[str, str] | None = None
    date_format: str | None = None
    timezone: Zone = None
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
    """Which column is the label. Values are matched ignoring case and surrounding
    spaces. With `negative` given, a value that is in neither list is rejected
    (naming the value) instead of being read as "nothing found"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    positive: list[str] = Field(min_length=1)
    negative: list[str] | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> FindingMapping:
        both = set(_norm(self.positive)) & set(_norm(self.negative or []))
        if both:
            raise ValueError(f"value(s) both positive and negative: {', '.join(sorted(both))}")
        return self


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
    encoding: str = "utf-8"
    date_format: str | None = None
    timezone: Zone = None
    shipments: TableMapping
    items: TableMapping | None = None
    outcomes: OutcomeMapping | None = None
    extras: Extras = Field(default_factory=Extras)

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        if value == "utf8-lossy":
            return value
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown encoding {value!r}: give the file's encoding as Python names it "
                "(utf-8, cp1251, cp866, koi8-r, ...); utf8-lossy reads UTF-8 and marks bytes "
                "it cannot decode, which validation then refuses"
            ) from None
        return value

    @property
    def csv_encoding(self) -> str:
        """The encoding as Polars takes it: its own UTF-8 reader for UTF-8 (names it
        does not know are decoded in Python first)."""
        if self.encoding == "utf8-lossy":
            return self.encoding
        return "utf8" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding

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
                fmt = src.date_format or self.date_format
                naive = fmt is not None and not has_offset(fmt) and src.value is None
                kind = contract.column(name).kind
                if kind is Kind.DATETIME and naive and not (src.timezone or self.timezone):
                    raise MappingError(
                        where,
                        f"date_format {fmt!r} reads no offset from UTC (%z): give timezone: "
                        "(the IANA zone the export's times are in, e.g. Asia/Bishkek), at the "
                        "top of the mapping or on the column; times without a zone are "
                        "ambiguous (read as UTC, a time in UTC+6 would be six hours off)",
                    )
                for col in src.source_columns():
                    if col not in have:
                        raise MappingError(where, f"column {col!r} is not in {source}")
            if tmap.key is not None and tmap.key not in have:
                raise MappingError(f"{table}.key", f"column {tmap.key!r} is not in {source}")
            for needed, why in _NEEDED.get(table, {}).items():
                if needed not in tmap.columns:
                    raise MappingError(f"{table}.columns.{needed}", why)
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
            self._check_selection(self.outcomes)
        for col in self.extras.numeric + self.extras.categorical:
            if col not in have:
                raise MappingError("extras", f"column {col!r} is not in {source}")

    @staticmethod
    def _check_selection(outcomes: OutcomeMapping) -> None:
        """How the inspections were chosen decides the training weights (1/p) and
        which outcomes evaluation treats as the unbiased random share, so it cannot
        be half right: `selection: columns` needs both selection columns mapped;
        `selection: census` (every declaration inspected, recorded as drawn with
        probability 1) cannot go with `inspected_only_when`, which says some were not."""
        if outcomes.selection == "columns":
            for needed, why in (
                ("selection_method", "how each inspection was chosen: random, rule, model"),
                ("selection_probability", "the inverse-propensity weights come from it"),
            ):
                if needed not in outcomes.columns:
                    raise MappingError(
                        f"outcomes.columns.{needed}",
                        f"is required with selection: columns ({why})",
                    )
        else:
            if outcomes.inspected_only_when is not None:
                raise MappingError(
                    "outcomes.inspected_only_when",
                    "cannot go with selection: census: census says every declaration "
                    "was inspected and records each inspection as drawn at random with "
                    f"probability 1, while inspected_only_when: "
                    f"{outcomes.inspected_only_when} says some were not (those inspected "
                    "were chosen); use selection: columns and map "
                    "outcomes.columns.selection_method and selection_probability "
                    "(e.g. {value: rule} and {value: 1.0} for targeted inspections)",
                )
            for given in ("selection_method", "selection_probability"):
                if given in outcomes.columns:
                    raise MappingError(
                        f"outcomes.columns.{given}",
                        "is set by selection: census (random, probability 1); to map it "
                        "from the export, use selection: columns",
                    )


_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
_ROW = "__caravan_export_row"


def _source(src: ColumnSource) -> pl.Expr:
    """The value as the export gives it, before it is read as its contract type."""
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
    return expr


def _error(rule: str, column: str, value: pl.Expr | None, message: pl.Expr) -> pl.Expr:
    """One problem found while mapping a row (see `data_contracts.readers.IMPORT_ERRORS`)."""
    return pl.struct(
        pl.lit(rule).alias("rule"),
        pl.lit(column).alias("column"),
        (value if value is not None else pl.lit(None, pl.String)).cast(pl.String).alias("value"),
        message.alias("message"),
    )


def _column(
    col: Column, src: ColumnSource, default_date: str | None, default_zone: str | None = None
) -> tuple[pl.Expr, pl.Expr | None]:
    """The contract value of one column and, where the export's value cannot be read
    as the column's type, the problem (null otherwise). The value is never silently
    emptied: the row is rejected with the value as the export held it."""
    name, kind = col.name, col.kind
    expr = _source(src)
    text = expr.cast(pl.String).str.strip_chars()
    present = text.is_not_null() & (text != "")
    reason: str | pl.Expr = f"could not be read as a {kind.value}"
    fmt = src.date_format or default_date
    zone = src.timezone or default_zone
    if kind is Kind.STRING_LIST:
        value = (
            expr.cast(pl.String)
            .str.split(src.split or ";")
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter(pl.element() != ""))
        )
        return value.alias(name), None
    if kind is Kind.DATETIME and fmt and has_offset(fmt):
        value = text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
        reason = f"does not match the date format {fmt}"
    elif kind is Kind.DATETIME and fmt:  # (a zone: `DeclarationMapping.check`)
        local = text.str.to_datetime(fmt, strict=False, time_unit="us")
        value = _in_zone(local, zone)
        reason = (
            pl.when(local.is_null())
            .then(pl.lit(f"does not match the date format {fmt}"))
            .otherwise(pl.lit(f"is not a time in {zone} (a clock change skips or repeats it)"))
        )
    elif kind is Kind.DATETIME:  # ISO 8601, as `caravan validate` reads text
        instant, zoned = iso_datetime(text)
        value = pl.when(zoned).then(instant)
        if zone is not None:  # (a time without an offset is in the mapping's zone)
            value = value.otherwise(_in_zone(instant.dt.replace_time_zone(None), zone))
            reason = f"is not an ISO 8601 date-time (YYYY-MM-DD HH:MM, in {zone} or with offset)"
        else:
            reason = (
                pl.when(instant.is_not_null())
                .then(pl.lit(NAIVE_DATETIME))
                .otherwise(
                    pl.lit(
                        "is not an ISO 8601 date-time with its offset (YYYY-MM-DDTHH:MM+05:00); "
                        "give date_format for another form"
                    )
                )
            )
    elif kind is Kind.DATE and fmt:
        value = text.str.to_date(fmt, strict=False)
        reason = f"does not match the date format {fmt}"
    elif kind is Kind.DATE:
        value = text_date(text)
        reason = "is not a date in the form YYYY-MM-DD (give date_format for another form)"
    elif kind in (Kind.INT, Kind.FLOAT):
        number = text.cast(pl.Float64, strict=False)
        if src.scale is not None:
            number = number * src.scale
        if kind is Kind.INT:
            whole = number.is_finite() & (number.floor() == number)
            value = pl.coalesce(
                text.cast(pl.Int64, strict=False) if src.scale is None else pl.lit(None, pl.Int64),
                pl.when(whole).then(number),
            ).cast(col.raw_dtype, strict=False)
            reason = "is not a whole number"
        else:
            value = number.cast(col.raw_dtype, strict=False)
            reason = "is not a number"
    elif kind is Kind.BOOL:
        low = text.str.to_lowercase()
        value = pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False)
        reason = f"is not one of {', '.join(_TRUE + _FALSE)}"
    elif kind in (Kind.STRING, Kind.ENUM):
        return expr.cast(pl.String).alias(name), None
    else:
        value = expr.cast(col.raw_dtype, strict=False)
    why = pl.lit(reason) if isinstance(reason, str) else reason
    message = pl.concat_str(pl.lit(f"{name} '"), text, pl.lit("' "), why)
    failed = present & value.is_null()
    return value.alias(name), pl.when(failed).then(_error(f"type:{name}", name, text, message))


def _in_zone(local: pl.Expr, zone: str | None) -> pl.Expr:
    """Wall-clock times of `zone` as UTC instants (a time a clock change skips or
    repeats: null, rejected)."""
    return (
        local.dt.replace_time_zone(zone, ambiguous="null", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.cast_time_unit("us")
    )


def _norm(values: list[str]) -> list[str]:
    return [v.strip().lower() for v in values]


def _finding(fmap: FindingMapping) -> tuple[pl.Expr, pl.Expr | None]:
    """finding from the label column: a declared positive value is a finding; with
    `negative` declared, a declared negative is none and anything else is rejected;
    without it (older mappings) any other value is none. Case and surrounding
    spaces do not matter."""
    text = pl.col(fmap.column).cast(pl.String).str.strip_chars()
    low = text.str.to_lowercase()
    positive = _norm(fmap.positive)
    if fmap.negative is None:
        return low.is_in(positive).alias("finding"), None
    negative = _norm(fmap.negative)
    value = pl.when(low.is_in(positive)).then(True).when(low.is_in(negative)).then(False)
    message = pl.concat_str(
        pl.lit("finding: "),
        pl.lit(f"{fmap.column} '"),
        text,
        pl.lit(
            f"' is neither a finding ({', '.join(fmap.positive)}) "
            f"nor a no-finding value ({', '.join(fmap.negative)})"
        ),
    )
    failed = text.is_not_null() & (text != "") & value.is_null()
    return value.alias("finding"), pl.when(failed).then(
        _error("type:finding", "finding", text, message)
    )


def _encode(errors: list[pl.Expr]) -> pl.Expr:
    """The row's problems as a JSON list (null when there is none)."""
    if not errors:
        return pl.lit(None, pl.String).alias(IMPORT_ERRORS)
    found = pl.concat_list(errors).list.drop_nulls()
    text = pl.concat_str(
        pl.lit("["),
        found.list.eval(pl.element().struct.json_encode()).list.join(","),
        pl.lit("]"),
    )
    return pl.when(found.list.len() > 0).then(text).alias(IMPORT_ERRORS)


def _add_error(out: pl.DataFrame, where: pl.Expr, error: pl.Expr) -> pl.DataFrame:
    """Prepend one problem to the rows where `where` holds."""
    new = pl.concat_str(pl.lit("["), error.struct.json_encode(), pl.lit("]"))
    old = pl.col(IMPORT_ERRORS)
    merged = (
        pl.when(old.is_null())
        .then(new)
        .otherwise(pl.concat_str(new.str.strip_suffix("]"), pl.lit(","), old.str.strip_prefix("[")))
    )
    return out.with_columns(pl.when(where).then(merged).otherwise(old).alias(IMPORT_ERRORS))


_FIRST = "__first_"


def _differing(columns: list[str]) -> pl.Expr:
    """Names of the columns whose value contradicts the first row of the key (in
    `__first_<column>`): both are given and differ (a line that leaves a header
    column empty does not contradict it); and "unreadable values" when the row's
    problems differ from the first row's."""
    names = []
    for c in columns:
        first = pl.col(_FIRST + c)
        differs = pl.col(c).is_not_null() & first.is_not_null() & pl.col(c).ne_missing(first)
        names.append(pl.when(differs).then(pl.lit(c)))
    errors = pl.col(IMPORT_ERRORS)
    unreadable = errors.is_not_null() & errors.ne_missing(pl.col(_FIRST + IMPORT_ERRORS))
    names.append(pl.when(unreadable).then(pl.lit("unreadable values")))
    return pl.concat_list(names).list.drop_nulls().list.join(", ")


def _map_table(
    mapping: DeclarationMapping, table: str, tmap: TableMapping, rows: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]]:
    contract = CONTRACTS[table]
    exprs: list[pl.Expr] = []
    errors: list[pl.Expr] = []
    missing: list[str] = []
    for col in contract.columns:
        src = tmap.columns.get(col.name)
        if src is not None:
            value, error = _column(col, src, mapping.date_format, mapping.timezone)
            exprs.append(value)
            if error is not None:
                errors.append(error)
        elif table == "outcomes" and col.name in (
            "finding",
            "selection_method",
            "selection_probability",
        ):
            continue
        else:
            exprs.append(pl.lit(None, dtype=col.raw_dtype).alias(col.name))
            missing.append(col.name)
    outcomes = mapping.outcomes if table == "outcomes" else None
    if outcomes is not None:
        finding, error = _finding(outcomes.finding)
        exprs.append(finding)
        if error is not None:
            errors.append(error)
    exported = [EXPORT_ROW] if EXPORT_ROW in rows.columns else []
    out = rows.select(*exprs, _encode(errors), _ROW, *exported)
    if outcomes is not None:
        if outcomes.selection == "census":
            out = out.with_columns(
                pl.lit("random").alias("selection_method"),
                pl.lit(1.0).alias("selection_probability"),
            )
        if "finding_category" in missing:
            missing.remove("finding_category")
        # A finding without a category in the export is recorded as other
        # contraband. A category given with no finding is kept: the contract's
        # rule (a category exactly when something was found) rejects the row.
        category = pl.col("finding_category").cast(pl.String)
        given = pl.when(category.str.strip_chars() != "").then(category)
        out = out.with_columns(
            pl.when(pl.col("finding"))
            .then(pl.coalesce(given, pl.lit("other_contraband")))
            .otherwise(given)
            .alias("finding_category")
        )
    out = out.with_columns(
        pl.col(c.name).cast(c.raw_dtype, strict=False)
        for c in contract.columns
        if c.name in out.columns and c.kind is not Kind.STRING_LIST
    ).select(*contract.column_names, IMPORT_ERRORS, _ROW, *exported)
    out = out.with_columns(
        pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c)).alias(c)
        for c in contract.column_names
        if out.schema[c] == pl.String
    )
    return out, [m for m in missing if m in contract.column_names]


def _keyed(
    out: pl.DataFrame, keys: pl.Series, columns: list[str], conflict: pl.Expr
) -> tuple[pl.DataFrame, pl.Series]:
    """One row per key where the rows of a key agree; a later row that contradicts
    the first is kept too (once per distinct content), with `conflict` (a problem
    built from the key and the contradicting columns in `__differs`). Returns the
    rows and, per input row, whether it contradicts the first row of its key."""
    key, content = "__key", [*columns, IMPORT_ERRORS]
    framed = out.with_columns(
        keys.alias(key), pl.struct(content).hash().alias("__content")
    ).with_row_index("__i")
    # Only rows whose content is not the first row's can contradict it.
    candidates = framed.filter(pl.col("__content") != pl.col("__content").first().over(key))
    firsts = framed.filter(pl.col(key).is_first_distinct()).select(
        key, *[pl.col(c).alias(_FIRST + c) for c in content]
    )
    differing = candidates.join(firsts, on=key, how="left").select(
        "__i", _differing(columns).alias("__differs")
    )
    framed = framed.join(differing, on="__i", how="left", maintain_order="left").with_columns(
        pl.col("__differs").fill_null("")
    )
    framed = framed.with_columns((pl.col("__differs") != "").alias("__conflict"))
    differs = framed.get_column("__conflict")
    kept = framed.filter(
        pl.col(key).is_first_distinct()
        | pl.col(key).is_null()  # no id: each row is rejected on its own
        | (pl.col("__conflict") & pl.struct(key, "__content").is_first_distinct())
    )
    kept = _add_error(kept, pl.col("__conflict"), conflict)
    return kept.drop(key, "__i", "__content", "__conflict", "__differs"), differs


def _check_census(
    mapping: DeclarationMapping, frame: pl.DataFrame, inspected: pl.DataFrame, gate: str
) -> None:
    """`selection: census` records every inspection as drawn at random with
    probability 1, which is true only when every declaration of the file has an
    inspection result; refuse the file when some have none."""
    id_src = mapping.shipments.columns.get("shipment_id")
    if id_src is None:
        return
    ids = _source(id_src).cast(pl.String).alias("shipment_id")
    without = (
        frame.select(ids)
        .unique(maintain_order=True)
        .join(inspected.select(ids).unique(), on="shipment_id", how="anti")
    )
    if without.height:
        examples = ", ".join(str(v) for v in without["shipment_id"].head(3).to_list())
        raise MappingError(
            "outcomes.selection",
            f"census says every declaration in the file was inspected, but "
            f"{without.height:,} declaration(s) have no value in {gate} (e.g. {examples}): "
            f"use selection: columns with inspected_only_when: {gate} and map "
            "outcomes.columns.selection_method and selection_probability",
        )


def apply_mapping(
    mapping: DeclarationMapping, frame: pl.DataFrame
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, list[str]]]:
    """Map an export onto the contracts.

    Returns the contract tables (raw form: strings where the contract is an enum,
    plus `_import_errors`, the problems found in each row), the extra features
    (shipment_id + the extra columns) and, per table, the contract columns the
    export does not have.

    With a `key` (one row per goods line), the rows of one key make one shipment
    and one outcome. A later row of a key whose shipment (or outcome) columns differ
    from the first is not merged into it: it is kept and rejected by validation
    (`unique:shipment_id`), and the goods lines and inspection results of a
    differing declaration are rejected with it (`conflict:shipment_id`).
    """
    tables: dict[str, pl.DataFrame] = {}
    absent: dict[str, list[str]] = {}
    frame = frame.with_row_index(_ROW)
    conflicting: pl.Series | None = None  # export rows whose declaration header differs
    for table in IMPORTED_TABLES:
        tmap = getattr(mapping, table)
        if tmap is None:
            continue
        rows = frame
        if table == "outcomes" and mapping.outcomes is not None:
            gate = mapping.outcomes.inspected_only_when or mapping.outcomes.finding.column
            rows = rows.filter(
                pl.col(gate).is_not_null() & (pl.col(gate).cast(pl.String).str.strip_chars() != "")
            )
            if mapping.outcomes.selection == "census":
                _check_census(mapping, frame, rows, gate)
        out, missing = _map_table(mapping, table, tmap, rows)
        columns = CONTRACTS[table].column_names
        if tmap.key is not None:
            keys = rows.get_column(tmap.key).cast(pl.String)
            if table == "shipments":
                conflict = _error(
                    "unique:shipment_id",
                    "shipment_id",
                    None,
                    pl.concat_str(
                        pl.lit("shipment_id '"),
                        pl.col("shipment_id").fill_null(""),
                        pl.lit("' was already used by an earlier row with different "),
                        pl.col("__differs"),
                    ),
                )
            else:
                conflict = _error(
                    "conflict:shipment_id",
                    "shipment_id",
                    None,
                    pl.concat_str(
                        pl.lit(f"a second, different {table[:-1]} for shipment_id '"),
                        pl.col("shipment_id").fill_null(""),
                        pl.lit("' (differs in "),
                        pl.col("__differs"),
                        pl.lit("); the first one is kept"),
                    ),
                )
            out, differs = _keyed(out, keys, columns, conflict)
            if table == "shipments":
                conflicting = rows.get_column(_ROW).filter(differs)
        if table != "shipments" and conflicting is not None and conflicting.len():
            out = _add_error(
                out,
                pl.col(_ROW).is_in(conflicting.implode()),
                _error(
                    "conflict:shipment_id",
                    "shipment_id",
                    None,
                    pl.concat_str(
                        pl.lit("belongs to a second declaration with shipment_id '"),
                        pl.col("shipment_id").fill_null(""),
                        pl.lit("' whose declaration differs from the first one (kept)"),
                    ),
                ),
            )
        tables[table] = out.drop(_ROW)
        if missing:
            absent[table] = missing
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
        _source(id_src).cast(pl.String).alias("shipment_id"),
        *[pl.col(c).cast(pl.Float64, strict=False) for c in mapping.extras.numeric],
        *[pl.col(c).cast(pl.String) for c in mapping.extras.categorical],
    )
    if not extra_cols:
        extras = extras.select("shipment_id")
    return tables, extras, absent


def undeclared_negatives(mapping: DeclarationMapping, frame: pl.DataFrame) -> dict[str, int]:
    """Without `finding.negative`, the label values read as "nothing found" because
    they are not positive, with their counts (for the import to show)."""
    if mapping.outcomes is None or mapping.outcomes.finding.negative is not None:
        return {}
    fmap = mapping.outcomes.finding
    text = pl.col(fmap.column).cast(pl.String).str.strip_chars()
    counts = (
        frame.select(text.alias("v"))
        .filter(pl.col("v").is_not_null() & (pl.col("v") != ""))
        .filter(~pl.col("v").str.to_lowercase().is_in(_norm(fmap.positive)))
        .group_by("v")
        .len()
        .sort(["len", "v"], descending=[True, False])
    )
    return {str(v): int(n) for v, n in counts.iter_rows()}
