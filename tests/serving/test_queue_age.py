"""A referral's age is how long its shipment has waited: from the shipment's
declaration, not from when the entry was placed (review s24 revC, section 2: a queue
first opened in the evening showed "Overdue ... Waiting 1 min" for a shipment declared
ten hours before, and the sort by waiting time was only the rank order). The overdue
list and `age_seconds` read the same age; it stops at the decision. Over the real API
(SQLite and PostgreSQL) with a trained model."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from serving.auth import Role
from tests.serving.conftest import OFFICE, Api, payload
from tests.serving.test_uat2_queue_placement import MARK, _rule, _with_consignee
from tests.serving.test_uat_queue import _batch, _capacity

API = "/api/v1"
SLACK = 120.0  # seconds between the request and the test's clock


def _declared(samples: Any, i: int, sid: str, at: dt.datetime) -> dict[str, Any]:
    record = payload(samples, i, sid)
    record["declared_at"] = at.astimezone(dt.UTC).isoformat()
    record["expected_arrival_at"] = (at + dt.timedelta(hours=6)).astimezone(dt.UTC).isoformat()
    return record


def _noon_zone() -> str:
    """A zone whose local time is about noon now: the day's queue holds shipments
    declared hours before and after now (whatever the time of day the test runs)."""
    offset = 12 - dt.datetime.now(dt.UTC).hour  # -11 to +12 hours
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _view(api: Api, day: dt.date) -> list[dict[str, Any]]:
    r = api.client.get(f"{API}/queues/{OFFICE}/{day.isoformat()}", headers=api.headers(Role.admin))
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def _overdue(api: Api) -> list[dict[str, Any]]:
    r = api.client.get(f"{API}/queues/{OFFICE}/overdue", headers=api.headers(Role.officer))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_the_age_counts_from_the_declaration_and_overdue_reads_it(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    _capacity(api, 10, overdue_hours=5, office_timezones={OFFICE: _noon_zone()})
    now = dt.datetime.now(dt.UTC)
    declared = {
        "AGE-9H": now - dt.timedelta(hours=9),
        "AGE-6H": now - dt.timedelta(hours=6),
        "AGE-1H": now - dt.timedelta(hours=1),
        "AGE-LATER": now + dt.timedelta(hours=2),  # declared later than now
    }
    _batch(api, [_declared(samples, i, sid, at) for i, (sid, at) in enumerate(declared.items())])
    today = api.app.state.services.queue.today(OFFICE)
    assert {api.app.state.services.queue.day_of(OFFICE, at) for at in declared.values()} == {today}
    entries = {e["shipment_id"]: e for e in _view(api, today)}
    assert set(entries) == set(declared)
    for sid, entry in entries.items():
        # placed just now, by the first view of the queue...
        created = dt.datetime.fromisoformat(entry["created_at"])
        assert abs((created - now).total_seconds()) < SLACK
        # ...but the shipment has waited since its declaration (nothing before it)
        waited = max((dt.datetime.now(dt.UTC) - declared[sid]).total_seconds(), 0.0)
        assert abs(entry["age_seconds"] - waited) < SLACK, (sid, entry["age_seconds"], waited)
    assert entries["AGE-9H"]["age_seconds"] > 9 * 3600 - SLACK
    assert entries["AGE-LATER"]["age_seconds"] == 0.0

    # overdue: past 5 hours of waiting, longest waiting first (placed a moment ago)
    assert [o["shipment_id"] for o in _overdue(api)] == ["AGE-9H", "AGE-6H"]

    # the age stops at the decision: from the declaration to the waiver
    officer = api.headers(Role.officer)
    rid = entries["AGE-6H"]["id"]
    assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).is_success
    r = api.client.post(
        f"{API}/referrals/{rid}/waive", json={"reason": "seal intact"}, headers=officer
    )
    assert r.status_code == 200, r.text
    decided = dt.datetime.fromisoformat(r.json()["decided_at"])
    since = declared["AGE-6H"]
    assert r.json()["age_seconds"] == pytest.approx((decided - since).total_seconds(), abs=0.01)
    assert [o["shipment_id"] for o in _overdue(api)] == ["AGE-9H"]


def test_a_shipment_carried_into_todays_queue_has_waited_since_its_declaration(
    world_api: Api, samples: Any
) -> None:
    """A must-inspect shipment of an earlier day taken into today's queue: its age is
    from its own declaration (the page shows its day beside it), so it is overdue
    once that passes the limit, like any other."""
    api = world_api
    _capacity(api, 5, overdue_hours=24, office_timezones={OFFICE: _noon_zone()})
    _rule(api, "age-must", "must_inspect", MARK)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
    _batch(api, [_with_consignee(_declared(samples, 0, "AGE-CARRIED", at), MARK)])
    today = api.app.state.services.queue.today(OFFICE)
    (entry,) = _view(api, today)
    assert entry["shipment_id"] == "AGE-CARRIED" and entry["queue_date"] == today.isoformat()
    assert entry["declared_on"] < entry["queue_date"]  # (an earlier day's shipment)
    waited = (dt.datetime.now(dt.UTC) - at).total_seconds()
    assert abs(entry["age_seconds"] - waited) < SLACK
    assert [o["shipment_id"] for o in _overdue(api)] == ["AGE-CARRIED"]


def test_the_api_says_what_the_age_counts(world_api: Api) -> None:
    schema = world_api.client.get("/openapi.json").json()["components"]["schemas"]
    described = schema["ReferralOut"]["properties"]["age_seconds"]["description"]
    assert "from the shipment's declaration" in described
    assert "Not from `created_at`" in described
    assert "overdue" in described
