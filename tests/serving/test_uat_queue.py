"""Acceptance findings on queues and referrals, over the real API (SQLite and PostgreSQL)
with a trained model: referrals tracked to closure (close, release, overdue, age),
the recorded outcome shown, decisions only by named signed-in persons, waiver reasons
that must be visible, "rule" as the selection method of rule-lifted entries, late
red/yellow arrivals displacing lower-priority entries (or listed as left out),
placement attributed to the engine and visible in each shipment's audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from serving import orm as m
from serving import policy
from serving.auth import Role, create_user
from serving.services import QueueSettings
from tests.serving.conftest import DAY, OFFICE, Api, password_for, payload, username_for
from tests.serving.test_uat_users import _web_login

API = "/api/v1"
QUEUE = f"{API}/queues/{OFFICE}/{DAY.isoformat()}"
MARK = "UAT RED MARKER TRADING"


def _batch(api: Api, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": records}, headers=api.headers(Role.analyst)
    )
    assert r.status_code == 200, r.text
    assert not r.json()["errors"], r.json()["errors"]
    return list(r.json()["stored"])


def _capacity(api: Api, capacity: int, share: float = 0.0, **more: Any) -> None:
    api.app.state.services.queue = QueueSettings(
        queue_capacity=capacity, exploration_share=share, **more
    )


def _red_rule(api: Api) -> None:
    """A high-severity rule on a consignee name: priority >= 0.5, lane red."""
    rule = {
        "id": "uat-red-marker",
        "name": "UAT marker",
        "severity": "high",
        "condition": {"all": [{"field": "consignee_name", "op": "eq", "value": MARK}]},
    }
    r = api.client.post(f"{API}/rules", json=rule, headers=api.headers(Role.analyst))
    assert r.status_code == 201, r.text


def _marked(samples: Any, i: int, sid: str) -> dict[str, Any]:
    record = payload(samples, i, sid)
    record["consignee_name"] = MARK
    return record


def _queue(api: Api, role: Role = Role.officer, headers: dict[str, str] | None = None) -> Any:
    r = api.client.get(QUEUE, headers=headers or api.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def _audit(api: Api, headers: dict[str, str] | None = None, **params: Any) -> list[Any]:
    r = api.client.get(
        f"{API}/audit",
        params={"limit": 1000, **params},
        headers=headers or api.headers(Role.auditor),
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def _second_officer(api: Api, office: str = OFFICE) -> dict[str, str]:
    with api.app.state.session_factory() as session:
        create_user(
            session,
            username="officer2",
            password=password_for(Role.officer),
            role=Role.officer,
            display_name="Second officer",
            office_code=office,
        )
        session.commit()
    r = api.client.post(
        f"{API}/auth/login",
        data={"username": "officer2", "password": password_for(Role.officer)},
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# --------------------------------------------------------------------------- F3 (API)


@pytest.mark.parametrize(
    "text", ["\u200b\u200b", "\u200b\u200b\u2060", " \u00a0\u3000\t", "\u00ad\ufeff", "\u0301"]
)
def test_invisible_text_is_no_text(text: str) -> None:
    assert policy.has_visible_text(text) is False


@pytest.mark.parametrize("text", ["seal intact", "x\u200b", "пломба цела", "!"])
def test_visible_text(text: str) -> None:
    assert policy.has_visible_text(text) is True


def test_waiver_with_only_invisible_characters_is_refused(world_api: Api, samples: Any) -> None:
    api = world_api
    officer = api.headers(Role.officer)
    _batch(api, [payload(samples, i, f"WV-{i}") for i in range(2)])
    ref = _queue(api)["entries"][0]
    assert api.client.post(f"{API}/referrals/{ref['id']}/claim", headers=officer).is_success
    for reason in ("\u200b\u200b", "\u200b\u200b\u2060", "\u2060 \u200b\n"):
        r = api.client.post(
            f"{API}/referrals/{ref['id']}/waive", json={"reason": reason}, headers=officer
        )
        assert r.status_code == 422, (reason, r.text)
        assert "reason" in r.text
    still = api.client.get(QUEUE, headers=officer).json()["entries"][0]
    assert still["status"] == "claimed" and still["waiver_reason"] is None


# --------------------------------------------------------------------------- F1, F10


def test_referral_life_cycle_to_closure(world_api: Api, samples: Any) -> None:
    """Decided referrals are never overdue and their age stops at the decision; an
    officer of the office (or an admin) closes them, audited; the API shows the
    recorded outcome."""
    api = world_api
    officer = api.headers(Role.officer)
    _batch(api, [payload(samples, i, f"LC-{i}") for i in range(4)])
    entries = _queue(api)["entries"]
    inspected, waived, claimed, untouched = (e["id"] for e in entries[:4])
    for rid in (inspected, waived, claimed):
        assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).is_success
    found = {
        "finding": True,
        "category": "ammunition",
        "quantity": 10000,
        "unit": "PCE",
        "notes": "rounds in spare tyre",
    }
    r = api.client.post(f"{API}/referrals/{inspected}/outcome", json=found, headers=officer)
    assert r.status_code == 200, r.text
    shown = r.json()["referral"]["outcome"]
    assert {k: shown[k] for k in found} == found
    assert shown["recorded_by"] == "officer1"
    r = api.client.post(
        f"{API}/referrals/{waived}/waive", json={"reason": "seal intact"}, headers=officer
    )
    assert r.status_code == 200 and r.json()["outcome"] is None

    # three days later
    with api.app.state.session_factory() as session:
        for rid in (inspected, waived, claimed, untouched):
            ref = session.get(m.Referral, rid)
            assert ref is not None
            back = dt.timedelta(days=3)
            session.execute(
                update(m.Referral)
                .where(m.Referral.id == rid)
                .values(
                    created_at=ref.created_at - back,
                    claimed_at=None if ref.claimed_at is None else ref.claimed_at - back,
                    decided_at=None if ref.decided_at is None else ref.decided_at - back,
                )
            )
        session.commit()
    overdue = api.client.get(f"{API}/queues/{OFFICE}/overdue", headers=officer).json()
    assert {o["id"] for o in overdue} >= {claimed, untouched}
    assert not {o["id"] for o in overdue} & {inspected, waived}
    by_id = {e["id"]: e for e in _queue(api)["entries"]}
    with api.app.state.session_factory() as session:
        declared = {
            sid: at
            for sid, at in session.execute(select(m.Shipment.shipment_id, m.Shipment.declared_at))
        }
    for rid in (inspected, waived):
        # the age counts from the shipment's declaration and stops at the decision
        decided = dt.datetime.fromisoformat(by_id[rid]["decided_at"])
        since = declared[by_id[rid]["shipment_id"]]
        assert by_id[rid]["age_seconds"] == pytest.approx((decided - since).total_seconds())
    waited = dt.datetime.now(dt.UTC) - declared[by_id[claimed]["shipment_id"]]
    assert by_id[claimed]["age_seconds"] == pytest.approx(waited.total_seconds(), abs=60)
    assert by_id[inspected]["outcome"]["notes"] == "rounds in spare tyre"

    # close: only decided referrals, only own office, not by an auditor
    r = api.client.post(f"{API}/referrals/{claimed}/close", headers=officer)
    assert r.status_code == 409 and "must be inspected or waived" in r.text
    assert (
        api.client.post(
            f"{API}/referrals/{inspected}/close", headers=api.headers(Role.auditor)
        ).status_code
        == 403
    )
    other = _second_officer(api, office="UZ-TAS")
    assert api.client.post(f"{API}/referrals/{inspected}/close", headers=other).status_code == 403
    r = api.client.post(f"{API}/referrals/{inspected}/close", headers=officer)
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "closed" and closed["closed_by"] == "officer1"
    assert closed["decided_by"] == "officer1" and closed["outcome"]["category"] == "ammunition"
    assert closed["age_seconds"] == pytest.approx(by_id[inspected]["age_seconds"])
    r = api.client.post(f"{API}/referrals/{waived}/close", headers=api.headers(Role.admin))
    assert r.status_code == 200 and r.json()["closed_by"] == "admin1"
    assert r.json()["waiver_reason"] == "seal intact"
    again = api.client.post(f"{API}/referrals/{inspected}/close", headers=officer)
    assert again.status_code == 409

    statuses = {e["id"]: e["status"] for e in _queue(api)["entries"]}
    assert statuses[inspected] == statuses[waived] == "closed"
    trail = _audit(api, shipment_id=closed["shipment_id"])
    closing = [e for e in trail if e["payload"].get("action") == "close"]
    assert len(closing) == 1 and closing[0]["actor"] == "officer1"
    assert closing[0]["payload"]["decision"] == "inspected"
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor)).json()
    assert verify["ok"] is True


# --------------------------------------------------------------------------- F2


def test_claim_released_by_claimer_or_admin(world_api: Api, samples: Any) -> None:
    api = world_api
    officer = api.headers(Role.officer)
    officer2 = _second_officer(api)
    _batch(api, [payload(samples, i, f"RL-{i}") for i in range(2)])
    rid = _queue(api)["entries"][0]["id"]
    url = f"{API}/referrals/{rid}"
    assert api.client.post(f"{url}/release", headers=officer).status_code == 409  # open
    assert api.client.post(f"{url}/claim", headers=officer).is_success

    r = api.client.post(f"{url}/release", headers=officer2)
    assert r.status_code == 409
    assert "claimed by officer1" in r.text and "administrator" in r.text
    r = api.client.post(f"{url}/release", headers=officer)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "open" and r.json()["claimed_by"] is None

    assert api.client.post(f"{url}/claim", headers=officer).is_success
    r = api.client.post(f"{url}/release", headers=api.headers(Role.admin))
    assert r.status_code == 200 and r.json()["status"] == "open"
    r = api.client.post(f"{url}/claim", headers=officer2)
    assert r.status_code == 200 and r.json()["claimed_by"] == "officer2"

    releases = [
        e
        for e in _audit(api, shipment_id=r.json()["shipment_id"])
        if e["payload"].get("action") == "release"
    ]
    assert [(e["actor"], e["payload"]["claimed_by"]) for e in releases] == [
        ("officer1", "officer1"),
        ("admin1", "officer1"),
    ]
    assert [e["payload"]["released_for_another"] for e in releases] == [False, True]


# --------------------------------------------------------------------------- auditor F1


def test_api_key_cannot_decide(world_api: Api, samples: Any) -> None:
    api = world_api
    _batch(api, [payload(samples, i, f"AK-{i}") for i in range(2)])
    r = api.client.post(
        f"{API}/users/api-keys",
        json={"name": "scanner", "role": "officer", "office_code": OFFICE},
        headers=api.headers(Role.admin),
    )
    assert r.status_code == 201, r.text
    key = {"X-API-Key": r.json()["key"]}
    rid = _queue(api)["entries"][0]["id"]
    for action, body in (
        ("claim", None),
        ("release", None),
        ("waive", {"reason": "seal intact"}),
        ("outcome", {"finding": False}),
        ("close", None),
    ):
        r = api.client.post(f"{API}/referrals/{rid}/{action}", json=body, headers=key)
        assert r.status_code == 403, (action, r.status_code, r.text)
        assert r.json()["detail"] == "decisions are made by a named, signed-in person"
    assert _queue(api)["entries"][0]["status"] == "open"


# --------------------------------------------------------------------------- F6


def test_policy_labels_rule_lifted_entries() -> None:
    def cand(sid: str, p: float, prio: float, rule: bool = False) -> policy.Candidate:
        return policy.Candidate(sid, "KZ-ALA", DAY, prio, probability=p, rule_hit=rule)

    queue = policy.build_queue(
        [
            cand("a", 0.30, 0.30),
            cand("b", 0.20, 0.20),
            cand("c", 0.01, 0.505, rule=True),  # lifted in by a high rule
            cand("d", 0.25, 0.625, rule=True),  # in on its probability anyway
            cand("e", 0.02, 0.02),
        ],
        capacity=3,
        exploration_share=0.0,
    )
    assert [(e.shipment_id, e.selection_method, e.selection_probability) for e in queue] == [
        ("d", "model", 1.0),
        ("c", "rule", 1.0),
        ("a", "model", 1.0),
    ]


def test_rule_lifted_entry_is_recorded_as_rule(world_api: Api, samples: Any) -> None:
    api = world_api
    _capacity(api, 3)
    _red_rule(api)
    stored = _batch(api, [payload(samples, i, f"SM-{i}") for i in range(8)])
    low = min(stored, key=lambda s: s["probability"])
    i = int(low["shipment_id"].split("-")[1])
    (red,) = _batch(api, [_marked(samples, i, "SM-RED")])
    assert red["rule_hits"] and red["lane"] == "red"
    better = sum(s["probability"] > red["probability"] for s in stored)
    assert better >= 3, "precondition: the model alone would not have queued it"

    entries = {e["shipment_id"]: e for e in _queue(api)["entries"]}
    assert entries["SM-RED"]["selection_method"] == "rule"
    assert entries["SM-RED"]["selection_probability"] == 1.0
    assert {e["selection_method"] for k, e in entries.items() if k != "SM-RED"} == {"model"}

    officer = api.headers(Role.officer)
    rid = entries["SM-RED"]["id"]
    assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).is_success
    r = api.client.post(f"{API}/referrals/{rid}/outcome", json={"finding": False}, headers=officer)
    assert r.status_code == 200, r.text
    outcome = [e for e in _audit(api, shipment_id="SM-RED") if e["kind"] == "outcome"]
    assert outcome[0]["payload"]["selection_method"] == "rule"
    # the label names the rule that selected it, as the historical labels do (it
    # was always empty: found in review)
    label = pl.read_parquet(api.app.state.layout.raw / "outcomes" / r.json()["label_file"])
    assert label["selection_method"].to_list() == ["rule"]
    assert label["selection_rule"].to_list() == ["uat-red-marker"]
    # a model selection names none
    rid = next(e["id"] for k, e in entries.items() if k != "SM-RED")
    assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).is_success
    r = api.client.post(f"{API}/referrals/{rid}/outcome", json={"finding": False}, headers=officer)
    label = pl.read_parquet(api.app.state.layout.raw / "outcomes" / r.json()["label_file"])
    assert label["selection_method"].to_list() == ["model"]
    assert label["selection_rule"].to_list() == [None]


# --------------------------------------------------------------------------- F13, auditor F2, F12


def test_late_red_arrival_displaces_lowest_open_entry(world_api: Api, samples: Any) -> None:
    api = world_api
    _capacity(api, 3)
    _red_rule(api)
    officer = api.headers(Role.officer)
    greens = _batch(api, [payload(samples, i, f"DP-{i}") for i in range(3)])
    assert {s["lane"] for s in greens} == {"green"}, "precondition: green shipments"
    first = _queue(api)["entries"]
    assert len(first) == 3 and {e["selection_method"] for e in first} == {"model"}
    lowest, middle, top = sorted(first, key=lambda e: e["priority"])
    # the lowest is claimed: never displaced; the next lowest open one goes
    assert api.client.post(f"{API}/referrals/{lowest['id']}/claim", headers=officer).is_success

    (red,) = _batch(api, [_marked(samples, 7, "DP-RED")])
    assert red["lane"] == "red"
    auditor = api.headers(Role.auditor)
    auditor_seq = max(e["seq"] for e in _audit(api, auditor))
    view = _queue(api, headers=auditor)  # an auditor's read finds the arrival
    assert view["built_now"] is True
    by_sid = {e["shipment_id"]: e for e in view["entries"]}
    pushed = by_sid[middle["shipment_id"]]
    newcomer = by_sid["DP-RED"]
    # displaced, not over capacity (S5, round 2): displaced_by says what happened
    assert pushed["status"] == "closed" and pushed["over_capacity"] is False
    assert pushed["displaced_by"] == newcomer["id"] and pushed["closed_by"] == "system:queue"
    assert pushed["decided_by"] is None
    assert newcomer["status"] == "open" and newcomer["over_capacity"] is False
    assert newcomer["lane"] == "red" and newcomer["selection_probability"] == 1.0
    assert by_sid[lowest["shipment_id"]]["status"] == "claimed"
    assert by_sid[top["shipment_id"]]["status"] == "open"
    assert view["left_out"] == []
    live = [e for e in view["entries"] if e["status"] != "closed" and not e["over_capacity"]]
    assert len(live) == 3

    # written by the engine, not by the auditor who happened to read
    new = [e for e in _audit(api, auditor) if e["seq"] > auditor_seq]
    assert new and {e["actor"] for e in new} == {"system:queue"}
    assert {e["kind"] for e in new} == {"queue_extended", "queue_placement", "queue_displacement"}
    # each shipment's own trail shows its placement / displacement
    placed = [e for e in _audit(api, shipment_id="DP-RED") if e["kind"] == "queue_placement"]
    assert placed[0]["payload"]["displaced_referral_id"] == pushed["id"]
    assert placed[0]["payload"]["rank"] == newcomer["rank"]
    trail = _audit(api, shipment_id=middle["shipment_id"])
    assert [e["kind"] for e in trail if e["kind"].startswith("queue_")] == [
        "queue_placement",
        "queue_displacement",
    ]
    # a displaced entry cannot be claimed
    r = api.client.post(f"{API}/referrals/{pushed['id']}/claim", headers=officer)
    assert r.status_code == 409

    # everything taken: a later red arrival cannot displace anything -> listed
    for e in (top, newcomer):
        assert api.client.post(f"{API}/referrals/{e['id']}/claim", headers=officer).is_success
    _batch(api, [_marked(samples, 8, "DP-RED2")])
    view = _queue(api)
    assert "DP-RED2" not in {e["shipment_id"] for e in view["entries"]}
    assert [(o["shipment_id"], o["lane"]) for o in view["left_out"]] == [("DP-RED2", "red")]
    assert view["left_out"][0]["displaced_referral_id"] is None
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor)).json()
    assert verify["ok"] is True


def test_policy_displacements() -> None:
    def placed(key: int, prio: float, method: str = "model", status: str = "open") -> Any:
        return policy.Placed(key, prio, method, status, False)

    queue = [
        placed(1, 0.05),
        placed(2, 0.01, status="claimed"),
        placed(3, 0.02, method="random"),
        placed(4, 2.1, method="rule"),  # forced
        placed(5, 0.03, method="rule"),
        placed(6, 2.3, method="watchlist"),  # exact hit: forced
        placed(7, 2.2, method="rule", status="open"),  # must-inspect: forced
    ]
    arrivals = [
        policy.Candidate("r1", "KZ-ALA", DAY, 0.6),
        policy.Candidate("y1", "KZ-ALA", DAY, 0.3),
        policy.Candidate("g1", "KZ-ALA", DAY, 0.9),  # lane given as green below
        policy.Candidate("r2", "KZ-ALA", DAY, 0.55),
    ]
    lanes = {"r1": "red", "y1": "yellow", "g1": "green", "r2": "red"}
    pairs = policy.displacements(queue, arrivals, lanes)
    assert [(c.shipment_id, p.key) for c, p in pairs] == [("r1", 5), ("r2", 1)]


def test_an_unknown_office_is_a_404_not_an_empty_queue(world_api: Api) -> None:
    """(Found in review: a mistyped office code read as an empty queue of capacity 20.)"""
    api = world_api
    analyst = api.headers(Role.analyst)
    r = api.client.get(f"{API}/queues/KZ-NOWHERE/{DAY.isoformat()}", headers=analyst)
    assert r.status_code == 404 and "unknown office 'KZ-NOWHERE'" in r.text, r.text
    web = TestClient(api.app, follow_redirects=False)
    _web_login(web, username_for(Role.analyst), password_for(Role.analyst))
    page = web.get("/web/queue", params={"office": "KZ-NOWHERE"}).text
    assert "No office KZ-NOWHERE is known" in page and 'id="queue-empty"' not in page
    # a known office's day without shipments is an empty queue
    held = pl.read_parquet(api.app.state.layout.validated / "shipments.parquet")
    known = str(held["office_code"][0])
    quiet = DAY - dt.timedelta(days=3650)
    r = api.client.get(f"{API}/queues/{known}/{quiet.isoformat()}", headers=analyst)
    assert r.status_code == 200 and r.json()["entries"] == [], r.text
    # an office named only by its settings is known
    _capacity(api, 5, office_capacities={"KZ-NEWPOST": 4})
    r = api.client.get(f"{API}/queues/KZ-NEWPOST/{DAY.isoformat()}", headers=analyst)
    assert r.status_code == 200 and r.json()["capacity"] == 4, r.text
