"""The queue page's day is the office's local day (supervisor round 2, S4): opened
without a day it shows the office's today in its time zone, and the heading and the
day field name the zone and its UTC offset (English and Russian); an office without a
zone keeps the labelled UTC day. Debian's Chromium against the app on uvicorn."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from serving.auth import Role
from tests.serving.conftest import OFFICE, password_for
from tests.web.conftest import OTHER_OFFICE, Site, login, login_as, shot


def _shifted_zone() -> str:
    """A zone whose date differs from the UTC date now and for the next hour."""
    return "Pacific/Kiritimati" if dt.datetime.now(dt.UTC).hour >= 11 else "Etc/GMT+12"


@pytest.fixture
def zoned(site: Site) -> Iterator[str]:
    """OTHER_OFFICE (no shipments of its own) on a zone a day apart from UTC, for
    this test only."""
    zone = _shifted_zone()
    services = site.app.state.services
    before = services.queue
    services.queue = before.model_copy(update={"office_timezones": {OTHER_OFFICE: zone}})
    try:
        yield zone
    finally:
        services.queue = before


def _offset(zone: str) -> str:
    text = dt.datetime.now(ZoneInfo(zone)).strftime("%z")  # "+1400"
    return f"{text[:3]}:{text[3:]}"


def test_the_queue_page_shows_the_offices_local_day(new_page: Any, zoned: str) -> None:
    local_today = dt.datetime.now(ZoneInfo(zoned)).date().isoformat()
    assert local_today != dt.datetime.now(dt.UTC).date().isoformat()
    label = f"day in {zoned} (UTC{_offset(zoned)})"

    page = new_page()
    login(page, "officer2", password_for(Role.officer))
    page.goto("/web/queue")
    assert page.locator("#day").input_value() == local_today  # the office's today
    assert page.locator("h1").inner_text() == (
        f"Inspection queue: {OTHER_OFFICE}, {local_today} ({label})"
    )
    assert label in page.locator("label[for=day]").inner_text()
    shot(page, "queue-local-day-en")

    ru = new_page(locale="ru-RU")
    login(ru, "officer2", password_for(Role.officer))
    ru.goto("/web/queue")
    assert f"сутки по времени {zoned} (UTC{_offset(zoned)})" in ru.locator("h1").inner_text()
    assert ru.locator("#day").input_value() == local_today

    # an office without a zone: the UTC day, labelled as such
    utc = new_page()
    login_as(utc, Role.officer)
    utc.goto("/web/queue")
    assert utc.locator("#day").input_value() == dt.datetime.now(dt.UTC).date().isoformat()
    assert "UTC day: 00:00-24:00 UTC" in utc.locator("h1").inner_text()
    assert OFFICE in utc.locator("h1").inner_text()
