"""UAT round 2, S1: a recorded outcome (or a waiver recorded by mistake) can be
corrected, with a reason, by the officer who recorded it or an administrator; the
correction replaces the outcome the database holds (same id), is audited with the
values before and after, rewrites the label file, and the trader history the
features read counts the corrected outcome (the live state, which only appends, is
rebuilt in the background; a restart reads the corrected row from the database).
Over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select

from data_contracts.settings import DataLayout
from serving import orm as m
from serving import policy
from serving.auth import Role, create_user
from serving.services import _held_outcomes, _label_values
from tests.serving.conftest import (
    DAY,
    OFFICE,
    Api,
    Samples,
    password_for,
    payload,
)
from tests.serving.test_uat_watchlists import _serve

API = "/api/v1"
TRADER = "Zarafshon Correction Savdo MChJ"
RULE = {
    "id": "consignee-past-arms-finding",
    "name": "Consignee with an earlier arms finding",
    "severity": "must_inspect",
    "condition": {"field": "consignee_arms_findings", "op": "ge", "value": 1},
}
FIREARMS = {"finding": True, "category": "firearms", "quantity": 2, "unit": "PCE", "notes": "x"}


def _ship(samples: Samples, i: int, sid: str, day: dt.date, office: str = OFFICE) -> Any:
    body = payload(samples, i, sid, office=office, day=day)
    body.update(consignee_id=None, consignee_name=TRADER)
    return body


def _ingest(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    r = api.client.post(f"{API}/shipments", json=body, headers=api.headers(Role.admin))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _vector(api: Api, sid: str) -> dict[str, Any]:
    with api.app.state.session_factory() as session:
        score = session.scalars(
            select(m.Score).where(m.Score.shipment_id == sid).order_by(m.Score.id.desc())
        ).first()
        assert score is not None
        return dict(score.feature_vector)


def _referral(api: Api, sid: str, day: dt.date = DAY, office: str = OFFICE) -> int:
    queue = api.client.get(
        f"{API}/queues/{office}/{day.isoformat()}", headers=api.headers(Role.admin)
    )
    assert queue.status_code == 200, queue.text
    ids = [e["id"] for e in queue.json()["entries"] if e["shipment_id"] == sid]
    assert ids, queue.json()
    return int(ids[0])


def _post(api: Api, rid: int, action: str, headers: dict[str, str], **body: Any) -> Any:
    return api.client.post(f"{API}/referrals/{rid}/{action}", json=body or None, headers=headers)


def _audit(api: Api, sid: str) -> list[dict[str, Any]]:
    r = api.client.get(
        f"{API}/audit", params={"shipment_id": sid}, headers=api.headers(Role.auditor)
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def _label_rows(data: Path, outcome_id: str) -> pl.DataFrame:
    return pl.read_parquet(data / "raw" / "outcomes" / f"api-{outcome_id}.parquet")


def test_a_wrong_firearms_finding_is_corrected_and_stops_branding_the_trader(
    db_url: str, tmp_path: Path, world: Path, samples: Samples
) -> None:
    from pipelines.modelling import read_outcomes
    from pipelines.validate import run_validate

    data = tmp_path / "data"
    shutil.copytree(world, data)
    # (declared after the history's latest shipment and before the inspection, which is
    # made now: yesterday at 08:01 UTC; the next ones after the inspection)
    today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    later = today + dt.timedelta(days=2)
    with _serve(db_url, data, users=True) as api:
        analyst = api.headers(Role.analyst)
        assert api.client.post(f"{API}/rules", json=RULE, headers=analyst).status_code == 201
        officer = api.headers(Role.officer)
        _ingest(api, _ship(samples, 1, "COR-A", today))
        rid = _referral(api, "COR-A", today)
        assert _post(api, rid, "claim", officer).status_code == 200
        recorded = _post(api, rid, "outcome", officer, **FIREARMS)
        assert recorded.status_code == 200, recorded.text
        outcome_id = recorded.json()["outcome_id"]
        # the wrong finding brands the consignee: its next shipment must be inspected
        branded = _ingest(api, _ship(samples, 2, "COR-B", later))
        assert branded["must_inspect"] is True
        assert [h["rule_id"] for h in branded["rule_hits"]] == [RULE["id"]]
        assert _vector(api, "COR-B")["consignee_arms_findings"] == 1.0
        # `caravan validate` runs before anyone notices: validated/ holds the wrong label
        run_validate(DataLayout(data), gx=False)
        # (a label validated as recorded reads as the database's row: a restart re-adds
        # only corrected outcomes)
        validated = pl.read_parquet(data / "validated" / "outcomes.parquet")
        with api.app.state.session_factory() as session:
            stored = session.get(m.Outcome, outcome_id)
            assert stored is not None
            assert _held_outcomes(validated, [outcome_id]) == {outcome_id: _label_values(stored)}

        # the correction: a finding to no finding, with a reason
        fixed = _post(
            api,
            rid,
            "outcome/correct",
            officer,
            finding=False,
            reason="recorded on the wrong referral: the pistols were in another truck",
        )
        assert fixed.status_code == 200, fixed.text
        body = fixed.json()
        assert body["outcome_id"] == outcome_id
        assert body["label_file"] == f"api-{outcome_id}.parquet"
        assert body["referral"]["status"] == "inspected"
        assert body["referral"]["decided_by"] == "officer1"
        assert body["referral"]["outcome"]["finding"] is False
        assert body["referral"]["outcome"]["category"] is None
        with api.app.state.session_factory() as session:
            rows = list(session.scalars(select(m.Outcome).where(m.Outcome.referral_id == rid)))
            assert [
                (o.outcome_id, o.finding, o.category, o.quantity, o.unit, o.notes) for o in rows
            ] == [(outcome_id, False, None, None, None, None)]
        # the running server's feature state is rebuilt in the background from the
        # corrected history: the trader's next shipment is no longer branded
        history = api.app.state.services.history
        deadline = time.monotonic() + 120
        while history.rebuilds < 1 or history._rebuilder is not None:
            assert time.monotonic() < deadline, "the feature state was not rebuilt"
            time.sleep(0.2)
        live = _ingest(api, _ship(samples, 4, "COR-L", later))
        assert live["must_inspect"] is False
        assert RULE["id"] not in [h["rule_id"] for h in live["rule_hits"]]
        assert _vector(api, "COR-L")["consignee_arms_findings"] == 0.0
        # the label file is rewritten in place: one row, the corrected one
        label = _label_rows(data, outcome_id)
        assert label.height == 1
        assert label.row(0, named=True)["finding"] is False
        assert label.row(0, named=True)["finding_category"] is None

        # the audit trail: the original entry and the correction (who, why, before, after)
        entries = [e for e in _audit(api, "COR-A") if e["kind"] == "outcome"]
        assert len(entries) == 2
        original, correction = entries
        assert original["payload"]["finding"] is True
        assert original["payload"]["category"] == "firearms"
        assert correction["actor"] == "officer1"
        p = correction["payload"]
        assert p["action"] == "correct" and p["outcome_id"] == outcome_id
        assert p["reason"].startswith("recorded on the wrong referral")
        assert p["before"] == {
            "decision": "outcome",
            "finding": True,
            "category": "firearms",
            "quantity": 2,
            "unit": "PCE",
            "notes": "x",
            "seizures": [{"category": "firearms", "quantity": 2, "unit": "PCE"}],
        }
        assert p["after"] == {
            "decision": "outcome",
            "finding": False,
            "category": None,
            "quantity": None,
            "unit": None,
            "notes": None,
            "seizures": [],
        }
        assert p["finding"] is False and p["category"] is None
        verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor))
        assert verify.json()["ok"] is True, verify.json()

    # After a restart the feature state is built from validated/ (still the wrong
    # label) and the database: the corrected row replaces the held one.
    with _serve(db_url, data, users=False) as api:
        held = api.app.state.services.history.snapshot().outcomes
        mine = held.filter(pl.col("outcome_id") == outcome_id)
        assert mine.height == 1 and mine["finding"].to_list() == [False]
        after = _ingest(api, _ship(samples, 3, "COR-C", later))
        assert after["must_inspect"] is False
        assert RULE["id"] not in [h["rule_id"] for h in after["rule_hits"]]
        vector = _vector(api, "COR-C")
        assert vector["consignee_arms_findings"] == 0.0
        assert vector["consignee_inspections"] == 1.0  # one inspection, not two

    # the next `caravan validate` reads the corrected label exactly once
    run_validate(DataLayout(data), gx=False)
    labels = read_outcomes(DataLayout(data)).filter(pl.col("outcome_id") == outcome_id)
    assert labels.height == 1
    assert labels["finding"].to_list() == [False]
    assert labels["finding_category"].to_list() == [None]


def _user(api: Api, username: str, role: Role, office: str | None) -> dict[str, str]:
    with api.app.state.session_factory() as session:
        create_user(
            session,
            username=username,
            password=password_for(role),
            role=role,
            office_code=office,
        )
        session.commit()
    r = api.client.post(
        f"{API}/auth/login", data={"username": username, "password": password_for(role)}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_who_may_correct_what_and_a_waiver_turned_into_an_outcome(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    officer = api.headers(Role.officer)
    admin = api.headers(Role.admin)
    colleague = _user(api, "officer2", Role.officer, OFFICE)
    elsewhere = _user(api, "officer3", Role.officer, "KG-BISHKEK")
    for i, sid in enumerate(("REF-A", "REF-B", "REF-C")):
        _ingest(api, _ship(samples, 10 + i, sid, DAY))
    a, b, c = (_referral(api, sid) for sid in ("REF-A", "REF-B", "REF-C"))
    no_finding = {"finding": False, "reason": "typed on the wrong line"}

    # nothing recorded yet: open, then claimed
    refused = _post(api, a, "outcome/correct", officer, **no_finding)
    assert refused.status_code == 409 and "no outcome or waiver" in refused.json()["detail"]
    assert _post(api, a, "claim", officer).status_code == 200
    assert _post(api, a, "outcome/correct", officer, **no_finding).status_code == 409
    assert _post(api, a, "outcome", officer, **FIREARMS).status_code == 200

    # a reason with visible text is required (422 naming `reason`)
    for reason in (None, "", "   ", "\u200b\u2060"):
        body = {"finding": False} if reason is None else {"finding": False, "reason": reason}
        r = _post(api, a, "outcome/correct", officer, **body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][-1] == "reason"
    # the corrected outcome follows the outcome rules (422 naming the field)
    r = _post(api, a, "outcome/correct", officer, finding=True, reason="ammunition, not arms")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "category"
    # another officer of the office, an officer of another office: refused
    r = _post(api, a, "outcome/correct", colleague, **no_finding)
    assert r.status_code == 403 and "officer1" in r.json()["detail"]
    assert _post(api, a, "outcome/correct", elsewhere, **no_finding).status_code == 403
    with api.app.state.session_factory() as session:
        assert session.scalar(select(m.Outcome.finding).where(m.Outcome.referral_id == a)) is True

    # the recorder corrects the category; the same values again change nothing (409)
    ammo = {"finding": True, "category": "ammunition", "quantity": 150, "unit": "PCE"}
    r = _post(api, a, "outcome/correct", officer, reason="ammunition, not arms", **ammo)
    assert r.status_code == 200, r.text
    assert r.json()["referral"]["outcome"]["category"] == "ammunition"
    again = _post(api, a, "outcome/correct", officer, reason="again", **ammo)
    assert again.status_code == 409 and "already holds" in again.json()["detail"]
    # closed: an administrator corrects it; it stays closed
    assert _post(api, a, "close", officer).status_code == 200
    r = _post(
        api,
        a,
        "outcome/correct",
        admin,
        reason="supervisor: 120 rounds",
        **{**ammo, "quantity": 120},
    )
    assert r.status_code == 200, r.text
    assert r.json()["referral"]["status"] == "closed"
    assert r.json()["referral"]["outcome"]["quantity"] == 120

    # a waiver recorded by mistake becomes an outcome (the goods were inspected)
    assert _post(api, b, "claim", officer).status_code == 200
    assert _post(api, b, "waive", officer, reason="seal intact").status_code == 200
    r = _post(
        api,
        b,
        "outcome/correct",
        officer,
        finding=False,
        notes="inspected after all",
        reason="the truck was inspected at 14:00; waiver clicked by mistake",
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["referral"]["status"] == "inspected"
    assert out["referral"]["waiver_reason"] is None
    assert out["referral"]["outcome"]["finding"] is False
    assert out["label_file"] == f"api-{out['outcome_id']}.parquet"
    layout = Path(api.app.state.layout.root)
    assert _label_rows(layout, out["outcome_id"])["finding"].to_list() == [False]
    held = api.app.state.services.history.snapshot().outcomes
    assert held.filter(pl.col("outcome_id") == out["outcome_id"]).height == 1
    entry = [e for e in _audit(api, "REF-B") if e["kind"] == "outcome"][-1]["payload"]
    assert entry["before"]["decision"] == "waiver"
    assert entry["before"]["waiver_reason"] == "seal intact"

    # never decided: nothing to correct, even for an administrator
    assert _post(api, c, "outcome/correct", admin, **no_finding).status_code == 409
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor))
    assert verify.json()["ok"] is True, verify.json()


def test_no_outcome_before_the_declaration(world_api: Api, samples: Samples) -> None:
    """A shipment declared later than now (a wrong clock at the declarant or the
    server) cannot get an outcome yet: 409 naming the declaration time, and nothing is
    stored. Before, the outcome was stored and `caravan validate` rejected its label,
    so the finding never reached training."""
    api = world_api
    officer = api.headers(Role.officer)
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    _ingest(api, _ship(samples, 20, "EARLY-A", tomorrow))
    rid = _referral(api, "EARLY-A", tomorrow)
    assert _post(api, rid, "claim", officer).status_code == 200
    r = _post(api, rid, "outcome", officer, **FIREARMS)
    assert r.status_code == 409, r.text
    assert f"declared at {tomorrow.isoformat()}T08:20:00+00:00" in r.json()["detail"]
    with api.app.state.session_factory() as session:
        assert session.scalars(select(m.Outcome).where(m.Outcome.referral_id == rid)).all() == []
        assert session.get(m.Referral, rid).status == "claimed"  # type: ignore[union-attr]
    # a waiver needs no inspection; turning it into an outcome is refused the same way
    assert _post(api, rid, "waive", officer, reason="seal intact").status_code == 200
    r = _post(api, rid, "outcome/correct", officer, finding=False, reason="inspected")
    assert r.status_code == 409 and "cannot correct the waiver" in r.json()["detail"], r.text


def test_the_correction_transition() -> None:
    """`policy.correct_outcome`: from inspected, waived or closed (after a decision),
    by the decider or with `override`, with a reason and a valid outcome."""
    at = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    officer = policy.Officer("o1", OFFICE)
    entry = policy.QueueEntry("S1", OFFICE, DAY, 1, 0.9, "red", "model", 1.0)
    claimed = policy.claim(policy.open_referral(entry, at), officer, at)
    finding = policy.InspectionOutcome(True, "firearms", 2, "PCE")
    inspected = policy.record_outcome(claimed, officer, at, finding)
    nothing = policy.InspectionOutcome(False)
    later = at + dt.timedelta(hours=1)

    fixed = policy.correct_outcome(inspected, officer, later, nothing, "wrong referral")
    assert fixed.status is policy.Status.INSPECTED and fixed.outcome == nothing
    assert fixed.history[-1].note == "wrong referral"
    closed = policy.close(inspected, officer, at)
    assert policy.correct_outcome(closed, officer, later, nothing, "x").status is (
        policy.Status.CLOSED
    )
    waived = policy.waive(claimed, officer, at, "seal intact")
    turned = policy.correct_outcome(waived, officer, later, finding, "inspected after all")
    assert turned.status is policy.Status.INSPECTED and turned.waiver_reason is None

    other = policy.Officer("o2", OFFICE)
    with pytest.raises(policy.TransitionError, match="decided by o1"):
        policy.correct_outcome(inspected, other, later, nothing, "x")
    assert policy.correct_outcome(inspected, other, later, nothing, "x", override=True)
    with pytest.raises(policy.TransitionError, match="of office"):
        policy.correct_outcome(inspected, policy.Officer("o1", "KG-X"), later, nothing, "x")
    with pytest.raises(policy.TransitionError, match="needs a reason"):
        policy.correct_outcome(inspected, officer, later, nothing, " \u200b")
    with pytest.raises(policy.TransitionError, match="finding category"):
        policy.correct_outcome(inspected, officer, later, policy.InspectionOutcome(True), "x")
    displaced = dataclasses.replace(claimed, status=policy.Status.CLOSED, claimed_by=None)
    for undecided in (claimed, displaced):
        with pytest.raises(policy.TransitionError):
            policy.correct_outcome(undecided, officer, later, nothing, "x")
