"""Acceptance round 2 (DS F4, F10): `caravan score` keeps every batch run (scores,
feature vectors, a manifest with hashes, an audit entry when the deployment has a
database), scores/scores.parquet is the latest run's; `caravan audit replay` replays a
batch score when the database holds none; scoring nothing is a one-line message."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from data_contracts.settings import DataLayout
from models.train import TrainConfig


@pytest.fixture(scope="module")
def scored_world(small_world: DataLayout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world with features, one trained version promoted, and a database."""
    from pipelines.features import run_features
    from pipelines.modelling import run_promote, run_train

    root = tmp_path_factory.mktemp("uat2-scores") / "data"
    shutil.copytree(small_world.root, root)
    layout = DataLayout(root)
    run_features(layout)
    assert run_train(layout, config=TrainConfig(max_rounds=40)).version == "1"
    run_promote(layout, "1", who="test", reason=None)
    return root


@pytest.fixture
def layout(scored_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataLayout:
    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
    root = tmp_path / "data"
    shutil.copytree(scored_world, root)
    return DataLayout(root)


def _cli(*args: str) -> Result:
    from pipelines.cli import app

    return CliRunner().invoke(app, list(args))


def _runs(layout: DataLayout) -> list[Path]:
    return sorted(p for p in (layout.scores / "runs").iterdir() if p.is_dir())


def _since(layout: DataLayout) -> str:
    feats = pl.read_parquet(layout.features / "features.parquet", columns=["declared_at"])
    return str(feats["declared_at"].sort()[int(feats.height * 0.9)])[:10]


def test_every_run_is_kept_with_its_manifest(layout: DataLayout) -> None:
    data = str(layout.root)
    first = _cli("score", "--data", data)
    assert first.exit_code == 0, first.output
    second = _cli("score", "--data", data, "--version", "1", "--since", _since(layout))
    assert second.exit_code == 0, second.output
    runs = _runs(layout)
    assert len(runs) == 2 and all(r.name.endswith("-v1") or "-v1-" in r.name for r in runs)
    everything = pl.read_parquet(runs[0] / "scores.parquet")
    recent = pl.read_parquet(runs[1] / "scores.parquet")
    assert everything.height == pl.read_parquet(layout.features / "features.parquet").height
    assert 0 < recent.height < everything.height
    # the first run's scores and vectors are still there, whole
    vectors = pl.read_parquet(runs[0] / "feature_vectors.parquet")
    assert set(vectors["shipment_id"]) == set(everything["shipment_id"])
    # the latest view is the last run's
    latest = pl.read_parquet(layout.scores / "scores.parquet")
    assert latest.equals(recent) and set(latest["score_run"]) == {runs[1].name}
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["run"] == run.name and manifest["model_version"] == "1"
        assert manifest["rows"] == pl.read_parquet(run / "scores.parquet").height
        for name, digest in manifest["files"].items():
            assert hashlib.sha256((layout.scores / name).read_bytes()).hexdigest() == digest
    assert json.loads((runs[1] / "manifest.json").read_text())["since"].startswith(_since(layout))


def test_scores_from_before_runs_are_kept(layout: DataLayout) -> None:
    """A scores/scores.parquet written before runs were kept is moved into a run
    folder of its own by the next run, not replaced."""
    data = str(layout.root)
    assert _cli("score", "--data", data).exit_code == 0
    (run,) = _runs(layout)
    old = pl.read_parquet(run / "scores.parquet").drop("score_run")
    vectors = pl.read_parquet(run / "feature_vectors.parquet")
    shutil.rmtree(layout.scores)
    layout.scores.mkdir()
    old.write_parquet(layout.scores / "scores.parquet")
    vectors.write_parquet(layout.scores / "feature_vectors.parquet")
    done = _cli("score", "--data", data, "--since", _since(layout))
    assert done.exit_code == 0, done.output
    kept, _new = _runs(layout)
    assert pl.read_parquet(kept / "scores.parquet").equals(old)
    assert (kept / "feature_vectors.parquet").exists()
    assert "before batch runs" in json.loads((kept / "manifest.json").read_text())["note"]
    assert pl.read_parquet(layout.scores / "scores.parquet").height < old.height


def test_batch_runs_are_audited_and_replayed(layout: DataLayout) -> None:
    from serving.db import make_engine, session_factory
    from serving.orm import AuditLog

    data = str(layout.root)
    assert _cli("db", "upgrade", "--data", data).exit_code == 0
    assert _cli("score", "--data", data, "--by", "nightly").exit_code == 0
    done = _cli("score", "--data", data, "--since", _since(layout), "--by", "nightly")
    assert done.exit_code == 0 and "audit entry" in done.output, done.output
    runs = _runs(layout)
    engine = make_engine(f"sqlite:///{layout.database}")
    try:
        with session_factory(engine)() as session:
            entries = list(
                session.scalars(
                    select(AuditLog).where(AuditLog.kind == "batch_score").order_by(AuditLog.seq)
                )
            )
    finally:
        engine.dispose()
    assert [(e.actor, e.entity_id) for e in entries] == [("nightly", r.name) for r in runs]
    manifest = json.loads((runs[1] / "manifest.json").read_text())
    assert entries[1].payload["files"] == manifest["files"]
    assert entries[1].payload["rows"] == manifest["rows"]
    verify = _cli("audit", "verify", "--data", data)
    assert verify.exit_code == 0 and "intact" in verify.output, verify.output

    recent = pl.read_parquet(runs[1] / "scores.parquet")
    shipment = str(recent["shipment_id"][0])
    one = _cli("audit", "replay", shipment, "--data", data)
    assert one.exit_code == 0, one.output
    assert f"batch run {runs[1].name}" in one.output and "MATCH" in one.output
    assert "MISMATCH" not in one.output
    both = _cli("audit", "replay", shipment, "--all", "--data", data)
    lines = [x for x in both.output.splitlines() if x.startswith(f"shipment {shipment}")]
    assert both.exit_code == 0 and len(lines) == 2, both.output
    assert runs[0].name in lines[0] and runs[1].name in lines[1]

    # a changed stored vector is found
    path = runs[1] / "feature_vectors.parquet"
    vectors = pl.read_parquet(path)
    column = next(c for c in vectors.columns if vectors[c].dtype == pl.Float64)
    vectors.with_columns(
        pl.when(pl.col("shipment_id") == shipment)
        .then(pl.col(column).fill_null(0.0) + 1000.0)
        .otherwise(pl.col(column))
        .alias(column)
    ).write_parquet(path)
    tampered = _cli("audit", "replay", shipment, "--data", data)
    assert tampered.exit_code == 1 and "MISMATCH" in tampered.output, tampered.output

    missing = _cli("audit", "replay", "NO-SUCH-SHIPMENT", "--data", data)
    assert missing.exit_code == 1
    assert "nor in any batch run" in missing.output


def test_nothing_to_score_is_one_line_and_leaves_scores_alone(layout: DataLayout) -> None:
    data = str(layout.root)
    assert _cli("score", "--data", data).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in layout.scores.rglob("*")}
    result = _cli("score", "--data", data, "--since", "2031-01-01")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        "no shipment declared since 2031-01-01 00:00: nothing scored (scores/ left as it is)"
    ]
    assert {p: p.stat().st_mtime_ns for p in layout.scores.rglob("*")} == before


