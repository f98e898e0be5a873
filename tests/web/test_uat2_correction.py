"""UAT round 2, S1 on the shipment page: the officer who recorded an outcome (or a
waiver) corrects it with a reason through a form, sees the corrections made (from
the audit trail), in English and Russian; a colleague gets no form; a correction
without a reason is refused beside the field. Pages over HTTP (httpx) against the
app on uvicorn."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role, create_user
from tests.serving.conftest import password_for
from tests.web.conftest import CSRF, DAY, Site, shipment_payloads, web_login

OFFICE = "KZ-CORR"
RECORDER = "officer-corr"
COLLEAGUE = "officer-corr2"
CORR_DAY = DAY + dt.timedelta(days=30)  # a day and an office of their own


@pytest.fixture(scope="module")
def corr(site: Site) -> dict[str, Any]:
    """Two officers of an office of their own, two of its shipments in a queue: the
    first inspected with a (wrong) firearms finding, the second waived; both by
    the first officer, over the API."""
    with site.app.state.session_factory() as session:
        for name in (RECORDER, COLLEAGUE):
            create_user(
                session,
                username=name,
                password=password_for(Role.officer),
                role=Role.officer,
                office_code=OFFICE,
            )
        session.commit()
    records = shipment_payloads(site.data, 2, "CORR-", OFFICE, CORR_DAY)
    with site.api(Role.analyst) as client:
        r = client.post("/api/v1/shipments/batch", json={"records": records})
        assert r.status_code == 200 and len(r.json()["stored"]) == 2, r.text
    token = site.api_token(RECORDER, password_for(Role.officer))
    with httpx.Client(
        base_url=site.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as officer:
        queue = officer.get(f"/api/v1/queues/{OFFICE}/{CORR_DAY.isoformat()}").json()
        ids = {e["shipment_id"]: e["id"] for e in queue["entries"]}
        inspected, waived = ids["CORR-000"], ids["CORR-001"]
        for rid in (inspected, waived):
            assert officer.post(f"/api/v1/referrals/{rid}/claim").status_code == 200
        r = officer.post(
            f"/api/v1/referrals/{inspected}/outcome",
            json={"finding": True, "category": "firearms", "quantity": 2, "unit": "PCE"},
        )
        assert r.status_code == 200, r.text
        r = officer.post(f"/api/v1/referrals/{waived}/waive", json={"reason": "seal intact"})
        assert r.status_code == 200, r.text
    return {"inspected": inspected, "waived": waived}


def _signed_in(site: Site, username: str, lang: str = "en") -> httpx.Client:
    client, r = web_login(site, username, password_for(Role.officer))
    assert r.status_code == 303, r.text
    client.get(f"/web/lang/{lang}")
    return client


def _csrf(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None
    return found.group(1)


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_the_recorder_corrects_a_wrong_finding_on_the_page(site: Site, corr: Any) -> None:
    client = _signed_in(site, RECORDER)
    page = client.get("/web/shipments/CORR-000")
    assert page.status_code == 200
    assert 'id="correction-form"' in page.text and "Correct this outcome" in page.text
    # the form holds the outcome as recorded
    assert re.search(r'id="corr-finding-yes"[^>]*checked', page.text)
    assert re.search(r'<option value="firearms" selected', page.text)
    token = _csrf(page.text)
    action = f"/web/referrals/{corr['inspected']}/outcome/correct"

    # no reason: refused beside the field, nothing changed
    r = client.post(action, data={"csrf_token": token, "finding": "no", "reason": " \u200b "})
    assert r.status_code == 422
    assert re.search(r'id="corr-reason"[^>]*aria-invalid="true"', r.text)
    assert "A correction needs a reason." in r.text
    with site.app.state.session_factory() as session:
        finding = session.scalar(
            select(m.Outcome.finding).where(m.Outcome.referral_id == corr["inspected"])
        )
        assert finding is True

    r = client.post(
        action,
        data={"csrf_token": token, "finding": "no", "reason": "wrong referral & wrong button"},
    )
    assert r.status_code == 303
    assert r.headers["location"].endswith("/web/shipments/CORR-000?done=corrected#decision")
    page = client.get("/web/shipments/CORR-000?done=corrected")
    text = _text(page.text)
    assert "Outcome corrected." in text
    assert re.search(r'id="recorded-finding">\s*nothing was found', page.text)
    assert 'id="corrections"' in page.text
    assert (
        f"{RECORDER}: something was found, firearms, 2 pieces (PCE) → nothing was found. "
        "Reason: wrong referral & wrong button"
    ) in text.replace("Firearms", "firearms")

    # the same values again: nothing to correct
    r = client.post(
        action, data={"csrf_token": token, "finding": "no", "reason": "once more, to be sure"}
    )
    assert r.status_code == 422
    assert "The outcome already holds these values: nothing to correct." in r.text

    # in Russian
    ru = _signed_in(site, RECORDER, "ru")
    text = _text(ru.get("/web/shipments/CORR-000").text)
    assert "Исправления" in text and "Исправить результат" in text
    assert "ничего не обнаружено. Причина: wrong referral & wrong button" in text
    r = ru.post(action, data={"csrf_token": _csrf(ru.get("/web/shipments/CORR-000").text)})
    assert r.status_code == 422
    assert "Для исправления нужна причина." in r.text


def test_a_colleague_gets_no_form_and_is_refused(site: Site, corr: Any) -> None:
    client = _signed_in(site, COLLEAGUE)
    page = client.get("/web/shipments/CORR-000")
    assert page.status_code == 200
    assert 'id="correction-form"' not in page.text
    r = client.post(
        f"/web/referrals/{corr['inspected']}/outcome/correct",
        data={
            "csrf_token": _csrf(page.text),
            "finding": "yes",
            "category": "ammunition",
            "reason": "I think so",
        },
    )
    assert r.status_code == 422
    assert f"Only the officer who recorded the decision ({RECORDER})" in _text(r.text)


def test_a_waiver_recorded_by_mistake_becomes_an_outcome(site: Site, corr: Any) -> None:
    client = _signed_in(site, RECORDER)
    page = client.get("/web/shipments/CORR-001")
    assert "Correct this waiver: the goods were inspected" in page.text
    r = client.post(
        f"/web/referrals/{corr['waived']}/outcome/correct",
        data={
            "csrf_token": _csrf(page.text),
            "finding": "yes",
            "category": "ammunition",
            "quantity": "1 500",
            "unit": "PCE",
            "reason": "inspected at 14:00; the waiver was clicked by mistake",
        },
    )
    assert r.status_code == 303, r.text
    page = client.get("/web/shipments/CORR-001")
    assert 'data-status="inspected"' in page.text
    text = _text(page.text)
    assert "waiver «seal intact» → something was found" in text
    with site.app.state.session_factory() as session:
        row = session.scalars(
            select(m.Outcome).where(m.Outcome.referral_id == corr["waived"])
        ).one()
        assert (row.finding, row.category, row.quantity, row.unit) == (
            True,
            "ammunition",
            1500.0,
            "PCE",
        )
