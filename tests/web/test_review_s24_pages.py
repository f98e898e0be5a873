"""The officer's pages after the review of stop 24 (revC), in Debian's Chromium against
the app on uvicorn, English and Russian:

- "Waiting" and overdue count from the shipment's declaration, not from when the
  queue was first opened (section 2), and the sort by waiting time follows it;
- the pages of an office write times in the office's zone, named (section 3);
- "claimed by" only while the referral is claimed; then who decided and who closed
  (section 5);
- an exploration entry says in words that it was drawn at random to check the model,
  with its chance (section 6);
- tiny priorities are no "0.00": entries can be told apart (section 7);
- another office's shipment is answered as an unknown one, naming no office
  (section 12);
- a form-wide error takes the keyboard focus (section 13).

An office of its own on Asia/Bishkek (UTC+6, no daylight saving), a capacity of 8 with
half of it drawn at random, and shipments declared 30 hours ago whose queue is first
opened now."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from serving import orm as m
from serving.auth import Role, create_user
from serving.policy import TOP_BAND
from serving.services import jsonable
from serving.web.i18n import Translator
from serving.web.views import fmt_age, fmt_dt, fmt_percent, fmt_small
from tests.serving.conftest import password_for
from tests.web.conftest import Site, login, shipment_payloads, shot

REVC = "KG-REVC"
ZONE = ZoneInfo("Asia/Bishkek")
NAMED = "(Asia/Bishkek, UTC+06:00)"
OFFICER = "revc-officer"
PASSWORD = password_for(Role.officer)
N = 12
EN, RU = Translator("en"), Translator("ru")


@dataclass
class Revc:
    site: Site
    day: dt.date
    declared: dict[str, dt.datetime]  # shipment id -> declared at (UTC)
    entries: dict[str, dict[str, Any]]  # shipment id -> the queue entry (API)

    def open_entries(
        self, n: int, *, skip: set[str] | frozenset[str] = frozenset(), drawn: bool = False
    ) -> list[str]:
        """`n` unforced entries (placed open) not in `skip`, ranked ones (random draws
        too with `drawn`)."""
        found = [
            sid
            for sid, e in sorted(self.entries.items(), key=lambda kv: kv[1]["rank"])
            if (drawn or e["selection_method"] != "random")
            and e["priority"] < TOP_BAND
            and e["status"] == "open"
            and sid not in skip
        ]
        assert len(found) >= n, self.entries
        return found[:n]


@pytest.fixture(scope="module")
def revc(site: Site) -> Iterator[Revc]:
    services = site.app.state.services
    before = services.queue
    services.queue = before.model_copy(
        update={
            "office_timezones": {**before.office_timezones, REVC: ZONE.key},
            "office_capacities": {**before.office_capacities, REVC: 8},
            "exploration_share": 0.5,
        }
    )
    try:
        with site.app.state.session_factory() as session:
            create_user(
                session, username=OFFICER, password=PASSWORD, role=Role.officer, office_code=REVC
            )
            session.commit()
        first = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=30)
        if first.astimezone(ZONE).time() > dt.time(23, 40):  # (all on one local day)
            first -= dt.timedelta(minutes=30)
        day = first.astimezone(ZONE).date()
        records = shipment_payloads(site.data, N, "REVC-", REVC, day)
        declared = {}
        for i, record in enumerate(records):
            at = first + dt.timedelta(minutes=i)
            record["declared_at"] = jsonable(at)
            record["expected_arrival_at"] = jsonable(at + dt.timedelta(hours=6))
            declared[record["shipment_id"]] = at
        with site.api(Role.analyst) as client:
            r = client.post("/api/v1/shipments/batch", json={"records": records})
            assert r.status_code == 200 and len(r.json()["stored"]) == N, r.text
        token = site.api_token(OFFICER, PASSWORD)
        with httpx.Client(
            base_url=site.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            r = client.get(f"/api/v1/queues/{REVC}/{day.isoformat()}")  # (first opened now)
            assert r.status_code == 200, r.text
        entries = {e["shipment_id"]: e for e in r.json()["entries"]}
        yield Revc(site, day, declared, entries)
    finally:
        services.queue = before


def _local(at: dt.datetime) -> str:
    return f"{at.astimezone(ZONE):%Y-%m-%d %H:%M} {NAMED}"


def _focused(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => { const a = document.activeElement; return {
                id: a.id, cls: a.className, role: a.getAttribute("role"),
                tabindex: a.getAttribute("tabindex"), text: a.innerText }; }"""
        )
    )


