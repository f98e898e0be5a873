"""Validation: every input row ends up either accepted or quarantined with its reason.

Pure functions over frames (no file I/O): `pipelines.validate` reads and writes.
A declaration is handled as a whole, as customs systems do: when one of its goods
lines is rejected the shipment is rejected too (`child_rejected:items`), and the
lines and inspection results of a rejected shipment follow it
(`parent_rejected:shipment_id`), each with a message naming the cause.

Rows written by `caravan import` carry the problems found while mapping them
(`_import_errors`: a value not readable as its type, a label value that is neither
positive nor negative, a line of a conflicting declaration): they are rejected with
those rules and messages first, and their quarantine record gets the values back
as the export held them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from data_contracts.readers import (
    EXPORT_ROW,
    IMPORT_ERRORS,
    RAW_RECORD,
    SOURCE_FILE,
    SOURCE_ROW,
    empty_input,
)
from data_contracts.rules import PARENT_DECLARED_AT, PARENT_EXISTS, TYPE_ERROR_PREFIX, Rule
from data_contracts.rules import rules_for as _rules_for
from data_contracts.schemas import CONTRACTS, RAW_TABLES

RULE = "_rule"
RULES = "_rules"
MESSAGE = "_message"
QUARANTINE_COLUMNS = (RULE, RULES, MESSAGE, SOURCE_FILE, SOURCE_ROW, EXPORT_ROW, RAW_RECORD)
CONFLICT = "conflict:shipment_id"  # see data_contracts.mapping.apply_mapping
_IMPORT_ERROR = pl.List(
    pl.Struct({"rule": pl.String, "column": pl.String, "value": pl.String, "message": pl.String})
)


@dataclass(frozen=True)
class TableResult:
    name: str
    accepted: pl.DataFrame  # the contract's schema
    quarantine: pl.DataFrame  # the contract's raw columns + _rule, _rules, _message, source
    view: pl.DataFrame  # the rows as checked (raw + parent columns), for the GX report

    @property
    def rows(self) -> int:
        return self.accepted.height + self.quarantine.height

    def rule_counts(self) -> dict[str, int]:
        counts = self.quarantine.group_by(RULE).len().sort(["len", RULE], descending=[True, False])
        return {str(r): int(n) for r, n in counts.iter_rows()}


@dataclass(frozen=True)
class ValidationResult:
    tables: dict[str, TableResult]

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "rows": t.rows,
                "accepted": t.accepted.height,
                "quarantined": t.quarantine.height,
                "rules": t.rule_counts(),
            }
            for name, t in self.tables.items()
        }


def _evaluate(frame: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Add `_rules` (every rule the row breaks, in rule order) and `_message` (why,
    for the first one).

    Rule names and messages are only built for the rows that break something (a
    small share), which keeps validation fast on millions of rows.
    """
    own = [f"__v{i}" for i in range(len(rules))]
    flags = [r.violation.fill_null(False).alias(own[i]) for i, r in enumerate(rules)]
    flagged = frame.with_row_index("__row").with_columns(flags)
    if not rules:
        return flagged.with_columns(
            pl.lit([], dtype=pl.List(pl.String)).alias(RULES),
            pl.lit(None, dtype=pl.String).alias(MESSAGE),
        ).drop("__row")
    broken = pl.any_horizontal(own)
    names = pl.concat_list(
        [pl.when(pl.col(own[i])).then(pl.lit(r.name)) for i, r in enumerate(rules)]
    ).list.drop_nulls()
    message = pl.coalesce([pl.when(pl.col(own[i])).then(r.message) for i, r in enumerate(rules)])
    bad = flagged.filter(broken).with_columns(names.alias(RULES), message.alias(MESSAGE))
    good = flagged.filter(~broken).with_columns(
        pl.lit([], dtype=pl.List(pl.String)).alias(RULES),
        pl.lit(None, dtype=pl.String).alias(MESSAGE),
    )
    return pl.concat([good, bad]).sort("__row").drop("__row", *own)


def _own_rules(table: str) -> list[Rule]:
    return [r for r in _rules_for(CONTRACTS[table]) if not r.cascade]


def _cascade_rules(table: str) -> list[Rule]:
    return [r for r in _rules_for(CONTRACTS[table]) if r.cascade]


def _with_parent(frame: pl.DataFrame, shipments: pl.DataFrame) -> pl.DataFrame:
    parents = shipments.filter(
        pl.col("shipment_id").is_not_null() & pl.col("shipment_id").is_first_distinct()
    ).select(
        "shipment_id",
        pl.lit(True).alias(PARENT_EXISTS),
        pl.col("declared_at").alias(PARENT_DECLARED_AT),
    )
    return frame.join(parents, on="shipment_id", how="left", maintain_order="left").with_columns(
        pl.col(PARENT_EXISTS).fill_null(False)
    )


