"""Contributions computed over a model's trees in parts, in parallel threads
(`models.explain.TreeParts`): the same values as LightGBM's `pred_contrib` of the
whole model, alone or under concurrent calls, and the parts are used again after a
call that failed."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import pytest

from models import explain
from models.explain import PARALLEL_MIN_TREES, TreeParts
from models.train import SMALL_BATCH, prediction_threads


def _booster(rounds: int) -> lgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 - np.nan_to_num(x[:, 2])
    y = (signal + rng.normal(scale=0.5, size=len(x)) > 1.0).astype(float)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _booster(PARALLEL_MIN_TREES + 50)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 6))
    x[0, 3] = np.nan
    return x


@pytest.mark.parametrize("parts", [2, 3])
def test_parts_give_the_whole_models_contributions(booster: lgb.Booster, parts: int) -> None:
    split = TreeParts(booster, parts=parts)
    assert len(split.parts) == parts
    assert sum(p.num_trees() for p in split.parts) == booster.num_trees()
    for n in (1, 9, 40, SMALL_BATCH - 1, SMALL_BATCH):
        x = _rows(n, seed=n)
        before = split.calls_in_parts
        got = split.contributions(x)
        # (every call `predict` would run on one thread, in parts, in threads, a
        # batch's red and yellow rows too; more rows, whole, with OpenMP over them)
        assert split.calls_in_parts - before == (prediction_threads(n) == 1)
        want = booster.predict(x, pred_contrib=True)
        assert got.shape == want.shape == (n, 7)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        # base value + contributions = the raw score, as for the whole model
        np.testing.assert_allclose(got.sum(axis=1), booster.predict(x, raw_score=True), atol=1e-10)


def test_parts_stop_at_the_best_iteration_as_predict_does() -> None:
    """A booster that kept training past its best iteration (early stopping with
    `keep_training_booster`): `predict` uses the trees up to the best one; so do
    the parts."""
    kept = _booster(PARALLEL_MIN_TREES + 60)
    kept.best_iteration = PARALLEL_MIN_TREES + 20
    split = TreeParts(kept, parts=2)
    assert sum(p.num_trees() for p in split.parts) == PARALLEL_MIN_TREES + 20
    x = _rows(3)
    got = split.contributions(x)
    assert split.calls_in_parts == 1
    np.testing.assert_allclose(got, kept.predict(x, pred_contrib=True), rtol=0, atol=1e-10)
    assert not np.allclose(got, kept.predict(x, pred_contrib=True, num_iteration=-1))


def test_a_small_model_is_computed_whole() -> None:
    small = _booster(PARALLEL_MIN_TREES - 1)
    split = TreeParts(small, parts=2)
    assert split.parts == ()
    x = _rows(1)
    np.testing.assert_array_equal(split.contributions(x), small.predict(x, pred_contrib=True))
    assert split.calls_in_parts == 0


def test_concurrent_calls_are_each_exact(booster: lgb.Booster) -> None:
    """Eight threads at once: each call, in parts or whole (another runs in parts),
    gets its own rows' contributions."""
    split = TreeParts(booster, parts=2)
    x = _rows(160, seed=7)
    want = booster.predict(x, pred_contrib=True)
    got = np.full_like(want, np.nan)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(k, len(x), 8):
                got[i] = split.contributions(x[i : i + 1])[0]
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert 0 < split.calls_in_parts <= len(x)
    assert explain._splitting == 0  # (every computation in parts was counted out)


def test_a_failed_call_leaves_the_parts_usable(booster: lgb.Booster) -> None:
    split = TreeParts(booster, parts=2)
    wrong = np.zeros((1, 4))  # (the model reads six features)
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        split.contributions(wrong)
    assert split.calls_in_parts == 1
    assert explain._splitting == 0
    x = _rows(1)
    # (the failed call no longer counts as running: this one runs in parts too)
    np.testing.assert_allclose(
        split.contributions(x), booster.predict(x, pred_contrib=True), atol=1e-10
    )
    assert split.calls_in_parts == 2
