"""`caravan validate`: raw/ → validated/ + quarantine/ (+ the GX report in reports/)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.readers import (
    SOURCE_FILE,
    SOURCE_ROW,
    SUFFIXES,
    InputFileError,
    read_input,
)
from data_contracts.schemas import CONTRACTS, RAW_TABLES
from data_contracts.settings import DataLayout
from data_contracts.validate import TableResult, ValidationResult, validate_tables

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


RETENTION_FILE = "retention.json"  # raw/retention.json: the traveller purge's cutoff


def read_retention(layout: DataLayout) -> dt.datetime | None:
    """The departure time before which `caravan travellers purge` erased traveller
    records (raw/retention.json), or None when none was purged."""
    path = layout.raw / RETENTION_FILE
    if not path.exists():
        return None
    return dt.datetime.fromisoformat(json.loads(path.read_text())["travellers_departed_before"])


def apply_retention(
    layout: DataLayout, cutoff: dt.datetime, *, write: bool = True
) -> dict[str, int]:
    """Record the purge's cutoff (the latest one kept), so that validation never brings
    back from raw/ what retention erased, and erase the expired records from the files
    Caravan itself wrote into raw/travellers/ from the database (`from_service`).
    Returns the records erased per file (relative to the data directory); with
    `write` false, changes nothing (the counts, for the purge's audit entry first)."""
    earlier = read_retention(layout)
    latest = cutoff if earlier is None else max(earlier, cutoff)
    if write:
        layout.raw.mkdir(parents=True, exist_ok=True)
        (layout.raw / RETENTION_FILE).write_text(
            json.dumps({"travellers_departed_before": latest.isoformat()}) + "\n"
        )
    erased: dict[str, int] = {}
    folder = layout.raw / "travellers"
    for path in sorted(folder.glob(f"{SERVICE_PREFIX}*.parquet")) if folder.is_dir() else []:
        frame = pl.read_parquet(path)
        kept = frame.filter(~(pl.col("departure_at") < latest).fill_null(False))
        if kept.height == frame.height:
            continue
        erased[str(path.relative_to(layout.root))] = frame.height - kept.height
        if not write:
            continue
        if kept.height:
            write_parquet(kept, path)
        else:
            path.unlink()
    return erased


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
    # rows of raw/ left out because retention erased them (`read_retention`)
    expired: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tables": self.result.summary(),
            "report": str(self.report) if self.report else None,
            "pulled_from_database": self.pulled,
            "left_out_under_retention": self.expired,
        }


API_EXPORT = "api-export-"  # raw/<table>/api-export-<UTC time>.parquet
SERVICE_PREFIX = "api-"  # raw/<table>/api-*.parquet: the files the service wrote


def from_service(path: Path, table: str) -> bool:
    """Whether an input file of `table` is one written from the service's database:
    a pull's raw/<table>/api-export-<time>.parquet (`pull_api_records`) or an
    outcome's label export raw/<table>/api-<id>.parquet
    (`serving.services.decisions.export_labels`). Their records are stored ones,
    whose content never changes (ingest refuses other content under a stored id),
    so their ids alone say which stored records raw/ holds. (`caravan import` names
    its files 0001-..., never api-.)"""
    return (
        path.parent.name == table
        and path.name.startswith(SERVICE_PREFIX)
        and path.suffix == ".parquet"
    )


def _ids_in(files: list[Path], column: str) -> set[str]:
    """The values of `column` in input files (only that column is read where it can be)."""
    return {row[0] for row in _values_in(files, [column])}


