"""Model tests: determinism, exact explanations, behaviour, minimum quality."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from data_contracts.settings import DataLayout
from features.build import build_features, model_columns
from features.context import History
from models.dataset import Split, Target, labelled, matrix, time_split
from models.evaluate import evaluate
from models.explain import contributions, reasons
from models.train import TrainConfig, Trained, fit, predict
from pipelines.features import load_history
from pipelines.generate import run_generate
from pipelines.synthetic import WorldConfig
from pipelines.validate import run_validate

CONFIG = TrainConfig(max_rounds=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("model-world"))
    run_generate(layout, WorldConfig(n_shipments=150_000, seed=21))
    run_validate(layout, gx=False)
    return layout


@pytest.fixture(scope="module")
def history(world: DataLayout) -> History:
    return load_history(world)


@pytest.fixture(scope="module")
def features(history: History) -> pl.DataFrame:
    return build_features(history.shipments, history.items, history)


@pytest.fixture(scope="module")
def split(history: History, features: pl.DataFrame) -> Split:
    return time_split(labelled(features, history.outcomes, Target.ARMS))


@pytest.fixture(scope="module")
def trained(split: Split) -> Trained:
    return fit(split, CONFIG)


def test_same_data_and_seed_give_the_same_model(split: Split, trained: Trained) -> None:
    again = fit(split, CONFIG)
    assert again.booster.model_to_string() == trained.booster.model_to_string()
    other = fit(split, TrainConfig(max_rounds=300, seed=8))
    assert other.booster.model_to_string() != trained.booster.model_to_string()


def test_without_early_stopping_the_model_keeps_every_round(split: Split, trained: Trained) -> None:
    """A model of a set size (`early_stopping_rounds=None`): every round's tree is
    kept, and the stopping note says so; with early stopping, the same world stops
    well before 300 rounds."""
    fixed = fit(split, TrainConfig(max_rounds=120, num_leaves=63, early_stopping_rounds=None))
    assert fixed.booster.num_trees() == fixed.best_iteration == 120
    assert fixed.stopping.note is not None
    assert "early stopping off: the model keeps all 120 trees" in fixed.stopping.note
    assert trained.booster.num_trees() == trained.best_iteration < 120


def test_split_is_by_time_without_overlap(split: Split) -> None:
    assert split.train["declared_at"].max() < split.valid["declared_at"].min()  # type: ignore[operator]
    assert split.valid["declared_at"].max() < split.test["declared_at"].min()  # type: ignore[operator]
    assert split.train["weight"].min() >= 1.0  # type: ignore[operator]
    # Random draws (small selection probability) weigh more than must-inspect rules.
    rnd = split.train.filter(pl.col("selection_method") == "random")["weight"].mean()
    rule = split.train.filter(pl.col("selection_probability") >= 1.0)["weight"].mean()
    assert rnd > 5 * rule  # type: ignore[operator]


def test_contributions_add_up_to_the_score(split: Split, trained: Trained) -> None:
    x = matrix(split.test.head(200))
    contrib = contributions(trained.booster, x)
    raw = trained.booster.predict(x, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=1e-9, atol=1e-9)
    prob = predict(trained.booster, x)
    np.testing.assert_allclose(1 / (1 + np.exp(-contrib.sum(axis=1))), prob, rtol=1e-9)


def test_reasons_are_the_strongest_positive_contributions(split: Split, trained: Trained) -> None:
    x = matrix(split.test)
    prob = predict(trained.booster, x)
    i = int(np.argmax(prob))
    contrib = contributions(trained.booster, x[i : i + 1])[0]
    rs = reasons(contrib, model_columns(), x[i], {"hs4_main": "8466", "origin_country": "CN"})
    assert rs, "the riskiest shipment has reasons"
    logits = [r.log_odds for r in rs]
    assert logits == sorted(logits, reverse=True)
    assert logits[0] == pytest.approx(float(contrib[:-1].max()))
    assert all(r.text_en and r.text_ru and "{" not in r.text_en for r in rs)
    assert all(0 < r.probability_effect <= prob[i] for r in rs)


def _rescore(
    history: History, trained: Trained, ships: pl.DataFrame, items: pl.DataFrame
) -> np.ndarray:
    feats = build_features(ships, items, history)
    return predict(trained.booster, matrix(feats))


def test_score_does_not_change_when_only_ids_change(history: History, trained: Trained) -> None:
    ships = history.shipments.tail(300)
    items = history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    base = _rescore(history, trained, ships, items)
    renamed = ships.with_columns(("NEW-" + pl.col("shipment_id")).alias("shipment_id"))
    items2 = items.with_columns(
        ("NEW-" + pl.col("shipment_id")).alias("shipment_id"),
        ("NEW-" + pl.col("item_id")).alias("item_id"),
    )
    np.testing.assert_array_equal(base, _rescore(history, trained, renamed, items2))


def test_score_does_not_change_with_another_transliteration(
    history: History, trained: Trained
) -> None:
    ships = history.shipments.tail(300).with_columns(pl.lit(None, pl.String).alias("consignee_id"))
    items = history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    base = _rescore(history, trained, ships, items)
    variant = ships.with_columns(
        pl.col("consignee_name")
        .str.replace_all("yev", "ev")
        .str.replace_all("Kh", "H")
        .str.replace_all("LLC", "OOO")
    )
    assert not variant["consignee_name"].equals(ships["consignee_name"])
    np.testing.assert_array_equal(base, _rescore(history, trained, variant, items))


def test_firearm_part_words_raise_the_score(history: History, trained: Trained) -> None:
    ships = history.shipments.tail(400)
    items = history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    base = _rescore(history, trained, ships, items)
    loaded = items.with_columns(pl.col("description") + ", bolt carrier and trigger assembly")
    raised = _rescore(history, trained, ships, loaded)
    assert (raised >= base - 1e-12).all()
    assert np.median(raised / base) > 1.05


def test_minimum_quality_on_a_fixed_world(
    world: DataLayout, split: Split, trained: Trained, features: pl.DataFrame
) -> None:
    from pipelines.modelling import _rules_scores

    start, end = split.test["declared_at"].min(), split.test["declared_at"].max()
    window = features.filter(pl.col("declared_at").is_between(start, end))
    ev = evaluate(
        model_version=None,
        test=split.test,
        test_scores=predict(trained.booster, matrix(split.test)),
        window_shipments=window,
        window_scores=predict(trained.booster, matrix(window)),
        rules_scores=_rules_scores(world, window),
        truth=pl.read_parquet(world.truth / "truth.parquet"),
    )
    five = ev.at_capacity["5%"]
    assert five["true_recall"] >= 0.5
    assert five["true_recall"] >= 2 * five["rules_true_recall"]
    assert five["true_recall"] >= 5 * five["random_true_recall"]


def test_batch_explanations_equal_row_by_row_reasons(split: Split, trained: Trained) -> None:
    from features.build import CONTEXT
    from models.explain import explain_frame

    frame = split.test.head(150)
    x = matrix(frame)
    rows = explain_frame(trained.booster, frame, x, model_columns(), list(CONTEXT))
    contrib = contributions(trained.booster, x)
    ctx = frame.select([c for c in CONTEXT if c in frame.columns]).to_dicts()
    for i, row in enumerate(rows):
        one = [r.as_dict() for r in reasons(contrib[i], model_columns(), x[i], ctx[i])]
        assert row["reasons"] == one
