"""Shared fixtures: a small synthetic world on disk, generated once per test process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data_contracts.settings import DataLayout

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
SMALL_WORLD = {"n_shipments": 10_000, "seed": 11}
WEB_WORLD_SHIPMENTS = 4000


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


def caravan_in_process(
    *args: str, data: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the same `caravan` command through the real app object in this process
    (typer's CliRunner: same arguments, exit code, stdout and stderr as `caravan`),
    without the seconds each new interpreter spends importing. Tests keep at least
    one real `caravan` subprocess per command family."""
    import traceback

    from typer.testing import CliRunner

    from pipelines.cli import app

    argv = [*args, *(["--data", str(data)] if data is not None else [])]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200", **(env or {})})
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))  # as Python prints it
    done = subprocess.CompletedProcess(["caravan", *argv], result.exit_code, result.stdout, stderr)
    if check and done.returncode != 0:
        raise AssertionError(
            f"caravan {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]
) -> Path:
    """A data directory `build(root)` makes, built once per test run and shared by the
    pytest-xdist workers (the first builds it under a lock, the others wait for it);
    each worker gets its own copy, as when it built it itself."""
    import fcntl
    import shutil

    own = tmp_path_factory.mktemp(name) / "data"
    if "PYTEST_XDIST_WORKER" not in os.environ:
        build(own)
        return own
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    shared.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (shared / "done").exists():
                shutil.rmtree(shared, ignore_errors=True)  # (a build that failed part-way)
                build(shared / "data")
                (shared / "done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    shutil.copytree(shared / "data", own)
    return own


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


def train_on_shuffled_findings(root: Path) -> str:
    """Train one more version on `root`'s world with the inspections' findings
    shuffled among them (a fixed draw): it learns nothing of what a finding looks
    like, so on a world whose trafficking a model can learn it is worse than a model
    trained on the real findings, by construction. The world's own outcomes are put
    back afterwards. Returns the version registered."""
    import numpy as np
    import polars as pl

    from pipelines.modelling import run_train

    path = DataLayout(root).validated / "outcomes.parquet"
    real = path.read_bytes()
    outcomes = pl.read_parquet(path)
    order = np.random.default_rng(0).permutation(outcomes.height)
    outcomes.with_columns(
        outcomes[c].gather(order) for c in ("finding", "finding_category")
    ).write_parquet(path)
    try:
        return run_train(DataLayout(root)).version
    finally:
        path.write_bytes(real)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """A generated and validated small world (in-process, for speed)."""
    from pipelines.generate import run_generate
    from pipelines.synthetic import WorldConfig
    from pipelines.validate import run_validate

    def build(root: Path) -> None:
        layout = DataLayout(root)
        run_generate(layout, WorldConfig(**SMALL_WORLD))  # type: ignore[arg-type]
        run_validate(layout, gx=False)

    return DataLayout(built_once(tmp_path_factory, "small-world", build))


@pytest.fixture(scope="session")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated world with a trained and promoted model (built once): the
    web pages' world, and the serving tests' world where a model must be clearly
    better than one that learnt nothing."""
    from pipelines.synthetic import TYPOLOGIES, WorldConfig

    # More trafficking and random inspections than the default world, so that a small
    # world still teaches the model something (and its reasons are worth reading).
    config = WorldConfig(
        n_shipments=WEB_WORLD_SHIPMENTS,
        seed=5,
        typology_rates=dict.fromkeys(TYPOLOGIES, 0.01),
        random_inspection_share=0.05,
    )
    return built_once(tmp_path_factory, "webworld", lambda root: trained_world(root, config))


def count_screenings(monkeypatch: pytest.MonkeyPatch, method: str = "screen") -> list[list[str]]:
    """The names each later call of `WatchlistIndex.<method>` screens, in call order
    (`screen`: the frame path and priming; `_screen_few`: the row-by-row path)."""
    from features.screening import WatchlistIndex

    calls: list[list[str]] = []
    original = getattr(WatchlistIndex, method)

    def counting(self: WatchlistIndex, names: Any, **kwargs: Any) -> Any:
        calls.append(list(names))
        return original(self, names, **kwargs)

    monkeypatch.setattr(WatchlistIndex, method, counting)
    return calls
