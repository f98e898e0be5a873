"""`caravan validate`: raw/ → validated/ + quarantine/ (+ the GX report in reports/)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
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


# Columns the contracts mark personal (travellers' names, documents, contacts; a
# natural person's date of birth and document number on a declaration).
PERSONAL_COLUMNS = frozenset(c.name for t in CONTRACTS.values() for c in t.columns if c.personal)
PRIVATE_MODE = 0o600


def holds_personal_data(frame: pl.DataFrame) -> bool:
    """Whether `frame` has a column some contract marks personal (whatever its values:
    a file of that table is private however many rows fill it)."""
    return not PERSONAL_COLUMNS.isdisjoint(frame.columns)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write atomically: a reader never sees half a file. A file holding personal
    data (a contract's `personal` columns: travellers, shipments, their quarantine)
    is readable by its owner only (0600), from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    if holds_personal_data(frame):
        # created private before a byte is written (a chmod afterwards leaves a moment
        # in which others may open it); an earlier leftover is replaced
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        tmp.chmod(PRIVATE_MODE)  # whatever the umask
    frame.write_parquet(tmp, statistics=True)
    tmp.replace(path)


@dataclass(frozen=True)
class ValidateRun:
    result: ValidationResult
    report: Path | None
    # rows the database's API records added to raw/ first (see `pull_api_records`)
    pulled: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tables": self.result.summary(),
            "report": str(self.report) if self.report else None,
            "pulled_from_database": self.pulled,
        }


API_EXPORT = "api-export-"  # raw/<table>/api-export-<UTC time>.parquet


def _ids_in(files: list[Path], column: str) -> set[str]:
    """The values of `column` in input files (only that column is read where it can be)."""
    from data_contracts.readers import _read_any

    ids: set[str] = set()
    for path in files:
        if path.suffix == ".parquet":
            try:
                frame = pl.read_parquet(path, columns=[column])
            except (pl.exceptions.PolarsError, OSError):
                frame = _read_any(path)
        else:
            frame = _read_any(path)
        if column in frame.columns:
            ids.update(str(v) for v in frame[column].drop_nulls().to_list())
    return ids


def pulled_shipment(raw_dir: Path, shipment_id: str) -> bool:
    """Whether an earlier `pull_api_records` wrote the shipment to raw/ (so that the
    label export of an outcome recorded later does not write it a second time)."""
    files = sorted((raw_dir / "shipments").glob(f"{API_EXPORT}*.parquet"))
    if not files:
        return False
    found = (
        pl.scan_parquet(files)
        .filter(pl.col("shipment_id") == shipment_id)
        .select(pl.len())
        .collect()
        .item()
    )
    return bool(found)


def pull_api_records(
    layout: DataLayout, database_url: str | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Write the shipments (with their goods lines and the export columns, `extras`,
    they brought) and traveller records the service stored over the API, and that
    raw/ does not hold yet, to raw/<table>/api-export-<UTC time>.parquet: one file
    per table and run, each record exactly once (a record already in raw/, by its
    id, is not written again). `caravan features` then counts every declaration
    and traveller the service counted when it scored, not only the inspected ones
    (whose shipments the outcome's label export writes). `database_url`: the
    deployment's database (default: CARAVAN_DATABASE_URL, else caravan.db in the
    data directory); nothing is done when there is none. Returns rows written per
    table."""
    import datetime as dt

    from sqlalchemy import inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    from data_contracts.settings import Settings
    from serving import orm as m
    from serving.db import database_url as url_of
    from serving.db import make_engine, sqlite_path
    from serving.history import frame_of
    from serving.services import prepare_shipment, prepare_traveller

    say = progress or (lambda _msg: None)
    url = database_url or url_of(Settings(data=layout.root), layout)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return {}
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("shipments"):
            return {}
        say("pulling the API's records from the database")
        raw = layout.raw
        have_ships = _ids_in(input_files(raw, "shipments"), "shipment_id")
        # (goods lines written by a pull that stopped before its shipments were)
        have_items = _ids_in(input_files(raw, "items"), "item_id")
        have_extras = _ids_in(sorted((raw / "extras").glob("*.parquet")), "shipment_id")
        have_travellers = _ids_in(input_files(raw, "travellers"), "traveller_record_id")
        with engine.connect() as conn:
            stored = [
                (str(sid), dict(payload))
                for sid, payload in conn.execute(
                    select(m.Shipment.shipment_id, m.Shipment.payload).order_by(
                        m.Shipment.declared_at, m.Shipment.shipment_id
                    )
                )
            ]
            ships = [(sid, payload) for sid, payload in stored if sid not in have_ships]
            # the extras of every stored shipment (also of one whose outcome's label
            # export wrote it to raw/ without them)
            extras_given = [
                {"shipment_id": sid, "extras": payload["extras"]}
                for sid, payload in stored
                if payload.get("extras") and sid not in have_extras
            ]
            wanted = {sid for sid, _ in ships}
            lines: dict[str, list[dict[str, Any]]] = {}
            if wanted:
                for sid, payload in conn.execute(
                    select(m.Item.shipment_id, m.Item.payload).order_by(
                        m.Item.shipment_id, m.Item.line_no
                    )
                ):
                    if sid in wanted:
                        lines.setdefault(str(sid), []).append(dict(payload))
            travellers = [
                dict(payload)
                for rid, payload in conn.execute(
                    select(m.Traveller.traveller_record_id, m.Traveller.payload).order_by(
                        m.Traveller.traveller_record_id
                    )
                )
                if str(rid) not in have_travellers
            ]
    except SQLAlchemyError as exc:
        raise InputFileError(
            path or layout.database, f"the database cannot be read: {exc}".splitlines()[0]
        ) from exc
    finally:
        engine.dispose()
    name = f"{API_EXPORT}{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}.parquet"
    pulled: dict[str, int] = {}
    if ships:
        prepared = [
            prepare_shipment({**payload, "items": lines.get(sid, [])}, stored=True)
            for sid, payload in ships
        ]
        records = [p.record for p in prepared]
        items = [line for p in prepared for line in p.items if line["item_id"] not in have_items]
        # the lines first: a reader of raw/ never finds a shipment without its lines
        if items:
            write_parquet(frame_of(items, CONTRACTS["items"].polars_schema), raw / "items" / name)
        write_parquet(
            frame_of(records, CONTRACTS["shipments"].polars_schema), raw / "shipments" / name
        )
        pulled = {"shipments": len(records), "items": len(items)}
    extras = _extras_frame(layout, extras_given)
    if extras is not None:
        write_parquet(extras, raw / "extras" / name)
        pulled["extras"] = extras.height
    if travellers:
        rows = [prepare_traveller(t, stored=True)[0] for t in travellers]
        write_parquet(
            frame_of(rows, CONTRACTS["travellers"].polars_schema), raw / "travellers" / name
        )
        pulled["travellers"] = len(rows)
    return pulled


