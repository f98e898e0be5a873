"""The MLflow registry in the data directory: versions, aliases, loading."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from models.registry import CHALLENGER, Registry


def _booster(seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.random((300, 3))
    y = (x[:, seed % 3] > 0.5).astype(int)
    params = {"objective": "binary", "verbose": -1, "seed": seed, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, y), 5)


def _register(reg: Registry, booster: lgb.Booster) -> str:
    with reg.run("test"):
        version = reg.log_model(booster, {"target": "arms"})
    reg.set_alias(CHALLENGER, version)
    return version


def test_each_data_directory_loads_its_own_model(tmp_path: Path) -> None:
    a = Registry(tmp_path / "a" / "mlflow.db", tmp_path / "a" / "artifacts")
    b = Registry(tmp_path / "b" / "mlflow.db", tmp_path / "b" / "artifacts")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _booster(0), _booster(1)
    assert _register(a, first) == "1"
    assert _register(b, second) == "1"
    x = np.random.default_rng(9).random((20, 3))
    # Loading from a after b was last used still gives a's model, by number and alias.
    loaded, mv = a.load("1")
    np.testing.assert_allclose(loaded.predict(x), first.predict(x))
    loaded, mv = a.load(CHALLENGER)
    assert mv.version == "1" and mv.tags["target"] == "arms"
    np.testing.assert_allclose(loaded.predict(x), first.predict(x))
    loaded, _ = b.load("1")
    np.testing.assert_allclose(loaded.predict(x), second.predict(x))


def test_a_moved_data_directory_reads_and_writes_its_own_artifacts(tmp_path: Path) -> None:
    """MLflow records absolute artifact paths. A data directory moved (or restored
    from a backup) to another path still loads its models and run artifacts from
    where it is now, and new runs write there, never to the old path."""
    import shutil

    import mlflow

    def registry(root: Path) -> Registry:
        return Registry(root / "mlflow.db", root / "mlflow-artifacts")

    first, second, third = _booster(0), _booster(1), _booster(2)
    old = tmp_path / "old"
    old.mkdir()
    reg = registry(old)
    with reg.run("test") as run:
        mlflow.log_dict({"recall_at_5pct": 0.5}, "evaluation/evaluation.json")
        assert reg.log_model(first, {"target": "arms"}) == "1"
    run_id = run.info.run_id
    x = np.random.default_rng(9).random((20, 3))

    moved = tmp_path / "moved"
    shutil.move(old, moved)
    reg = registry(moved)
    loaded, _ = reg.load("1")
    np.testing.assert_allclose(loaded.predict(x), first.predict(x))
    assert reg.artifact_json(run_id, "evaluation/evaluation.json") == {"recall_at_5pct": 0.5}
    assert _register(reg, second) == "2"
    assert not old.exists()  # nothing written to the old place
    loaded, mv = reg.load(CHALLENGER)
    assert mv.version == "2"
    np.testing.assert_allclose(loaded.predict(x), second.predict(x))

    # Moved again: versions recorded at both earlier places still load, and a copy
    # left at the previous place is not what is read.
    again = tmp_path / "again"
    shutil.copytree(moved, again)
    reg = registry(again)
    shutil.rmtree(moved / "mlflow-artifacts")
    for version, booster in (("1", first), ("2", second)):
        loaded, _ = reg.load(version)
        np.testing.assert_allclose(loaded.predict(x), booster.predict(x))
    assert _register(reg, third) == "3"
    assert not (moved / "mlflow-artifacts").exists()
    loaded, _ = reg.load("3")
    np.testing.assert_allclose(loaded.predict(x), third.predict(x))
