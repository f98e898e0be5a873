"""Acceptance round 2 (DS F3, ops F8): a promotion compares the two versions only on
shipments neither trained or early-stopped on, and records that window; a promotion
is recorded before the alias moves, and a recorded promotion whose alias move was
lost is applied afterwards."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from data_contracts.settings import DataLayout
from models.promotion import (
    PromotionRefusedError,
    current_champion,
    plan_promotion,
    promote,
    seen_by,
)
from models.train import TrainConfig
from tests.conftest import trained_world

GOOD = TrainConfig(max_rounds=80)


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 trained on everything; version 2 trained `--until` the start of
    version 1's test window (its test window lies inside what version 1 trained and
    early-stopped on); version 3 trained `--until` late in version 1's test window (its
    test window overlaps version 1's validation window only in part)."""
    from pipelines.modelling import run_train
    from pipelines.synthetic import WorldConfig

    root = tmp_path_factory.mktemp("uat2-promotion") / "data"
    assert trained_world(root, WorldConfig(n_shipments=12000, seed=5), (GOOD,), None) == ["1"]
    layout = DataLayout(root)
    one = seen_by(layout, "1")
    assert one.test is not None
    start, end = one.test
    assert run_train(layout, until=start, config=GOOD).version == "2"
    assert run_train(layout, until=start + (end - start) * 0.7, config=GOOD).version == "3"
    return root


@pytest.fixture
def layout(three_versions: Path, tmp_path: Path) -> DataLayout:
    root = tmp_path / "data"
    shutil.copytree(three_versions, root)
    return DataLayout(root)


def _end(layout: DataLayout, version: str) -> dt.datetime:
    seen = seen_by(layout, version)
    assert seen.train is not None and seen.valid is not None
    return max(seen.train[1], seen.valid[1])


def test_windows_are_read_from_the_runs(layout: DataLayout) -> None:
    one, two = seen_by(layout, "1"), seen_by(layout, "2")
    assert one.train and one.valid and one.test and two.test
    assert one.train[1] < one.valid[0] <= one.valid[1] < one.test[0]
    # version 2's whole test window lies inside what version 1 trained or early-stopped on
    assert two.test[1] <= one.valid[1]


def test_in_sample_champion_is_not_compared_refused_unless_forced(layout: DataLayout) -> None:
    promote(layout, "1", who="dana", reason=None)
    with pytest.raises(PromotionRefusedError) as refused:
        plan_promotion(layout, "2", who="dana", reason=None)
    message = str(refused.value)
    assert "cannot be compared with champion 1" in message
    assert "windows overlap" in message
    one, two = seen_by(layout, "1"), seen_by(layout, "2")
    assert one.valid and two.train
    # what each model saw is named
    assert f"early-stopped on {one.valid[0]:%Y-%m-%d %H:%M}" in message
    assert f"trained on {two.train[0]:%Y-%m-%d %H:%M}" in message
    assert "--force --reason" in message
    assert current_champion(layout) == "1"

    promo = promote(layout, "2", who="dana", reason="recent data only, reviewed", force=True)
    assert current_champion(layout) == "2"
    assert promo.forced and promo.worse and promo.champion is None
    assert promo.comparison_window is None
    summary = promo.summary()
    assert summary["comparison_window"] is None
    assert summary["windows"]["champion"]["version"] == "1"
    assert summary["windows"]["champion"]["valid"] == [str(one.valid[0]), str(one.valid[1])]


def test_compared_only_after_what_both_models_saw(layout: DataLayout) -> None:
    promote(layout, "1", who="dana", reason=None)
    promo = plan_promotion(layout, "3", who="dana", reason="drill", force=True)
    three = seen_by(layout, "3")
    assert three.test is not None and promo.comparison_window is not None
    start, end = (dt.datetime.fromisoformat(w) for w in promo.comparison_window)
    assert start > _end(layout, "1")  # after version 1's validation window
    assert start > three.test[0]  # so only a part of version 3's test window
    assert end == three.test[1]
    assert promo.champion is not None
    assert promo.champion.test_window == promo.challenger.test_window
    assert promo.champion.n_inspected == promo.challenger.n_inspected
    # fewer shipments than version 3's own test window
    from models.assess import assess_version

    full, _ = assess_version(layout, "3")
    assert promo.challenger.n_inspected < full.evaluation.n_inspected


def test_versions_trained_alike_are_compared_on_the_whole_test_window(
    layout: DataLayout,
) -> None:
    """Version 3 as champion, version 1 (trained on everything) as challenger: version
    3 saw nothing of version 1's test window, which is compared whole."""
    promote(layout, "3", who="dana", reason=None)
    promo = plan_promotion(layout, "1", who="dana", reason="drill", force=True)
    one = seen_by(layout, "1")
    assert one.test is not None and promo.comparison_window is not None
    assert promo.comparison_window == (str(one.test[0]), str(one.test[1]))


