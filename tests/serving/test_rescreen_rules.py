"""A rescreen after a list change changes only the watchlist part of a score: a rule
saved after a shipment was scored is not applied to it through the rescreen (analyst
finding F8: rules were back-applied to just the shipments whose screening changed)."""

from __future__ import annotations

import datetime as dt

from serving.auth import Role
from tests.serving.conftest import DAY, OFFICE, Api, Samples, payload
from tests.serving.test_uat_watchlists import _ingest
from tests.serving.test_watchlists_api import _detail, _national, _upload

API = "/api/v1"
LISTED = "Yusupov Bakhodir Alisherovich"


def test_a_rescreen_keeps_the_rule_hits_of_the_score_it_replaces(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    listed = payload(samples, 5, "RS-1")
    listed["consignee_name"] = LISTED
    _ingest(api, listed, payload(samples, 6, "RS-2"))
    assert _detail(api, "RS-1")["rule_hits"] == []

    # A rule saved afterwards that both shipments meet.
    rule = {
        "id": "office-watch",
        "name": "every shipment of the office",
        "severity": "high",
        "condition": {"field": "office_code", "op": "eq", "value": OFFICE},
    }
    analyst = api.headers(Role.analyst)
    assert api.client.post(f"{API}/rules", json=rule, headers=analyst).status_code == 201

    listed_on = (DAY - dt.timedelta(days=2)).isoformat()
    r = _upload(
        api,
        "national",
        _national(f"RS-W1,individual,{LISTED},,,,UZ,,,{listed_on}"),
        "text/csv",
        list_name="RS-list",
    )
    assert r.status_code == 200 and r.json()["rescored"] >= 1, r.text

    rescored = _detail(api, "RS-1")
    assert rescored["watchlist"]["exact"] is True and rescored["lane"] == "red"
    # The rescreen did not bring in the rule saved after the shipment was scored.
    assert rescored["rule_hits"] == []
    assert _detail(api, "RS-2")["rule_hits"] == []
    perf = {
        p["rule_id"]: p for p in api.client.get(f"{API}/rules/performance", headers=analyst).json()
    }
    assert perf["office-watch"]["hits"] == 0

    # A shipment scored while the rule is in force gets its hit.
    _ingest(api, payload(samples, 7, "RS-3"))
    assert [h["rule_id"] for h in _detail(api, "RS-3")["rule_hits"]] == ["office-watch"]