# --------------------------------------------------------------------------- DS F13


def test_train_refuses_outcomes_that_stale_features_lack(layout: DataLayout) -> None:
    """A validated seizure of a validated shipment that features/ does not hold yet
    (features built before the last `caravan validate`) stops the training, naming
    `caravan features`, instead of being dropped in silence."""
    from data_contracts.schemas import ARMS_CATEGORIES

    outcomes = pl.read_parquet(layout.validated / "outcomes.parquet")
    seized = outcomes.filter(
        pl.col("finding") & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES)
    )
    shipment = str(seized["shipment_id"][0])
    path = layout.features / "features.parquet"
    features = pl.read_parquet(path)
    features.filter(pl.col("shipment_id") != shipment).write_parquet(path)
    versions_before = len(list((layout.reports / "evaluation").iterdir()))
    refused = _cli("train", "--data", str(layout.root))
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "1 validated outcome(s) (1 positive for arms)" in text
    assert shipment in text and "run `caravan features` first" in text
    assert len(list((layout.reports / "evaluation").iterdir())) == versions_before


def test_train_counts_outcomes_of_shipments_never_validated(layout: DataLayout) -> None:
    """An outcome whose shipment is not in validated/ (quarantined) can never have a
    feature row: the training goes on, and the count is in its run and model card."""
    from models.registry import Registry
    from pipelines.modelling import run_train

    path = layout.validated / "outcomes.parquet"
    outcomes = pl.read_parquet(path)
    ghost = outcomes.head(1).with_columns(
        pl.lit("GHOST-0001").alias("shipment_id"), pl.lit("GHOST-O-1").alias("outcome_id")
    )
    pl.concat([outcomes, ghost]).write_parquet(path)
    known = pl.read_parquet(layout.validated / "shipments.parquet", columns=["shipment_id"])
    expected = (
        pl.read_parquet(path).join(known, on="shipment_id", how="anti")["shipment_id"].n_unique()
    )
    assert expected >= 1
    run = run_train(layout, config=TrainConfig(max_rounds=20))
    assert run.outcomes_without_shipment == expected
    reg = Registry(layout.mlflow_db, layout.mlflow_artifacts)
    params = reg.client().get_run(reg.version(run.version).run_id).data.params
    assert params["outcomes_without_shipment"] == str(expected)
    card = json.loads(
        (layout.reports / "evaluation" / f"v{run.version}" / "model_card.json").read_text()
    )
    assert card["outcomes_not_trained_on"]["without_validated_shipment"] == expected
