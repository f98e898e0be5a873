"""A queue day is the office's local calendar day (supervisor round 2, S4): with
KG-BISHKEK on Asia/Bishkek (UTC+6) a shipment declared at 01:30 local time is in that
local day's queue, not the previous UTC day's; an office without a zone keeps UTC
days; "today" (forced shipments of earlier days, overdue) is the office's today; a
daylight-saving day is [local midnight, next local midnight). Over the real API
(SQLite and PostgreSQL) with a trained model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.auth import Role
from serving.services import QueueSettings
from tests.serving.conftest import OFFICE, Api, build_app, payload
from tests.serving.test_uat2_queue_placement import MARK, _rule, _with_consignee
from tests.serving.test_uat_queue import _batch, _capacity

API = "/api/v1"
BISHKEK = "KG-BISHKEK"
BERLIN = "DE-BERLIN"
CENTRAL_ASIA = {
    "KZ-KHORGOS": "Asia/Almaty",
    "KG-BISHKEK": "Asia/Bishkek",
    "UZ-TASHKENT": "Asia/Tashkent",
    "TJ-DUSHANBE": "Asia/Dushanbe",
    "TM-ASHGABAT": "Asia/Ashgabat",
}


def _declared(
    samples: Any, i: int, sid: str, office: str, at: dt.datetime, consignee: str | None = None
) -> dict[str, Any]:
    record = payload(samples, i, sid, office=office)
    record["declared_at"] = at.astimezone(dt.UTC).isoformat()
    record["expected_arrival_at"] = (at + dt.timedelta(hours=6)).astimezone(dt.UTC).isoformat()
    return _with_consignee(record, consignee) if consignee else record


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _queue(api: Api, office: str, day: dt.date, role: Role = Role.admin) -> Any:
    r = api.client.get(f"{API}/queues/{office}/{day.isoformat()}", headers=api.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def _ids(view: Any) -> set[str]:
    rows = view["entries"] + view["left_out"]
    return {row["shipment_id"] for row in rows}


def test_a_queue_day_is_the_offices_local_day(world_api: Api, samples: Any) -> None:
    api = world_api
    _capacity(api, 10, office_timezones={BISHKEK: "Asia/Bishkek", BERLIN: "Europe/Berlin"})
    _batch(
        api,
        [
            # 01:30 on 26 November in Bishkek, 19:30 UTC on the 25th
            _declared(samples, 0, "LD-NIGHT", BISHKEK, _utc("2026-11-25T19:30")),
            # 23:30 on the 25th in Bishkek
            _declared(samples, 1, "LD-EVENING", BISHKEK, _utc("2026-11-25T17:30")),
            # the same instant at an office without a zone: its UTC day, the 25th
            _declared(samples, 2, "LD-UTC", OFFICE, _utc("2026-11-25T19:30")),
            # Berlin: 00:30 CET on 29 March 2026 (clocks go forward at 02:00) and
            # 00:30 CEST on the 30th: the 29th is 23 hours long, never "+24 h"
            _declared(samples, 3, "LD-DST-29", BERLIN, _utc("2026-03-28T23:30")),
            _declared(samples, 4, "LD-DST-30", BERLIN, _utc("2026-03-29T22:30")),
        ],
    )
    day26 = _queue(api, BISHKEK, dt.date(2026, 11, 26))
    assert _ids(day26) == {"LD-NIGHT"}
    (night,) = day26["entries"]
    assert night["queue_date"] == night["declared_on"] == "2026-11-26"
    day25 = _queue(api, BISHKEK, dt.date(2026, 11, 25))
    assert _ids(day25) == {"LD-EVENING"}
    assert day25["entries"][0]["declared_on"] == "2026-11-25"

    # no zone: UTC days, as before
    assert _ids(_queue(api, OFFICE, dt.date(2026, 11, 25))) == {"LD-UTC"}
    assert _ids(_queue(api, OFFICE, dt.date(2026, 11, 26))) == set()

    assert _ids(_queue(api, BERLIN, dt.date(2026, 3, 28))) == set()
    assert _ids(_queue(api, BERLIN, dt.date(2026, 3, 29))) == {"LD-DST-29"}
    assert _ids(_queue(api, BERLIN, dt.date(2026, 3, 30))) == {"LD-DST-30"}

    # the decision routes show the same local declaration day
    officer = api.headers(Role.officer)
    entry = _queue(api, OFFICE, dt.date(2026, 11, 25))["entries"][0]
    claimed = api.client.post(f"{API}/referrals/{entry['id']}/claim", headers=officer)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["declared_on"] == "2026-11-25"


def _shifted_zone() -> str:
    """A zone whose date differs from the UTC date now and for the next hour:
    UTC+14 from 10:00 UTC on, UTC-12 before 12:00 UTC."""
    return "Pacific/Kiritimati" if dt.datetime.now(dt.UTC).hour >= 11 else "Etc/GMT+12"


def _local(day: dt.date, zone: str, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZoneInfo(zone))


def test_today_and_overdue_are_the_offices_local_days(world_api: Api, samples: Any) -> None:
    api = world_api
    zone = _shifted_zone()
    _capacity(api, 5, office_timezones={OFFICE: zone}, overdue_hours=24)
    settings: QueueSettings = api.app.state.services.queue
    today = settings.today(OFFICE)
    assert today != dt.datetime.now(dt.UTC).date()  # (the point of the zone)
    yesterday = today - dt.timedelta(days=1)
    _rule(api, "local-must", "must_inspect", MARK)
    stored = _batch(
        api,
        [
            # forced, declared at noon local time yesterday and 00:30 today
            _declared(samples, 0, "LT-PAST", OFFICE, _local(yesterday, zone, 12), MARK),
            _declared(samples, 1, "LT-NOW", OFFICE, _local(today, zone, 0, 30), MARK),
        ],
    )
    assert {s["must_inspect"] for s in stored} == {True}
    # yesterday's queue (local) takes its own forced shipment only
    past = _queue(api, OFFICE, yesterday, Role.officer)
    assert {e["shipment_id"] for e in past["entries"]} == {"LT-PAST"}
    now = _queue(api, OFFICE, today, Role.officer)
    assert {e["shipment_id"] for e in now["entries"]} == {"LT-NOW"}
    # a forced entry of a past local day is overdue at once; today's is not
    r = api.client.get(f"{API}/queues/{OFFICE}/overdue", headers=api.headers(Role.officer))
    assert r.status_code == 200, r.text
    assert {o["shipment_id"] for o in r.json()} == {"LT-PAST"}


def test_todays_local_queue_takes_in_a_forced_shipment_of_an_earlier_local_day(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    zone = _shifted_zone()
    _capacity(api, 5, office_timezones={OFFICE: zone})
    today = api.app.state.services.queue.today(OFFICE)
    yesterday = today - dt.timedelta(days=1)
    _rule(api, "local-must", "must_inspect", MARK)
    # a late submission: declared at noon yesterday (local), no queue looked at yet
    _batch(api, [_declared(samples, 0, "LT-LATE", OFFICE, _local(yesterday, zone, 12), MARK)])
    view = _queue(api, OFFICE, today, Role.officer)
    (entry,) = view["entries"]
    assert entry["shipment_id"] == "LT-LATE" and entry["selection_method"] == "rule"
    assert entry["queue_date"] == today.isoformat()
    assert entry["declared_on"] == yesterday.isoformat()
    # placed once: yesterday's queue does not take it again
    assert _ids(_queue(api, OFFICE, yesterday, Role.officer)) == set()


def test_the_offices_zones_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("CARAVAN_OFFICE_TIMEZONES", json.dumps(CENTRAL_ASIA))
    settings = QueueSettings()
    assert settings.queue_timezone == "UTC" and settings.office_timezones == CENTRAL_ASIA
    at = _utc("2026-11-25T19:30")
    assert settings.day_of("KG-BISHKEK", at) == dt.date(2026, 11, 26)  # UTC+6
    assert settings.day_of("KZ-KHORGOS", at) == dt.date(2026, 11, 26)  # UTC+5
    assert settings.day_of("UZ-TASHKENT", at) == dt.date(2026, 11, 26)  # UTC+5
    assert settings.day_of("TM-ASHGABAT", at) == dt.date(2026, 11, 26)  # UTC+5
    assert settings.day_of("TJ-DUSHANBE", _utc("2026-11-25T18:59")) == dt.date(2026, 11, 25)
    assert settings.day_of("XX-NOZONE", at) == dt.date(2026, 11, 25)  # the default zone
    monkeypatch.setenv("CARAVAN_QUEUE_TIMEZONE", "Asia/Almaty")
    assert QueueSettings().day_of("XX-NOZONE", at) == dt.date(2026, 11, 26)
    assert QueueSettings().zone_label("KG-BISHKEK", dt.date(2026, 11, 26)) == (
        "Asia/Bishkek",
        "+06:00",
    )


@pytest.mark.parametrize(
    ("variable", "value", "zone"),
    [
        ("CARAVAN_OFFICE_TIMEZONES", '{"KG-BISHKEK": "Asia/Bishkeq"}', "Asia/Bishkeq"),
        ("CARAVAN_OFFICE_TIMEZONES", '{"KG-BISHKEK": "UTC+6"}', "UTC+6"),
        ("CARAVAN_QUEUE_TIMEZONE", "Mars/Olympus", "Mars/Olympus"),
        ("CARAVAN_QUEUE_TIMEZONE", "../../etc/passwd", "../../etc/passwd"),
    ],
)
def test_the_server_does_not_start_with_an_unknown_zone(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    tmp_path: Path,
    variable: str,
    value: str,
    zone: str,
) -> None:
    monkeypatch.setenv(variable, value)
    app = build_app(db_url, tmp_path / "data")
    with pytest.raises(ValidationError) as caught, TestClient(app):
        pass
    assert variable in str(caught.value) and repr(zone) in str(caught.value)


def _between_the_days(settings: QueueSettings) -> tuple[dt.datetime, bool]:
    """A past instant in the office's today but not in the UTC day, or the other way
    round (whichever exists now), and whether it is in the office's today."""
    local_start = settings.day_window(OFFICE, settings.today(OFFICE))[0]
    utc_start = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)
    return min(local_start, utc_start) + dt.timedelta(minutes=30), local_start < utc_start