def _first_reason(frame: pl.DataFrame, label: pl.Expr) -> pl.DataFrame:
    """shipment_id -> the message of its first rejected row."""
    return (
        frame.filter(pl.col(RULES).list.len() > 0)
        .group_by("shipment_id", maintain_order=True)
        .agg(label.first().alias("reason"))
    )


def validate_tables(
    raw: dict[str, pl.DataFrame], absent: Mapping[str, Collection[str]] | None = None
) -> ValidationResult:
    """Validate prepared inputs (see `data_contracts.readers`) of every raw table.

    `absent` names, per table, columns an input declares it does not have (an
    administration's own export, see `data_contracts.mapping`): their rules are
    not checked, and they stay empty rather than being filled with made-up values.
    """
    absent = absent or {}
    frames = {t: raw.get(t, empty_input(CONTRACTS[t])) for t in RAW_TABLES}
    checked: dict[str, pl.DataFrame] = {}
    views: dict[str, pl.DataFrame] = {}

    for table in RAW_TABLES:
        frame = frames[table]
        if "shipment_id" in CONTRACTS[table].parents:
            frame = _with_parent(frame, frames["shipments"])
        views[table] = frame
        skip = set(absent.get(table, ()))
        rules = [r for r in _own_rules(table) if r.name.split(":", 1)[1] not in skip]
        # (the import's own messages, put first after, keep theirs)
        checked[table] = _with_import_errors(
            _earlier_rows_named(_evaluate(_flag_import_errors(frame, table), rules), table)
        )

    # A rejected goods line rejects its declaration. A line that belongs to a later
    # declaration repeating an earlier one's id does not reject the first one, which
    # is kept: a line rejected as a repeat of an earlier line's id while its
    # declaration id is itself repeated, or one `caravan import` found on the rows
    # of a differing declaration under the same id (conflict:shipment_id).
    repeated = (
        frames["shipments"]
        .filter(pl.col("shipment_id").is_not_null() & pl.col("shipment_id").is_duplicated())
        .get_column("shipment_id")
        .unique()
    )
    # Nor does an exact copy of an earlier line (an export that repeats a row): it is
    # set aside, the earlier line is kept.
    items = checked["items"].filter(
        ~pl.col(RULES).list.contains("parent_missing:shipment_id")
        & ~pl.col(RULES).list.contains(CONFLICT)
        & ~(
            pl.col(RULES).list.contains("unique:item_id")
            & pl.col("shipment_id").is_in(repeated.implode())
        )
        & ~_exact_repeat("items")
    )
    bad_lines = _first_reason(
        items,
        pl.concat_str(
            pl.lit("line "), pl.col("line_no").cast(pl.String), pl.lit(": "), pl.col(MESSAGE)
        ),
    )
    shipments = (
        checked["shipments"]
        .join(bad_lines, on="shipment_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("reason").is_not_null().alias("__child_rejected"),
            pl.col("reason").alias("__child_reason"),
        )
        .drop("reason")
    )
    checked["shipments"] = _add_cascade(shipments, "shipments")

    # Lines and outcomes follow their shipment.
    ship = checked["shipments"].filter(pl.col("shipment_id").is_first_distinct())
    rejected = ship.filter(pl.col(RULES).list.len() > 0).select(
        "shipment_id", pl.col(MESSAGE).alias("__parent_reason")
    )
    for table in ("items", "outcomes"):
        frame = (
            checked[table]
            .join(rejected, on="shipment_id", how="left", maintain_order="left")
            .with_columns(pl.col("__parent_reason").is_not_null().alias("__parent_rejected"))
        )
        checked[table] = _add_cascade(frame, table)

    return ValidationResult({t: _split(t, checked[t], views[t]) for t in RAW_TABLES})


def _exact_repeat(table: str) -> pl.Expr:
    """A row rejected only as a repeat of an earlier row's id whose values are the
    earlier row's, exactly."""
    key = CONTRACTS[table].id_column
    content = pl.struct(CONTRACTS[table].column_names).hash()
    return (
        (pl.col(RULES).list.len() == 1)
        & (pl.col(RULES).list.first() == f"unique:{key}")
        & (content == content.first().over(key))
    )