def _values_in(files: list[Path], columns: list[str]) -> set[tuple[str, ...]]:
    """The rows of `columns` (as text, none missing) in input files that hold them all
    (only those columns are read where they can be)."""
    from data_contracts.readers import _read_any

    values: set[tuple[str, ...]] = set()
    for path in files:
        if path.suffix == ".parquet":
            try:
                frame = pl.read_parquet(path, columns=columns)
            except (pl.exceptions.PolarsError, OSError):
                frame = _read_any(path)
        else:
            frame = _read_any(path)
        if set(columns) <= set(frame.columns):
            rows = frame.select(columns).drop_nulls().iter_rows()
            values.update(tuple(str(v) for v in row) for row in rows)
    return values


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
    per table and run, each record exactly once. raw/ holds a stored record when a
    file the service wrote (`from_service`: an earlier pull, an outcome's label
    export) has its id, or another file has a row of its id with the same content
    (the canonical content hash of the contract columns and goods lines, see
    `_same_shipments`). A row of its id with other content (a declaration raw/ held
    and validation rejected, resubmitted corrected over the API) does not hold it:
    the stored record is written, and `run_validate` lets it replace the rejected
    rows (see `_validate`). `caravan features` then counts every declaration and
    traveller the service counted when it scored, not only the inspected ones
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
    from serving.db import engine_if_present, sqlite_path
    from serving.history import frame_of
    from serving.services import prepare_shipment, prepare_traveller

    say = progress or (lambda _msg: None)
    url = database_url or url_of(Settings(data=layout.root), layout)
    engine = engine_if_present(url)
    if engine is None:
        return {}
    path = sqlite_path(url)  # (named in an error)
    try:
        if not inspect(engine).has_table("shipments"):
            return {}
        say("pulling the API's records from the database")
        raw = layout.raw
        files = {
            t: _by_writer(input_files(raw, t), t) for t in ("shipments", "items", "travellers")
        }
        have_ships = _ids_in(files["shipments"][0], "shipment_id")
        elsewhere_ships = _ids_in(files["shipments"][1], "shipment_id")
        # (goods lines written by a pull that stopped before its shipments were)
        have_lines = _values_in(files["items"][0], ["shipment_id", "item_id"])
        have_extras = _ids_in(sorted((raw / "extras").glob("*.parquet")), "shipment_id")
        have_travellers = _ids_in(files["travellers"][0], "traveller_record_id")
        elsewhere_travellers = _ids_in(files["travellers"][1], "traveller_record_id")
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
                (str(rid), dict(payload))
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
    # the stored records other files hold with the same content are held
    same = _same_shipments(
        files["shipments"][1],
        files["items"][1],
        {sid: (p, lines.get(sid, [])) for sid, p in ships if sid in elsewhere_ships},
    )
    ships = [(sid, payload) for sid, payload in ships if sid not in same]
    same = _same_travellers(
        files["travellers"][1], {rid: p for rid, p in travellers if rid in elsewhere_travellers}
    )
    travellers = [(rid, payload) for rid, payload in travellers if rid not in same]
    name = f"{API_EXPORT}{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}.parquet"
    pulled: dict[str, int] = {}
    if ships:
        prepared = [
            prepare_shipment({**payload, "items": lines.get(sid, [])}, stored=True)
            for sid, payload in ships
        ]
        records = [p.record for p in prepared]
        items = [
            line
            for p in prepared
            for line in p.items
            if (str(line["shipment_id"]), str(line["item_id"])) not in have_lines
        ]
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
        rows = [prepare_traveller(t, stored=True)[0] for _, t in travellers]
        write_parquet(
            frame_of(rows, CONTRACTS["travellers"].polars_schema), raw / "travellers" / name
        )
        pulled["travellers"] = len(rows)
    return pulled


def _by_writer(files: list[Path], table: str) -> tuple[list[Path], list[Path]]:
    """(the files the service wrote, the others), each in name order."""
    return (
        [p for p in files if from_service(p, table)],
        [p for p in files if not from_service(p, table)],
    )


def _shipment_digest(record: dict[str, Any], lines: list[dict[str, Any]]) -> str | None:
    """The canonical content hash (`serving.services.content_hash`, as the service
    hashes a shipment it is given) of a shipment's contract columns and goods lines;
    None when they are not a valid shipment. The `extras` a stored shipment brought
    are left out: raw/shipments rows never carry them (raw/extras holds them)."""
    from pydantic import ValidationError

    from serving.services import jsonable, prepare_shipment

    body = {c: record.get(c) for c in CONTRACTS["shipments"].column_names}
    body["items"] = [{c: line.get(c) for c in CONTRACTS["items"].column_names} for line in lines]
    try:
        return prepare_shipment(jsonable(body), stored=True).content_hash
    except (ValidationError, ValueError, TypeError):
        return None


