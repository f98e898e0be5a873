"""How inspections were chosen, in a mapping (UAT2 DS F11, F12): `selection: columns`
without the selection columns, and `selection: census` for a file where not every
declaration was inspected, are refused by `caravan import` with a message naming the
mapping path and the reason, before anything is written (no Polars traceback, no
targeted inspection recorded as a random draw of probability 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data_contracts.mapping import DeclarationMapping, MappingError
from data_contracts.settings import DataLayout
from tests.conftest import caravan
from tests.pipelines.test_import_uat import HEADER, MAPPING, _export, _row


def _mapping(**outcomes: Any) -> dict[str, Any]:
    m = json.loads(json.dumps(MAPPING))
    m["outcomes"].update(outcomes)
    return m


def _refused(tmp_path: Path, mapping: dict[str, Any], rows: list[str]) -> str:
    csv, path = _export(tmp_path, rows, mapping)
    result = caravan("import", str(csv), "--mapping", str(path), data=tmp_path / "d", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert not (tmp_path / "d" / "raw" / "outcomes").exists()  # nothing written
    return " ".join((result.stdout + result.stderr).split())


def test_selection_columns_without_the_probability_is_refused_naming_it(tmp_path: Path) -> None:
    mapping = _mapping(selection="columns")
    mapping["outcomes"]["columns"]["selection_method"] = {"value": "rule"}
    said = _refused(tmp_path, mapping, [_row("A1"), _row("A2", Found="Yes", Seized="parts")])
    assert "outcomes.columns.selection_probability: is required with selection: columns" in said
    assert "inverse-propensity weights" in said
    mapping["outcomes"]["columns"].pop("selection_method")
    said = _refused(tmp_path, mapping, [_row("A1")])
    assert "outcomes.columns.selection_method: is required with selection: columns" in said


def test_census_with_inspected_only_when_is_refused(tmp_path: Path) -> None:
    mapping = _mapping(inspected_only_when="Checked")
    said = _refused(tmp_path, mapping, [_row("A1"), _row("A2", Found="", Checked="")])
    assert "outcomes.inspected_only_when: cannot go with selection: census" in said
    assert "selection: columns" in said


def test_census_when_some_declaration_has_no_result_is_refused(tmp_path: Path) -> None:
    said = _refused(tmp_path, _mapping(), [_row("A1"), _row("A2", Found="")])
    assert "outcomes.selection: census says every declaration in the file was inspected" in said
    assert "1 declaration(s) have no value in Found (e.g. A2)" in said


def test_selection_columns_with_both_records_what_the_export_says(tmp_path: Path) -> None:
    mapping = _mapping(selection="columns", inspected_only_when="Checked")
    mapping["outcomes"]["columns"]["selection_method"] = {"value": "rule"}
    mapping["outcomes"]["columns"]["selection_probability"] = {"value": 1.0}
    csv, path = _export(tmp_path, [_row("A1"), _row("A2", Found="", Checked="")], mapping)
    caravan("import", str(csv), "--mapping", str(path), data=tmp_path / "d")
    raw = pl.concat(
        pl.read_parquet(f) for f in sorted(DataLayout(tmp_path / "d").raw.glob("outcomes/*"))
    )
    assert raw["shipment_id"].to_list() == ["A1"]
    assert raw["selection_method"].to_list() == ["rule"]


def test_check_accepts_a_census_and_refuses_columns_without_the_selection_columns() -> None:
    columns = HEADER.split(",")
    mapping = DeclarationMapping.model_validate(_mapping())
    mapping.check(columns, "export.csv")  # no error
    with pytest.raises(MappingError) as err:
        DeclarationMapping.model_validate(_mapping(selection="columns")).check(
            columns, "export.csv"
        )
    assert err.value.path == "outcomes.columns.selection_method"
