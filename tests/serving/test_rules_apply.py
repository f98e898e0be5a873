"""Applying the current rules to the shipments awaiting a decision (analyst finding
UAT2 A17: a must-inspect profile saved on this morning's intelligence never reached
this morning's declarations; rules acted only on shipments ingested after the save).

`POST /api/v1/rules/apply` re-evaluates the newest rule versions on today's (or a
given range of days') shipments that await a decision, over HTTP on SQLite and
PostgreSQL; the rules page offers the same with a confirmation."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from serving.services import replay
from tests.serving.conftest import OFFICE, Api, Samples, password_for, payload, username_for

API = "/api/v1"
TARGET = "Zarafshan Apply Trading LLC"
RULE = {
    "id": "intel-zarafshan",
    "name": "intelligence alert: Zarafshan consignments",
    "severity": "must_inspect",
    "condition": {"field": "consignee_name", "op": "eq", "value": TARGET},
}


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _ship(samples: Samples, i: int, sid: str, *, target: bool = False) -> dict[str, Any]:
    record = payload(samples, i, sid, day=_today())
    if target:
        record["consignee_name"] = TARGET
    return record


def _ingest(api: Api, *records: dict[str, Any]) -> None:
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": list(records)}, headers=api.headers(Role.admin)
    )
    assert r.status_code == 200 and len(r.json()["stored"]) == len(records), r.text


def _detail(api: Api, sid: str) -> dict[str, Any]:
    r = api.client.get(f"{API}/shipments/{sid}", headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _queue(api: Api) -> dict[str, dict[str, Any]]:
    r = api.client.get(
        f"{API}/queues/{OFFICE}/{_today().isoformat()}", headers=api.headers(Role.admin)
    )
    assert r.status_code == 200, r.text
    return {e["shipment_id"]: e for e in r.json()["entries"]}


def _apply(api: Api, role: Role = Role.analyst, **body: Any) -> Any:
    return api.client.post(f"{API}/rules/apply", json=body or None, headers=api.headers(role))


def _hits(api: Api, sid: str) -> list[tuple[str, int]]:
    return [(h["rule_id"], h["rule_version"]) for h in _detail(api, sid)["rule_hits"]]


def _perf(api: Api, rule_id: str) -> dict[str, Any]:
    r = api.client.get(f"{API}/rules/{rule_id}/performance", headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_must_inspect_rule_reaches_the_waiting_shipments_of_today(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    # This morning's declarations: A (the target) and B wait in today's queue; C (the
    # target too) was already waived by an officer; D (the target) arrives later and
    # is not queued yet.
    _ingest(
        api,
        _ship(samples, 1, "AP-A", target=True),
        _ship(samples, 2, "AP-B"),
        _ship(samples, 3, "AP-C", target=True),
    )
    queue = _queue(api)
    assert {"AP-A", "AP-B", "AP-C"} <= set(queue)
    officer = api.headers(Role.officer)
    rid = queue["AP-C"]["id"]
    assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).status_code == 200
    waived = api.client.post(
        f"{API}/referrals/{rid}/waive", json={"reason": "cleared at the border"}, headers=officer
    )
    assert waived.status_code == 200, waived.text
    _ingest(api, _ship(samples, 4, "AP-D", target=True))
    before = {sid: _detail(api, sid) for sid in ("AP-A", "AP-B", "AP-C", "AP-D")}
    assert all(not d["must_inspect"] and d["rule_hits"] == [] for d in before.values())

    # The intelligence alert's profile is saved: it does not reach them by itself.
    analyst = api.headers(Role.analyst)
    assert api.client.post(f"{API}/rules", json=RULE, headers=analyst).status_code == 201
    assert _hits(api, "AP-A") == [] and _perf(api, RULE["id"])["hits"] == 0

    # An officer may not apply rules.
    assert _apply(api, Role.officer).status_code == 403

    r = _apply(api)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["examined"] == 3  # A, B, D: C is decided
    assert done["changed"] == 2 and done["newly_forced"] == 2 and done["skipped"] == 0
    assert sorted(done["changed_shipments"]) == ["AP-A", "AP-D"]
    assert f"{RULE['id']}@v1" in done["rules"]
    assert done["day_from"] == done["day_to"] == _today().isoformat()

    for sid in ("AP-A", "AP-D"):
        after = _detail(api, sid)
        assert [(h["rule_id"], h["rule_version"]) for h in after["rule_hits"]] == [(RULE["id"], 1)]
        assert after["must_inspect"] is True and after["lane"] == "red"
        assert after["priority"] >= 2 > before[sid]["priority"]
        assert after["score_id"] != before[sid]["score_id"]
    # B is not hit; C, decided, is untouched
    assert _detail(api, "AP-B")["score_id"] == before["AP-B"]["score_id"]
    assert _detail(api, "AP-C") == before["AP-C"]

    # Today's queue: A's waiting entry is now forced by the rule; D enters it.
    queue = _queue(api)
    assert queue["AP-A"]["selection_method"] == "rule"
    assert queue["AP-A"]["priority"] >= 2 and queue["AP-A"]["status"] == "open"
    assert queue["AP-D"]["selection_method"] == "rule" and queue["AP-D"]["priority"] >= 2
    assert queue["AP-C"]["status"] == "waived"

    # The figures count the hits made by the application like any other of v1, and
    # each hit records when it was applied.
    perf = _perf(api, RULE["id"])
    assert perf["hits"] == 2 and perf["versions"][0]["hits"] == 2
    applied_at = dt.datetime.fromisoformat(done["applied_at"])
    with api.app.state.session_factory() as session:
        hits = list(session.scalars(select(m.RuleHit).where(m.RuleHit.rule_id == RULE["id"])))
        assert sorted(h.shipment_id for h in hits) == ["AP-A", "AP-D"]
        for h in hits:
            at = h.hit_at if h.hit_at.tzinfo else h.hit_at.replace(tzinfo=dt.UTC)
            assert at == applied_at

    # The audit: the application (who, which rule versions, when, the counts), each
    # new score and the queue entry's change in the shipment's trail; the chain and
    # the recorded rows check.
    auditor = api.headers(Role.auditor)
    entries = api.client.get(f"{API}/audit", params={"kind": "rule_apply"}, headers=auditor).json()
    summary = [e for e in entries if e["entity"] == "rules"]
    assert len(summary) == 1 and summary[0]["actor"] == username_for(Role.analyst)
    body = summary[0]["payload"]
    assert f"{RULE['id']}@v1" in body["rules"] and body["applied_at"]
    assert (body["examined"], body["changed"], body["newly_forced"]) == (3, 2, 2)
    assert sorted(body["shipments"]) == ["AP-A", "AP-D"]
    trail = api.client.get(f"{API}/audit", params={"shipment_id": "AP-A"}, headers=auditor).json()
    scored = [e for e in trail if e["kind"] == "rule_apply"]
    assert len(scored) == 1 and scored[0]["payload"]["rule_hits"] == [f"{RULE['id']}@v1"]
    requeued = [e for e in trail if e["kind"] == "queue_rescore"]
    assert requeued and requeued[-1]["payload"]["cause"] == "rule_apply"
    assert requeued[-1]["payload"]["after"]["selection_method"] == "rule"
    verify = api.client.get(f"{API}/audit/verify", headers=auditor).json()
    assert verify["ok"] is True, verify
    with api.app.state.session_factory() as session:  # (`caravan audit replay`)
        replayed = replay(session, api.app.state.services.holder, "AP-A")
        assert replayed["matches"] is True and replayed["audit_seq"] is not None, replayed

    # Applying again changes nothing.
    again = _apply(api)
    assert again.status_code == 200, again.text
    assert (again.json()["examined"], again.json()["changed"], again.json()["newly_forced"]) == (
        3,
        0,
        0,
    )
    assert _detail(api, "AP-A")["score_id"] != before["AP-A"]["score_id"]
    assert _perf(api, RULE["id"])["hits"] == 2


def test_a_changed_rule_replaces_the_hits_of_its_older_version(
    world_api: Api, samples: Samples
) -> None:
    """A profile raised from low to must-inspect: the waiting shipment its low version
    hit gets the new version's hit (the older hit stays counted for its version)."""
    api = world_api
    analyst = api.headers(Role.analyst)
    low = {**RULE, "severity": "low"}
    assert api.client.post(f"{API}/rules", json=low, headers=analyst).status_code == 201
    other = {
        "id": "other-office-watch",
        "name": "every shipment of the office",
        "severity": "info",
        "condition": {"field": "office_code", "op": "eq", "value": OFFICE},
    }
    assert api.client.post(f"{API}/rules", json=other, headers=analyst).status_code == 201
    _ingest(api, _ship(samples, 5, "AC-A", target=True))
    assert set(_hits(api, "AC-A")) == {(other["id"], 1), (RULE["id"], 1)}
    assert _detail(api, "AC-A")["must_inspect"] is False

    raised = {k: v for k, v in RULE.items() if k != "id"}
    r = api.client.put(f"{API}/rules/{RULE['id']}", json=raised, headers=analyst)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    # only the raised rule is applied: the other rule's hit stays as made
    done = _apply(api, rule_ids=[RULE["id"]])
    assert done.status_code == 200, done.text
    assert done.json()["rules"] == [f"{RULE['id']}@v2"]
    assert (done.json()["changed"], done.json()["newly_forced"]) == (1, 1)
    assert set(_hits(api, "AC-A")) == {(other["id"], 1), (RULE["id"], 2)}
    assert _detail(api, "AC-A")["must_inspect"] is True
    perf = {v["version"]: v["hits"] for v in _perf(api, RULE["id"])["versions"]}
    assert perf == {1: 1, 2: 1}
    assert _perf(api, RULE["id"])["all_versions"]["hits"] == 1


