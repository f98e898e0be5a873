"""Acceptance findings (round 2) on queue placement, over the real API (SQLite and
PostgreSQL) with a trained model:

- S7: a must-inspect shipment declared on an earlier day (a late submission) reaches
  today's queue, as a forced entry showing its declaration day, placed once; one
  placed late in a past day's queue is overdue at once;
- A2/S8: a queued entry whose shipment a watchlist rescreen turns into an exact hit
  shows the current priority, lane and method, is never displaced, and a displaced
  entry that becomes an exact hit is reinstated;
- S13: a queue extended view by view keeps its exploration slots, each draw with its
  exact recorded probability;
- S5: a displaced entry is not "over capacity" and no longer counts against it."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving import orm as m
from serving import policy
from serving.auth import Role
from tests.serving.conftest import OFFICE, Api, password_for, payload, username_for
from tests.serving.test_uat_queue import _batch, _capacity
from tests.serving.test_uat_users import _web_login
from tests.serving.test_watchlists_api import _national, _upload

API = "/api/v1"
MARK = "UAT2 MUST INSPECT MARKER"
RED_MARK = "UAT2 RED MARKER TRADING"
LISTED = "Zarya-Vostok Kommerts Holding LLP"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


_settings = _capacity  # (the queue settings of the app under test)


def _rule(api: Api, rule_id: str, severity: str, name: str) -> None:
    rule = {
        "id": rule_id,
        "name": f"UAT2 {severity}",
        "severity": severity,
        "condition": {"all": [{"field": "consignee_name", "op": "eq", "value": name}]},
    }
    r = api.client.post(f"{API}/rules", json=rule, headers=api.headers(Role.analyst))
    assert r.status_code == 201, r.text


def _with_consignee(record: dict[str, Any], name: str) -> dict[str, Any]:
    record["consignee_name"] = name
    return record


def _queue(api: Api, day: dt.date, role: Role = Role.officer) -> Any:
    r = api.client.get(f"{API}/queues/{OFFICE}/{day.isoformat()}", headers=api.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def _overdue(api: Api) -> list[dict[str, Any]]:
    r = api.client.get(f"{API}/queues/{OFFICE}/overdue", headers=api.headers(Role.officer))
    assert r.status_code == 200, r.text
    return list(r.json())


def _audit(api: Api, **params: Any) -> list[Any]:
    r = api.client.get(
        f"{API}/audit", params={"limit": 1000, **params}, headers=api.headers(Role.auditor)
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def _verified(api: Api) -> None:
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor)).json()
    assert verify["ok"] is True, verify


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _referrals_of(api: Api, shipment_id: str) -> int:
    with api.app.state.session_factory() as session:
        return int(
            session.scalar(
                select(func.count(m.Referral.id)).where(m.Referral.shipment_id == shipment_id)
            )
            or 0
        )


# --------------------------------------------------------------------------- S7


def test_forced_shipment_of_an_earlier_day_enters_todays_queue(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    today = _today()
    earlier = today - dt.timedelta(days=2)
    _settings(api, 2)
    _rule(api, "uat2-must", "must_inspect", MARK)
    _batch(api, [payload(samples, i, f"S7-T{i}", day=today) for i in range(2)])
    assert len(_queue(api, today)["entries"]) == 2  # today's queue is full

    # a late submission: must-inspect, declared two days ago, received now
    (late,) = _batch(api, [_with_consignee(payload(samples, 5, "S7-LATE", day=earlier), MARK)])
    assert late["must_inspect"] is True and late["lane"] == "red"
    view = _queue(api, today)
    assert view["built_now"] is True
    entry = {e["shipment_id"]: e for e in view["entries"]}["S7-LATE"]
    assert entry["queue_date"] == today.isoformat()
    assert entry["declared_on"] == earlier.isoformat()  # its own day, visible
    assert entry["selection_method"] == "rule" and entry["selection_probability"] == 1.0
    assert entry["lane"] == "red" and entry["priority"] >= policy.TOP_BAND
    assert entry["status"] == "open" and entry["over_capacity"] is True
    # today's own entries show today as their declaration day
    assert {e["declared_on"] for e in view["entries"] if e["shipment_id"] != "S7-LATE"} == {
        today.isoformat()
    }

    # placed once: its own day's queue, opened later, does not take it again
    past = _queue(api, earlier)
    assert "S7-LATE" not in {e["shipment_id"] for e in past["entries"]}
    assert "S7-LATE" not in {o["shipment_id"] for o in past["left_out"]}  # not "left out"
    _queue(api, today)
    assert _referrals_of(api, "S7-LATE") == 1
    placed = [e for e in _audit(api, shipment_id="S7-LATE") if e["kind"] == "queue_placement"]
    assert len(placed) == 1 and placed[0]["actor"] == "system:queue"
    assert placed[0]["payload"]["declared_on"] == earlier.isoformat()
    assert placed[0]["payload"]["queue"] == f"{OFFICE}/{today.isoformat()}"
    _verified(api)


def test_forced_entry_placed_late_in_a_past_days_queue_is_overdue_at_once(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    earlier = _today() - dt.timedelta(days=1)
    # (both declared yesterday: neither has waited 72 h since its declaration)
    _settings(api, 5, overdue_hours=72)
    _rule(api, "uat2-must", "must_inspect", MARK)
    _batch(
        api,
        [
            _with_consignee(payload(samples, 1, "S7-PAST-F", day=earlier), MARK),
            payload(samples, 2, "S7-PAST-G", day=earlier),
        ],
    )
    # somebody opens yesterday's queue first: both are placed there, just now
    entries = {e["shipment_id"]: e for e in _queue(api, earlier)["entries"]}
    assert set(entries) == {"S7-PAST-F", "S7-PAST-G"}
    assert entries["S7-PAST-F"]["selection_method"] == "rule"
    overdue = {o["shipment_id"] for o in _overdue(api)}
    # the forced one is late although it was placed a moment ago; the other is not
    assert overdue == {"S7-PAST-F"}
    # and today's queue does not take it a second time
    assert "S7-PAST-F" not in {e["shipment_id"] for e in _queue(api, _today())["entries"]}
    assert _referrals_of(api, "S7-PAST-F") == 1


def test_only_recent_forced_shipments_of_earlier_days_enter_todays_queue(
    world_api: Api, samples: Any
) -> None:
    """Found in review: today's queue took forced shipments of any age (a rescreen
    against a new list entry made year-old declarations must-inspect, and they took
    today's capacity). Only those declared at most `carry_forced_days` (7) days
    before today are carried in; an older one waits for its own day's queue."""
    api = world_api
    today = _today()
    _settings(api, 2)
    _rule(api, "uat2-must", "must_inspect", MARK)
    _batch(
        api,
        [
            _with_consignee(
                payload(samples, 1, "S7-RECENT", day=today - dt.timedelta(days=7)), MARK
            ),
            _with_consignee(payload(samples, 2, "S7-OLD", day=today - dt.timedelta(days=8)), MARK),
        ],
    )
    entries = {e["shipment_id"]: e for e in _queue(api, today)["entries"]}
    assert "S7-RECENT" in entries and "S7-OLD" not in entries
    assert entries["S7-RECENT"]["declared_on"] == (today - dt.timedelta(days=7)).isoformat()
    # its own day's queue places it, overdue at once
    own = {e["shipment_id"]: e for e in _queue(api, today - dt.timedelta(days=8))["entries"]}
    assert own["S7-OLD"]["selection_method"] == "rule"
    assert "S7-OLD" in {o["shipment_id"] for o in _overdue(api)}
    assert _referrals_of(api, "S7-OLD") == 1

    # the queue page shows the carried entry's own day, and a meter of the capacity
    # used as its text says (it showed the decided ones)
    web = TestClient(api.app, follow_redirects=False)
    _web_login(web, username_for(Role.officer), password_for(Role.officer))
    page = web.get("/web/queue").text
    recent = (today - dt.timedelta(days=7)).isoformat()
    row = page.split('data-shipment="S7-RECENT"')[1].split("</tr>")[0]
    assert f'data-declared-on="{recent}"' in row and f"declared on {recent}" in row
    used = re.search(r"Capacity used: (\d+) of (\d+)", page)
    assert used is not None and int(used[1]) > 0
    assert re.search(r'<meter min="0" max="(\d+)" value="(\d+)"', page).groups() == (  # type: ignore[union-attr]
        used[2],
        used[1],
    )
    # a day that is no date, or beyond the queue days, says why
    assert "Enter the day as YYYY-MM-DD." in web.get("/web/queue?day=2026-02-30").text
    far = web.get("/web/queue?day=1900-01-01").text
    assert "No queue on 1900-01-01: a queue day lies between 1990-01-01" in far

    # a wider window carries an older one in
    _settings(api, 2, carry_forced_days=10)
    _batch(
        api,
        [_with_consignee(payload(samples, 3, "S7-OLDER", day=today - dt.timedelta(days=9)), MARK)],
    )
    assert "S7-OLDER" in {e["shipment_id"] for e in _queue(api, today)["entries"]}


