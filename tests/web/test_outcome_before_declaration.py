"""An outcome recorded on the shipment page before the shipment's declaration time
(a declaration dated later than the server's clock) is refused with a message in
the officer's language naming the declaration time, in Debian's Chromium against
the app on uvicorn; nothing is recorded and the referral stays claimed. An office
and an officer of their own; the shipments are declared tomorrow."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from serving.web.i18n import Translator
from tests.serving.conftest import password_for
from tests.web.conftest import Site, login, shipment_payloads, shot

OFFICE = "KZ-EARLY"
OFFICER = "officer-early"
PASSWORD = password_for(Role.officer)


def test_an_outcome_before_the_declaration_is_refused_in_the_officers_language(
    new_page: Any, site: Site
) -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    referrals = site.office_queue(OFFICE, OFFICER, PASSWORD, "EARLY-", tomorrow, 2)
    records = shipment_payloads(site.data, 2, "EARLY-", OFFICE, tomorrow)  # (as ingested)
    assert set(referrals) == {"EARLY-000", "EARLY-001"}, referrals

    for (sid, declared), (locale, lang) in zip(
        ((r["shipment_id"], r["declared_at"]) for r in records),
        (("en-GB", "en"), ("ru-RU", "ru")),
        strict=True,
    ):
        page = new_page(locale)
        login(page, OFFICER, PASSWORD)
        page.goto(f"/web/shipments/{sid}")
        with page.expect_navigation():
            page.locator("#claim").click()
        page.locator("#finding-yes").check()
        page.locator("#category").select_option("firearms")
        page.locator("#quantity").fill("2")
        page.locator("#unit").select_option("PCE")
        with page.expect_navigation():
            page.locator("#save-outcome").click()
        stamp = dt.datetime.fromisoformat(declared).strftime("%Y-%m-%d %H:%M UTC")
        expected = Translator(lang)("conflict.before_declaration", shipment=sid, declared=stamp)
        assert expected in page.locator("#outcome-form .form-errors").inner_text()
        # what was typed is kept; nothing is recorded
        assert page.locator("#quantity").input_value() == "2"
        assert page.locator("#referral-status").get_attribute("data-status") == "claimed"
        shot(page, f"shipment-outcome-before-declaration-{lang}")
        with site.app.state.session_factory() as session:
            stored = session.scalars(
                select(m.Outcome).where(m.Outcome.referral_id == referrals[sid])
            ).all()
            assert stored == []
