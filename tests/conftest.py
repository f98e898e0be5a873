"""Shared fixtures: a small synthetic world on disk, generated once per test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from data_contracts.settings import DataLayout

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
SMALL_WORLD = {"n_shipments": 10_000, "seed": 11}


def caravan(
    *args: str, data: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `caravan` command line."""
    cmd = [sys.executable, "-m", "pipelines", *args]
    if data is not None:
        cmd += ["--data", str(data)]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"caravan {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def trained_world(
    root: Path, world: Any, trainings: tuple[Any, ...] = (None,), promote: str | None = "1"
) -> list[str]:
    """Generate `world` (a WorldConfig) into `root`, validate, build features, train
    once per entry of `trainings` (a TrainConfig, or None for the default) and
    promote version `promote`; the versions registered, in order."""
    from pipelines.features import run_features
    from pipelines.generate import run_generate
    from pipelines.modelling import run_promote, run_train
    from pipelines.validate import run_validate

    layout = DataLayout(root)
    run_generate(layout, world)
    run_validate(layout, gx=False)
    run_features(layout)
    versions = [run_train(layout, config=config).version for config in trainings]
    if promote is not None:
        run_promote(layout, promote, who="test", reason=None)
    return versions


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """A generated and validated small world (in-process, for speed)."""
    from pipelines.generate import run_generate
    from pipelines.synthetic import WorldConfig
    from pipelines.validate import run_validate

    layout = DataLayout(tmp_path_factory.mktemp("world"))
    run_generate(layout, WorldConfig(**SMALL_WORLD))  # type: ignore[arg-type]
    run_validate(layout, gx=False)
    return layout
