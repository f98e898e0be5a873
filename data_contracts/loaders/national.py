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

Every column must be present in the header (optional ones may be empty). A
file separated by another character (``;``, as spreadsheets save CSV in locales
with a decimal comma, or a tab) is refused saying so.
``entry_id`` is ``"<list_name>:<reference_number>"``. ``list_name`` names the
national list (loading it replaces that list); the UN list's name (``UN-SC``,
any case) is reserved: that list is loaded only from the UN's XML. Values are stripped and
whitespace-normalised; empty list elements are dropped.

Bad rows: `read_national_csv` returns the good rows and a list of
`RowProblem` (row number counted as in a spreadsheet: the header is row 1, the
first data row is row 2, a blank line counts as a row) so a caller can
quarantine them; a row with more or fewer fields than the header is one of
them. `load_national_csv` raises `ReferenceFileError` listing them when there
is any (a watchlist with a dropped entry is worse than no new watchlist), and
when the file has no entry at all (a header-only file). A missing, unknown or
doubled column, text that is not CSV (an unterminated quote, text after a
closing quote: the file is read strictly, naming the row) or an unreadable file
always raises `ReferenceFileError` naming file, column or row.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from data_contracts.loaders import (
    ReferenceFileError,
    RowProblem,
    validate_watchlist,
    watchlist_frame,
)
from data_contracts.loaders.un_sc import LIST_NAME as UN_LIST_NAME
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
# Field separators a CSV export may use instead of the comma, named in the refusal.
OTHER_DELIMITERS = {";": "semicolons (;)", "\t": "tabs"}
# List names a national list may not take: the UN list is loaded from its XML only.
RESERVED_LIST_NAMES = frozenset({UN_LIST_NAME.casefold()})


def list_name_problem(list_name: str) -> str | None:
    """Why `list_name` cannot name a national list (None: it can)."""
    if not list_name or ":" in list_name:
        return f"list_name {list_name!r} must be non-empty and contain no ':'"
    if list_name.casefold() in RESERVED_LIST_NAMES:
        return (
            f"list_name {list_name!r} is reserved for the UN Security Council list, which "
            "is loaded only from the UN's XML (POST /api/v1/watchlists/un, caravan watchlist "
            "import --un): give the national list a name of its own"
        )
    return None


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


def _records(path: Path, handle: TextIO) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the data records (row number, fields) of an open CSV file,
    read strictly: an unterminated quote or text after a closing quote is refused
    naming the row (a lenient reader would swallow the rest of the file into one
    value). Blank lines count as rows (as in a spreadsheet) but hold no record."""
    reader = csv.reader(handle, strict=True)
    header: list[str] = []
    records: list[tuple[int, list[str]]] = []
    number = 0
    while True:
        number += 1
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            where = f"row {number}" + (f" (line {line})" if line != number else "")
            hint = " (an unterminated quote?)" if "end of data" in str(exc) else ""
            raise ReferenceFileError(path, f"{where}: not readable CSV: {exc}{hint}") from None
        if number == 1:
            header = [h.strip() for h in fields]
            if not any(header):
                raise ReferenceFileError(path, "row 1 is empty: the first line must be the header")
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise ReferenceFileError(path, f"column(s) named twice: {', '.join(twice)}")
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                _refuse_other_delimiter(path, header)
                raise ReferenceFileError(path, f"missing column(s): {', '.join(missing)}")
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise ReferenceFileError(path, f"unknown column(s): {', '.join(unknown)}")
            continue
        if fields:  # (a blank line)
            records.append((number, fields))
    if number == 1:
        raise ReferenceFileError(path, "empty file: no header line")
    return header, records


def _refuse_other_delimiter(path: Path, header: list[str]) -> None:
    """Refuse a header that is the expected one separated by another character
    (the whole line read as one or a few comma-separated fields), saying so."""
    for delimiter, named in OTHER_DELIMITERS.items():
        split = [h.strip() for field in header for h in field.split(delimiter)]
        if any(delimiter in h for h in header) and set(COLUMNS) <= set(split):
            raise ReferenceFileError(
                path,
                f"row 1: the columns are separated by {named}; the format needs commas (,): "
                "save the file as comma-separated CSV (UTF-8)",
            )


def read_national_csv(path: str | Path, list_name: str) -> NationalLoad:
    """Read a national list; return good rows (WATCHLIST columns) and bad rows.

    Raises `ReferenceFileError` if the file cannot be read, is not UTF-8, has no
    header, or lacks (or adds) a column."""
    path = Path(path)
    refused = list_name_problem(list_name)
    if refused:
        raise ValueError(refused)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header, records = _records(path, handle)
    except FileNotFoundError as exc:
        raise ReferenceFileError(path, "file not found") from exc
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(path, f"not UTF-8 text: {exc}") from exc

    raw_rows: list[tuple[int, dict[str, str]]] = []
    problems: list[RowProblem] = []
    for number, fields in records:
        if len(fields) != len(header):
            ref = _clean(fields[0]) if fields else ""
            problems.append(
                RowProblem(
                    number,
                    f"{list_name}:{ref}" if ref else None,
                    f"has {len(fields)} field(s), the header has {len(header)} columns "
                    "(a missing or extra comma, or an unquoted comma in a value?)",
                )
            )
            continue
        raw_rows.append((number, dict(zip(header, fields, strict=True))))

    rows: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    seen: dict[str, int] = {}
    for number, raw in raw_rows:
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
    listing every bad row (with its row number and reason) if there is any, or
    when the file holds no entry at all."""
    result = read_national_csv(path, list_name)
    if result.problems:
        shown = "; ".join(str(p) for p in result.problems[:20])
        more = f" (and {len(result.problems) - 20} more)" if len(result.problems) > 20 else ""
        raise ReferenceFileError(path, f"{len(result.problems)} bad row(s): {shown}{more}")
    if result.frame.is_empty():
        # An empty export is far likelier than a list withdrawn on purpose: refused,
        # so that a sanctions list is never emptied by accident.
        raise ReferenceFileError(
            path, f"no entries: the file has only its header; list {list_name!r} is left unchanged"
        )
    return result.frame
