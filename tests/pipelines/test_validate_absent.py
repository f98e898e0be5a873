"""Great Expectations does not check the columns an imported export declared absent."""

from __future__ import annotations

from pathlib import Path

from data_contracts.settings import DataLayout
from pipelines.importer import run_import
from pipelines.validate import read_absent, run_validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo"


def test_no_expectation_runs_on_a_column_declared_absent(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    run_import(layout, EXAMPLE / "mapping.yaml", [EXAMPLE / "declarations.csv"])
    absent = read_absent(layout)
    assert "expected_arrival_at" in absent["shipments"]  # the example has no arrival time
    run = run_validate(layout)
    assert run.report is not None
    page = run.report.read_text(encoding="utf-8")
    for table, columns in absent.items():
        for column in columns:
            assert f"required:{column}<" not in page, (table, column)
    # The columns the export has are still checked.
    assert "required:declared_at<" in page
