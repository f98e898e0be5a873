"""`caravan features`: validated/ → features/ (one row per shipment, versioned)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.schemas import CONTRACTS
from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from features.inputs import unavailable
from features.registry import extra_codes, feature_set_version, specs
from pipelines.validate import read_absent, write_parquet

FEATURES_FILE = "features.parquet"
WATCHLIST_FILE = "watchlist.parquet"


class MissingInputError(Exception):
    """A step's input is not there yet; the message says which command makes it."""


def _read(path: Path, table: str, made_by: str) -> pl.DataFrame:
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run `{made_by}` first")
    frame = pl.read_parquet(path).rechunk()  # (one chunk: appends to it stay cheap)
    schema = CONTRACTS[table].polars_schema
    return frame.select([pl.col(n).cast(t) for n, t in schema.items()])


def load_history(layout: DataLayout) -> History:
    """Everything validated so far."""
    v = layout.validated
    watchlist_path = v / WATCHLIST_FILE
    return History(
        shipments=_read(v / "shipments.parquet", "shipments", "caravan validate"),
        items=_read(v / "items.parquet", "items", "caravan validate"),
        outcomes=_read(v / "outcomes.parquet", "outcomes", "caravan validate"),
        travellers=_read(v / "travellers.parquet", "travellers", "caravan validate"),
        watchlist=(
            _read(watchlist_path, "watchlist", "caravan watchlist import")
            if watchlist_path.exists()
            else None
        ),
    )


EXTRA_CODES = "codes.json"  # raw/extras/codes.json: the code tables of categorical extras


def read_extra_codes(layout: DataLayout) -> dict[str, list[str]]:
    """The code tables of the categorical extras given so far (`extra_<column>` ->
    values, code = position + 1): raw/extras/codes.json, kept beside the extras so
    that rebuilding features/ keeps the codes; for a data directory whose features
    were built before it existed, the tables recorded in features/feature_set.json."""
    path = layout.raw / "extras" / EXTRA_CODES
    if path.exists():
        return {str(k): [str(v) for v in vs] for k, vs in json.loads(path.read_text()).items()}
    meta = layout.features / "feature_set.json"
    if meta.exists():
        known = json.loads(meta.read_text()).get("extras", {}).get("categorical", {})
        return {str(k): [str(v) for v in vs] for k, vs in known.items()}
    return {}


def _with_extras(layout: DataLayout, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Join the extra columns an import kept (raw/extras/) as `extra_*` features:
    numbers as they are, categories as integer codes (0 for missing) from code
    tables that only grow: a value keeps the code it was first given, a new value
    gets the next code, so a model trained earlier scores the shipments it knows
    with the codes it was trained with. The tables are kept in raw/extras/codes.json
    and recorded in feature_set.json (and, by `caravan train`, with each model)."""
    folder = layout.raw / "extras"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return frame, {"numeric": [], "categorical": {}}
    extras = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").unique(
        "shipment_id", keep="first", maintain_order=True
    )
    numeric = [c for c, t in extras.schema.items() if c != "shipment_id" and t.is_numeric()]
    categorical = [c for c, t in extras.schema.items() if c != "shipment_id" and t == pl.String]
    seen = {f"extra_{c}": extras[c].drop_nulls().unique().to_list() for c in categorical}
    tables = extra_codes(read_extra_codes(layout), seen)
    codes = {c: tables[f"extra_{c}"] for c in categorical}
    path = folder / EXTRA_CODES
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(tables, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    extras = extras.select(
        "shipment_id",
        *[pl.col(c).cast(pl.Float64).alias(f"extra_{c}") for c in numeric],
        *[
            pl.col(c)
            .replace_strict(
                {v: i + 1 for i, v in enumerate(codes[c])}, default=0, return_dtype=pl.Int32
            )
            .alias(f"extra_{c}")
            for c in categorical
        ],
    )
    meta = {
        "numeric": [f"extra_{c}" for c in numeric],
        "categorical": {f"extra_{c}": codes[c] for c in categorical},
    }
    joined = frame.join(extras, on="shipment_id", how="left", maintain_order="left")
    # a shipment without extras (e.g. one the API stored without them) is missing
    # its categories: code 0, as a missing value and as serving codes it
    return joined.with_columns(pl.col(f"extra_{c}").fill_null(0) for c in categorical), meta


def _unavailable(layout: DataLayout, history: History) -> dict[str, str]:
    missing = {
        name
        for name, frame in (("travellers", history.travellers), ("outcomes", history.outcomes))
        if frame.height == 0
    }
    if history.watchlist is None or history.watchlist.height == 0:
        missing.add("watchlist")
    return unavailable(read_absent(layout), missing)


def run_features(
    layout: DataLayout, progress: Callable[[str], None] | None = None
) -> tuple[pl.DataFrame, Path]:
    say = progress or (lambda _m: None)
    say("reading validated inputs")
    history = load_history(layout)
    say(f"computing features of {history.shipments.height:,} shipments")
    frame = build_features(history.shipments, history.items, history)
    frame, extras = _with_extras(layout, frame)
    frame = frame.sort("declared_at", "shipment_id")
    version = feature_set_version(extras)
    say("writing features")
    path = layout.features / FEATURES_FILE
    write_parquet(frame, path)
    meta = {
        "feature_set_version": version,
        "rows": frame.height,
        "features": [
            {
                "name": s.name,
                "family": s.family.value,
                "kind": s.kind.value,
                "description": s.description,
                "reason_en": s.reason_en,
                "reason_ru": s.reason_ru,
                "categories": list(s.categories),
            }
            for s in specs()
        ],
        "extras": extras,
        "unavailable": _unavailable(layout, history),
        "empty": [c for c in frame.columns if frame[c].null_count() == frame.height],
    }
    (layout.features / "feature_set.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return frame, path