def _traveller_digest(record: dict[str, Any]) -> str | None:
    """As `_shipment_digest`, of a traveller record."""
    from pydantic import ValidationError

    from serving.services import jsonable, prepare_traveller

    body = {c: record.get(c) for c in CONTRACTS["travellers"].column_names}
    try:
        return prepare_traveller(jsonable(body), stored=True)[1]
    except (ValidationError, ValueError, TypeError):
        return None


def _rows_of(files: list[Path], table: str, key: str, ids: set[str]) -> list[dict[str, Any]]:
    """The rows of input files whose `key` is one of `ids` (contract columns, typed
    as `caravan validate` reads them; only those rows are prepared)."""
    from data_contracts.readers import _read_any, from_frame

    contract = CONTRACTS[table]
    wanted = pl.col(key).cast(pl.String).is_in(sorted(ids))
    rows: list[dict[str, Any]] = []
    for path in files if ids else []:
        frame: pl.DataFrame | None = None
        if path.suffix == ".parquet":
            try:
                frame = pl.scan_parquet(path).filter(wanted).collect()
            except (pl.exceptions.PolarsError, OSError):
                frame = None
        if frame is None:
            frame = _read_any(path)  # (which names a file it cannot read)
        if key not in frame.columns:
            continue
        frame = frame.filter(wanted)
        if frame.height:
            prepared = from_frame(frame, contract, str(path))
            rows += prepared.select(contract.column_names).to_dicts()
    return rows


def _same_shipments(
    ship_files: list[Path],
    item_files: list[Path],
    stored: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
) -> set[str]:
    """The ids of `stored` (id -> payload, goods lines) that a row of `ship_files`
    holds with the same content (with the lines of `item_files` under its id)."""
    if not stored:
        return set()
    ids = set(stored)
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in _rows_of(item_files, "items", "shipment_id", ids):
        lines.setdefault(str(line["shipment_id"]), []).append(line)
    held: dict[str, set[str | None]] = {}
    for row in _rows_of(ship_files, "shipments", "shipment_id", ids):
        sid = str(row["shipment_id"])
        held.setdefault(sid, set()).add(_shipment_digest(row, lines.get(sid, [])))
    return {
        sid
        for sid, (payload, given) in stored.items()
        if (digest := _shipment_digest(payload, given)) is not None and digest in held.get(sid, ())
    }


def _same_travellers(files: list[Path], stored: dict[str, dict[str, Any]]) -> set[str]:
    """The ids of `stored` (id -> payload) that a row of `files` holds with the same
    content."""
    if not stored:
        return set()
    held: dict[str, set[str | None]] = {}
    for row in _rows_of(files, "travellers", "traveller_record_id", set(stored)):
        held.setdefault(str(row["traveller_record_id"]), set()).add(_traveller_digest(row))
    return {
        rid
        for rid, payload in stored.items()
        if (digest := _traveller_digest(payload)) is not None and digest in held.get(rid, ())
    }


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


# The tables whose rows belong to a record the service stores, by the record's id.
_RECORD_KEYS = {
    "shipments": "shipment_id",
    "items": "shipment_id",
    "outcomes": "shipment_id",
    "travellers": "traveller_record_id",
}
_RECORD_TABLES = {"shipment_id": "shipments", "traveller_record_id": "travellers"}


