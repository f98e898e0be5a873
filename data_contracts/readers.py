"""Reading input files into frames of a contract's raw schema.

A value that cannot be read as its column's type is kept (the row goes to
quarantine with rule `type:<column>`); a file that cannot be read at all, or
whose columns do not fit the contract, raises `InputFileError` naming the file
and the problem.

Dates and times in text (CSV, NDJSON) are read row by row, whatever the other rows
hold: a date-time is ISO 8601 / RFC 3339 with its offset (`Z`, `+05:00`, `+0500`,
`+05`; `T` or a space between date and time; seconds and their fraction optional),
converted to UTC; one without an offset is rejected as ambiguous (`type:<column>`,
saying that it needs a time zone, as the API does); a date is `YYYY-MM-DD`, and
no other form (01/02/2025) is guessed.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_contracts.fields import Contract, Kind
from data_contracts.rules import RAW_RECORD, TYPE_ERROR_PREFIX

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
# Written by `caravan import`: the row of the administration's export a record came
# from (the first one of a declaration's lines), as a spreadsheet numbers it (the
# header is row 1; a Parquet export's first row is 1): what to report back to the
# system that wrote the export.
EXPORT_ROW = "_export_row"
# Written by `caravan import` (data_contracts.mapping): JSON list of the problems
# found while mapping a row, each {"rule", "column", "value", "message"}. The reader
# adds the date-times without a time zone it finds in text, so that their message
# says so (see `_naive_errors`).
IMPORT_ERRORS = "_import_errors"
SUFFIXES = (".parquet", ".csv", ".ndjson", ".jsonl", ".json")
LIST_SEPARATOR = ";"
_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
# A date-time in text: date, time (hours and minutes, seconds and their fraction
# optional) and the offset from UTC (`Z`, `+05:00`, `+0500`, `+05`), matched on the
# upper-cased text (RFC 3339 allows `t` and `z`). Whether the date and time exist
# is left to `strptime`.
_DATETIME_TEXT = (
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_DATE_TEXT = r"^\d{4}-\d{2}-\d{2}$"
_INSTANT, _ZONED, _NAIVE_PREFIX = "__instant__", "__zoned__", "__naive__"
NAIVE_DATETIME = (
    "needs a time zone (e.g. 'Z' for UTC or '+05:00'); a date-time without one is ambiguous"
)


class InputFileError(Exception):
    """An input file is missing, unreadable, or has columns the contract does not allow."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def _read_any(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".csv":
            return pl.read_csv(path, infer_schema=False, null_values=[""])
        if path.suffix in (".ndjson", ".jsonl"):
            return pl.read_ndjson(path, infer_schema_length=None)
        if path.suffix == ".json":
            return pl.read_json(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot be read: {exc}".splitlines()[0]) from exc
    raise InputFileError(path, f"unknown file type '{path.suffix}' (use one of {SUFFIXES})")


def iso_datetime(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """The UTC instant of each ISO 8601 date-time text, read as UTC when it has no
    offset (null when it is not a date-time), and whether it has an offset. Each row
    is read on its own, whatever the others hold."""
    parts = text.str.to_uppercase().str.extract_groups(_DATETIME_TEXT)
    date, hm, seconds, offset = (parts.struct.field(str(i)) for i in range(1, 5))
    canonical = pl.concat_str(
        date, pl.lit("T"), hm, seconds.fill_null(":00"), offset.fill_null("Z")
    )
    instant = canonical.str.strptime(
        pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%#z", strict=False
    )
    return instant, offset.is_not_null()


def _text_datetime(text: pl.Expr, name: str) -> list[pl.Expr]:
    """`iso_datetime` as `__instant__<name>` and `__zoned__<name>`. (Computed before
    the cast that uses them: within one expression Polars would take the text apart
    once for each.)"""
    instant, zoned = iso_datetime(text)
    return [instant.alias(_INSTANT + name), zoned.alias(_ZONED + name)]


def text_date(text: pl.Expr) -> pl.Expr:
    """The date of each `YYYY-MM-DD` text (null for any other form)."""
    return pl.when(text.str.contains(_DATE_TEXT)).then(
        text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    )


def _typed_cast(src: pl.Expr, dtype: pl.DataType, kind: Kind, target: pl.DataType) -> pl.Expr:
    """A typed value (Parquet, JSON) of another type than its column's, cast only
    where nothing is lost or reinterpreted: integers to decimals and to text,
    decimals with nothing after the point to integers, a naive midnight to a date.
    Any other value is null (its row is rejected as unreadable): a number is not a
    date-time (an epoch of which unit?), a decimal is not cut to an integer, a
    true/false is not a count, a decimal is not an identifier."""
    coded = isinstance(dtype, pl.Enum | pl.Categorical)  # (as Caravan's own files hold enums)
    if dtype == pl.Null:
        return src.cast(target)
    if kind is Kind.INT and dtype.is_integer():
        return src.cast(target, strict=False)  # (out of range: null)
    if kind is Kind.INT and (dtype.is_float() or dtype.is_decimal()):
        number = src.cast(pl.Float64)
        return pl.when(number == number.round(0)).then(number.cast(target, strict=False))
    if kind is Kind.FLOAT and dtype.is_numeric():
        return src.cast(target, strict=False)
    if kind in (Kind.STRING, Kind.ENUM) and (dtype.is_integer() or coded):
        return src.cast(pl.String)
    if kind is Kind.STRING_LIST and isinstance(dtype, pl.List):
        inner = dtype.inner
        if isinstance(inner, pl.Enum | pl.Categorical) or inner == pl.Null:
            return src.cast(target)
    if kind is Kind.DATE and isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.when(src.dt.time() == pl.time(0)).then(src.dt.date())
    return pl.lit(None, dtype=target)


def _cast(frame: pl.DataFrame, contract: Contract, path: Path) -> pl.DataFrame:
    """Cast every column to the raw schema, flagging values that could not be read
    (and keeping, in `__naive__<column>`, the date-times in text without a time zone)."""
    parsed: list[pl.Expr] = []
    exprs: list[pl.Expr] = []
    flags: list[pl.Expr] = []
    for col in contract.columns:
        target = col.raw_dtype
        if col.name not in frame.columns:
            exprs.append(pl.lit(None, dtype=target).alias(col.name))
            flags.append(pl.lit(False).alias(TYPE_ERROR_PREFIX + col.name))
            continue
        src = pl.col(col.name)
        dtype = frame.schema[col.name]
        if dtype == target:
            cast = src
        elif dtype == pl.String:
            text = src.str.strip_chars()
            text = pl.when(text == "").then(None).otherwise(text)
            if col.kind is Kind.BOOL:
                low = text.str.to_lowercase()
                cast = (
                    pl.when(low.is_in(_TRUE))
                    .then(True)
                    .when(low.is_in(_FALSE))
                    .then(False)
                    .otherwise(None)
                )
            elif col.kind is Kind.DATETIME:
                parsed += _text_datetime(text, col.name)
                instant, zoned = pl.col(_INSTANT + col.name), pl.col(_ZONED + col.name)
                cast = pl.when(zoned).then(instant)
                naive = ~zoned & instant.is_not_null()
                flags.append(pl.when(naive).then(src).alias(_NAIVE_PREFIX + col.name))
            elif col.kind is Kind.DATE:
                cast = text_date(text)
            elif col.kind is Kind.STRING_LIST:
                cast = (
                    text.str.split(LIST_SEPARATOR)
                    .list.eval(pl.element().str.strip_chars())
                    .list.eval(pl.element().filter(pl.element() != ""))
                )
            else:
                cast = text.cast(target, strict=False)
        elif isinstance(dtype, pl.Datetime) and col.kind is Kind.DATETIME:
            if dtype.time_zone is None:  # (ambiguous, as in text: refused, saying why)
                cast = pl.lit(None, dtype=target)
                flags.append(
                    src.dt.to_string("%Y-%m-%dT%H:%M:%S%.f").alias(_NAIVE_PREFIX + col.name)
                )
            else:
                cast = src.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        else:
            cast = _typed_cast(src, dtype, col.kind, target)
        exprs.append(cast.alias(col.name))
        flags.append((src.is_not_null() & cast.is_null()).alias(TYPE_ERROR_PREFIX + col.name))
    try:
        return frame.with_columns(*parsed).with_columns(*exprs, *flags)
    except pl.exceptions.PolarsError as exc:
        raise InputFileError(path, f"columns cannot be read: {exc}".splitlines()[0]) from exc


def _naive_errors(frame: pl.DataFrame) -> pl.Expr:
    """`_import_errors` with a `type:<column>` problem added for each date-time in
    text without a time zone, so that its row's message says why it was not read."""
    errors = pl.col(IMPORT_ERRORS) if IMPORT_ERRORS in frame.columns else pl.lit(None)
    errors = errors.cast(pl.String)
    naive = [c for c in frame.columns if c.startswith(_NAIVE_PREFIX)]
    if not naive or not frame.select(pl.any_horizontal(pl.col(naive).is_not_null()).any()).item():
        return errors
    found = []
    for column in naive:
        name, value = column.removeprefix(_NAIVE_PREFIX), pl.col(column)
        message = pl.concat_str(
            pl.lit(f"{name} '"), value.str.strip_chars(), pl.lit(f"' {NAIVE_DATETIME}")
        )
        problem = pl.struct(
            pl.lit(f"type:{name}").alias("rule"),
            pl.lit(name).alias("column"),
            value.alias("value"),
            message.alias("message"),
        )
        found.append(pl.when(value.is_not_null()).then(problem.struct.json_encode()))
    new = pl.concat_str(
        pl.lit("["), pl.concat_str(found, separator=",", ignore_nulls=True), pl.lit("]")
    )
    new = pl.when(pl.any_horizontal(pl.col(naive).is_not_null())).then(new)
    old = errors.str.strip_chars()
    return (
        pl.when(new.is_null())
        .then(errors)
        .when(old.is_null() | (old == "[]"))
        .then(new)
        .otherwise(pl.concat_str(old.str.strip_suffix("]"), pl.lit(","), new.str.strip_prefix("[")))
    )


def _check_columns(frame: pl.DataFrame, contract: Contract, path: Path | str) -> None:
    allowed = set(contract.column_names) | {IMPORT_ERRORS, EXPORT_ROW}
    unexpected = [c for c in frame.columns if c not in allowed]
    if unexpected:
        raise InputFileError(
            path,
            f"unexpected column(s) {', '.join(map(repr, unexpected))}; "
            f"the {contract.name} contract has: {', '.join(contract.column_names)}",
        )
    missing = [c for c in contract.required_columns if c not in frame.columns]
    if missing:
        raise InputFileError(
            path,
            f"missing required column(s) {', '.join(map(repr, missing))} "
            f"of the {contract.name} contract",
        )


def _prepare(frame: pl.DataFrame, contract: Contract, source: Path) -> pl.DataFrame:
    _check_columns(frame, contract, source)
    record = [c for c in frame.columns if c not in (IMPORT_ERRORS, EXPORT_ROW)]
    raw_record = pl.struct(record).struct.json_encode().alias(RAW_RECORD)
    prepared = _cast(frame.with_columns(raw_record), contract, source)
    exported = pl.col(EXPORT_ROW) if EXPORT_ROW in frame.columns else pl.lit(None)
    return prepared.select(
        *contract.column_names,
        pl.lit(str(source)).alias(SOURCE_FILE),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(SOURCE_ROW),
        exported.cast(pl.Int64).alias(EXPORT_ROW),
        RAW_RECORD,
        _naive_errors(prepared).alias(IMPORT_ERRORS),
        *[TYPE_ERROR_PREFIX + c for c in contract.column_names],
    )


def read_input(paths: list[Path], contract: Contract) -> pl.DataFrame:
    """Read and concatenate the files of one input, in the given order.

    Adds `_source_file`, `_source_row` (0-based position in its file),
    `_raw_record` (the row as read, JSON) and one `__type_error__<col>` flag per column.
    """
    frames = [_prepare(_read_any(path), contract, path) for path in paths]
    if not frames:
        return empty_input(contract)
    return pl.concat(frames, how="vertical")


def empty_input(contract: Contract) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = dict(contract.raw_schema)
    schema |= {SOURCE_FILE: pl.String(), SOURCE_ROW: pl.Int64(), EXPORT_ROW: pl.Int64()}
    schema |= {RAW_RECORD: pl.String()}
    schema |= {IMPORT_ERRORS: pl.String()}
    schema |= {TYPE_ERROR_PREFIX + c: pl.Boolean() for c in contract.column_names}
    return pl.DataFrame(schema=schema)


def from_frame(frame: pl.DataFrame, contract: Contract, source: str = "<memory>") -> pl.DataFrame:
    """Prepare an in-memory frame (e.g. generated) as if read from a file."""
    return _prepare(frame, contract, Path(source))
