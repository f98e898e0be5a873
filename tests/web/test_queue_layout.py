"""The queue as an officer works it, in Debian's Chromium against the app on uvicorn:
a forced shipment (exact watchlist hit) that arrives after the queue was placed is
listed first in the default order, keeps its stored rank, and the API marks it
`forced` (sup S15); on a tablet (768x1024 portrait, 1024x768 landscape, Russian)
the page does not scroll sideways and the first claim button is on screen (sup S10)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from serving.auth import Role
from tests.serving.conftest import OFFICE
from tests.web.conftest import DAY, WATCHED, Site, login_as, shipment_payloads, shot

LAYOUT_DAY = DAY + dt.timedelta(days=40)  # a day of its own (no other test uses it)
N = 10
# A long Russian consignee name and a medium rule on it alone: a yellow entry, whose
# lane badge ("жёлтый: документальный контроль") is the widest of the page.
LONG_NAME = "ООО «Торговый дом Северный Транзит Логистик»"
YELLOW_RULE = {
    "id": "layout-long-consignee",
    "name": "Грузополучатель под документальным контролем (проверка вёрстки)",
    "severity": "medium",
    "condition": {"field": "consignee_name", "op": "eq", "value": LONG_NAME},
}


@dataclass
class Placed:
    forced_id: str  # the forced shipment that arrived after the queue was placed
    queue: dict[str, Any]  # the API's queue after its arrival


def _long_id(i: int, day: dt.date) -> str:
    """Ids as the customs system writes them (20 characters, unbreakable)."""
    return f"SH00000997{60 + i:02d}-D{day:%y%m%d}"


def _renamed(record: dict[str, Any], sid: str) -> dict[str, Any]:
    items = [
        {**line, "shipment_id": sid, "item_id": f"{sid}-{line['line_no']}"}
        for line in record["items"]
    ]
    return {**record, "shipment_id": sid, "items": items}


@pytest.fixture(scope="module")
def placed(site: Site) -> Iterator[Placed]:
    """LAYOUT_DAY's queue at OFFICE placed with N ordinary shipments, then a copy of
    the watched consignee's shipment (an exact watchlist hit: forced) arriving later."""
    watched = site.shipments[WATCHED]
    records = [
        r
        for r in shipment_payloads(site.data, N + 2, "TMP-", OFFICE, LAYOUT_DAY)
        if r["consignee_name"] != watched["consignee_name"]
    ][:N]
    records = [_renamed(r, _long_id(i, LAYOUT_DAY)) for i, r in enumerate(records)]
    records[0]["consignee_name"] = LONG_NAME
    path = f"/api/v1/queues/{OFFICE}/{LAYOUT_DAY.isoformat()}"
    with site.api(Role.analyst) as analyst, site.api(Role.officer) as officer:
        r = analyst.post("/api/v1/rules", json=YELLOW_RULE)
        assert r.status_code == 201, r.text
        r = analyst.post("/api/v1/shipments/batch", json={"records": records})
        assert r.status_code == 200 and len(r.json()["stored"]) == N, r.text
        first = officer.get(path)
        assert first.status_code == 200, first.text
        assert not any(e["forced"] for e in first.json()["entries"]), first.json()
        lanes = {e["shipment_id"]: e["lane"] for e in first.json()["entries"]}
        assert lanes[records[0]["shipment_id"]] == "yellow", lanes
        forced_id = _long_id(N + 5, LAYOUT_DAY)
        late = _renamed(
            {
                **watched,
                "declared_at": f"{LAYOUT_DAY.isoformat()}T15:30:00+00:00",
                "expected_arrival_at": f"{LAYOUT_DAY.isoformat()}T21:30:00+00:00",
            },
            forced_id,
        )
        r = analyst.post("/api/v1/shipments", json=late)
        assert r.status_code == 201, r.text
        assert r.json()["priority"] >= 2, r.json()  # forced in (exact watchlist hit)
        queue = officer.get(path)
        assert queue.status_code == 200, queue.text
        # one entry claimed, so that a status with the officer's name shows too
        claimable = next(e for e in queue.json()["entries"] if e["status"] == "open")
        assert officer.post(f"/api/v1/referrals/{claimable['id']}/claim").status_code == 200
    yield Placed(forced_id, queue.json())