# --------------------------------------------------------------------------- section 2, 3, 6


def test_waiting_counts_from_the_declaration_in_the_queue(new_page: Any, revc: Revc) -> None:
    page = new_page()
    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/queue?day={revc.day.isoformat()}")
    assert "day in Asia/Bishkek (UTC+06:00)" in page.locator("h1").inner_text()
    awaiting = [sid for sid, e in revc.entries.items() if e["status"] in ("open", "claimed")]
    assert awaiting
    now = dt.datetime.now(dt.UTC)
    for sid in awaiting:
        row = page.locator(f'#queue-table tr[data-shipment="{sid}"]')
        waiting = row.locator(".waiting")
        age = int(waiting.get_attribute("data-age-seconds") or "")
        # placed a moment ago, yet waiting since its declaration 30 hours ago
        assert abs(age - (now - revc.declared[sid]).total_seconds()) < 300, (sid, age)
        assert waiting.inner_text() == f"{EN('queue.age')} {fmt_age(age, 'en')}"
        assert age > 29 * 3600
        # and overdue (24 h by default), with its declaration in the office's time
        assert "overdue" in (row.get_attribute("class") or "").split()
        listed = page.locator(f'.overdue-list li[data-shipment="{sid}"]').inner_text()
        assert f"declared {_local(revc.declared[sid])}" in listed, listed
        assert re.search(r"waiting \d+ h", listed), listed
    assert page.locator("#age-note").inner_text() == EN("queue.age_note", hours="24")
    shot(page, "review-s24-queue-waiting-en")

    # longest waiting first: the earliest declared first (placed at the same moment)
    page.goto(f"/web/queue?day={revc.day.isoformat()}&sort=age")
    shown = page.locator("#queue-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.shipment)"
    )
    assert shown == sorted(revc.entries, key=lambda sid: (revc.declared[sid], sid))
    assert EN("queue.order_age") == page.locator("#queue-order").inner_text()

    ru = new_page("ru-RU")
    login(ru, OFFICER, PASSWORD)
    ru.goto(f"/web/queue?day={revc.day.isoformat()}")
    sid = awaiting[0]
    text = ru.locator(f'#queue-table tr[data-shipment="{sid}"] .waiting').inner_text()
    assert text.startswith(RU("queue.age") + " ") and text.endswith(" ч")
    assert (
        f"задекларировано {_local(revc.declared[sid])}" in ru.locator(".overdue-list").inner_text()
    )
    assert ru.locator("#age-note").inner_text() == RU("queue.age_note", hours="24")
    shot(ru, "review-s24-queue-waiting-ru")


def test_an_exploration_entry_says_it_was_drawn_at_random(new_page: Any, revc: Revc) -> None:
    drawn = {sid: e for sid, e in revc.entries.items() if e["selection_method"] == "random"}
    assert drawn, revc.entries  # (half the capacity is drawn at random)
    for locale, t in (("en-GB", EN), ("ru-RU", RU)):
        page = new_page(locale)
        login(page, OFFICER, PASSWORD)
        page.goto(f"/web/queue?day={revc.day.isoformat()}")
        for sid, entry in drawn.items():
            row = page.locator(f'#queue-table tr[data-shipment="{sid}"]')
            chance = fmt_percent(entry["selection_probability"], t.lang)
            said = row.locator(".col-selection .exploration-chance").inner_text()
            assert said == t("queue.exploration_chance", chance=chance)
            assert "p = " not in row.inner_text()
        shot(page, f"review-s24-queue-exploration-{t.lang}")
    assert EN("queue.exploration_chance", chance="33.3%").startswith(
        "Drawn at random to check the model, not picked for its risk"
    )


# --------------------------------------------------------------------------- section 7


