"""A rule's watchlist fields read the lists as they are now (analyst A16), over HTTP on
SQLite and PostgreSQL: a must-inspect profile "watchlist_best_score >= 85 and chapter
93" hits a shipment whose consignee resembles a company listed on its declaration
day, as the lane does (the model's feature of the same name reads the lists point in
time: the entry was not listed before the declaration)."""

from __future__ import annotations

from typing import Any

from serving.auth import Role
from tests.serving.conftest import DAY, Api, Samples, payload
from tests.serving.test_uat2_watchlists import _ingest, _load

API = "/api/v1"
RULE = {
    "id": "wl-ch93",
    "name": "Watchlist match and arms chapter",
    "severity": "must_inspect",
    "condition": {
        "all": [
            {"field": "watchlist_best_score", "op": "ge", "value": 85},
            {"field": "item.hs_code", "op": "starts_with", "value": "93"},
        ]
    },
}
LISTED_TODAY = f"KG-6,entity,Tengri Arms Trading,,,,KG,,,{DAY.isoformat()}"


def _arms_shipment(samples: Samples, i: int, sid: str, consignee: str) -> dict[str, Any]:
    record = payload(samples, i, sid)
    record.update(consignee_name=consignee, consignee_id=None, consignee_document_number=None)
    record["consignee_birth_date"] = None
    first = record["items"][0]
    first.update(hs_code="930320", description="hunting shotguns")
    record["items"] = [first]
    return record


def test_a_rule_on_a_watchlist_field_sees_a_party_listed_today(
    world_api: Api, samples: Samples
) -> None:
    analyst = world_api.headers(Role.analyst)
    r = world_api.client.post(f"{API}/rules", json=RULE, headers=analyst)
    assert r.status_code == 201, r.text
    _load(world_api, LISTED_TODAY)
    _ingest(
        world_api,
        _arms_shipment(samples, 0, "WLNOW-1", "Tengri Arms Tradings LLC"),
        _arms_shipment(samples, 1, "WLNOW-2", "Karagandy Hunting Supplies LLC"),
    )
    listed = world_api.client.get(f"{API}/shipments/WLNOW-1", headers=analyst).json()
    assert listed["watchlist"]["best_score"] >= 85  # the lane's screening, lists as now
    assert {h["rule_id"] for h in listed["rule_hits"]} >= {"wl-ch93"}
    assert listed["must_inspect"] and listed["lane"] == "red"
    other = world_api.client.get(f"{API}/shipments/WLNOW-2", headers=analyst).json()
    assert "wl-ch93" not in {h["rule_id"] for h in other["rule_hits"]}