def test_the_days_and_rules_are_checked(world_api: Api) -> None:
    api = world_api
    today = _today()

    def refused(field: str, **body: Any) -> str:
        r = _apply(api, **body)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", field], detail
        return str(detail["msg"])

    old = (today - dt.timedelta(days=31)).isoformat()
    assert "more than 30 days ago" in refused("day_from", day_from=old)
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert "after today" in refused("day_to", day_to=tomorrow)
    assert "is after day_to" in refused(
        "day_from", day_from=today.isoformat(), day_to=(today - dt.timedelta(days=1)).isoformat()
    )
    assert refused("rule_ids[0]", rule_ids=["no-such-rule"]) == "no rule 'no-such-rule'"
    analyst = api.headers(Role.analyst)
    assert api.client.post(f"{API}/rules", json=RULE, headers=analyst).status_code == 201
    off = api.client.post(
        f"{API}/rules/{RULE['id']}/deactivate", json={"reason": "alert withdrawn"}, headers=analyst
    )
    assert off.status_code == 200, off.text
    assert "is inactive" in refused("rule_ids[0]", rule_ids=[RULE["id"]])
    # a range within the last 31 days, nothing waiting: nothing to do, still audited
    ok = _apply(api, day_from=(today - dt.timedelta(days=30)).isoformat())
    assert ok.status_code == 200, ok.text
    assert ok.json()["examined"] == 0 and ok.json()["changed"] == 0
    with api.app.state.session_factory() as session:
        kinds = list(
            session.scalars(select(m.AuditLog.kind).where(m.AuditLog.kind == "rule_apply"))
        )
        assert kinds == ["rule_apply"]


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _web_login(api: Api, role: Role) -> None:
    client = api.client
    client.cookies.clear()
    form = client.get("/web/login")
    token = CSRF.search(form.text)
    assert token is not None
    r = client.post(
        "/web/login",
        data={
            "csrf_token": token.group(1),
            "username": username_for(role),
            "password": password_for(role),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_the_rules_page_applies_the_rules_after_a_confirmation(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    _ingest(api, _ship(samples, 6, "AW-A", target=True), _ship(samples, 7, "AW-B"))
    analyst = api.headers(Role.analyst)
    assert api.client.post(f"{API}/rules", json=RULE, headers=analyst).status_code == 201

    _web_login(api, Role.analyst)
    page = api.client.get("/web/rules")
    assert page.status_code == 200 and 'id="apply-rules"' in page.text
    confirm = api.client.get("/web/rules/apply")
    assert confirm.status_code == 200, confirm.text
    assert 'id="apply-confirm"' in confirm.text and 'id="apply-rules-confirm"' in confirm.text
    assert f"declared on {_today().isoformat()} (UTC)" in confirm.text
    assert "(shipments: 2)" in confirm.text
    # nothing happened yet
    assert _hits(api, "AW-A") == []
    token = CSRF.search(confirm.text)
    assert token is not None
    # without the form's CSRF value: refused, nothing applied
    forged = api.client.post("/web/rules/apply", data={}, follow_redirects=False)
    assert forged.status_code in (303, 403), forged.status_code
    assert _hits(api, "AW-A") == []
    done = api.client.post("/web/rules/apply", data={"csrf_token": token.group(1)})
    assert done.status_code == 200, done.text
    assert (
        "Rules applied. Shipments awaiting a decision examined: 2; changed: 1; "
        "now to be inspected (must-inspect): 1." in done.text
    )
    assert _hits(api, "AW-A") == [(RULE["id"], 1)]

    # a data scientist reads the rules page without the button, and may not apply
    _web_login(api, Role.data_scientist)
    page = api.client.get("/web/rules")
    assert page.status_code == 200 and 'id="apply-rules"' not in page.text
    assert api.client.get("/web/rules/apply").status_code == 403