# --------------------------------------------------------------------------- S15


def test_the_api_marks_forced_entries_and_keeps_the_ranks(placed: Placed) -> None:
    entries = placed.queue["entries"]
    by_id = {e["shipment_id"]: e for e in entries}
    late = by_id[placed.forced_id]
    assert late["forced"] is True and late["selection_method"] == "watchlist"
    # placed after the others: the next rank, never renumbered
    assert late["rank"] == max(e["rank"] for e in entries) == N + 1
    assert [e["rank"] for e in entries] == sorted(e["rank"] for e in entries)
    for e in entries:
        assert e["forced"] == (e["priority"] >= 2), e


def test_the_queue_page_lists_a_late_forced_arrival_first(
    new_page: Any, site: Site, placed: Placed
) -> None:
    page = new_page()
    login_as(page, Role.officer)
    page.goto(f"/web/queue?day={LAYOUT_DAY.isoformat()}")
    rows = page.locator("#queue-table tbody tr")
    order = rows.evaluate_all("rows => rows.map(r => r.dataset.shipment)")
    assert order[0] == placed.forced_id, order
    first = rows.first
    assert "forced" in (first.get_attribute("class") or "").split()
    assert first.locator("td").first.inner_text().strip() == str(N + 1)  # its stored rank
    assert "must inspect" in first.inner_text()
    # the rest by rank
    ranks = {e["shipment_id"]: e["rank"] for e in placed.queue["entries"]}
    assert [ranks[s] for s in order[1:]] == sorted(ranks[s] for s in order[1:])
    # the page says what the order is
    assert page.locator("#sort").input_value() == "rank"
    assert "must-inspect first" in page.locator("#sort option:checked").inner_text()
    assert (
        page.locator("#queue-order")
        .inner_text()
        .startswith(
            "Order: must-inspect entries (a must-inspect rule or an exact watchlist hit) first"
        )
    )
    shot(page, "queue-forced-first")
    # the other orders are still there
    page.goto(f"/web/queue?day={LAYOUT_DAY.isoformat()}&sort=age")
    assert page.locator("#queue-order").inner_text().startswith("Order: longest waiting first")
    ru = new_page(locale="ru-RU")
    login_as(ru, Role.officer)
    ru.goto(f"/web/queue?day={LAYOUT_DAY.isoformat()}")
    assert ru.locator("#queue-table tbody tr").first.get_attribute("data-shipment") == (
        placed.forced_id
    )
    assert ru.locator("#queue-order").inner_text().startswith("Порядок: сначала обязательные")


# --------------------------------------------------------------------------- S10


@pytest.mark.parametrize(("width", "height"), [(768, 1024), (1024, 768)])
def test_the_queue_fits_a_tablet_in_russian(
    new_page: Any, site: Site, placed: Placed, width: int, height: int
) -> None:
    page = new_page(locale="ru-RU")
    page.set_viewport_size({"width": width, "height": height})
    login_as(page, Role.officer)
    for day in (LAYOUT_DAY, DAY):
        page.goto(f"/web/queue?day={day.isoformat()}")
        assert page.locator("html").get_attribute("lang") == "ru"
        sizes = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
        assert sizes[0] <= sizes[1] == width, (day, sizes)
        row = page.locator("#queue-table tbody tr", has=page.locator("button")).first
        button = row.locator("button")
        box = button.bounding_box()
        assert box is not None and button.inner_text() == "Взять в работу"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (day, box)
        # beside its shipment: in the same row as the shipment's link
        link = row.locator("td a").first.bounding_box()
        assert link is not None and link["x"] >= 0
        assert link["y"] < box["y"] + box["height"] and box["y"] < link["y"] + 200
        # what the dropped columns said is still in the row
        assert "Приоритет" in row.inner_text()
        shot(page, f"queue-tablet-{width}x{height}-{day.isoformat()}")
