"""Promotion on a real registry: the comparison on the same test window, the refusal
rules, what is recorded; and `caravan promote` recording it in the operational
database with its audit entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from data_contracts.settings import DataLayout
from models.promotion import (
    PromotionError,
    PromotionRefusedError,
    ReasonRequiredError,
    UnknownVersionError,
    current_champion,
    plan_promotion,
    promote,
)
from models.registry import CHAMPION, Registry
from pipelines.modelling import run_train
from tests.conftest import caravan, train_on_shuffled_findings


@pytest.fixture(scope="module")
def two_versions(web_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web tests' world (generated, validated, its features built: a world whose
    trafficking a model learns) with a registry of its own and nobody promoted:
    version 1 trained on the inspections' real findings, version 2 on the same
    inspections with their findings shuffled, worse by construction."""
    root = tmp_path_factory.mktemp("promotion") / "data"
    shutil.copytree(web_world, root)
    fresh = DataLayout(root)
    for path in (fresh.mlflow_db, fresh.database):
        path.unlink(missing_ok=True)
    for folder in (fresh.mlflow_artifacts, fresh.reports, fresh.scores):
        shutil.rmtree(folder, ignore_errors=True)
    fresh.make_dirs()
    assert run_train(fresh).version == "1"
    assert train_on_shuffled_findings(root) == "2"
    return root


@pytest.fixture
def layout(two_versions: Path, tmp_path: Path) -> DataLayout:
    """A private copy (promotions change the registry)."""
    root = tmp_path / "data"
    shutil.copytree(two_versions, root)
    return DataLayout(root)


def _registry(layout: DataLayout) -> Registry:
    return Registry(layout.mlflow_db, layout.mlflow_artifacts)


def test_first_promotion_has_nothing_to_compare(layout: DataLayout) -> None:
    promo = promote(layout, "1", who="dana", reason=None)
    assert promo.previous is None and promo.champion is None and not promo.forced
    assert current_champion(layout) == "1"
    tags = _registry(layout).version("1").tags
    assert tags["promoted_by"] == "dana"
    assert tags["promotion_reason"] == "first champion: no champion to compare with"
    logged = [
        json.loads(x) for x in (layout.reports / "promotions.jsonl").read_text().split("\n") if x
    ]
    assert logged[-1]["version"] == "1" and logged[-1]["by"] == "dana"


def test_worse_version_refused_unless_forced_with_a_reason(layout: DataLayout) -> None:
    promote(layout, "1", who="dana", reason=None)
    with pytest.raises(PromotionRefusedError, match="worse than champion 1"):
        promote(layout, "2", who="dana", reason=None)
    assert current_champion(layout) == "1"
    with pytest.raises(ReasonRequiredError, match="reason"):
        promote(layout, "2", who="dana", reason="   ", force=True)
    assert current_champion(layout) == "1"

    promo = promote(layout, "2", who="dana", reason="rollback drill", force=True)
    assert current_champion(layout) == "2"
    assert promo.forced and promo.worse and promo.previous == "1"
    assert promo.champion is not None
    # both versions were evaluated on version 2's test window, shipment for shipment
    assert promo.champion.test_window == promo.challenger.test_window
    assert promo.champion.n_inspected == promo.challenger.n_inspected
    assert promo.challenger.primary() < promo.champion.primary()
    tags = _registry(layout).version("2").tags
    assert tags["promotion_reason"] == "rollback drill" and tags["replaced"] == "1"
    assert tags["promotion_forced"] == "true"

    # back to the better version: not worse, no reason needed
    back = promote(layout, "1", who="dana", reason=None)
    assert not back.worse and back.previous == "2"
    assert back.challenger.primary() >= back.champion.primary()  # type: ignore[union-attr]


def test_unknown_version_already_champion_and_nobody(layout: DataLayout) -> None:
    with pytest.raises(UnknownVersionError, match="'9'"):
        promote(layout, "9", who="dana", reason=None)
    promote(layout, "1", who="dana", reason=None)
    with pytest.raises(PromotionRefusedError, match="already the champion"):
        promote(layout, "1", who="dana", reason=None)
    with pytest.raises(PromotionError, match="names the person"):
        plan_promotion(layout, "2", who="  ", reason="x", force=True)
    assert current_champion(layout) == "1"


