"""UAT round 2, sup S9 on the shipment page, in Debian's Chromium against the app on
uvicorn, in Russian: an officer records the rifles and their rounds as two seizure
lines, the units read with their meaning ("шт. (PCE)"), a fractional number of
pieces is refused beside its field (what was typed in the other line kept), and
the page shows both lines; the correction form holds the recorded lines. An office,
a day and an officer of their own."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from serving.web.i18n import Translator
from serving.web.views import check_outcome
from tests.serving.conftest import password_for
from tests.web.conftest import DAY, Site, login, shot

OFFICE = "KZ-SEIZE"
OFFICER = "officer-seize"
SEIZE_DAY = DAY + dt.timedelta(days=50)  # a day and an office of their own
PASSWORD = password_for(Role.officer)
RU = Translator("ru")
EN = Translator("en")


@pytest.fixture(scope="module")
def seize(site: Site) -> dict[str, int]:
    """An officer of his own office and its day's queue: shipment id -> referral id."""
    return site.office_queue(OFFICE, OFFICER, PASSWORD, "SEIZE-", SEIZE_DAY, 2)


def _lines(site: Site, referral_id: int) -> tuple[m.Outcome, list[tuple[Any, ...]]]:
    with site.app.state.session_factory() as session:
        outcome = session.scalars(
            select(m.Outcome).where(m.Outcome.referral_id == referral_id)
        ).one()
        rows = session.scalars(
            select(m.OutcomeSeizure)
            .where(m.OutcomeSeizure.outcome_id == outcome.outcome_id)
            .order_by(m.OutcomeSeizure.line_no)
        )
        lines = [(r.line_no, r.category, r.quantity, r.unit) for r in rows]
        session.expunge_all()
    return outcome, lines