def test_cli_promote_records_the_comparison_window(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import app
    from serving.db import make_engine, session_factory
    from serving.orm import AuditLog, ModelPromotion

    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
    runner = CliRunner()
    data = str(layout.root)
    base = ["promote", "--data", data, "--by", "dana", "--version"]
    assert runner.invoke(app, [*base, "1"]).exit_code == 0
    refused = runner.invoke(app, [*base, "2"])
    assert refused.exit_code == 2 and "windows overlap" in refused.output
    forced = runner.invoke(app, [*base, "3", "--force", "--reason", "drill"])
    assert forced.exit_code == 0, forced.output
    assert "Compared on" in forced.output and "after what both models" in forced.output
    engine = make_engine(f"sqlite:///{layout.database}")
    try:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(ModelPromotion).order_by(ModelPromotion.id)))
            assert [r.model_version for r in rows] == ["1", "3"]
            ev = rows[1].evaluation
            assert ev is not None and ev["comparison_window"] is not None
            start = dt.datetime.fromisoformat(ev["comparison_window"][0])
            assert start > _end(layout, "1")
            assert ev["windows"]["champion"]["version"] == "1"
            # the API's promotion record carries it too
            from serving.promotions import promotion_out
            from serving.schemas import PromotionOut

            out = PromotionOut.model_validate(promotion_out(rows[1]))
            assert out.comparison_window == ev["comparison_window"]
            entry = session.scalars(
                select(AuditLog).where(AuditLog.kind == "promotion").order_by(AuditLog.seq.desc())
            ).first()
            assert entry is not None
            assert entry.payload["comparison_window"] == ev["comparison_window"]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- ops F8

CRASH = """
import os, signal, sys
import serving.promotions as sp

where = os.environ["CRASH_AT"]
real_audit, real_apply = sp.audit, sp.apply_promotion


def audit(*args, **kwargs):
    entry = real_audit(*args, **kwargs)
    if where == "before-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    return entry


def apply_promotion(layout, promo):
    if where == "before-alias":
        os.kill(os.getpid(), signal.SIGKILL)
    real_apply(layout, promo)
    if where == "after-alias":
        os.kill(os.getpid(), signal.SIGKILL)


sp.audit, sp.apply_promotion = audit, apply_promotion
from pipelines.cli import app

app(sys.argv[1:], prog_name="caravan")
"""


def _recorded(layout: DataLayout) -> list[str]:
    from serving.db import make_engine, session_factory
    from serving.orm import AuditLog, ModelPromotion

    engine = make_engine(f"sqlite:///{layout.database}")
    try:
        with session_factory(engine)() as session:
            rows = [
                r.model_version
                for r in session.scalars(select(ModelPromotion).order_by(ModelPromotion.id))
            ]
            audited = list(
                session.scalars(
                    select(AuditLog).where(AuditLog.kind == "promotion").order_by(AuditLog.seq)
                )
            )
            assert [a.entity_id for a in audited] == [f"caravan-risk/{v}" for v in rows]
            return rows
    finally:
        engine.dispose()


def _follow(layout: DataLayout) -> str | None:
    """What the server does at start and before each model refresh."""
    from serving.db import make_engine, session_factory
    from serving.promotions import follow_recorded_champion

    engine = make_engine(f"sqlite:///{layout.database}")
    try:
        return follow_recorded_champion(session_factory(engine), layout, grace=0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("crash_at", ["before-commit", "before-alias", "after-alias"])
def test_a_promotion_killed_at_any_point_is_none_or_recorded(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    """`caravan promote` killed (SIGKILL) before its commit, between its commit and the
    alias move, or just after the move: the champion in service (the alias, once the
    server has followed the records) is always the latest recorded promotion."""
    from pipelines.cli import app
    from tests.conftest import ROOT

    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
    data = str(layout.root)
    first = CliRunner().invoke(app, ["promote", "--data", data, "--version", "1", "--by", "dana"])
    assert first.exit_code == 0, first.output
    args = ["promote", "--data", data, "--version", "3", "--by", "lee", "--force"]
    killed = subprocess.run(
        [sys.executable, "-c", CRASH, *args, "--reason", "drill"],
        cwd=ROOT,
        env={**os.environ, "CRASH_AT": crash_at},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    recorded = _recorded(layout)
    alias = current_champion(layout)
    if crash_at == "before-commit":
        assert recorded == ["1"] and alias == "1"  # no promotion at all
    else:
        assert recorded == ["1", "3"]  # recorded, with its audit entry
        assert alias in ("1", "3")
    # the server follows the records: the champion served is the recorded one
    _follow(layout)
    assert current_champion(layout) == recorded[-1]
    assert _follow(layout) is None  # nothing left to do


def test_an_alias_moved_without_a_record_is_moved_back(layout: DataLayout) -> None:
    """(A crash of the former order, or a hand-moved alias.) The server does not
    serve a champion no promotion records; the next promotion starts from the record."""
    from models.assess import registry
    from models.registry import CHAMPION
    from serving.db import make_engine, session_factory
    from serving.promotions import promote_model

    engine = make_engine(f"sqlite:///{layout.database}")
    from serving.db import upgrade

    upgrade(engine)
    try:
        with session_factory(engine)() as session:
            promote_model(session, layout, "1", who="dana", reason=None, via="cli")
        registry(layout).set_alias(CHAMPION, "3")  # no record
        assert _follow(layout) == "1"
        assert current_champion(layout) == "1"
        registry(layout).set_alias(CHAMPION, "3")
        with session_factory(engine)() as session:
            done = promote_model(
                session, layout, "2", who="lee", reason="drill", force=True, via="cli"
            )
        assert done.promotion.previous == "1"  # compared with the recorded champion
        assert current_champion(layout) == "2"
    finally:
        engine.dispose()


def test_a_promotion_names_a_visible_person_and_reason(tmp_path: Path) -> None:
    """A forced promotion with a reason of invisible characters, or a promoter name
    made of them, is refused before anything is read (data scientist round 2, F16)."""
    from data_contracts.settings import DataLayout
    from models.promotion import PromotionError, ReasonRequiredError, plan_promotion

    layout = DataLayout(tmp_path / "data")
    with pytest.raises(ReasonRequiredError, match="visible text"):
        plan_promotion(layout, "1", who="ds1", reason="\u200b\u200b\u2060", force=True)
    with pytest.raises(PromotionError, match="names the person"):
        plan_promotion(layout, "1", who="\u200b\u3000", reason="roll back", force=True)
