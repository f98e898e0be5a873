"""The command line: every command documents itself and takes the data directory."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

COMMANDS = [
    "generate",
    "validate",
    "features",
    "train",
    "evaluate",
    "promote",
    "score",
    "watchlist import",
]
runner = CliRunner()


def test_top_level_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command.split()[0] in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_takes_data(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--data" in result.output
    assert "CARAVAN_DATA" in result.output


def test_generate_json_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["generate", "--data", str(tmp_path), "--shipments", "2000", "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    raw = pl.read_parquet(tmp_path / "raw" / "shipments.parquet")
    assert summary["rows"]["raw/shipments"] == raw.height
    truth = pl.read_parquet(tmp_path / "truth" / "truth.parquet")
    assert summary["trafficking_shipments"] == truth["is_trafficking"].sum()
    assert sum(summary["typologies"].values()) == summary["trafficking_shipments"]


def test_later_steps_say_which_command_to_run_first(tmp_path: Path) -> None:
    result = runner.invoke(app, ["features", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "caravan validate" in result.output
