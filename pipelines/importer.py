"""`caravan import`: an administration's own export, mapped onto the contracts
through a YAML mapping (see `data_contracts.mapping`), written to raw/.

Writes raw/<table>/<name>.parquet for shipments, items and outcomes and the extra
columns to raw/extras/<name>.parquet, and records the contract columns the export
does not have in raw/absent.json (read by `caravan validate`).

<name> is `<n>-<file stem>-<content hash>`: files with the same name (monthly
folders, successive imports) never overwrite each other, and `<n>` numbers the
imports so that validation reads them in the order they were imported (the first
row with an id is kept). Importing a file with the very same content again
replaces its earlier import (under its first name) instead of adding its rows a
second time: that is how a corrected mapping is applied to an export.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml
from pydantic import ValidationError

from data_contracts.mapping import (
    IMPORTED_TABLES,
    DeclarationMapping,
    MappingError,
    apply_mapping,
    undeclared_negatives,
)
from data_contracts.readers import EXPORT_ROW, InputFileError
from data_contracts.settings import DataLayout
from pipelines.validate import ABSENT_FILE, read_absent, write_parquet


def load_mapping(path: Path) -> DeclarationMapping:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(str(path), f"cannot be read: {exc}".splitlines()[0]) from exc
    try:
        return DeclarationMapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MappingError(f"{path}: {where}", first["msg"]) from exc


_ENCODING_HINT = "name the file's encoding in the mapping (e.g. encoding: cp1251)"


def read_export(path: Path, mapping: DeclarationMapping) -> tuple[pl.DataFrame, int]:
    """The export's rows, and how many rows of a CSV were left out for holding no
    value at all (blank lines, lines of separators only: no declaration)."""
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            return frame.with_row_index(EXPORT_ROW, offset=1).cast({EXPORT_ROW: pl.Int64}), 0
        frame = pl.read_csv(
            path, separator=mapping.delimiter, encoding=mapping.csv_encoding, infer_schema=False
        )
    except UnicodeError as exc:
        raise InputFileError(path, f"is not {mapping.encoding}: {exc}; {_ENCODING_HINT}") from exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        said = f"cannot be read: {exc}".splitlines()[0]
        if "utf-8" in said.lower() or "utf8" in said.lower():
            said += f"; {_ENCODING_HINT}"
        raise InputFileError(path, said) from exc
    empty = pl.all_horizontal(pl.col(frame.columns).str.strip_chars().fill_null("") == "")
    blank = frame.select(empty.sum()).item() if frame.width else 0
    # (as a spreadsheet numbers the rows: the header is row 1)
    frame = frame.with_row_index(EXPORT_ROW, offset=2).cast({EXPORT_ROW: pl.Int64})
    return (frame.filter(~empty) if blank else frame), int(blank)


@dataclass(frozen=True)
class ImportRun:
    rows: dict[str, int]
    absent: dict[str, list[str]]
    extras: list[str]
    files: dict[str, str] = field(default_factory=dict)  # input file -> name in raw/
    replaced: list[str] = field(default_factory=list)  # inputs imported before, replaced
    read_as_negative: dict[str, int] = field(default_factory=dict)  # label value -> rows
    blank_rows: dict[str, int] = field(default_factory=dict)  # input file -> rows left out


_NAME = re.compile(r"^(\d{4,})-.*-([0-9a-f]{16})$")
_FOLDERS = (*IMPORTED_TABLES, "extras")


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def _imported(layout: DataLayout) -> dict[str, str]:
    """content hash -> output name of every earlier import in raw/."""
    names: dict[str, str] = {}
    for folder in _FOLDERS:
        directory = layout.raw / folder
        if directory.is_dir():
            for f in directory.glob("*.parquet"):
                m = _NAME.match(f.stem)
                if m:
                    names.setdefault(m.group(2), f.stem)
    return names


def _next_number(names: dict[str, str]) -> int:
    used = [int(m.group(1)) for n in names.values() if (m := _NAME.match(n))]
    return max(used, default=0) + 1


def run_import(layout: DataLayout, mapping_path: Path, files: list[Path]) -> ImportRun:
    mapping = load_mapping(mapping_path)
    rows: dict[str, int] = {}
    absent: dict[str, set[str]] = {t: set(v) for t, v in read_absent(layout).items()}
    extras: list[str] = []
    names = _imported(layout)
    written: dict[str, str] = {}
    replaced: list[str] = []
    negatives: dict[str, int] = {}
    seen: set[str] = set()
    blank_rows: dict[str, int] = {}
    for path in files:
        frame, blank = read_export(path, mapping)
        if blank:
            blank_rows[str(path)] = blank
        mapping.check(frame.columns, str(path))
        digest = _digest(path)
        if digest in seen:  # the same content given twice in one run
            continue
        seen.add(digest)
        tables, extra, missing = apply_mapping(mapping, frame)
        name = names.get(digest)
        if name is None:
            name = f"{_next_number(names):04d}-{path.stem}-{digest}"
            names[digest] = name
        else:
            replaced.append(str(path))
            for folder in _FOLDERS:
                (layout.raw / folder / f"{name}.parquet").unlink(missing_ok=True)
        written[str(path)] = name
        for table, out in tables.items():
            write_parquet(out, layout.raw / table / f"{name}.parquet")
            rows[table] = rows.get(table, 0) + out.height
        for table, cols in missing.items():
            absent.setdefault(table, set()).update(cols)
        if extra.width > 1:
            write_parquet(extra, layout.raw / "extras" / f"{name}.parquet")
            extras = [c for c in extra.columns if c != "shipment_id"]
        for value, n in undeclared_negatives(mapping, frame).items():
            negatives[value] = negatives.get(value, 0) + n
    layout.raw.mkdir(parents=True, exist_ok=True)
    (layout.raw / ABSENT_FILE).write_text(
        json.dumps({t: sorted(c) for t, c in absent.items()}, indent=2)
    )
    return ImportRun(
        rows,
        {t: sorted(c) for t, c in absent.items()},
        extras,
        written,
        replaced,
        negatives,
        blank_rows,
    )
