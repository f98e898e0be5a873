"""A queue day outside the plausible days (1990 to a year ahead) is refused with 422
naming `day` (security review round 2, F3: 9999-12-31 answered 500)."""

from __future__ import annotations

import datetime as dt

import pytest

from serving.auth import Role
from serving.policy import queue_day_problem
from tests.serving.conftest import OFFICE, Api


@pytest.mark.parametrize("day", ["9999-12-31", "1989-12-31", "0001-01-01"])
def test_an_implausible_queue_day_is_refused(api: Api, day: str) -> None:
    r = api.client.get(f"/api/v1/queues/{OFFICE}/{day}", headers=api.headers(Role.officer))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["path", "day"] and "queue day lies between" in detail["msg"]


def test_queue_day_bounds() -> None:
    today = dt.date(2026, 11, 27)
    assert queue_day_problem(today, today) is None
    assert queue_day_problem(dt.date(1990, 1, 1), today) is None
    assert queue_day_problem(today + dt.timedelta(days=366), today) is None
    assert queue_day_problem(today + dt.timedelta(days=367), today) is not None
    assert queue_day_problem(dt.date(1989, 12, 31), today) is not None