def test_rifles_and_their_rounds_recorded_as_two_lines_in_russian(
    new_page: Any, site: Site, seize: dict[str, int]
) -> None:
    sid, rid = "SEIZE-000", seize["SEIZE-000"]
    page = new_page("ru-RU")
    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/shipments/{sid}")
    with page.expect_navigation():
        page.locator("#claim").click()
    assert page.locator("#referral-status").get_attribute("data-status") == "claimed"
    # three rows of category / quantity / unit; the units with their meaning
    assert page.locator("#outcome-form tr.seizure-row").count() == 3
    options = page.locator("#unit option").all_inner_texts()
    assert "шт. (PCE)" in options and "кг (KGM)" in options and "коробок (CT)" in options
    assert page.locator("#unit-2 option[value=NAR]").inner_text() == "изделий, шт. (NAR)"

    page.locator("#finding-yes").check()
    page.locator("#category").select_option("firearms")
    page.locator("#quantity").fill("2,5")  # a typing slip: half a rifle
    page.locator("#unit").select_option("PCE")
    page.locator("#category-1").select_option("ammunition")
    page.locator("#quantity-1").fill("1 500")
    page.locator("#unit-1").select_option("PCE")
    page.locator("#notes").fill("2 автомата АК и 1 500 патронов 7,62x39 в тайнике")
    with page.expect_navigation():
        page.locator("#save-outcome").click()
    assert page.locator("#err-quantity").inner_text() == RU("err.quantity_whole", unit="PCE")
    assert page.locator("#quantity").get_attribute("aria-invalid") == "true"
    assert page.locator("#quantity-1").get_attribute("aria-invalid") is None
    # what was typed is kept, the rounds' line too; nothing recorded
    assert page.locator("#category-1").input_value() == "ammunition"
    assert page.locator("#quantity-1").input_value() == "1 500"
    assert page.locator("#unit-1").input_value() == "PCE"
    assert page.locator("#referral-status").get_attribute("data-status") == "claimed"
    shot(page, "shipment-seizure-refused-ru")

    page.locator("#quantity").fill("2")
    with page.expect_navigation():
        page.locator("#save-outcome").click()
    assert page.locator("#referral-status").get_attribute("data-status") == "inspected"
    shown = page.locator("#recorded-seizures li").all_inner_texts()
    assert shown == [
        "огнестрельное оружие: 2 шт. (PCE)",
        "боеприпасы: 1\u00a0500 шт. (PCE)",
    ]
    shot(page, "shipment-seizure-lines-ru")
    outcome, lines = _lines(site, rid)
    assert (outcome.category, outcome.quantity, outcome.unit) == ("firearms", 2.0, "PCE")
    assert lines == [(1, "firearms", 2.0, "PCE"), (2, "ammunition", 1500.0, "PCE")]

    # the correction form holds the two recorded lines
    page.locator("#correct summary").click()
    assert page.locator("#corr-category").input_value() == "firearms"
    assert page.locator("#corr-category-1").input_value() == "ammunition"
    assert page.locator("#corr-quantity-1").input_value() == "1\u00a0500"
    assert page.locator("#corr-category-2").input_value() == ""
    # a third line added by a correction: the 30 rounds of another calibre
    page.locator("#corr-category-2").select_option("ammunition")
    page.locator("#corr-quantity-2").fill("30")
    page.locator("#corr-unit-2").select_option("PCE")
    page.locator("#corr-reason").fill("ещё 30 патронов 5,45x39 найдены при повторном досмотре")
    with page.expect_navigation():
        page.locator("#save-correction").click()
    # the same category and unit twice: refused beside the third line's category
    assert page.locator("#err-category-2").inner_text() == RU("err.seizure_duplicate", line=2)
    page.locator("#corr-quantity-1").fill("1530")
    page.locator("#corr-category-2").select_option("")
    page.locator("#corr-quantity-2").fill("")
    page.locator("#corr-unit-2").select_option("")
    with page.expect_navigation():
        page.locator("#save-correction").click()
    assert page.locator("#recorded-seizures li").all_inner_texts() == [
        "огнестрельное оружие: 2 шт. (PCE)",
        "боеприпасы: 1\u00a0530 шт. (PCE)",
    ]
    correction = page.locator("#corrections li.correction").inner_text()
    notes = " («2 автомата АК и 1 500 патронов 7,62x39 в тайнике»)"
    rifles = "обнаружено, огнестрельное оружие, 2 шт. (PCE)"
    assert (
        f"{rifles} + боеприпасы, 1\u00a0500 шт. (PCE){notes} → "
        f"{rifles} + боеприпасы, 1\u00a0530 шт. (PCE){notes}. Причина: ещё 30 патронов"
    ) in correction
    _outcome, lines = _lines(site, rid)
    assert lines == [(1, "firearms", 2.0, "PCE"), (2, "ammunition", 1530.0, "PCE")]


def test_the_form_names_each_problem_by_its_row() -> None:
    """Empty rows are left out, and a problem is shown beside its own row's field,
    naming the other row by its place on the form."""
    form = {
        "finding": "yes",
        "category-1": "ammunition",
        "quantity-1": "150",
        "unit-1": "PCE",
        "category-2": "ammunition",
        "quantity-2": "20",
        "unit-2": "PCE",
    }
    bad, errors = check_outcome(form, EN)
    assert bad is None
    assert errors.fields == {"category-2": EN("err.seizure_duplicate", line=2)}
    assert "line 2" in errors.fields["category-2"]
    ok, errors = check_outcome({**form, "unit-2": "KGM", "quantity-2": "0,5"}, EN)
    assert not errors and ok is not None
    assert [(s.category, s.quantity, s.unit) for s in ok.seizures] == [
        ("ammunition", 150.0, "PCE"),
        ("ammunition", 0.5, "KGM"),
    ]
    bad, errors = check_outcome({"finding": "yes", "quantity-1": "3", "unit-1": "NAR"}, RU)
    assert errors.fields == {"category-1": RU("err.category_required")}
    bad, errors = check_outcome({"finding": "yes", "category": "parts", "unit": "KGM"}, EN)
    assert errors.fields == {"quantity": "A unit needs a quantity."}
