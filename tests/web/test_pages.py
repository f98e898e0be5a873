"""The pages in a real browser (Debian's Chromium, headless) against the app on
uvicorn: the officer's day, waivers, office isolation, the auditor's checks, the
analyst's rules, the data scientist's models, Russian texts. Each page is saved
as a screenshot under test-artifacts/screenshots/ (or $CARAVAN_ARTIFACTS)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from tests.serving.conftest import OFFICE, password_for
from tests.web.conftest import (
    DAY,
    OTHER_OFFICE,
    RULE,
    TRAVELLER_ID,
    WATCHED,
    Site,
    login,
    login_as,
    shot,
)

QUEUE = f"/web/queue?day={DAY.isoformat()}"


def _open_rows(page: Any) -> list[Any]:
    return page.locator("#queue-table tbody tr[data-status=open]").all()


def _open_row_with_reasons(page: Any) -> tuple[str, int]:
    for row in _open_rows(page):
        if row.locator("td.reasons li").count() > 0:
            return str(row.get_attribute("data-shipment")), int(row.get_attribute("data-referral"))
    raise AssertionError("no open queue entry with reasons")


def _referral(site: Site, referral_id: int) -> m.Referral:
    with site.app.state.session_factory() as session:
        ref = session.get(m.Referral, referral_id)
        assert ref is not None
        session.expunge(ref)
        return ref


def test_officer_reads_claims_and_records_a_finding(new_page: Any, site: Site) -> None:
    page = new_page()
    page.goto(QUEUE)
    assert "/web/login" in page.url  # not signed in: sent to the login page, then back
    page.get_by_label("User name").fill("officer1")
    page.get_by_label("Password").fill(password_for(Role.officer))
    with page.expect_navigation():
        page.get_by_label("Password").press("Enter")
    page.wait_for_url(re.compile(r"/web/queue\?day="))
    rows = page.locator("#queue-table tbody tr")
    with site.api(Role.officer) as api:
        queue = api.get(f"/api/v1/queues/{OFFICE}/{DAY.isoformat()}").json()
    assert rows.count() == len(queue["entries"]) > 0
    assert [r.get_attribute("data-shipment") for r in rows.all()] == [
        e["shipment_id"] for e in queue["entries"]
    ]
    capacity = page.locator("#capacity").inner_text()
    assert f"of {queue['capacity']}" in capacity
    explore = [e for e in queue["entries"] if e["selection_method"] == "random"]
    assert page.locator("tr.exploration .exploration-badge").count() == len(explore)
    shot(page, "queue-officer-en")

    sid, referral_id = _open_row_with_reasons(page)
    page.locator(f"#queue-table a[href='/web/shipments/{sid}']").click()
    page.wait_for_url(f"**/web/shipments/{sid}")
    with site.api(Role.officer) as api:
        reasons = api.get(f"/api/v1/shipments/{sid}/explanation").json()["reasons"]
    shown = page.locator("#reasons .reason-text").all_inner_texts()
    assert shown == [r["text_en"] for r in reasons] and shown
    assert page.locator("#waterfall svg rect").count() >= 2
    assert page.locator("#goods tbody tr").count() >= 1
    assert page.locator("#route li").count() >= 2
    shot(page, "shipment-officer-en")

    page.locator("#claim").click()
    page.wait_for_load_state()
    assert page.locator("#referral-status").get_attribute("data-status") == "claimed"
    assert _referral(site, referral_id).claimed_by == "officer1"
    page.get_by_label("something was found").check()
    page.get_by_label("Finding category").select_option("firearms")
    page.get_by_label("Quantity seized").fill("2")
    page.get_by_label("Unit", exact=True).select_option("PCE")
    page.get_by_label("Notes").fill("two pistols under the spare wheel")
    page.locator("#save-outcome").click()
    # back on the shipment, which shows what was recorded (UAT F10)
    page.wait_for_url(re.compile(rf"/web/shipments/{re.escape(sid)}\?done=outcome"))
    assert page.locator("[role=status]").inner_text() == "Result recorded."
    assert page.locator("#recorded-seizures li").inner_text() == "firearms: 2 pieces (PCE)"
    assert page.locator("#recorded-notes").inner_text() == "two pistols under the spare wheel"
    page.goto(QUEUE)
    row = page.locator(f"#queue-table tr[data-referral='{referral_id}']")
    assert row.get_attribute("data-status") == "inspected"
    assert "inspected" in row.inner_text()
    ref = _referral(site, referral_id)
    assert (ref.status, ref.decided_by) == ("inspected", "officer1")
    with site.app.state.session_factory() as session:
        outcome = session.scalars(
            select(m.Outcome).where(m.Outcome.referral_id == referral_id)
        ).one()
    assert (outcome.finding, outcome.category, outcome.quantity, outcome.unit) == (
        True,
        "firearms",
        2.0,
        "PCE",
    )
    shot(page, "queue-after-finding")


def test_outcome_form_errors_are_beside_their_fields(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.officer)
    page.goto(QUEUE)
    sid = str(_open_rows(page)[0].get_attribute("data-shipment"))
    page.goto(f"/web/shipments/{sid}")
    page.locator("#claim").click()
    page.wait_for_load_state()
    page.get_by_label("something was found").check()
    page.get_by_label("Quantity seized").fill("-3")
    page.locator("#save-outcome").click()
    page.wait_for_load_state()
    assert page.locator("#err-category").inner_text() == "A finding needs a category."
    assert page.locator("#err-quantity").inner_text() == "Enter a number above zero."
    assert page.locator("#category").get_attribute("aria-invalid") == "true"
    assert page.locator("#referral-status").get_attribute("data-status") == "claimed"


def test_waiver_without_reason_shows_error(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.officer)
    page.goto(QUEUE)
    row = _open_rows(page)[-1]
    sid, referral_id = (
        str(row.get_attribute("data-shipment")),
        int(row.get_attribute("data-referral")),
    )
    # claim with one click from the queue
    row.get_by_role("button", name=re.compile("Claim")).click()
    page.wait_for_load_state()
    assert "claimed" in page.locator("[role=status]").inner_text()
    assert (
        page.locator(f"tr[data-referral='{referral_id}']").get_attribute("data-status") == "claimed"
    )
    page.goto(f"/web/shipments/{sid}")
    response_codes: list[int] = []
    page.on("response", lambda r: response_codes.append(r.status))
    page.locator("#reason").fill("   ")
    page.locator("#waive").click()
    page.wait_for_load_state()
    error = page.locator("#err-reason")
    assert error.inner_text() == "A waiver needs a reason."
    assert page.locator("#reason").get_attribute("aria-invalid") == "true"
    assert page.locator("#reason").get_attribute("aria-describedby") == "err-reason"
    assert 422 in response_codes
    assert _referral(site, referral_id).status == "claimed"
    shot(page, "shipment-waiver-error")
    page.locator("#reason").fill("seal intact, x-ray clean")
    page.locator("#waive").click()
    page.wait_for_load_state()
    assert page.locator("#referral-status").get_attribute("data-status") == "waived"
    ref = _referral(site, referral_id)
    assert (ref.status, ref.waiver_reason, ref.decided_by) == (
        "waived",
        "seal intact, x-ray clean",
        "officer1",
    )


def test_officer_of_another_office_cannot_open_it(new_page: Any, site: Site) -> None:
    page = new_page()
    login(page, "officer2", password_for(Role.officer))
    sid = site.shipments[0]["shipment_id"]
    response = page.goto(f"/web/shipments/{sid}")
    # answered as an unknown shipment: neither that it exists nor its office
    assert response is not None and response.status == 404
    assert page.locator("#error-message").inner_text() == "Not found"
    assert OFFICE not in page.content()
    assert site.shipments[0]["consignee_name"] not in page.content()
    shot(page, "shipment-other-office-404")
    # their queue is their own office's, whatever the address asks for
    page.goto(f"/web/queue?day={DAY.isoformat()}&office={OFFICE}")
    assert OTHER_OFFICE in page.locator("h1").inner_text()
    assert page.locator("#queue-table").count() == 0
    # and a claim of a referral of the other office is refused
    with site.app.state.session_factory() as session:
        ref = session.scalars(select(m.Referral).where(m.Referral.office_code == OFFICE)).first()
        assert ref is not None
        ref_id, status = ref.id, ref.status
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"/web/referrals/{ref_id}/claim", form={"csrf_token": csrf})
    assert r.status == 404
    assert _referral(site, ref_id).status == status


def _views_of(site: Site, subject: str) -> list[tuple[str, str]]:
    with site.app.state.session_factory() as session:
        views = session.scalars(
            select(m.PersonalDataView)
            .where(m.PersonalDataView.subject_id == subject)
            .order_by(m.PersonalDataView.id)
        ).all()
        return [(v.viewer, v.purpose) for v in views]


def test_traveller_is_masked_until_a_purpose_is_given(new_page: Any, site: Site) -> None:
    earlier = _views_of(site, TRAVELLER_ID)  # (other tests of the session view it too)
    page = new_page()
    login_as(page, Role.officer)
    sid = site.shipments[0]["shipment_id"]
    page.goto(f"/web/shipments/{sid}")
    card = page.locator(f".traveller[data-record='{TRAVELLER_ID}']")
    assert card.get_attribute("data-masked") == "yes"
    assert "***" in card.inner_text()
    card.get_by_role("button", name="Show personal data").click()  # empty purpose
    page.wait_for_load_state()
    card = page.locator(f".traveller[data-record='{TRAVELLER_ID}']")
    assert card.get_attribute("data-masked") == "yes"
    purpose = card.get_by_label("Purpose of viewing")
    purpose.fill("case 2025/31: consignee interview")
    with page.expect_navigation():
        purpose.press("Enter")
    card = page.locator(f".traveller[data-record='{TRAVELLER_ID}']")
    assert card.get_attribute("data-masked") == "no"
    with site.app.state.session_factory() as session:
        traveller = session.get(m.Traveller, TRAVELLER_ID)
        assert traveller is not None
        assert traveller.payload["surname"] in card.inner_text()
    assert _views_of(site, TRAVELLER_ID)[len(earlier) :] == [
        ("officer1", "case 2025/31: consignee interview")
    ]


def test_shipment_shows_rule_and_watchlist_hits(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.analyst)
    watched = site.shipments[WATCHED]
    page.goto(f"/web/shipments/{watched['shipment_id']}")
    hit = page.locator("#watchlist-hit").inner_text()
    assert watched["consignee_name"] in hit and "KZ-17" in hit and "kz-national" in hit
    with site.app.state.session_factory() as session:
        hits = session.scalars(
            select(m.RuleHit.shipment_id).where(m.RuleHit.rule_id == RULE["id"])
        ).all()
    assert hits, "the test rule should hit some shipment"
    page.goto(f"/web/shipments/{hits[0]}")
    assert RULE["name"] in page.locator("#rule-hits").inner_text()
    shot(page, "shipment-hits-analyst")


def test_auditor_verifies_the_chain_and_replays_a_score(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.auditor)
    sid = site.shipments[1]["shipment_id"]
    page.goto("/web/audit")
    page.get_by_label("Shipment id").fill(sid)
    page.get_by_role("button", name="Show trail").click()
    page.wait_for_load_state()
    kinds = page.locator("#audit-trail tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )
    assert kinds[0] == "score"
    page.locator("#verify").click()
    page.wait_for_load_state()
    result = page.locator("#verify-result")
    assert result.get_attribute("data-ok") == "yes"
    with site.app.state.session_factory() as session:
        entries = len(session.scalars(select(m.AuditLog.seq)).all())
    assert f"{entries} entries" in result.inner_text()
    page.locator("#replay").click()
    page.wait_for_load_state()
    stored = float(page.locator("#replay-stored").inner_text())
    recomputed = float(page.locator("#replay-recomputed").inner_text())
    with site.app.state.session_factory() as session:
        score = session.scalars(select(m.Score).where(m.Score.shipment_id == sid)).first()
        assert score is not None
    assert stored == pytest.approx(score.probability, abs=1e-10)
    assert recomputed == pytest.approx(stored, abs=1e-10)
    assert "yes" in page.locator("#replay-match").inner_text()
    shot(page, "audit-auditor")
    page.get_by_label("Shipment id").fill("")
    page.get_by_label("User").fill("officer1")
    page.get_by_role("button", name="Show trail").click()
    page.wait_for_load_state()
    actors = page.locator("#audit-trail tbody tr td:nth-child(4)").all_inner_texts()
    assert actors and set(actors) == {"officer1"}


def test_analyst_saves_a_bad_rule_and_sees_the_error(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.analyst)
    page.goto("/web/")
    assert page.locator("ul.cards a").all_inner_texts() == ["Queue", "Rules"]
    shot(page, "home-analyst")
    page.goto("/web/rules")
    row = page.locator(f"#rules-table tr[data-rule='{RULE['id']}']")
    with site.app.state.session_factory() as session:
        hits = len(
            session.scalars(select(m.RuleHit.id).where(m.RuleHit.rule_id == RULE["id"])).all()
        )
    assert row.locator("td.num").first.inner_text() == str(hits)
    shot(page, "rules-analyst")
    page.locator("#new-rule").click()
    page.get_by_label("Id").fill("bad-rule")
    page.get_by_label("Name").fill("Pistol parts by post")
    page.get_by_label("Severity").select_option("high")
    page.get_by_label("Condition (YAML or JSON)").fill(
        "all:\n  - {field: item.hs_code, op: starts_with, value: '9305'}\n"
        "  - {field: nope, op: eq, value: 1}\n"
    )
    page.locator("#save-rule").click()
    page.wait_for_load_state()
    error = page.locator("#err-condition").inner_text()
    assert "condition.all[1]" in error and "nope" in error
    assert page.locator("#condition").get_attribute("aria-invalid") == "true"
    assert page.locator("#name").get_attribute("aria-invalid") is None
    shot(page, "rule-edit-error")
    with site.app.state.session_factory() as session:
        assert session.get(m.Rule, "bad-rule") is None
    # YAML that cannot be read: the error says where
    page.get_by_label("Condition (YAML or JSON)").fill("all: [ {field: x\n")
    page.locator("#save-rule").click()
    page.wait_for_load_state()
    assert "line" in page.locator("#err-condition").inner_text()
    # fixed: saved as version 1, then edited into version 2
    page.get_by_label("Condition (YAML or JSON)").fill(
        "all:\n  - {field: item.hs_code, op: starts_with, value: '9305'}\n"
        "  - {field: mode, op: eq, value: post}\n"
    )
    page.locator("#save-rule").click()
    page.wait_for_url("**/web/rules?saved=bad-rule@1")
    page.locator("#rules-table a[href='/web/rules/bad-rule']").click()
    page.get_by_label("Severity").select_option("must_inspect")
    page.locator("#save-rule").click()
    page.wait_for_url("**/web/rules?saved=bad-rule@2")
    page.goto("/web/rules/bad-rule")
    assert page.locator("#versions > li").count() == 2
    assert page.locator("#severity").input_value() == "must_inspect"


def test_data_scientist_sees_models_and_promotion_needs_a_reason(new_page: Any, site: Site) -> None:
    from data_contracts.settings import DataLayout
    from models.registry import Registry

    layout = DataLayout(site.data)
    current = Registry(layout.mlflow_db, layout.mlflow_artifacts).version("champion").version
    page = new_page()
    login_as(page, Role.data_scientist)
    page.goto("/web/models")
    champion = page.locator("#model-champion")
    assert f"Version {current}" in champion.locator("h2").inner_text()
    assert "Recall, top 5% of the inspected shipments" in champion.inner_text()
    images = champion.locator(".plots img")
    assert images.count() >= 3
    page.wait_for_function("[...document.images].every(i => i.complete)")
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 100 for w in widths), widths
    shot(page, "models-data-scientist")
    if page.locator("#promote-form").count() == 0:
        pytest.skip("promotion is not available in this installation")
    page.locator("#promote").click()
    page.wait_for_load_state()
    assert page.locator("#err-reason").inner_text() == "A promotion needs a reason."
    page.get_by_label("Version to promote").select_option(current)
    page.get_by_label("Reason", exact=True).fill("retrained on March outcomes")
    page.locator("#promote").click()
    page.wait_for_load_state()
    # version 1 is already the champion: refused, with the reason said on the page
    assert "champion" in page.locator(".form-errors").inner_text().lower()


def test_russian_interface_shows_russian_texts(new_page: Any, site: Site) -> None:
    page = new_page(locale="ru-RU")
    page.goto("/web/login")
    assert page.locator("h1").inner_text() == "Вход"
    page.get_by_label("Имя пользователя").fill("officer1")
    page.get_by_label("Пароль").fill(password_for(Role.officer))
    with page.expect_navigation():
        page.get_by_label("Пароль").press("Enter")
    page.goto(QUEUE)
    assert page.locator("html").get_attribute("lang") == "ru"
    assert "Очередь досмотров" in page.locator("h1").inner_text()
    assert "Использовано мест" in page.locator("#capacity").inner_text()
    shot(page, "queue-officer-ru")
    sid = str(page.locator("#queue-table tbody tr").first.get_attribute("data-shipment"))
    page.goto(f"/web/shipments/{sid}")
    with site.api(Role.officer) as api:
        reasons = api.get(f"/api/v1/shipments/{sid}/explanation").json()["reasons"]
    shown = page.locator("#reasons .reason-text").all_inner_texts()
    assert shown == [r["text_ru"] for r in reasons]
    assert page.locator("#h-reasons").inner_text() == "Почему отобрана"
    assert re.search("[А-Яа-я]", page.locator("#waterfall").inner_text())
    shot(page, "shipment-officer-ru")
    # the choice is the user's: switch to English and it stays
    page.get_by_role("link", name="EN").click()
    page.wait_for_load_state()
    assert page.locator("#h-reasons").inner_text() == "Why it was picked"
    page.goto(QUEUE)
    assert "Inspection queue" in page.locator("h1").inner_text()


def test_pages_fit_1366_and_are_keyboard_usable(new_page: Any, site: Site) -> None:
    page = new_page()
    page.goto("/web/login")
    # ready to type: the browser applies `autofocus` just after the page loads
    page.wait_for_function("document.activeElement.id === 'username'", timeout=5000)
    shot(page, "login")
    login_as(page, Role.officer)
    page.goto(QUEUE)
    page.keyboard.press("Tab")  # the skip link comes first, and leads to the content
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1366, width
    # every form field of the queue page has a label
    fields = "main input:not([type=hidden]), main select, main textarea"
    unlabelled = page.evaluate(
        f"() => [...document.querySelectorAll('{fields}')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"
    )
    assert unlabelled == []
    # claim with the keyboard only: focus the first claim button and press Enter
    buttons = page.locator("#queue-table button")
    before = buttons.count()
    buttons.first.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("#queue-table button").count() == before - 1


def test_data_scientist_promotes_a_version_with_a_reason(new_page: Any, site: Site) -> None:
    from data_contracts.settings import DataLayout
    from models.registry import Registry

    layout = DataLayout(site.data)
    registry = Registry(layout.mlflow_db, layout.mlflow_artifacts)
    booster, mv = registry.load("1")
    with registry.run("web-test-copy"):
        version = registry.log_model(booster, dict(mv.tags))  # same model, same test window
    page = new_page()
    login_as(page, Role.data_scientist)
    page.goto("/web/models")
    if page.locator("#promote-form").count() == 0:
        pytest.skip("promotion is not available in this installation")
    page.get_by_label("Version to promote").select_option(version)
    page.get_by_label("Reason", exact=True).fill("same quality, retrained on newer outcomes")
    page.locator("#promote").click()
    page.wait_for_url(f"**/web/models?promoted={version}")
    assert f"Version {version}" in page.locator("#model-champion h2").inner_text()
    assert registry.version("champion").version == version
    with site.app.state.session_factory() as session:
        row = session.scalars(select(m.ModelPromotion).order_by(m.ModelPromotion.id.desc())).first()
        assert row is not None
        assert (row.model_version, row.promoted_by, row.via) == (version, "data-scientist1", "web")
        assert row.reason == "same quality, retrained on newer outcomes"
        entry = session.scalars(
            select(m.AuditLog).where(m.AuditLog.kind == "promotion").order_by(m.AuditLog.seq.desc())
        ).first()
        assert entry is not None and entry.actor == "data-scientist1"
    assert "same quality" in page.locator("#promotions").inner_text()
    shot(page, "models-after-promotion")
