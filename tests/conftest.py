"""Shared fixtures: a small synthetic world on disk, generated once per test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