def test_tiny_priorities_can_be_told_apart(new_page: Any, revc: Revc) -> None:
    # (not the entries the tests below decide)
    low, lower = revc.open_entries(2, skip=set(revc.open_entries(2)), drawn=True)
    tiny = {low: 3.2e-9, lower: 1.5e-11}
    site = revc.site
    with site.app.state.session_factory() as session:
        kept = {
            r.shipment_id: r.priority
            for r in session.scalars(select(m.Referral).where(m.Referral.shipment_id.in_(tiny)))
        }
        for sid, value in tiny.items():
            session.execute(
                update(m.Referral).where(m.Referral.shipment_id == sid).values(priority=value)
            )
        session.commit()
    try:
        for locale, t in (("en-GB", EN), ("ru-RU", RU)):
            page = new_page(locale)
            login(page, OFFICER, PASSWORD)
            page.goto(f"/web/queue?day={revc.day.isoformat()}")
            cells = {
                sid: page.locator(f'#queue-table tr[data-shipment="{sid}"] td.col-priority')
                for sid in tiny
            }
            texts = {sid: cell.inner_text() for sid, cell in cells.items()}
            assert texts == {sid: fmt_small(v, t.lang) for sid, v in tiny.items()}
            mark = "," if t.lang == "ru" else "."
            assert texts[low] == f"3{mark}2\u00a0×\u00a010⁻⁹"
            assert "0.00" not in texts.values() and "0,00" not in texts.values()
            every = page.locator("#queue-table td.col-priority").all_inner_texts()
            values = page.locator("#queue-table td.col-priority").evaluate_all(
                "cells => cells.map(c => Number(c.dataset.priority))"
            )
            assert every == [fmt_small(v, t.lang) for v in values]
            assert page.locator("#priority-note").inner_text() == t("queue.priority_note")
            shot(page, f"review-s24-queue-priorities-{t.lang}")
    finally:
        with site.app.state.session_factory() as session:
            for sid, value in kept.items():
                session.execute(
                    update(m.Referral).where(m.Referral.shipment_id == sid).values(priority=value)
                )
            session.commit()


# --------------------------------------------------------------------------- section 3, 5


def test_the_referral_says_who_holds_decided_and_closed_it(new_page: Any, revc: Revc) -> None:
    (sid,) = revc.open_entries(1)
    page = new_page()
    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/shipments/{sid}")
    declared = page.locator(
        f"xpath=//dt[normalize-space()='{EN('ship.declared_at')}']/following-sibling::dd[1]"
    )
    assert declared.inner_text() == _local(revc.declared[sid])
    status = page.locator("#referral-status")
    assert page.locator("#waiting").inner_text().startswith("waiting ")
    with page.expect_navigation():
        page.locator("#claim").click()
    claimed = page.locator("#claimed-by").inner_text()
    assert claimed.startswith(f"claimed by {OFFICER} at ") and claimed.endswith(NAMED)

    page.locator("#reason").fill("seal intact, x-ray clean")
    with page.expect_navigation():
        page.locator("#waive").click()
    assert status.get_attribute("data-status") == "waived"
    assert page.locator("#claimed-by").count() == 0
    assert "claimed by" not in status.inner_text()
    with revc.site.app.state.session_factory() as session:
        ref = session.scalars(select(m.Referral).where(m.Referral.shipment_id == sid)).one()
        decided_at = ref.decided_at
    assert page.locator("#decided-by").inner_text() == EN(
        "ship.decided_by_at", who=OFFICER, at=fmt_dt(decided_at, ZONE)
    )
    assert page.locator("#waiting").count() == 0  # (decided: no longer waiting)

    with page.expect_navigation():
        page.locator("#close").click()
    assert status.get_attribute("data-status") == "closed"
    text = status.inner_text()
    assert "claimed by" not in text and f"Decided by {OFFICER}" in text
    closed = page.locator("#closed-by").inner_text()
    assert closed.startswith(f"closed by {OFFICER} at ") and closed.endswith(NAMED)
    shot(page, "review-s24-referral-closed-en")

    ru = new_page("ru-RU")
    login(ru, OFFICER, PASSWORD)
    ru.goto(f"/web/shipments/{sid}")
    text = ru.locator("#referral-status").inner_text()
    assert "в работе у" not in text
    assert RU("ship.decided_by_at", who=OFFICER, at=fmt_dt(decided_at, ZONE)) in text
    assert "закрыл(а)" in text and NAMED in text
    shot(ru, "review-s24-referral-closed-ru")


