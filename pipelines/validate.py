"""`caravan validate`: raw/ → validated/ + quarantine/ (+ the GX report in reports/)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.readers import SUFFIXES, InputFileError, read_input
from data_contracts.schemas import CONTRACTS, RAW_TABLES
from data_contracts.settings import DataLayout
from data_contracts.validate import ValidationResult, validate_tables

Progress = Callable[[str], None]


def input_files(raw_dir: Path, table: str) -> list[Path]:
    """Files of one input: raw/<table>.<ext> and raw/<table>/*.<ext>, in name order."""
    files = [raw_dir / f"{table}{s}" for s in SUFFIXES if (raw_dir / f"{table}{s}").exists()]
    folder = raw_dir / table
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES)
    return files


ABSENT_FILE = "absent.json"  # contract columns an imported export does not have


def read_absent(layout: DataLayout) -> dict[str, list[str]]:
    """Per table, the columns `caravan import` recorded as absent (raw/absent.json)."""
    path = layout.raw / ABSENT_FILE
    if not path.exists():
        return {}
    return {str(k): list(v) for k, v in json.loads(path.read_text()).items()}


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write atomically: a reader never sees half a file. Traveller (API/PNR) files hold
    personal data: readable by their owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp, statistics=True)
    if path.name.startswith("travellers"):
        tmp.chmod(0o600)
    tmp.replace(path)


@dataclass(frozen=True)
class ValidateRun:
    result: ValidationResult
    report: Path | None

    def summary(self) -> dict[str, Any]:
        return {
            "tables": self.result.summary(),
            "report": str(self.report) if self.report else None,
        }


def run_validate(
    layout: DataLayout, *, gx: bool = True, progress: Progress | None = None
) -> ValidateRun:
    say = progress or (lambda _msg: None)
    raw: dict[str, pl.DataFrame] = {}
    for table in RAW_TABLES:
        files = input_files(layout.raw, table)
        if table == "shipments" and not files:
            raise InputFileError(
                layout.raw / "shipments.parquet",
                "no shipments input found (expected raw/shipments.parquet, "
                ".csv, .ndjson or files in raw/shipments/)",
            )
        say(f"reading {table} ({len(files)} file(s))")
        raw[table] = read_input(files, CONTRACTS[table])
    say("checking contract rules")
    absent = read_absent(layout)
    result = validate_tables(raw, absent=absent)
    for table, res in result.tables.items():
        say(f"writing {table}")
        write_parquet(res.accepted, layout.validated / f"{table}.parquet")
        write_parquet(res.quarantine, layout.quarantine / f"{table}.parquet")
    report_dir = layout.reports / "validation"
    report_dir.mkdir(parents=True, exist_ok=True)
    report: Path | None = None
    if gx:
        say("running Great Expectations suites")
        from data_contracts.gx_report import run_suites, write_report

        # Columns declared absent stay empty and their rules are not checked: the
        # suites do not run their expectations either.
        outcomes = run_suites(
            {t: r.view.drop(absent.get(t, []), strict=False) for t, r in result.tables.items()}
        )
        report = write_report(outcomes, result.summary(), report_dir)
    run = ValidateRun(result, report)
    (report_dir / "summary.json").write_text(json.dumps(run.summary(), indent=2))
    return run
