"""A batch holding late arrivals (declared before the newest shipment the feature
state holds) scores them run by run, as before, and the others in one pass: every
stored value is what the run-by-run path of the whole batch stores. Two apps on
copies of one world (SQLite and PostgreSQL), the background rebuild held back in
both (it would let later shipments count the late ones at a moment of its own);
one takes the batch as the service does, the other run by run (`in_sequence` of
the whole batch, the path before)."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from serving.auth import Role
from serving.services import shipments
from tests.serving.conftest import Api, Samples, api_on, payload
from tests.serving.test_batch_in_sequence import _party, _set
from tests.serving.test_batch_spread import LAST_BIT, other_db
from tests.serving.test_batch_write import _rows

API = "/api/v1"
START = dt.datetime(2026, 11, 12, 9, tzinfo=dt.UTC)
_FIXTURES = (other_db,)  # (the second database)


def _records(samples: Samples) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An anchor a week after START (the state's newest once stored), and the batch:
    three late shipments (two of one consignee) and five on time (START's pattern
    of `test_batch_in_sequence`, three weeks later)."""
    anchor = payload(samples, 7, "LATE-anchor")
    at = START + dt.timedelta(weeks=1)
    anchor["declared_at"] = at.isoformat()
    anchor["expected_arrival_at"] = (at + dt.timedelta(hours=6)).isoformat()
    late = []
    for k, consignee in enumerate([1, 1, 2]):
        record = payload(samples, 20 + k, f"LATE-{k}")
        at = START + dt.timedelta(hours=k)
        record["declared_at"] = at.isoformat()
        record["expected_arrival_at"] = (at + dt.timedelta(hours=6)).isoformat()
        record["mode"] = "air"
        _party(record, "consignee", "Kilo", consignee)
        _party(record, "consignor", "Kilo", 10 + k)
        _party(record, "declarant", "Kilo", 20 + k)
        late.append(record)
    return anchor, [*_set(samples, "Lima", week=3)[::-1], *late]


def _ingest(api: Api, anchor: dict[str, Any], batch: list[dict[str, Any]]) -> list[str]:
    history = api.app.state.services.history
    headers = api.headers(Role.analyst)
    one = api.client.post(f"{API}/shipments", json=anchor, headers=headers)
    assert one.status_code == 201, one.text
    history._next_rebuild = time.monotonic() + 3600  # (no rebuild during the test)
    r = api.client.post(f"{API}/shipments/batch", json={"records": batch}, headers=headers)
    assert r.status_code == 200, r.text
    assert not r.json()["errors"] and len(r.json()["stored"]) == len(batch), r.json()
    assert history.rebuilding  # (the late ones wait for it)
    return [s["shipment_id"] for s in r.json()["stored"]]


def test_a_batch_with_late_arrivals_stores_what_run_by_run_stores(
    db_url: str,
    other_db: str,
    world: Path,
    samples: Samples,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anchor, batch = _records(samples)
    ids = [r["shipment_id"] for r in batch]
    with api_on(db_url, world, tmp_path / "new") as api:
        _ingest(api, anchor, batch)
        new = _rows(api, ids)
    # the path before: the whole batch run by run, late ones and all
    monkeypatch.setattr(shipments, "_late_first", lambda _services, fresh: (list(fresh), []))
    with api_on(other_db, world, tmp_path / "old") as api:
        _ingest(api, anchor, batch)
        old = _rows(api, ids)
    assert len(new["scores"]) == len(old["scores"]) == len(ids)
    vectors = {s["shipment_id"]: json.loads(s["feature_vector"]) for s in new["scores"]}
    for a, b in zip(new["scores"], old["scores"], strict=True):
        va, vb = json.loads(a.pop("feature_vector")), json.loads(b.pop("feature_vector"))
        assert va.keys() == vb.keys()
        for name in va:
            if va[name] != vb[name]:  # (the last bit of one run's frame against another's)
                assert name in LAST_BIT, (a["shipment_id"], name, va[name], vb[name])
                assert math.isclose(va[name], vb[name], rel_tol=1e-12)
        for row in (a, b):
            del row["id"], row["scored_at"]
        assert a == b, a["shipment_id"]
    assert [(h["shipment_id"], h["rule_id"]) for h in new["hits"]] == [
        (h["shipment_id"], h["rule_id"]) for h in old["hits"]
    ]
    # the on-time ones counted each other (the pattern's third: the first two) and
    # the second late one, sharing a consignee, did not count the first (late ones
    # reach the state through the rebuild)
    assert vectors["SEQ-Lima-2"]["consignee_shipments_30d"] == 3.0
    assert (
        vectors["LATE-1"]["consignee_shipments_30d"] == vectors["LATE-0"]["consignee_shipments_30d"]
    )
