"""Session handling never loses an officer's decision (UAT round 2, sec F13 and sup
S12), in Debian's Chromium against the app on uvicorn, in English and Russian:

* the CSRF value belongs to the user's sessions, not to one token: a form opened
  before the sliding renewal in another tab still submits, while a form from before
  a sign-out, or another user's, is refused;
* a decision form sent after the session ended (run out, or ended elsewhere) or
  refused by the CSRF check keeps what was typed: the sign-in page says the session
  ended and leads back to the shipment's decision section, where the form is filled
  in again (kept in the browser tab), with a note to check and send it again; it is
  never sent by itself.

An office, a day and officers of their own (the session's site is shared)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role, create_user, decode_access_token
from serving.web.i18n import Translator
from tests.serving.conftest import password_for
from tests.web.conftest import CSRF, DAY, Site, login, shipment_payloads, shot, web_login

OFFICE = "KZ-KEEP"
OFFICER = "officer-keep"
COLLEAGUE = "officer-keep2"
KEEP_DAY = DAY + dt.timedelta(days=40)  # a day and an office of their own
SHIPMENTS = 8
PASSWORD = password_for(Role.officer)
EN, RU = Translator("en"), Translator("ru")


@pytest.fixture(scope="module")
def keep(site: Site) -> dict[str, int]:
    """Two officers of their own office and its day's queue: shipment id -> referral id."""
    with site.app.state.session_factory() as session:
        for name in (OFFICER, COLLEAGUE):
            create_user(
                session, username=name, password=PASSWORD, role=Role.officer, office_code=OFFICE
            )
        session.commit()
    records = shipment_payloads(site.data, SHIPMENTS, "KEEP-", OFFICE, KEEP_DAY)
    with site.api(Role.analyst) as client:
        r = client.post("/api/v1/shipments/batch", json={"records": records})
        assert r.status_code == 200 and len(r.json()["stored"]) == SHIPMENTS, r.text
    with _api(site, OFFICER) as officer:
        queue = officer.get(f"/api/v1/queues/{OFFICE}/{KEEP_DAY.isoformat()}")
        assert queue.status_code == 200, queue.text
    ids = {e["shipment_id"]: e["id"] for e in queue.json()["entries"]}
    assert len(ids) == SHIPMENTS, ids
    return ids


