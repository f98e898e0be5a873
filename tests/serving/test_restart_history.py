"""After a restart the feature history holds what the API recorded before it:
the shipments (with their goods lines), traveller records and outcomes stored in
the database, besides validated/. Features of later shipments count them as
they did before the restart."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from serving import orm as m
from tests.serving.conftest import Samples, payload
from tests.serving.test_uat_watchlists import _ingest, _serve


def _vector(api: object, sid: str) -> dict[str, float | None]:
    with api.app.state.session_factory() as session:  # type: ignore[attr-defined]
        score = session.scalars(
            select(m.Score).where(m.Score.shipment_id == sid).order_by(m.Score.id.desc())
        ).first()
        assert score is not None
        return dict(score.feature_vector)


def test_shipments_ingested_before_a_restart_stay_in_the_history(
    db_url: str, tmp_path: Path, world: Path, samples: Samples
) -> None:
    data = tmp_path / "data"
    shutil.copytree(world, data)
    first = payload(samples, 1, "RST-1")
    first.update(consignee_id=None, consignee_name="Zarafshon Restart Savdo MChJ")
    with _serve(db_url, data, users=True) as api:
        _ingest(api, first)
        assert _vector(api, "RST-1")["consignee_is_new"] == 1.0

    with _serve(db_url, data, users=False) as api:
        held = api.app.state.services.history.snapshot()
        assert "RST-1" in held.shipments["shipment_id"].to_list()
        assert set(held.items.filter(held.items["shipment_id"] == "RST-1")["item_id"]) == {
            line["item_id"] for line in first["items"]
        }
        second = payload(samples, 2, "RST-2")
        second.update(consignee_id=None, consignee_name=first["consignee_name"])
        _ingest(api, second)
        vector = _vector(api, "RST-2")
        # the consignee is known from the shipment ingested before the restart
        assert vector["consignee_is_new"] == 0.0
        assert vector["consignee_shipments_7d"] == 1.0
