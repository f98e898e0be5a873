"""Reading input files into frames of a contract's raw schema.

A value that cannot be read as its column's type is kept (the row goes to
quarantine with rule `type:<column>`); a file that cannot be read at all, or
whose columns do not fit the contract, raises `InputFileError` naming the file
and the problem.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_contracts.fields import Contract, Kind
from data_contracts.rules import TYPE_ERROR_PREFIX

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
RAW_RECORD = "_raw_record"
# Written by `caravan import` (data_contracts.mapping): JSON list of the problems
# found while mapping a row, each {"rule", "column", "value", "message"}.
IMPORT_ERRORS = "_import_errors"
SUFFIXES = (".parquet", ".csv", ".ndjson", ".jsonl", ".json")
LIST_SEPARATOR = ";"
_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")


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


def _cast(frame: pl.DataFrame, contract: Contract, path: Path) -> pl.DataFrame:
    """Cast every column to the raw schema, flagging values that could not be read."""
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
                cast = text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
            elif col.kind is Kind.DATE:
                cast = text.str.to_date(strict=False)
            elif col.kind is Kind.STRING_LIST:
                cast = (
                    text.str.split(LIST_SEPARATOR)
                    .list.eval(pl.element().str.strip_chars())
                    .list.eval(pl.element().filter(pl.element() != ""))
                )
            else:
                cast = text.cast(target, strict=False)
        elif isinstance(dtype, pl.Datetime) and col.kind is Kind.DATETIME:
            cast = (
                src.dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else src.dt.convert_time_zone("UTC")
            ).dt.cast_time_unit("us")
        else:
            cast = src.cast(target, strict=False)
        exprs.append(cast.alias(col.name))
        flags.append((src.is_not_null() & cast.is_null()).alias(TYPE_ERROR_PREFIX + col.name))
    try:
        return frame.with_columns(*exprs, *flags)
    except pl.exceptions.PolarsError as exc:
        raise InputFileError(path, f"columns cannot be read: {exc}".splitlines()[0]) from exc


def _check_columns(frame: pl.DataFrame, contract: Contract, path: Path | str) -> None:
    allowed = set(contract.column_names) | {IMPORT_ERRORS}
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
    record = [c for c in frame.columns if c != IMPORT_ERRORS]
    raw_record = pl.struct(record).struct.json_encode().alias(RAW_RECORD)
    prepared = _cast(frame.with_columns(raw_record), contract, source)
    errors = pl.col(IMPORT_ERRORS) if IMPORT_ERRORS in frame.columns else pl.lit(None)
    return prepared.select(
        *contract.column_names,
        pl.lit(str(source)).alias(SOURCE_FILE),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(SOURCE_ROW),
        RAW_RECORD,
        errors.cast(pl.String).alias(IMPORT_ERRORS),
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
    schema |= {SOURCE_FILE: pl.String(), SOURCE_ROW: pl.Int64(), RAW_RECORD: pl.String()}
    schema |= {IMPORT_ERRORS: pl.String()}
    schema |= {TYPE_ERROR_PREFIX + c: pl.Boolean() for c in contract.column_names}
    return pl.DataFrame(schema=schema)


def from_frame(frame: pl.DataFrame, contract: Contract, source: str = "<memory>") -> pl.DataFrame:
    """Prepare an in-memory frame (e.g. generated) as if read from a file."""
    return _prepare(frame, contract, Path(source))
