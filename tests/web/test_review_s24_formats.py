"""How the pages write small probabilities, chances of a random draw and times (review
s24 revC, sections 3, 6 and 7), without a browser: a priority of 3.2e-9 is no "0.00"
beside one of 1.5e-11, a random draw's chance is a percentage, and a time of an office
is written in its zone, named with its offset."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from serving.web.views import fmt_dt, fmt_percent, fmt_small, traveller_value

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("value", "en", "ru"),
    [
        (0.45, "0.45", "0,45"),
        (2.31, "2.31", "2,31"),  # a forced entry
        (0.0, "0.00", "0,00"),
        (0.0099996, "0.01", "0,01"),  # (rounds up into the plain form)
        (0.0034, "0.0034", "0,0034"),
        (0.00012, "0.00012", "0,00012"),
        (3.2e-9, f"3.2{NBSP}×{NBSP}10⁻⁹", f"3,2{NBSP}×{NBSP}10⁻⁹"),
        (1.5e-11, f"1.5{NBSP}×{NBSP}10⁻¹¹", f"1,5{NBSP}×{NBSP}10⁻¹¹"),
    ],
)
def test_small_priorities_keep_two_significant_digits(value: float, en: str, ru: str) -> None:
    assert fmt_small(value, "en") == en
    assert fmt_small(value, "ru") == ru


def test_tiny_priorities_are_told_apart() -> None:
    values = [3.2e-9, 1.1e-9, 4.0e-12, 1.5e-11, 7.7e-13]
    assert len({fmt_small(v) for v in values}) == len(values)
    assert fmt_small(0.0123, "en", places=4) == "0.0123"  # the shipment page's probability


@pytest.mark.parametrize(
    ("p", "en", "ru"),
    [
        (0.125, "12.5%", f"12,5{NBSP}%"),
        (1 / 3, "33.3%", f"33,3{NBSP}%"),
        (0.05, "5%", f"5{NBSP}%"),
        (1.0, "100%", f"100{NBSP}%"),
        (0.0002, "0.02%", f"0,02{NBSP}%"),
    ],
)
def test_a_random_draws_chance_is_a_percentage(p: float, en: str, ru: str) -> None:
    assert fmt_percent(p, "en") == en
    assert fmt_percent(p, "ru") == ru


def test_times_are_written_in_the_offices_zone_named() -> None:
    at = dt.datetime(2026, 11, 29, 19, 30, tzinfo=dt.UTC)  # 01:30 on the 30th in Bishkek
    assert fmt_dt(at) == "2026-11-29 19:30 UTC"
    assert fmt_dt(at, ZoneInfo("UTC")) == "2026-11-29 19:30 UTC"  # an office on UTC
    assert fmt_dt(at, ZoneInfo("Asia/Bishkek")) == "2026-11-30 01:30 (Asia/Bishkek, UTC+06:00)"
    assert fmt_dt(at.isoformat(), ZoneInfo("Asia/Tashkent")) == (
        "2026-11-30 00:30 (Asia/Tashkent, UTC+05:00)"
    )
    # the offset of the instant: summer and winter time in Berlin
    assert fmt_dt(dt.datetime(2026, 7, 1, 10, tzinfo=dt.UTC), ZoneInfo("Europe/Berlin")) == (
        "2026-07-01 12:00 (Europe/Berlin, UTC+02:00)"
    )
    assert fmt_dt(dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC), ZoneInfo("Europe/Berlin")) == (
        "2026-01-01 11:00 (Europe/Berlin, UTC+01:00)"
    )
    assert fmt_dt(dt.datetime(2026, 1, 1, 10), ZoneInfo("Asia/Bishkek")) == (
        "2026-01-01 16:00 (Asia/Bishkek, UTC+06:00)"  # a naive time is UTC, as stored
    )
    assert traveller_value("departure_at", at, ZoneInfo("Asia/Bishkek")) == fmt_dt(
        at, ZoneInfo("Asia/Bishkek")
    )