def _validate(
    raw: dict[str, pl.DataFrame],
    absent: dict[str, list[str]],
    files: dict[str, list[Path]],
    say: Progress,
) -> ValidationResult:
    """`validate_tables`, where a record the service stored replaces the rejected
    rows of its id that other files hold (`files`: the files `raw` was read from, in
    order).

    Validation keeps the first row of an id. A declaration (or traveller record)
    that raw/ held and validation rejected may be resubmitted, corrected, over the
    API: the service accepts an id that validated/ does not hold, scores it and
    stores it, and the pull writes it to a file of its own (`from_service`). That
    record must reach validated/ whatever the order of the files, and the rejected
    rows stay in quarantine/ with their own reasons. So, when the service's files
    and other files hold rows of the same id:

    1. the input without the service's rows of those ids is validated: it says
       which of those ids the other files' rows give no accepted row (of the record,
       its goods lines or outcomes: all rejected);
    2. for those ids, the other files' rows (the record, its goods lines, its
       outcomes) keep the verdicts of step 1, and the rest of the input, the
       service's record in it, is validated once more, as it stands alone.

    An id the other files' rows give an accepted row keeps the usual rule (the
    first row is kept, a later one is quarantined as a duplicate). Each input row
    ends exactly once in validated/ or quarantine/, and the same raw/ always gives
    the same result."""
    sources = {t: sorted(str(p) for p in files.get(t, []) if from_service(p, t)) for t in raw}
    service = {t: pl.col(SOURCE_FILE).is_in(sources[t]) for t in raw}
    shared: dict[str, list[str]] = {}
    for key, table in _RECORD_TABLES.items():
        frame = raw[table].filter(pl.col(key).is_not_null())
        mine = frame.filter(service[table])[key].unique()
        both = frame.filter(~service[table] & pl.col(key).is_in(mine.implode()))[key]
        shared[key] = sorted(both.unique().to_list())
    if not any(shared.values()):
        return validate_tables(raw, absent=absent)

    def rows(table: str, ids: dict[str, list[str]], of_service: bool) -> pl.Expr:
        key = _RECORD_KEYS.get(table)
        if key is None or not ids.get(key):
            return pl.lit(False)
        writer = service[table] if of_service else ~service[table]
        return writer & pl.col(key).is_in(ids[key])

    first = validate_tables(
        {t: f.filter(~rows(t, shared, of_service=True)) for t, f in raw.items()}, absent=absent
    )
    accepted: dict[str, set[str]] = {key: set() for key in shared}
    for table, key in _RECORD_KEYS.items():
        accepted[key].update(first.tables[table].accepted[key].drop_nulls().to_list())
    replaced = {key: [i for i in ids if i not in accepted[key]] for key, ids in shared.items()}
    if not any(replaced.values()):
        return validate_tables(raw, absent=absent)
    for key, ids in replaced.items():
        if ids:
            what = "shipment(s)" if key == "shipment_id" else "traveller record(s)"
            say(f"{len(ids)} {what} the service stored replace rejected rows of the same id")
    second = validate_tables(
        {t: f.filter(~rows(t, replaced, of_service=False)) for t, f in raw.items()},
        absent=absent,
    )
    tables: dict[str, TableResult] = {}
    for table, res in second.tables.items():
        superseded = rows(table, replaced, of_service=False)
        old = first.tables[table]
        order = {name: i for i, name in enumerate(str(p) for p in files.get(table, []))}
        tables[table] = TableResult(
            table,
            res.accepted,
            _in_input_order(
                pl.concat(
                    [res.quarantine, old.quarantine.filter(superseded)], how="vertical_relaxed"
                ),
                order,
            ),
            _in_input_order(
                pl.concat([res.view, old.view.filter(superseded)], how="vertical_relaxed"), order
            ),
        )
    return ValidationResult(tables)


def _in_input_order(frame: pl.DataFrame, order: dict[str, int]) -> pl.DataFrame:
    """Rows in the order of the input: by file (`order`: file -> position), then row."""
    position = pl.col(SOURCE_FILE).replace_strict(order, default=len(order), return_dtype=pl.Int64)
    return frame.sort(position, SOURCE_ROW, maintain_order=True)


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
    read: dict[str, list[Path]] = {}
    for table in RAW_TABLES:
        files = read[table] = input_files(layout.raw, table)
        if table == "shipments" and not files:
            raise InputFileError(
                layout.raw / "shipments.parquet",
                "no shipments input found (expected raw/shipments.parquet, "
                ".csv, .ndjson or files in raw/shipments/)",
            )
        say(f"reading {table} ({len(files)} file(s))")
        raw[table] = read_input(files, CONTRACTS[table])
    if (cutoff := read_retention(layout)) is not None:
        # (what retention erased stays erased: neither validated/ nor quarantine/)
        gone = (pl.col("departure_at") < cutoff).fill_null(False)
        expired = {"travellers": int(raw["travellers"].select(gone.sum()).item())}
        raw["travellers"] = raw["travellers"].filter(~gone)
    else:
        expired = {}
    say("checking contract rules")
    absent = read_absent(layout)
    result = _validate(raw, absent, read, say)
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
    run = ValidateRun(result, report, pulled, {t: n for t, n in expired.items() if n})
    (report_dir / "summary.json").write_text(json.dumps(run.summary(), indent=2))
    return run