def test_cli_promote_records_row_and_audit_entry(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import app
    from serving.db import make_engine, session_factory
    from serving.orm import AuditLog, ModelPromotion
    from serving.services import verify_audit

    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
    runner = CliRunner()
    data = str(layout.root)
    ok = runner.invoke(app, ["promote", "--data", data, "--version", "1", "--by", "dana"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(app, ["promote", "--data", data, "--version", "2", "--by", "dana"])
    assert refused.exit_code != 0 and "worse than champion 1" in refused.output
    forced = runner.invoke(
        app,
        ["promote", "--data", data, "--version", "2", "--by", "lee", "--force"],
    )
    assert forced.exit_code != 0 and "reason" in forced.output
    done = runner.invoke(
        app,
        [
            "promote",
            "--data",
            data,
            "--version",
            "2",
            "--by",
            "lee",
            "--force",
            "--reason",
            "drill",
        ],
    )
    assert done.exit_code == 0, done.output
    assert _registry(layout).version(CHAMPION).version == "2"

    engine = make_engine(f"sqlite:///{layout.database}")
    try:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(ModelPromotion).order_by(ModelPromotion.id)))
            assert [(r.model_version, r.previous_version, r.promoted_by) for r in rows] == [
                ("1", None, "dana"),
                ("2", "1", "lee"),
            ]
            assert rows[1].forced and rows[1].reason == "drill" and rows[1].via == "cli"
            assert rows[1].evaluation is not None and rows[1].evaluation["worse"] is True
            entries = list(
                session.scalars(
                    select(AuditLog).where(AuditLog.kind == "promotion").order_by(AuditLog.seq)
                )
            )
            assert [(e.actor, e.entity_id) for e in entries] == [
                ("dana", "caravan-risk/1"),
                ("lee", "caravan-risk/2"),
            ]
            assert entries[1].payload["promotion_id"] == rows[1].id
            assert entries[1].payload["reason"] == "drill"
            n, result, _ = verify_audit(session)
            assert result.ok and n == 2  # refused promotions leave no trace
    finally:
        engine.dispose()


# --- acceptance findings: a promotion names a person and the metric it compared


def test_promote_without_by_or_user_is_refused(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import app

    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
    monkeypatch.delenv("USER", raising=False)
    result = CliRunner().invoke(app, ["promote", "--data", str(layout.root), "--version", "1"])
    assert result.exit_code != 0
    assert "--by is required" in result.output
    assert current_champion(layout) is None
    assert not (layout.reports / "promotions.jsonl").exists()
    # USER, when set, names the person
    monkeypatch.setenv("USER", "dana")
    ok = CliRunner().invoke(app, ["promote", "--data", str(layout.root), "--version", "1"])
    assert ok.exit_code == 0, ok.output
    assert "(by dana)" in ok.output


def test_a_promotion_records_the_metric_it_compared(layout: DataLayout) -> None:
    first = promote(layout, "1", who="dana", reason=None)
    assert first.reason == "first champion: no champion to compare with"
    logged = json.loads((layout.reports / "promotions.jsonl").read_text().splitlines()[-1])
    assert logged["reason"] == "first champion: no champion to compare with"
    assert logged["primary_champion"] is None
    # a synthetic world has its truth: the primary metric is true recall
    assert first.summary()["primary_metric"] == "true recall at 5% capacity"
    assert logged["primary_metric"] == "true recall at 5% capacity"
    true_recall = first.challenger.at_capacity["5%"]["true_recall"]
    assert first.summary()["primary_challenger"] == pytest.approx(true_recall, abs=1e-6)

    with pytest.raises(PromotionRefusedError) as refused:
        promote(layout, "2", who="dana", reason=None)
    message = str(refused.value)
    assert "worse than champion 1 on true recall at 5% capacity" in message


def test_score_with_an_unknown_version_or_alias_is_a_one_line_error(layout: DataLayout) -> None:
    for option, ref in (("--version", "77"), ("--alias", "nosuch")):
        result = caravan("score", option, ref, data=layout.root, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "Traceback" not in output
        assert f"error: no registered model version or alias '{ref}'" in output
        assert len(output.strip().splitlines()) == 1


def test_a_promotion_with_nothing_to_compare_on_is_refused_unless_forced(
    layout: DataLayout,
) -> None:
    """Without a finding in the test window (and no synthetic truth), the primary
    metric is undefined for both versions: no comparison happened, so the promotion
    is not recorded as "better or equal"; it needs --force and a reason."""
    import polars as pl

    promote(layout, "1", who="dana", reason=None)
    outcomes = pl.read_parquet(layout.validated / "outcomes.parquet")
    outcomes.with_columns(
        pl.lit(False).alias("finding"), pl.lit(None, pl.String).alias("finding_category")
    ).write_parquet(layout.validated / "outcomes.parquet")
    shutil.rmtree(layout.truth)
    with pytest.raises(PromotionRefusedError, match="cannot be compared"):
        promote(layout, "2", who="dana", reason=None)
    assert current_champion(layout) == "1"
    promo = promote(layout, "2", who="dana", reason="new features reviewed", force=True)
    assert promo.forced and promo.worse and current_champion(layout) == "2"


def test_a_change_of_target_is_refused_unless_forced_and_then_recorded(
    layout: DataLayout,
) -> None:
    """An any-finding challenger against an arms champion: the served score would
    predict another event (review of stop 24: it was compared on the challenger's
    labels and promoted without a word)."""
    from models.dataset import Target

    promote(layout, "1", who="dana", reason=None)
    assert run_train(layout, target=Target("any-finding")).version == "3"
    with pytest.raises(PromotionRefusedError) as refused:
        plan_promotion(layout, "3", who="dana", reason=None)
    said = str(refused.value)
    assert "version 3 predicts findings of any kind (--target any-finding)" in said
    assert "champion 1 predicts findings of arms" in said and "--force --reason" in said
    assert '"force": true' in refused.value.api_message
    assert current_champion(layout) == "1"

    promo = promote(layout, "3", who="dana", reason="a drill on any finding", force=True)
    assert (promo.target, promo.previous_target) == ("any-finding", "arms")
    logged = json.loads((layout.reports / "promotions.jsonl").read_text().splitlines()[-1])
    assert (logged["target"], logged["previous_target"]) == ("any-finding", "arms")
    assert current_champion(layout) == "3"