def test_a_shipment_of_an_office_on_utc_keeps_utc_times(new_page: Any, site: Site) -> None:
    page = new_page()
    login(page, "officer1", password_for(Role.officer))
    sid = site.shipments[0]["shipment_id"]
    page.goto(f"/web/shipments/{sid}")
    at = dt.datetime.fromisoformat(site.shipments[0]["declared_at"])
    assert (
        f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" in page.locator("#h-header + dl").inner_text()
    )


# --------------------------------------------------------------------------- section 12


def test_another_offices_shipment_is_answered_as_an_unknown_one(new_page: Any, revc: Revc) -> None:
    page = new_page()
    login(page, "officer2", password_for(Role.officer))  # (of another office)
    sid = next(iter(revc.entries))
    seen = []
    for shown in (sid, "REVC-NO-SUCH-1"):
        response = page.goto(f"/web/shipments/{shown}")
        assert response is not None and response.status == 404
        seen.append((page.locator("h1").inner_text(), page.locator("#error-message").inner_text()))
        assert REVC not in page.content() and sid not in page.locator("main").inner_text()
    assert seen[0] == seen[1] == (EN("error.not_found"), EN("error.not_found"))
    shot(page, "review-s24-other-office-404")
    # a referral of the other office: as an unknown referral, forms too
    ref_id = revc.entries[sid]["id"]
    with revc.site.app.state.session_factory() as session:
        placed = session.get(m.Referral, ref_id)
        assert placed is not None
        status = placed.status
        unknown = (session.scalar(select(m.Referral.id).order_by(m.Referral.id.desc())) or 0) + 1000
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for rid in (ref_id, unknown):
        r = page.request.post(f"/web/referrals/{rid}/claim", form={"csrf_token": csrf or ""})
        assert r.status == 404 and REVC not in r.text()
        assert page.request.get(f"/web/referrals/{rid}").status == 404
    with revc.site.app.state.session_factory() as session:
        again = session.get(m.Referral, ref_id)
        assert again is not None and again.status == status


# --------------------------------------------------------------------------- section 13


def test_a_form_wide_error_takes_the_keyboard_focus(new_page: Any, revc: Revc) -> None:
    page = new_page()
    page.goto("/web/login")
    page.locator("#username").fill(OFFICER)
    page.locator("#password").fill("not the password")
    with page.expect_navigation():
        page.locator("#password").press("Enter")
    focused = _focused(page)
    assert (focused["id"], focused["role"], focused["tabindex"]) == ("login-error", "alert", "-1")
    assert focused["text"] == EN("login.failed")

    login(page, OFFICER, PASSWORD)
    sid = revc.open_entries(2)[1]  # (the first is waived and closed above)
    page.goto(f"/web/shipments/{sid}")
    with page.expect_navigation():
        page.locator("#claim").click()
    page.locator("#finding-no").check()
    with page.expect_navigation():
        page.locator("#save-outcome").click()
    assert page.locator("#referral-status").get_attribute("data-status") == "inspected"
    # a correction that changes nothing: an error of the whole form, not of a field
    page.locator("#correct summary").click()
    page.locator("#corr-reason").fill("checked the seal again")
    with page.expect_navigation():
        page.locator("#save-correction").click()
    focused = _focused(page)
    assert "form-errors" in focused["cls"].split()
    assert (focused["role"], focused["tabindex"]) == ("alert", "-1")
    assert focused["text"] == EN("err.correction_unchanged")
    assert page.locator("#correction-form .form-errors").count() == 1
    shot(page, "review-s24-form-error-focus")
    # a field's error still takes the focus to its field
    page.locator("#corr-reason").fill("")
    with page.expect_navigation():
        page.locator("#save-correction").click()
    assert _focused(page)["id"] == "corr-reason"