# --------------------------------------------------------------------------- A2 / S8


def test_rescreen_upgrades_queued_entry_which_is_then_never_displaced(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    today = _today()
    _settings(api, 3)
    _rule(api, "uat2-red", "high", RED_MARK)
    stored = _batch(
        api,
        [
            _with_consignee(payload(samples, 0, "A2-X", day=today), LISTED),
            payload(samples, 1, "A2-Y", day=today),
            payload(samples, 2, "A2-Z", day=today),
        ],
    )
    assert {s["lane"] for s in stored} == {"green"}, "precondition: green shipments"
    first = {e["shipment_id"]: e for e in _queue(api, today)["entries"]}
    assert set(first) == {"A2-X", "A2-Y", "A2-Z"}
    # A2-X is made the lowest entry as placed, the one a red arrival displaced when
    # displacement compared placement-time priorities
    with api.app.state.session_factory() as session:
        session.get(m.Referral, first["A2-X"]["id"]).priority = 1e-6  # type: ignore[union-attr]
        session.commit()
    assert first["A2-X"]["selection_method"] == "model"

    loaded = _upload(
        api, "national", _national(f"A2-1,entity,{LISTED},,,,,,,"), "text/csv", list_name="A2-NAT"
    )
    assert loaded.status_code == 200, loaded.text
    view = _queue(api, today)
    x = {e["shipment_id"]: e for e in view["entries"]}["A2-X"]
    assert x["id"] == first["A2-X"]["id"] and x["rank"] == first["A2-X"]["rank"]
    assert x["priority"] >= policy.TOP_BAND and x["lane"] == "red"
    assert x["selection_method"] == "watchlist" and x["selection_probability"] == 1.0
    assert x["status"] == "open" and x["over_capacity"] is False
    trail = [e for e in _audit(api, shipment_id="A2-X") if e["kind"] == "queue_rescore"]
    assert len(trail) == 1 and trail[0]["actor"] == "system:queue"
    body = trail[0]["payload"]
    assert body["action"] == "rescore" and body["rescreened_by"] == "analyst1"
    assert body["before"]["selection_method"] == "model" and body["before"]["lane"] == "green"
    assert body["after"]["selection_method"] == "watchlist" and body["after"]["lane"] == "red"

    # a red (not forced) arrival displaces the lowest *current* priority: not A2-X
    (red,) = _batch(api, [_with_consignee(payload(samples, 7, "A2-RED", day=today), RED_MARK)])
    assert red["lane"] == "red" and red["must_inspect"] is False
    after = {e["shipment_id"]: e for e in _queue(api, today)["entries"]}
    assert after["A2-X"]["status"] == "open"
    assert after["A2-RED"]["status"] == "open"
    pushed = [e for e in after.values() if e["displaced_by"] == after["A2-RED"]["id"]]
    assert len(pushed) == 1 and pushed[0]["shipment_id"] in {"A2-Y", "A2-Z"}
    assert pushed[0]["over_capacity"] is False  # S5: displaced, not over capacity

    # the displaced one becomes an exact hit as well: it is reinstated (over capacity)
    victim = pushed[0]["shipment_id"]
    with api.app.state.session_factory() as session:
        ship = session.get(m.Shipment, victim)
        assert ship is not None
        name = ship.payload["consignee_name"]
    loaded = _upload(
        api,
        "national",
        _national(f"A2-1,entity,{LISTED},,,,,,,", f"A2-2,entity,{_csv(name)},,,,,,,"),
        "text/csv",
        list_name="A2-NAT",
    )
    assert loaded.status_code == 200, loaded.text
    final = {e["shipment_id"]: e for e in _queue(api, today)["entries"]}
    back = final[victim]
    assert back["id"] == pushed[0]["id"] and back["status"] == "open"
    assert back["selection_method"] == "watchlist" and back["lane"] == "red"
    assert back["over_capacity"] is True and back["displaced_by"] is None
    assert victim not in {o["shipment_id"] for o in _queue(api, today)["left_out"]}
    kinds = [e["payload"].get("action") for e in _audit(api, shipment_id=victim)]
    assert kinds.count("reinstate") == 1
    assert api.client.post(
        f"{API}/referrals/{back['id']}/claim", headers=api.headers(Role.officer)
    ).is_success
    _verified(api)


# --------------------------------------------------------------------------- S13


def test_queue_extended_view_by_view_keeps_its_exploration_slots(
    world_api: Api, samples: Any
) -> None:
    """Capacity 10 and share 0.1: one exploration slot for the day. Four arrivals per
    view fill the 9 ranked slots over three views; the slot is drawn into at the
    third view, from the arrivals that did not get a ranked slot there, with the
    exact probability (draws / pool). Without the reservation the extensions had
    no exploration at all."""
    api = world_api
    today = _today()
    _settings(api, 10, share=0.1)
    for view in range(6):
        _batch(
            api,
            [payload(samples, 4 * view + i, f"S13-{4 * view + i}", day=today) for i in range(4)],
        )
        _queue(api, today)
    entries = _queue(api, today)["entries"]
    drawn = [e for e in entries if e["selection_method"] == "random"]
    assert len(drawn) == policy.exploration_slots(10, 0.1) == 1
    live = [e for e in entries if e["status"] != "closed"]
    assert len(live) == 10 and not any(e["over_capacity"] for e in live)

    # the recorded probability is d / N for the placement that drew it
    built = _audit(api, kind="queue_built") + _audit(api, kind="queue_extended")
    placements = [e["payload"] for e in sorted(built, key=lambda e: e["seq"])]
    assert all(p["exploration_slots"] == 1 for p in placements)
    checked = 0
    for p in placements:
        randoms = [e for e in p["entries"] if e["selection_method"] == "random"]
        if not randoms:
            continue
        successors = len(p["displaced"])
        pool = p["candidates"] - (len(p["entries"]) - len(randoms) - successors)
        assert pool > len(randoms)  # a real draw, not a pool taken whole
        for e in randoms:
            assert e["selection_probability"] == pytest.approx(len(randoms) / pool)
        assert p["exploration_slots_undrawn"] == 1
        checked += 1
    assert checked == 1
    assert drawn[0]["selection_probability"] == pytest.approx(1 / 3)


def test_placement_with_exploration_left_is_deterministic() -> None:
    cands = [
        policy.Candidate(f"s{i}", OFFICE, dt.date(2026, 1, 5), 0.1 + i / 100) for i in range(6)
    ]
    first = policy.build_queue(cands, 4, 0.05, rng_seed=3, exploration=2)
    assert first == policy.build_queue(cands, 4, 0.05, rng_seed=3, exploration=2)
    assert [e.selection_method for e in first].count("random") == 2
    # 2 ranked, then 2 of the 4 left drawn: 2 / 4 each
    assert {e.selection_probability for e in first if e.selection_method == "random"} == {0.5}
    with pytest.raises(ValueError, match="exploration"):
        policy.build_queue(cands, 4, 0.05, exploration=-1)


# --------------------------------------------------------------------------- S5


def test_displaced_entry_is_not_over_capacity_and_frees_no_slot(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    today = _today()
    _settings(api, 2)
    _rule(api, "uat2-red", "high", RED_MARK)
    _batch(api, [payload(samples, i, f"S5-{i}", day=today) for i in range(2)])
    assert len(_queue(api, today)["entries"]) == 2
    _batch(api, [_with_consignee(payload(samples, 7, "S5-RED", day=today), RED_MARK)])
    view = _queue(api, today)
    pushed = [e for e in view["entries"] if e["displaced_by"] is not None]
    assert len(pushed) == 1 and pushed[0]["status"] == "closed"
    assert pushed[0]["over_capacity"] is False
    with api.app.state.session_factory() as session:
        row = session.get(m.Referral, pushed[0]["id"])
        assert row is not None and row.over_capacity is False
    # the displaced entry's slot went to its successor: a green arrival finds no room
    _batch(api, [payload(samples, 3, "S5-GREEN", day=today)])
    view = _queue(api, today)
    assert "S5-GREEN" not in {e["shipment_id"] for e in view["entries"]}
    live = [e for e in view["entries"] if e["status"] != "closed"]
    assert len(live) == 2