def _extras_frame(layout: DataLayout, records: list[dict[str, Any]]) -> pl.DataFrame | None:
    """shipment_id + the export columns the declarations brought (`extras`), typed as
    the import typed them (numbers as Float64, categories as text), or None."""
    given = [(str(r["shipment_id"]), r.get("extras") or {}) for r in records]
    names = sorted({n for _, e in given for n in e})
    if not names:
        return None
    meta_path = layout.features / "feature_set.json"
    meta = json.loads(meta_path.read_text()).get("extras", {}) if meta_path.exists() else {}
    numeric = {str(n).removeprefix("extra_") for n in meta.get("numeric") or ()}
    categorical = {str(n).removeprefix("extra_") for n in meta.get("categorical") or {}}
    columns = [pl.Series("shipment_id", [sid for sid, _ in given], dtype=pl.String)]
    for n in names:
        values = [e.get(n) for _, e in given]
        is_number = n in numeric or (
            n not in categorical
            and all(
                isinstance(v, int | float) and not isinstance(v, bool)
                for v in values
                if v is not None
            )
        )
        if is_number:
            columns.append(pl.Series(n, values, dtype=pl.Float64, strict=False))
        else:
            columns.append(pl.Series(n, [None if v is None else str(v) for v in values]))
    return pl.DataFrame(columns).filter(pl.any_horizontal(pl.col(names).is_not_null()))


def run_validate(
    layout: DataLayout,
    *,
    gx: bool = True,
    progress: Progress | None = None,
    database_url: str | None = None,
    pull: bool = True,
) -> ValidateRun:
    """Validate raw/ into validated/ and quarantine/; first (`pull`) the records the
    service stored over the API that raw/ does not hold yet (see `pull_api_records`)."""
    say = progress or (lambda _msg: None)
    pulled = pull_api_records(layout, database_url, say) if pull else {}
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
    run = ValidateRun(result, report, pulled)
    (report_dir / "summary.json").write_text(json.dumps(run.summary(), indent=2))
    return run
