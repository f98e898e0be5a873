"""The data scientist's loop through the real command line, on a small synthetic
world: train -> evaluate -> promote -> score, and what each leaves behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_contracts.settings import DataLayout
from tests.conftest import caravan

CAPACITY_KEYS = {
    "precision",
    "recall",
    "precision_random_share",
    "recall_random_share",
    "true_recall",
    "rules_true_recall",
    "random_true_recall",
    "per_typology",
}


def _json(stdout: str) -> dict:  # type: ignore[type-arg]
    return json.loads(stdout[stdout.index("{") :])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataLayout, dict]:  # type: ignore[type-arg]
    layout = DataLayout(tmp_path_factory.mktemp("modelling"))
    caravan("generate", "--shipments", "40000", "--seed", "5", data=layout.root)
    caravan("validate", "--no-gx", data=layout.root)
    caravan("features", data=layout.root)
    summary = _json(caravan("train", "--json", data=layout.root).stdout)
    return layout, summary


def test_train_registers_a_challenger_with_its_lineage(trained: tuple[DataLayout, dict]) -> None:  # type: ignore[type-arg]
    layout, summary = trained
    from mlflow.tracking import MlflowClient

    from models.registry import Registry

    reg = Registry(layout.mlflow_db, layout.mlflow_artifacts)
    _, mv = reg.load("challenger")
    assert mv.version == summary["version"] == "1"
    client: MlflowClient = reg.client()
    run = client.get_run(mv.run_id)
    for key in ("feature_set_version", "data_hash", "code_version", "seed", "max_depth"):
        assert run.data.params.get(key), key
    assert run.data.params["data_hash"] == mv.tags["data_hash"]
    logged = {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
    for name in ("index.html", "model_card.md", "model_card.json", "shap_beeswarm.png"):
        assert f"evaluation/{name}" in logged, logged
    # The time split: train < validation < test, never shuffled across time.
    p = run.data.params
    train_to = p["train_window"].split("|")[1]
    valid_from, valid_to = p["valid_window"].split("|")
    test_from = p["test_window"].split("|")[0]
    assert train_to < valid_from and valid_to < test_from


def test_evaluate_json_has_the_documented_shape(trained: tuple[DataLayout, dict]) -> None:  # type: ignore[type-arg]
    layout, _ = trained
    ev = _json(caravan("evaluate", "--version", "1", "--json", data=layout.root).stdout)
    assert ev["model_version"] == "1"
    assert len(ev["test_window"]) == 2 and ev["test_window"][0] < ev["test_window"][1]
    assert set(ev["at_capacity"]) == {"1%", "2%", "5%", "10%"}
    for cap, m in ev["at_capacity"].items():
        assert set(m) >= CAPACITY_KEYS, cap
        assert 0.0 <= m["true_recall"] <= 1.0
    # More capacity never catches less.
    recalls = [ev["at_capacity"][c]["true_recall"] for c in ("1%", "2%", "5%", "10%")]
    assert recalls == sorted(recalls)
    assert set(ev["at_capacity"]["5%"]["per_typology"]) <= set(
        pl.read_parquet(layout.truth / "truth.parquet")["typology"].drop_nulls().unique()
    )
    report = Path(ev["report"])
    page = report.read_text()
    for img in (
        "capacity.png",
        "calibration.png",
        "scores.png",
        "shap_beeswarm.png",
        "disparity.png",
    ):
        assert img in page and (report.parent / img).stat().st_size > 5_000
    disparity = json.loads((report.parent / "disparity.json").read_text())
    offices = disparity["groups"]["office_code"]
    window = pl.read_parquet(layout.features / "features.parquet").filter(
        pl.col("declared_at").is_between(
            pl.lit(ev["test_window"][0]).str.to_datetime(time_zone="UTC"),
            pl.lit(ev["test_window"][1]).str.to_datetime(time_zone="UTC"),
        )
    )
    assert sum(g["shipments"] for g in offices) == window.height
    assert sum(g["selected"] for g in offices) == math.ceil(window.height * 0.05)


def test_score_writes_probabilities_versions_and_explanations(
    trained: tuple[DataLayout, dict],  # type: ignore[type-arg]
) -> None:
    layout, _ = trained
    caravan("promote", "--version", "1", "--by", "test-ds", data=layout.root)
    feats = pl.read_parquet(layout.features / "features.parquet")
    since = str(feats["declared_at"].sort()[feats.height // 2])[:10]
    caravan("score", "--since", since, data=layout.root)
    scores = pl.read_parquet(layout.scores / "scores.parquet")
    expected = feats.filter(pl.col("declared_at") >= pl.lit(since).str.to_datetime(time_zone="UTC"))
    assert scores.height == expected.height
    assert (scores["model_version"] == "1").all()
    assert scores["feature_set_version"].n_unique() == 1
    prob = scores["probability"].to_numpy()
    assert ((prob > 0) & (prob < 1)).all()
    explained = scores.filter(pl.col("explanation").is_not_null())
    # The riskiest tenth is explained at scoring time; the rest on demand.
    assert abs(explained.height - scores.height / 10) <= scores.height * 0.01
    lowest_explained = float(explained["probability"].min())  # type: ignore[arg-type]
    highest_unexplained = float(
        scores.filter(pl.col("explanation").is_null())["probability"].max()  # type: ignore[arg-type]
    )
    assert lowest_explained >= highest_unexplained
    reasons = json.loads(explained.sort("probability", descending=True)["explanation"][0])
    assert reasons and all(r["text_en"] and r["text_ru"] for r in reasons)
    vectors = pl.read_parquet(layout.scores / "feature_vectors.parquet")
    assert set(vectors["feature_vector_ref"]) == set(scores["feature_vector_ref"])
    assert np.isfinite(prob).all()


def test_the_card_and_the_data_hash_describe_what_the_version_trained_on(
    trained: tuple[DataLayout, dict],  # type: ignore[type-arg]
) -> None:
    """The model card lists the model's own inputs (features left out for lack of
    data are listed apart, with why), and the data hash is the fingerprint of the
    rows the version trained on: a version trained `--until` an earlier date has
    another hash than one trained on everything."""
    layout, _ = trained
    from models.registry import Registry

    reg = Registry(layout.mlflow_db, layout.mlflow_artifacts)
    first_booster, first = reg.load("1")
    card = json.loads((layout.reports / "evaluation" / "v1" / "model_card.json").read_text())
    assert [f["name"] for f in card["features"]] == first_booster.feature_name()
    left_out = {f["name"]: f["reason"] for f in card["features_left_out"]}
    # This world loaded no watchlist: the screening features are not inputs, and say why.
    assert "watchlist_best_score" in left_out and "watchlist" in left_out["watchlist_best_score"]
    assert not set(left_out) & set(first_booster.feature_name())

    feats = pl.read_parquet(layout.features / "features.parquet")
    until = str(feats["declared_at"].sort()[int(feats.height * 0.7)])[:10]
    caravan("train", "--until", until, data=layout.root)
    newest = reg.versions()[-1]
    assert newest.version != "1"
    assert newest.tags["data_hash"] != first.tags["data_hash"]
    assert newest.tags["test_to"] < until
