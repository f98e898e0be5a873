"""A batch is scored as its shipments would be sent one by one: a trader's later
shipments of one request count its earlier ones (the trader and network features
read the history point in time, and `caravan features` counts them so). Two sets
of the same shipments under other parties, one sent as a batch and one shipment
by shipment, get the same feature vectors; over the real API (SQLite and
PostgreSQL) with a trained model."""

from __future__ import annotations

import datetime as dt
from typing import Any

from serving.auth import Role
from serving.services.shipments import in_sequence, prepare_shipment
from tests.serving.conftest import Api, payload

API = "/api/v1"
START = dt.datetime(2026, 11, 12, 9, tzinfo=dt.UTC)


def _party(record: dict[str, Any], role: str, tag: str, n: int) -> None:
    record[f"{role}_id"] = None
    record[f"{role}_name"] = f"{tag} {role.title()} Trading {n}"
    # (a numbering plan the synthetic world does not use: no phone of its history)
    code = {"consignor": 1, "consignee": 2, "declarant": 3}[role]
    record[f"{role}_phone"] = f"+41 44 {len(tag)}{ord(tag[0]) % 10}{code} {n:02d} 99"
    record[f"{role}_email"] = f"{role}{n}@{tag.lower()}-trade.kz"
    record[f"{role}_address"] = f"{tag} street {n}, {role} house, Almaty"
    record[f"{role}_document_number"] = None
    record[f"{role}_birth_date"] = None


def _set(samples: Any, tag: str, week: int = 0) -> list[dict[str, Any]]:
    """Five shipments: three of one consignee an hour apart (the third also of the
    second's consignor), one of other parties, and one more of the consignee at the
    second's instant; `week` weeks after START."""
    out = []
    for k, (consignee, consignor) in enumerate([(1, 1), (1, 2), (1, 2), (9, 9), (1, 3)]):
        record = payload(samples, k, f"SEQ-{tag}-{k}")
        at = START + dt.timedelta(weeks=week, hours=1 if k == 4 else k)
        record["declared_at"] = at.isoformat()
        record["expected_arrival_at"] = (at + dt.timedelta(hours=6)).isoformat()
        record["mode"] = "air"
        _party(record, "consignee", tag, consignee)
        _party(record, "consignor", tag, consignor)
        _party(record, "declarant", tag, 50 + k)
        out.append(record)
    return out


def _vector(api: Api, sid: str) -> dict[str, Any]:
    r = api.client.get(
        f"{API}/shipments/{sid}/explanation", headers=api.headers(Role.data_scientist)
    )
    assert r.status_code == 200, r.text
    return {c["feature"]: c["value"] for c in r.json()["contributions"]}


def test_a_batch_counts_its_earlier_shipments_as_one_by_one(world_api: Api, samples: Any) -> None:
    api = world_api
    # (the single ones a week later: a shipment declared before the newest one held
    # joins the history only through a rebuild, which a later one would not wait for)
    batch, single = _set(samples, "Alfa"), _set(samples, "Bravo", week=1)
    # the batch in reverse order: the declaration times order it, not the request
    r = api.client.post(
        f"{API}/shipments/batch",
        json={"records": batch[::-1]},
        headers=api.headers(Role.analyst),
    )
    assert r.status_code == 200, r.text
    assert not r.json()["errors"] and len(r.json()["stored"]) == 5, r.json()
    for record in sorted(single, key=lambda r: r["declared_at"]):  # (one by one, in time)
        one = api.client.post(f"{API}/shipments", json=record, headers=api.headers(Role.analyst))
        assert one.status_code == 201, one.text
    for a, b in zip(batch, single, strict=True):
        assert _vector(api, a["shipment_id"]) == _vector(api, b["shipment_id"]), a["shipment_id"]
    third = _vector(api, batch[2]["shipment_id"])
    assert third["consignee_shipments_30d"] == 3.0  # (0, 1 and 4, declared before it)
    # 4 was declared at 1's instant: it counts 0 only, as 1 does
    for k in (1, 4):
        assert _vector(api, batch[k]["shipment_id"])["consignee_shipments_30d"] == 1.0
    assert third["consignee_is_new"] == 0.0
    assert _vector(api, batch[0]["shipment_id"])["consignee_is_new"] == 1.0


def test_runs_end_at_a_shared_node_or_a_new_month(samples: Any) -> None:
    records = _set(samples, "Charlie")
    # a fifth shipment of unrelated parties in the next month
    late = payload(samples, 4, "SEQ-Charlie-4")
    late["declared_at"] = dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC).isoformat()
    late["expected_arrival_at"] = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC).isoformat()
    _party(late, "consignee", "Delta", 1)
    _party(late, "consignor", "Delta", 2)
    _party(late, "declarant", "Delta", 3)
    late["mode"] = "air"
    # and one of shipment 1's parties at shipment 1's very instant
    twin = dict(records[1], shipment_id="SEQ-Charlie-1b")
    twin["items"] = [
        {**line, "shipment_id": "SEQ-Charlie-1b", "item_id": f"SEQ-Charlie-1b-{line['line_no']}"}
        for line in records[1]["items"]
    ]
    prepared = [prepare_shipment(r) for r in [late, twin, *records[3::-1]]]
    runs = [[p.record["shipment_id"] for p in run] for run in in_sequence(prepared)]
    # 0 | 1 with 1b (same consignee as 0; at one instant: features read what came
    # strictly before) | 2 with 3 (2 shares 1's parties; 3 shares none) | the next
    # month's
    assert runs == [
        ["SEQ-Charlie-0"],
        ["SEQ-Charlie-1b", "SEQ-Charlie-1"],
        ["SEQ-Charlie-2", "SEQ-Charlie-3"],
        ["SEQ-Charlie-4"],
    ]
