"""Rules, acceptance round 2 (analyst findings A6, A7, A13).

A7: rule performance is per rule version (the current version's own figures beside it,
each version's in the history, all versions labelled as such) and counts arms findings
apart from findings of any category. A13: a watchlist rescreen keeps only the stored
hits of rules still active. A6: a date without a time in a condition on a date-time
field stands for that whole day (UTC), on the single-shipment and the batch path."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from serving.auth import Role
from serving.rules_engine import RuleValidationError, evaluate, evaluate_frame, parse_rule
from tests.serving.conftest import DAY, OFFICE, Api, Samples, password_for, payload, username_for
from tests.serving.test_uat_users import CSRF, _web_login
from tests.serving.test_watchlists_api import _detail, _national, _upload

API = "/api/v1"
QUEUE = f"{API}/queues/{OFFICE}/{DAY.isoformat()}"


def _batch(api: Api, *records: dict[str, Any]) -> list[dict[str, Any]]:
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": list(records)}, headers=api.headers(Role.analyst)
    )
    assert r.status_code == 200, r.text
    assert not r.json()["errors"], r.json()["errors"]
    return list(r.json()["stored"])


def _rule(api: Api, rule: dict[str, Any]) -> None:
    r = api.client.post(f"{API}/rules", json=rule, headers=api.headers(Role.analyst))
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- A7


def test_performance_is_per_version_and_counts_arms_findings_apart(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    analyst, officer = api.headers(Role.analyst), api.headers(Role.officer)
    rid = "office-arms-watch"
    _rule(
        api,
        {
            "id": rid,
            "name": "every shipment of the office",
            "severity": "medium",
            "condition": {"field": "office_code", "op": "eq", "value": OFFICE},
        },
    )
    stored = _batch(api, *(payload(samples, i, f"PV-{i}") for i in range(5)))
    assert all(s["rule_hits"][0]["rule_version"] == 1 for s in stored)

    # Three outcomes: an ammunition finding, no finding, a documentary finding.
    r = api.client.get(QUEUE, headers=officer)
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert len(entries) >= 3
    outcomes = (
        {"finding": True, "category": "ammunition", "quantity": 20, "unit": "PCE"},
        {"finding": False},
        {"finding": True, "category": "documentary"},
    )
    for entry, outcome in zip(entries, outcomes, strict=False):
        assert api.client.post(f"{API}/referrals/{entry['id']}/claim", headers=officer).is_success
        r = api.client.post(f"{API}/referrals/{entry['id']}/outcome", json=outcome, headers=officer)
        assert r.status_code == 200, r.text

    # Version 2: another severity and a condition that hits nothing.
    r = api.client.put(
        f"{API}/rules/{rid}",
        json={
            "name": "every shipment of the office",
            "severity": "high",
            "condition": {"field": "office_code", "op": "eq", "value": "XX-NONE"},
        },
        headers=analyst,
    )
    assert r.status_code == 200 and r.json()["version"] == 2, r.text

    v1 = {
        "hits": 5,
        "inspected": 3,
        "findings": 2,
        "finding_rate": pytest.approx(2 / 3),
        "arms_findings": 1,
        "arms_finding_rate": pytest.approx(1 / 3),
    }
    nothing = {
        "hits": 0,
        "inspected": 0,
        "findings": 0,
        "finding_rate": None,
        "arms_findings": 0,
        "arms_finding_rate": None,
    }
    perf = {
        p["rule_id"]: p for p in api.client.get(f"{API}/rules/performance", headers=analyst).json()
    }
    row = perf[rid]
    # beside version 2 and "high": version 2's own figures, not version 1's
    assert (row["version"], row["severity"], row["active"]) == (2, "high", True)
    assert {k: row[k] for k in nothing} == nothing
    assert row["all_versions"] == v1
    assert row["versions"] == [
        {"version": 1, "severity": "medium", **v1},
        {"version": 2, "severity": "high", **nothing},
    ]
    one = api.client.get(f"{API}/rules/{rid}/performance", headers=analyst)
    assert one.status_code == 200 and one.json() == row
    assert (
        api.client.get(f"{API}/rules/no-such-rule/performance", headers=analyst).status_code == 404
    )

    versions = api.client.get(f"{API}/rules/{rid}/versions", headers=analyst).json()
    assert [(v["version"], v["severity"], v["performance"]) for v in versions] == [
        (1, "medium", v1),
        (2, "high", nothing),
    ]

    # The web pages: the table puts version 2's figures beside it, all versions apart;
    # the rule page's history gives each version's figures.
    web = TestClient(api.app, follow_redirects=False)
    _web_login(web, username_for(Role.analyst), password_for(Role.analyst))
    page = web.get("/web/rules")
    assert page.status_code == 200
    tr = re.search(rf'<tr data-rule="{rid}".*?</tr>', page.text, re.S)
    assert tr is not None
    cells = dict(re.findall(r'<td class="(?:num )?(rule-[a-z-]+)">(.*?)</td>', tr.group(0), re.S))
    assert cells["rule-hits"] == "0" and cells["rule-findings"] == "0"
    assert cells["rule-arms-findings"] == "0" and cells["rule-finding-rate"] == "–"
    assert cells["rule-all-versions"] == "5 hits · 3 inspected · 2 findings (1 arms)"
    assert "Arms finding rate" in page.text and "documentary irregularities" in page.text
    page = web.get(f"/web/rules/{rid}")
    assert page.status_code == 200
    history = {
        int(n): body
        for n, body in re.findall(r'<li data-version="(\d+)">(.*?)</li>', page.text, re.S)
    }
    assert (
        "5 hits · 3 inspected · 2 findings (1 arms) · finding rate 66.7% (arms 33.3%)" in history[1]
    )
    assert "0 hits · 0 inspected · 0 findings (0 arms) · finding rate – (arms –)" in history[2]
    assert re.search(r'id="rule-all-versions">.*5 hits · 3 inspected', page.text)
    # a refused edit shows the page again with the same figures
    csrf = CSRF.search(page.text)
    assert csrf is not None
    bad = web.post(
        f"/web/rules/{rid}",
        data={
            "csrf_token": csrf.group(1),
            "name": "x",
            "severity": "high",
            "condition": "{field: office_code, op: eq, value: 3}",
        },
    )
    assert bad.status_code == 422
    assert (
        "5 hits · 3 inspected · 2 findings (1 arms) · finding rate 66.7% (arms 33.3%)" in bad.text
    )


# --------------------------------------------------------------------------- A13

LISTED = "Yusupov Bakhodir Alisherovich"


def test_a_rescreen_drops_the_stored_hits_of_a_rule_deactivated_since(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    listed_on = (DAY - dt.timedelta(days=2)).isoformat()
    r = _upload(
        api,
        "national",
        _national(f"DR-W1,individual,{LISTED},,,,UZ,,,{listed_on}"),
        "text/csv",
        list_name="DR-list",
    )
    assert r.status_code == 200, r.text
    for rid, severity in (("office-forced", "must_inspect"), ("office-note", "info")):
        _rule(
            api,
            {
                "id": rid,
                "name": rid,
                "severity": severity,
                "condition": {"field": "office_code", "op": "eq", "value": OFFICE},
            },
        )
    listed = payload(samples, 5, "DR-1")
    listed["consignee_name"] = LISTED
    _batch(api, listed)
    before = _detail(api, "DR-1")
    assert before["watchlist"]["exact"] is True and before["must_inspect"] is True
    assert [h["rule_id"] for h in before["rule_hits"]] == ["office-forced", "office-note"]

    r = api.client.post(
        f"{API}/rules/office-forced/deactivate",
        json={"reason": "wrong profile, floods the queue"},
        headers=analyst,
    )
    assert r.status_code == 200, r.text
    # The entry is delisted: the rescreen rescores DR-1 (no longer an exact hit).
    r = _upload(
        api,
        "national",
        _national(f"DR-W2,individual,Zzyzx Qwertyuiop Plonk,,,,UZ,,,{listed_on}"),
        "text/csv",
        list_name="DR-list",
    )
    assert r.status_code == 200 and r.json()["rescored"] >= 1, r.text

    after = _detail(api, "DR-1")
    assert after["watchlist"]["exact"] is False
    # the deactivated rule no longer forces the inspection; the active one is kept
    assert [h["rule_id"] for h in after["rule_hits"]] == ["office-note"]
    assert after["must_inspect"] is False
    assert after["priority"] < 2.0


# --------------------------------------------------------------------------- A6

U = dt.UTC
# the last instant of 26 Nov, midnight, 10:00 and the last instant of 27 Nov, next midnight
TIMES = [
    dt.datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=U),
    dt.datetime(2026, 11, 27, 0, 0, tzinfo=U),
    dt.datetime(2026, 11, 27, 10, 0, tzinfo=U),
    dt.datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=U),
    dt.datetime(2026, 11, 28, 0, 0, tzinfo=U),
]


def _dt_rule(op: str, value: Any) -> Any:
    return parse_rule(
        {
            "id": "dt-rule",
            "version": 1,
            "name": "declared",
            "severity": "info",
            "author": "analyst1",
            "condition": {"field": "declared_at", "op": op, "value": value},
        }
    )


def _both_paths(rule: Any) -> list[bool]:
    """Which of TIMES the rule hits, checked equal on the single-shipment path and
    the batch (frame) path."""
    one = [evaluate(rule, {"declared_at": t}, [], {}, t) for t in TIMES]
    frame = pl.DataFrame({"shipment_id": [str(i) for i in range(len(TIMES))], "declared_at": TIMES})
    hit = set(evaluate_frame([rule], frame)["shipment_id"].to_list())
    assert [str(i) in hit for i in range(len(TIMES))] == one
    return one


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        # a date alone is the whole day (UTC), inclusive as effective_to is
        ("le", "2026-11-27", [True, True, True, True, False]),
        ("between", ["2026-11-27", "2026-11-27"], [False, True, True, True, False]),
        ("between", ["2026-11-01", "2026-11-27"], [True, True, True, True, False]),
        ("eq", "2026-11-27", [False, True, True, True, False]),
        ("ne", "2026-11-27", [True, False, False, False, True]),
        ("lt", "2026-11-27", [True, False, False, False, False]),
        ("gt", "2026-11-27", [False, False, False, False, True]),
        ("ge", "2026-11-27", [False, True, True, True, True]),
        # a bound with a time is exact
        ("le", "2026-11-27T10:00:00Z", [True, True, True, False, False]),
        ("between", ["2026-11-27T05:00:00+00:00", "2026-11-27"], [False, False, True, True, False]),
        ("eq", "2026-11-27T00:00:00Z", [False, True, False, False, False]),
    ],
)
def test_a_date_alone_in_a_date_time_condition_is_the_whole_day(
    op: str, value: Any, expected: list[bool]
) -> None:
    assert _both_paths(_dt_rule(op, value)) == expected


def test_a_yaml_date_is_the_whole_day_and_an_empty_range_is_refused() -> None:
    assert _both_paths(_dt_rule("le", dt.date(2026, 11, 27))) == [True, True, True, True, False]
    for low, high in (
        ("2026-11-28", "2026-11-27"),
        ("2026-11-28T00:00:00Z", "2026-11-27"),
        ("2026-11-27T00:00:01Z", "2026-11-27T00:00:00Z"),
    ):
        with pytest.raises(RuleValidationError) as refused:
            _dt_rule("between", [low, high])
        assert refused.value.errors[0].path == "condition.value"
        assert "above the high value" in refused.value.errors[0].message
    # a time within the high day is below the day's end: accepted
    assert _both_paths(_dt_rule("between", ["2026-11-27T23:00:00Z", "2026-11-27"]))[3] is True
