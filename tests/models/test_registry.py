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