def _api(site: Site, username: str) -> httpx.Client:
    token = site.api_token(username, PASSWORD)
    return httpx.Client(
        base_url=site.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _api_claim(site: Site, referral_id: int) -> None:
    with _api(site, OFFICER) as officer:
        r = officer.post(f"/api/v1/referrals/{referral_id}/claim")
        assert r.status_code == 200, r.text


def _end_sessions_elsewhere(site: Site, username: str) -> None:
    """The user signs out on another device: every session of his ends."""
    with _api(site, username) as other:
        assert other.post("/api/v1/auth/logout").status_code == 204


def _referral(site: Site, referral_id: int) -> m.Referral:
    with site.app.state.session_factory() as session:
        ref = session.get(m.Referral, referral_id)
        assert ref is not None
        session.expunge(ref)
        return ref


def _outcome(site: Site, referral_id: int) -> m.Outcome | None:
    with site.app.state.session_factory() as session:
        row = session.scalars(select(m.Outcome).where(m.Outcome.referral_id == referral_id)).first()
        if row is not None:
            session.expunge(row)
        return row


def _cookie(page: Any) -> str:
    values = [c["value"] for c in page.context.cookies() if c["name"] == "caravan_session"]
    return values[0] if values else ""


def _kept_forms(page: Any) -> list[str]:
    keys: list[str] = page.evaluate(
        "Object.keys(sessionStorage).filter(k => k.startsWith('caravan.form|'))"
    )
    return keys


@pytest.fixture
def short_sessions(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the session lifetime (seconds) of the running server for this test."""

    def set_ttl(seconds: int) -> None:
        monkeypatch.setattr(site.app.state.serving, "token_ttl_seconds", seconds)

    yield set_ttl


# --------------------------------------------------------------------------- F13


def test_a_form_opened_before_a_renewal_in_another_tab_still_submits(
    new_page: Any, site: Site, keep: dict[str, int], short_sessions: Any
) -> None:
    sid = "KEEP-000"
    short_sessions(10)  # renewed past 5 s
    tab_a = new_page()
    login(tab_a, OFFICER, PASSWORD)
    first = _cookie(tab_a)
    tab_a.goto(f"/web/shipments/{sid}")
    assert tab_a.locator("#claim").count() == 1
    assert _cookie(tab_a) == first, "the page was opened before the renewal"
    issued = decode_access_token(site.app.state.secret_key, first).issued_at
    time.sleep(max(0.0, 5.5 - (dt.datetime.now(dt.UTC) - issued).total_seconds()))
    tab_b = tab_a.context.new_page()  # the queue in another tab renews the session
    assert tab_b.goto(f"/web/queue?day={KEEP_DAY.isoformat()}").status == 200
    assert _cookie(tab_b) != first, "the session was renewed"
    with tab_a.expect_navigation():
        tab_a.locator("#claim").click()
    assert "Not allowed" not in tab_a.content()
    assert tab_a.locator("#referral-status").get_attribute("data-status") == "claimed"
    ref = _referral(site, keep[sid])
    assert (ref.status, ref.claimed_by) == ("claimed", OFFICER)


def test_a_form_from_before_a_sign_out_or_of_another_user_is_refused(
    site: Site, keep: dict[str, int]
) -> None:
    sid = "KEEP-001"
    client, r = web_login(site, OFFICER, PASSWORD)
    colleague, r2 = web_login(site, COLLEAGUE, PASSWORD)
    assert r.status_code == r2.status_code == 303
    try:
        before = CSRF.search(client.get(f"/web/shipments/{sid}").text)
        theirs = CSRF.search(colleague.get(f"/web/shipments/{sid}").text)
        assert before is not None and theirs is not None
        action = f"/web/referrals/{keep[sid]}/claim"
        # another user's form is not this session's
        refused = client.post(action, data={"csrf_token": theirs.group(1)})
        assert refused.status_code == 403 and "did not come from this site" in refused.text
        # signed out elsewhere, then signed in again: the old page's forms are refused
        _end_sessions_elsewhere(site, OFFICER)
        form = client.get("/web/login")
        token = CSRF.search(form.text)
        assert token is not None
        again = client.post(
            "/web/login",
            data={"csrf_token": token.group(1), "username": OFFICER, "password": PASSWORD},
        )
        assert again.status_code == 303
        refused = client.post(action, data={"csrf_token": before.group(1)})
        assert refused.status_code == 403
        assert _referral(site, keep[sid]).status == "open"
        # the page opened now works
        fresh = CSRF.search(client.get(f"/web/shipments/{sid}").text)
        assert fresh is not None and fresh.group(1) != before.group(1)
        assert client.post(action, data={"csrf_token": fresh.group(1)}).status_code == 303
        assert _referral(site, keep[sid]).claimed_by == OFFICER
    finally:
        client.close()
        colleague.close()


# --------------------------------------------------------------------------- S12


def _login_target(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["next"][0], query["reason"][0]


def test_an_outcome_sent_after_the_session_ran_out_is_filled_in_again(
    new_page: Any, site: Site, keep: dict[str, int], short_sessions: Any
) -> None:
    sid, rid = "KEEP-002", keep["KEEP-002"]
    _api_claim(site, rid)
    short_sessions(4)  # the cookie (and the token) last 4 s
    page = new_page()
    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/shipments/{sid}")
    notes = "Three TT pistols in a cache under the floor; report 123"
    page.locator("#finding-yes").check()
    page.locator("#category").select_option("firearms")
    page.locator("#quantity").fill("3")
    page.locator("#unit").select_option("PCE")
    page.locator("#category-1").select_option("ammunition")  # a second seizure line
    page.locator("#quantity-1").fill("40")
    page.locator("#unit-1").select_option("PCE")
    page.locator("#notes").fill(notes)
    time.sleep(5)  # the inspection
    short_sessions(900)
    with page.expect_navigation():
        page.locator("#save-outcome").click()
    assert urlsplit(page.url).path == "/web/login"
    assert _login_target(page.url) == (f"/web/shipments/{sid}#decision", "login.form_expired")
    assert page.locator("p.flash").first.inner_text() == EN("login.form_expired")
    assert page.locator("#form-kept").inner_text() == EN("form.kept")
    assert _referral(site, rid).status == "claimed"  # nothing was saved
    shot(page, "login-form-expired-en")

    page.locator("#username").fill(OFFICER)
    page.locator("#password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#password").press("Enter")
    assert urlsplit(page.url).path == f"/web/shipments/{sid}"
    assert page.locator("#outcome-form-restored").inner_text() == EN("form.restored")
    assert page.locator("#finding-yes").is_checked()
    assert page.locator("#category").input_value() == "firearms"
    assert page.locator("#quantity").input_value() == "3"
    assert page.locator("#unit").input_value() == "PCE"
    assert page.locator("#category-1").input_value() == "ammunition"
    assert page.locator("#quantity-1").input_value() == "40"
    assert page.locator("#unit-1").input_value() == "PCE"
    assert page.locator("#notes").input_value() == notes
    shot(page, "shipment-outcome-restored-en")
    time.sleep(0.5)
    assert _referral(site, rid).status == "claimed"  # never sent by itself

    with page.expect_navigation():
        page.locator("#save-outcome").click()
    assert page.locator("#referral-status").get_attribute("data-status") == "inspected"
    outcome = _outcome(site, rid)
    assert outcome is not None and outcome.recorded_by == OFFICER
    assert (outcome.finding, outcome.category, outcome.quantity, outcome.unit, outcome.notes) == (
        True,
        "firearms",
        3,
        "PCE",
        notes,
    )
    with site.app.state.session_factory() as session:
        lines = session.scalars(
            select(m.OutcomeSeizure)
            .where(m.OutcomeSeizure.outcome_id == outcome.outcome_id)
            .order_by(m.OutcomeSeizure.line_no)
        )
        assert [(s.category, s.quantity, s.unit) for s in lines] == [
            ("firearms", 3.0, "PCE"),
            ("ammunition", 40.0, "PCE"),
        ]
    assert _kept_forms(page) == []  # saved: no longer kept
    page.reload()
    assert page.locator("#outcome-form-restored").count() == 0


def test_a_waiver_sent_after_a_sign_out_elsewhere_is_filled_in_again_in_russian(
    new_page: Any, site: Site, keep: dict[str, int]
) -> None:
    sid, rid = "KEEP-003", keep["KEEP-003"]
    _api_claim(site, rid)
    page = new_page("ru-RU")
    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/shipments/{sid}")
    reason = "Пломба цела, выпуск по указанию начальника смены"
    page.locator("#reason").fill(reason)
    _end_sessions_elsewhere(site, OFFICER)
    with page.expect_navigation():
        page.locator("#waive").click()
    assert _login_target(page.url) == (f"/web/shipments/{sid}#decision", "login.form_expired")
    assert page.locator("p.flash").first.inner_text() == RU("login.form_expired")
    assert page.locator("#form-kept").inner_text() == RU("form.kept")
    assert _referral(site, rid).status == "claimed"

    # another officer signing in at this tab does not get it
    page.locator("#username").fill(COLLEAGUE)
    page.locator("#password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#password").press("Enter")
    assert page.locator("#reason").count() == 0  # not his claim: no form
    assert page.locator("#waiver-form-restored").count() == 0
    with page.expect_navigation():
        page.locator("form[action='/web/logout'] button").click()

    login(page, OFFICER, PASSWORD)
    page.goto(f"/web/shipments/{sid}")
    assert page.locator("#waiver-form-restored").inner_text() == RU("form.restored")
    assert page.locator("#reason").input_value() == reason
    shot(page, "shipment-waiver-restored-ru")
    assert page.locator("#outcome-form-restored").count() == 0  # nothing typed there
    with page.expect_navigation():
        page.locator("#waive").click()
    ref = _referral(site, rid)
    assert (ref.status, ref.waiver_reason, ref.decided_by) == ("waived", reason, OFFICER)
    assert _kept_forms(page) == []


def test_a_correction_refused_by_the_csrf_check_is_filled_in_again(
    new_page: Any, site: Site, keep: dict[str, int]
) -> None:
    sid, rid = "KEEP-004", keep["KEEP-004"]
    _api_claim(site, rid)
    with _api(site, OFFICER) as officer:
        r = officer.post(f"/api/v1/referrals/{rid}/outcome", json={"finding": False})
        assert r.status_code == 200, r.text
    tab_a = new_page()
    login(tab_a, OFFICER, PASSWORD)
    tab_a.goto(f"/web/shipments/{sid}")
    tab_a.locator("#correct summary").click()
    tab_a.locator("#corr-finding-yes").check()
    tab_a.locator("#corr-category").select_option("ammunition")
    tab_a.locator("#corr-quantity").fill("2")
    tab_a.locator("#corr-unit").select_option("KGM")
    tab_a.locator("#corr-notes").fill("Cartridges in the spare tyre")
    tab_a.locator("#corr-reason").fill("The lab result came back positive")
    # signed out elsewhere, then signed in again in another tab of this browser: the
    # session is valid, but the form is from before the sign-out
    _end_sessions_elsewhere(site, OFFICER)
    tab_b = tab_a.context.new_page()
    login(tab_b, OFFICER, PASSWORD)
    with tab_a.expect_navigation():
        tab_a.locator("#save-correction").click()
    assert tab_a.locator("#error-message").inner_text() == EN("error.csrf")
    assert tab_a.locator("#form-kept").inner_text() == EN("form.kept")
    recorded = _outcome(site, rid)
    assert recorded is not None and recorded.finding is False  # nothing was saved
    back = tab_a.get_by_role("link", name=EN("error.csrf_back"))
    assert back.get_attribute("href") == f"/web/shipments/{sid}#decision"
    with tab_a.expect_navigation():
        back.click()
    assert tab_a.locator("#correction-form-restored").inner_text() == EN("form.restored")
    assert tab_a.locator("#correct").get_attribute("open") is not None
    assert tab_a.locator("#corr-finding-yes").is_checked()
    assert tab_a.locator("#corr-category").input_value() == "ammunition"
    assert tab_a.locator("#corr-quantity").input_value() == "2"
    assert tab_a.locator("#corr-unit").input_value() == "KGM"
    assert tab_a.locator("#corr-notes").input_value() == "Cartridges in the spare tyre"
    assert tab_a.locator("#corr-reason").input_value() == "The lab result came back positive"
    with tab_a.expect_navigation():
        tab_a.locator("#save-correction").click()
    outcome = _outcome(site, rid)
    assert outcome is not None
    assert (outcome.finding, outcome.category, outcome.unit) == (True, "ammunition", "KGM")
    assert _kept_forms(tab_a) == []


def test_a_form_sent_without_a_session_leads_back_to_its_page(
    site: Site, keep: dict[str, int]
) -> None:
    """Where signing in leads after a form was sent without a valid session."""
    sid, rid = "KEEP-005", keep["KEEP-005"]
    page = f"{site.base}/web/shipments/{sid}"
    cases = [
        # (POST path, Referer) -> next
        (f"/web/referrals/{rid}/claim", f"{page}?done=claimed", f"/web/shipments/{sid}#decision"),
        (f"/web/referrals/{rid}/claim", None, f"/web/referrals/{rid}"),
        (
            f"/web/referrals/{rid}/claim",
            f"{site.base}/web/queue?day={KEEP_DAY.isoformat()}&claimed=3",
            f"/web/queue?day={KEEP_DAY.isoformat()}",
        ),
        (
            f"/web/referrals/{rid}/waive",
            f"{site.base}/web/referrals/{rid}/waive",
            f"/web/referrals/{rid}",
        ),
        (
            f"/web/referrals/{rid}/waive",
            f"https://evil.example/web/shipments/{sid}",
            f"/web/referrals/{rid}",
        ),
        ("/web/travellers/T1/unmask", f"{site.base}/web/travellers/T1/unmask", "/web/"),
        ("/web/audit/verify", f"{site.base}/web/audit?actor=x", "/web/audit?actor=x"),
    ]
    with httpx.Client(base_url=site.base, follow_redirects=False) as anonymous:
        for path, referer, want in cases:
            headers = {"Referer": referer} if referer else {}
            r = anonymous.post(path, data={"csrf_token": "x"}, headers=headers)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith("/web/login?"), r.headers["location"]
            assert _login_target(r.headers["location"]) == (want, "login.form_expired"), path
        login_page = anonymous.get(
            "/web/login", params={"next": f"/web/referrals/{rid}", "reason": "login.form_expired"}
        )
        assert EN("login.form_expired") in login_page.text
        assert f'name="next" value="/web/referrals/{rid}"' in login_page.text
    client, _r = web_login(site, OFFICER, PASSWORD)
    other, _r2 = web_login(site, "officer2", PASSWORD)  # another office
    try:
        r = client.get(f"/web/referrals/{rid}")
        assert r.status_code == 303 and r.headers["location"] == f"/web/shipments/{sid}#decision"
        assert other.get(f"/web/referrals/{rid}").status_code == 404  # (as an unknown one)
    finally:
        client.close()
        other.close()


def test_the_texts_exist_in_both_languages() -> None:
    for key in ("login.form_expired", "form.kept", "form.restored", "error.csrf_back"):
        assert re.search("[А-Яа-я]", RU(key)) and EN(key) != RU(key), key


def test_the_csrf_value_is_the_users_until_his_sessions_end() -> None:
    """The same for a naive (SQLite) and an aware (PostgreSQL) reading of the same
    moment; another user, or the next sign-out, gives another value."""
    from serving.web.access import csrf_for

    secret = b"k" * 32
    ended = dt.datetime(2026, 11, 27, 15, 0, 0, 123456)
    naive = csrf_for(secret, 7, OFFICER, ended)
    assert naive == csrf_for(secret, 7, OFFICER, ended.replace(tzinfo=dt.UTC))
    assert naive == csrf_for(
        secret,
        7,
        OFFICER,
        ended.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=6))),
    )
    assert naive != csrf_for(secret, 7, OFFICER, None)
    assert naive != csrf_for(secret, 7, OFFICER, ended + dt.timedelta(microseconds=1))
    assert naive != csrf_for(secret, 8, COLLEAGUE, ended)
