"""`caravan import`: an administration's own export, mapped onto the contracts
through a YAML mapping (see `data_contracts.mapping`), written to raw/.

Writes raw/<table>/<file>.parquet for shipments, items and outcomes, the extra
columns to raw/extras/<file>.parquet, and records the contract columns the export
does not have in raw/absent.json (read by `caravan validate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml
from pydantic import ValidationError

from data_contracts.mapping import DeclarationMapping, MappingError, apply_mapping
from data_contracts.readers import InputFileError
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


def read_export(path: Path, mapping: DeclarationMapping) -> pl.DataFrame:
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(
            path, separator=mapping.delimiter, encoding=mapping.encoding, infer_schema=False
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFileError(path, f"cannot be read: {exc}".splitlines()[0]) from exc


@dataclass(frozen=True)
class ImportRun:
    rows: dict[str, int]
    absent: dict[str, list[str]]
    extras: list[str]


def run_import(layout: DataLayout, mapping_path: Path, files: list[Path]) -> ImportRun:
    mapping = load_mapping(mapping_path)
    rows: dict[str, int] = {}
    absent: dict[str, set[str]] = {t: set(v) for t, v in read_absent(layout).items()}
    extras: list[str] = []
    for path in files:
        frame = read_export(path, mapping)
        mapping.check(frame.columns, str(path))
        tables, extra, missing = apply_mapping(mapping, frame)
        for table, out in tables.items():
            write_parquet(out, layout.raw / table / f"{path.stem}.parquet")
            rows[table] = rows.get(table, 0) + out.height
        for table, cols in missing.items():
            absent.setdefault(table, set()).update(cols)
        if extra.width > 1:
            write_parquet(extra, layout.raw / "extras" / f"{path.stem}.parquet")
            extras = [c for c in extra.columns if c != "shipment_id"]
    layout.raw.mkdir(parents=True, exist_ok=True)
    (layout.raw / ABSENT_FILE).write_text(
        json.dumps({t: sorted(c) for t, c in absent.items()}, indent=2)
    )
    return ImportRun(rows, {t: sorted(c) for t, c in absent.items()}, extras)
