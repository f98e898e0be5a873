"""Loader for national watchlists in Caravan's simple CSV format.

Format (UTF-8, comma-separated, first line is the header, extra columns are
refused so that a misspelt header is not silently ignored):

===================== ======== ==================================================
column                required content
===================== ======== ==================================================
reference_number      yes      the list's own reference, unique within the file
entity_type           yes      ``individual`` or ``entity``
name                  yes      primary name, Latin script
aliases               no       other names/spellings, separated by ``|``
name_original_script  no       name in its original script (e.g. Cyrillic)
date_of_birth         no       ``YYYY-MM-DD`` or ``YYYY``; several separated by ``|``
nationality           no       nationality (country name or ISO code); several by ``|``
document_numbers      no       passport / ID numbers, separated by ``|``
address               no       one address (several separated by ``|``)
listed_on             no       ``YYYY-MM-DD``
===================== ======== ==================================================

Every column must be present in the header (optional ones may be empty).
``entry_id`` is ``"<list_name>:<reference_number>"``. Values are stripped and
whitespace-normalised; empty list elements are dropped.

Bad rows: `read_national_csv` returns the good rows and a list of
`RowProblem` (row number counted as in a spreadsheet: the header is row 1, the
first data row is row 2) so a caller can quarantine them; `load_national_csv`
raises `ReferenceFileError` listing them when there is any (a watchlist with a
dropped entry is worse than no new watchlist). A missing or unknown column, or
an unreadable file, always raises `ReferenceFileError` naming file and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.loaders import (
    ReferenceFileError,
    RowProblem,
    validate_watchlist,
    watchlist_frame,
)
from data_contracts.schemas import ENTITY_TYPES

COLUMNS: tuple[str, ...] = (
    "reference_number",
    "entity_type",
    "name",
    "aliases",
    "name_original_script",
    "date_of_birth",
    "nationality",
    "document_numbers",
    "address",
    "listed_on",
)
REQUIRED: tuple[str, ...] = ("reference_number", "entity_type", "name")
SEPARATOR = "|"

_WS = re.compile(r"\s+")
_DOB = re.compile(r"\d{4}(?:-\d{2}-\d{2})?")


@dataclass(frozen=True)
class NationalLoad:
    """Result of reading a national list: the good rows and the bad ones."""

    frame: pl.DataFrame
    problems: list[RowProblem]


def _clean(value: str | None) -> str:
    return _WS.sub(" ", value or "").strip()


def _split(value: str | None) -> list[str]:
    return list(dict.fromkeys(p for p in (_clean(v) for v in (value or "").split(SEPARATOR)) if p))


def _row(raw: dict[str, str], list_name: str) -> tuple[dict[str, Any] | None, list[str]]:
    reasons: list[str] = []
    values = {c: _clean(raw.get(c)) for c in COLUMNS}
    for col in REQUIRED:
        if not values[col]:
            reasons.append(f"{col} is empty")
    if values["entity_type"] and values["entity_type"] not in ENTITY_TYPES:
        reasons.append(f"entity_type {values['entity_type']!r} is not one of {ENTITY_TYPES}")
    dobs = _split(raw.get("date_of_birth"))
    for dob in dobs:
        if not _DOB.fullmatch(dob):
            reasons.append(f"date_of_birth {dob!r} is not YYYY-MM-DD or YYYY")
        elif len(dob) == 10:
            try:
                dt.date.fromisoformat(dob)
            except ValueError:
                reasons.append(f"date_of_birth {dob!r} is not a real date")
    listed_on: dt.date | None = None
    if values["listed_on"]:
        try:
            listed_on = dt.date.fromisoformat(values["listed_on"])
        except ValueError:
            reasons.append(f"listed_on {values['listed_on']!r} is not YYYY-MM-DD")
    if reasons:
        return None, reasons
    return {
        "entry_id": f"{list_name}:{values['reference_number']}",
        "list_name": list_name,
        "reference_number": values["reference_number"],
        "entity_type": values["entity_type"],
        "name": values["name"],
        "aliases": _split(raw.get("aliases")),
        "name_original_script": values["name_original_script"] or None,
        "dates_of_birth": dobs,
        "nationalities": _split(raw.get("nationality")),
        "document_numbers": _split(raw.get("document_numbers")),
        "addresses": _split(raw.get("address")),
        "listed_on": listed_on,
        "comments": None,
    }, []


def read_national_csv(path: str | Path, list_name: str) -> NationalLoad:
    """Read a national list; return good rows (WATCHLIST columns) and bad rows.

    Raises `ReferenceFileError` if the file cannot be read, is not UTF-8, has no
    header, or lacks (or adds) a column."""
    path = Path(path)
    if not list_name or ":" in list_name:
        raise ValueError(f"list_name {list_name!r} must be non-empty and contain no ':'")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise ReferenceFileError(path, "empty file: no header line")
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise ReferenceFileError(path, f"missing column(s): {', '.join(missing)}")
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise ReferenceFileError(path, f"unknown column(s): {', '.join(unknown)}")
            reader.fieldnames = header
            raw_rows = list(reader)
    except FileNotFoundError as exc:
        raise ReferenceFileError(path, "file not found") from exc
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(path, f"not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise ReferenceFileError(path, f"not a readable CSV: {exc}") from exc

    rows: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_rows, start=2):
        if None in raw:
            problems.append(RowProblem(number, None, "more fields than header columns"))
            continue
        row, reasons = _row(raw, list_name)
        ref = _clean(raw.get("reference_number"))
        entry_id = f"{list_name}:{ref}" if ref else None
        if ref in seen and ref:
            reasons.append(f"reference_number duplicates row {seen[ref]}")
        elif ref:
            seen[ref] = number
        if reasons or row is None:
            problems.extend(RowProblem(number, entry_id, r) for r in reasons)
            continue
        rows.append(row)
        row_numbers.append(number)
    frame = watchlist_frame(rows)
    # Contract-level checks (lengths, id pattern): map frame rows back to file rows.
    contract_problems = validate_watchlist(frame)
    for problem in contract_problems:
        problems.append(RowProblem(row_numbers[problem.row - 1], problem.entry_id, problem.reason))
    if contract_problems:
        bad_positions = sorted({p.row - 1 for p in contract_problems})
        frame = (
            frame.with_row_index("_pos").filter(~pl.col("_pos").is_in(bad_positions)).drop("_pos")
        )
    problems.sort(key=lambda p: p.row)
    return NationalLoad(frame, problems)


def load_national_csv(path: str | Path, list_name: str) -> pl.DataFrame:
    """Load a national list (WATCHLIST columns); raise `ReferenceFileError`
    listing every bad row (with its row number and reason) if there is any."""
    result = read_national_csv(path, list_name)
    if result.problems:
        shown = "; ".join(str(p) for p in result.problems[:20])
        more = f" (and {len(result.problems) - 20} more)" if len(result.problems) > 20 else ""
        raise ReferenceFileError(path, f"{len(result.problems)} bad row(s): {shown}{more}")
    return result.frame
