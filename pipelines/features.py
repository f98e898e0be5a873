"""`caravan features`: validated/ → features/ (one row per shipment, versioned)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl

from data_contracts.schemas import CONTRACTS
from data_contracts.settings import DataLayout
from features.build import build_features
from features.context import History
from features.registry import feature_set_version, specs
from pipelines.validate import write_parquet

FEATURES_FILE = "features.parquet"
WATCHLIST_FILE = "watchlist.parquet"


class MissingInputError(Exception):
    """A step's input is not there yet; the message says which command makes it."""


def _read(path: Path, table: str, made_by: str) -> pl.DataFrame:
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run `{made_by}` first")
    frame = pl.read_parquet(path)
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


def run_features(
    layout: DataLayout, progress: Callable[[str], None] | None = None
) -> tuple[pl.DataFrame, Path]:
    say = progress or (lambda _m: None)
    say("reading validated inputs")
    history = load_history(layout)
    say(f"computing features of {history.shipments.height:,} shipments")
    frame = build_features(history.shipments, history.items, history)
    frame = frame.sort("declared_at", "shipment_id")
    version = feature_set_version()
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
    }
    (layout.features / "feature_set.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return frame, path