def _earlier_rows_named(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """The message of a row rejected as a repeat of an earlier row's id names that
    row (its file and `_source_row`), and says when it was itself rejected: then no
    row of the id is accepted, and a corrected row in a later file cannot take the
    id until the rejected one is removed from raw/ (e.g. a corrected export imported
    beside its first import). An exact copy says so: the earlier row is kept."""
    key = CONTRACTS[table].id_column
    rule = f"unique:{key}"
    if (
        SOURCE_FILE not in frame.columns
        or not frame.select(pl.col(RULES).list.first().eq(rule).any()).item()
    ):
        return frame
    first = {c: pl.col(c).first().over(key) for c in (SOURCE_FILE, SOURCE_ROW, RULES)}
    # (the file by its folder and name: the same wherever the data directory is)
    named = pl.coalesce(first[SOURCE_FILE].str.extract(r"([^/]+/[^/]+)$", 1), first[SOURCE_FILE])
    where = pl.concat_str(
        pl.lit("("),
        named,
        pl.lit(", _source_row "),
        first[SOURCE_ROW].cast(pl.String),
        pl.lit(")"),
    )
    said = pl.concat_str(pl.lit(f"{key} '"), pl.col(key), pl.lit("' "))
    message = (
        pl.when(_exact_repeat(table))
        .then(
            pl.concat_str(
                said, pl.lit("repeats an earlier row exactly "), where, pl.lit(": that row is kept")
            )
        )
        .when(first[RULES].list.len() > 0)
        .then(
            pl.concat_str(
                said,
                pl.lit("was already used by an earlier row "),
                where,
                pl.lit(", itself rejected ("),
                first[RULES].list.first(),
                pl.lit(
                    "): no row of this id is accepted while it is there; remove that row "
                    "(or the file of an earlier import) to use this one"
                ),
            )
        )
        .otherwise(pl.concat_str(said, pl.lit("was already used by an earlier row "), where))
    )
    return frame.with_columns(
        pl.when(pl.col(RULES).list.first() == rule)
        .then(message)
        .otherwise(pl.col(MESSAGE))
        .alias(MESSAGE)
    )


def _import_errors() -> pl.Expr:
    return pl.col(IMPORT_ERRORS).str.json_decode(_IMPORT_ERROR)


def _flag_import_errors(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """A value `caravan import` could not read (see `data_contracts.mapping`) breaks
    its column's type rule, not the required one: the value was there."""
    if IMPORT_ERRORS not in frame.columns or frame[IMPORT_ERRORS].is_null().all():
        return frame
    rules = _import_errors().list.eval(pl.element().struct.field("rule"))
    flags = []
    for name in CONTRACTS[table].column_names:
        flag = TYPE_ERROR_PREFIX + name
        if flag in frame.columns:
            hit = rules.list.contains(f"type:{name}").fill_null(False)
            flags.append((pl.col(flag) | hit).alias(flag))
    return frame.with_columns(flags)


def _with_import_errors(frame: pl.DataFrame) -> pl.DataFrame:
    """Put the problems `caravan import` found first, with their messages."""
    if IMPORT_ERRORS not in frame.columns or frame[IMPORT_ERRORS].is_null().all():
        return frame
    errors = _import_errors()
    names = errors.list.eval(pl.element().struct.field("rule")).fill_null(
        pl.lit([], dtype=pl.List(pl.String))
    )
    return frame.with_columns(
        pl.concat_list(names, RULES).list.unique(maintain_order=True).alias(RULES),
        pl.coalesce(errors.list.first().struct.field("message"), MESSAGE).alias(MESSAGE),
    )


def _restore_values(record: str | None, errors: str | None) -> str | None:
    """The raw record with the values as the export held them where they could not
    be read (the typed raw file can only hold an empty value there)."""
    if record is None or errors is None:
        return record
    data = json.loads(record)
    for error in json.loads(errors):
        if error.get("value") is not None and error.get("column") in data:
            data[error["column"]] = error["value"]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _add_cascade(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    rules = _cascade_rules(table)
    cascaded = _evaluate(frame.rename({RULES: "__own", MESSAGE: "__own_msg"}), rules)
    return cascaded.with_columns(
        pl.concat_list("__own", RULES).alias(RULES),
        pl.coalesce("__own_msg", MESSAGE).alias(MESSAGE),
    ).drop("__own", "__own_msg")


def _split(table: str, frame: pl.DataFrame, view: pl.DataFrame) -> TableResult:
    contract = CONTRACTS[table]
    bad = pl.col(RULES).list.len() > 0
    accepted = frame.filter(~bad).select(
        [pl.col(c.name).cast(c.polars_dtype) for c in contract.columns]
    )
    quarantine = frame.filter(bad).select(
        *contract.column_names,
        pl.col(RULES).list.first().alias(RULE),
        RULES,
        MESSAGE,
        SOURCE_FILE,
        SOURCE_ROW,
        EXPORT_ROW,
        RAW_RECORD,
    )
    if IMPORT_ERRORS in frame.columns and frame.filter(bad)[IMPORT_ERRORS].is_not_null().any():
        restored = frame.filter(bad).select(RAW_RECORD, IMPORT_ERRORS).rows()
        quarantine = quarantine.with_columns(
            pl.Series(RAW_RECORD, [_restore_values(r, e) for r, e in restored], pl.String)
        )
    view = view.drop([c for c in view.columns if c.startswith(TYPE_ERROR_PREFIX)])
    return TableResult(table, accepted, quarantine, view)
