"""Loaders for real reference files: watchlists (UN SC Consolidated List XML,
national CSV lists) and the HS nomenclature.

Every watchlist loader returns a frame with exactly the WATCHLIST contract's
columns (`data_contracts.schemas.WATCHLIST.polars_schema`). A file that cannot be
read as a whole raises `ReferenceFileError` naming the file and the problem;
`validate_watchlist` lists, per row, what breaks the contract.

The loaders live in submodules, imported explicitly:
`data_contracts.loaders.un_sc`, `data_contracts.loaders.national`,
`data_contracts.loaders.hs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from data_contracts.schemas import WATCHLIST


class ReferenceFileError(ValueError):
    """A reference file could not be loaded; the message names the file and why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class RowProblem:
    """One row that breaks a contract: its row number (as the loader counts
    them, see each loader), its id when known, and why."""

    row: int
    entry_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" ({self.entry_id})" if self.entry_id else ""
        return f"row {self.row}{who}: {self.reason}"


def watchlist_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Build a frame with exactly the WATCHLIST columns and types from row dicts."""
    schema = WATCHLIST.polars_schema
    return pl.DataFrame(
        [{name: row.get(name) for name in schema.names()} for row in rows],
        schema=schema,
        orient="row",
    )


def validate_watchlist(frame: pl.DataFrame) -> list[RowProblem]:
    """Check every row against the WATCHLIST contract's strict pydantic model and
    the uniqueness of `entry_id`. Rows are numbered from 1 in frame order."""
    model = WATCHLIST.pydantic_model()
    problems: list[RowProblem] = []
    seen: set[str] = set()
    for number, row in enumerate(frame.iter_rows(named=True), start=1):
        entry_id = row.get("entry_id")
        record = dict(row)
        if record.get("entity_type") is not None:
            record["entity_type"] = str(record["entity_type"])
        try:
            model.model_validate(record)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(RowProblem(number, entry_id, f"{where}: {err['msg']}"))
        if entry_id is not None:
            if entry_id in seen:
                problems.append(RowProblem(number, entry_id, "entry_id is not unique"))
            seen.add(entry_id)
    return problems