def test_applying_rules_reaches_each_offices_local_today(world_api: Api, samples: Any) -> None:
    api = world_api
    zone = _shifted_zone()
    _capacity(api, 5, office_timezones={OFFICE: zone})
    settings: QueueSettings = api.app.state.services.queue
    at, in_local_today = _between_the_days(settings)
    _batch(api, [_declared(samples, 0, "AP-X", OFFICE, at, MARK)])
    _rule(api, "local-must", "must_inspect", MARK)  # saved after the declaration
    r = api.client.post(f"{API}/rules/apply", json={}, headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    assert ("AP-X" in r.json()["changed_shipments"]) is in_local_today, (zone, at, r.json())
    # the same office day given explicitly: the shipment's local day reaches it
    day = settings.day_of(OFFICE, at).isoformat()
    r = api.client.post(
        f"{API}/rules/apply",
        json={"day_from": day, "day_to": day},
        headers=api.headers(Role.analyst),
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed_shipments"] == ([] if in_local_today else ["AP-X"]), r.json()


def test_the_rules_page_counts_what_applying_reaches_in_each_offices_today(
    world_api: Api, samples: Any
) -> None:
    """The confirmation on the rules page counts the shipments the button reaches:
    each office's local today, not the UTC day."""
    from tests.serving.test_rules_apply import _web_login

    api = world_api
    zone = _shifted_zone()
    _capacity(api, 5, office_timezones={OFFICE: zone})
    at, in_local_today = _between_the_days(api.app.state.services.queue)
    _batch(api, [_declared(samples, 0, "AP-PAGE", OFFICE, at)])
    _web_login(api, Role.analyst)
    page = api.client.get("/web/rules/apply")
    assert page.status_code == 200, page.text
    assert "each office&#39;s local day" in page.text or "each office's local day" in page.text
    assert "(UTC)" not in page.text
    assert f"(shipments: {1 if in_local_today else 0})" in page.text, page.text


def test_an_outcome_answer_shows_the_local_declaration_day(world_api: Api, samples: Any) -> None:
    api = world_api
    _capacity(api, 5, office_timezones={OFFICE: "Asia/Bishkek"})
    # 01:30 on 26 November in Bishkek
    _batch(api, [_declared(samples, 0, "LD-OUT", OFFICE, _utc("2026-11-25T19:30"))])
    officer = api.headers(Role.officer)
    (entry,) = _queue(api, OFFICE, dt.date(2026, 11, 26), Role.officer)["entries"]
    claimed = api.client.post(f"{API}/referrals/{entry['id']}/claim", headers=officer)
    assert claimed.status_code == 200, claimed.text
    recorded = api.client.post(
        f"{API}/referrals/{entry['id']}/outcome", json={"finding": False}, headers=officer
    )
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["referral"]["declared_on"] == "2026-11-26"
