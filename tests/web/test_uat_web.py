"""Acceptance findings on the pages (officer, auditor, ingest): invisible waiver
reasons, ambiguous quantities, what drove a queue entry, Russian pages, claim
conflicts, the recorded result, audit paging and the unmasking purpose; and the
explanation API's base value and contributions. Over real HTTP against the app on
uvicorn, and in Debian's Chromium where the flow is the officer's."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from data_contracts.schemas import FINDING_CATEGORIES
from serving import orm as m
from serving.auth import Role, create_user
from serving.services import view_traveller
from tests.serving.conftest import OFFICE, add_users, build_app, password_for, uvicorn_server
from tests.web.conftest import (
    DAY,
    TRAVELLER_ID,
    WATCHED,
    Site,
    login_as,
    shipment_payloads,
    shot,
    web_login,
)

QUEUE = f"/web/queue?day={DAY.isoformat()}"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECOND_OFFICER = "officer-uat-b"


def _csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


def _signed_in(site: Site, username: str, password: str, lang: str = "en") -> httpx.Client:
    client, r = web_login(site, username, password)
    assert r.status_code == 303, r.text
    if lang != "en":
        assert client.get(f"/web/lang/{lang}").status_code == 303
    return client


@pytest.fixture
def officer(site: Site) -> Iterator[httpx.Client]:
    client = _signed_in(site, "officer1", password_for(Role.officer))
    assert client.get(QUEUE).status_code == 200  # builds the day's queue if not yet built
    yield client
    client.close()


def _open_referrals(site: Site) -> list[m.Referral]:
    """Open referrals of the office's day, lowest in the queue first (the other page
    tests take theirs from the top)."""
    with site.app.state.session_factory() as session:
        refs = list(
            session.scalars(
                select(m.Referral)
                .where(
                    m.Referral.office_code == OFFICE,
                    m.Referral.queue_date == DAY,
                    m.Referral.status == "open",
                )
                .order_by(m.Referral.rank.desc())
            )
        )
        session.expunge_all()
    assert refs, "no open referral left"
    return refs


def _referral(site: Site, referral_id: int) -> m.Referral:
    with site.app.state.session_factory() as session:
        ref = session.get(m.Referral, referral_id)
        assert ref is not None
        session.expunge(ref)
        return ref


def _claim(client: httpx.Client, ref: m.Referral) -> httpx.Response:
    page = client.get(f"/web/shipments/{ref.shipment_id}")
    return client.post(
        f"/web/referrals/{ref.id}/claim",
        data={"csrf_token": _csrf(page), "next": f"/web/shipments/{ref.shipment_id}#decision"},
    )


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def _queue_reasons(page: str) -> dict[str, list[str]]:
    """shipment id -> the texts in its "Top reasons" cell."""
    out: dict[str, list[str]] = {}
    for row in re.findall(r"<tr class=\"lane-row.*?</tr>", page, flags=re.S):
        sid = re.search(r'data-shipment="([^"]+)"', row)
        cell = re.search(r'<td class="reasons">(.*?)</td>', row, flags=re.S)
        assert sid is not None and cell is not None
        out[sid.group(1)] = [
            _text(li).strip() for li in re.findall(r"<li>(.*?)</li>", cell.group(1), re.S)
        ]
    return out


# --------------------------------------------------------------------------- F3


def test_a_waiver_reason_of_invisible_characters_is_refused(
    site: Site, officer: httpx.Client
) -> None:
    ref = _open_referrals(site)[0]
    assert _claim(officer, ref).status_code == 303
    page = officer.get(f"/web/shipments/{ref.shipment_id}")
    r = officer.post(
        f"/web/referrals/{ref.id}/waive",
        data={"csrf_token": _csrf(page), "reason": "\u200b\u200b\u2060"},
    )
    assert r.status_code == 422
    error = re.search(r'id="err-reason"[^>]*>([^<]+)<', r.text)
    assert error is not None and error.group(1) == "A waiver needs a reason."
    assert _referral(site, ref.id).status == "claimed"
    # a reason with visible text around invisible characters is a reason
    r = officer.post(
        f"/web/referrals/{ref.id}/waive",
        data={"csrf_token": _csrf(page), "reason": "\u200bseal intact, x-ray clean"},
    )
    assert r.status_code == 303
    assert _referral(site, ref.id).status == "waived"


# --------------------------------------------------------------------------- F4, F10


def test_an_ambiguous_quantity_is_refused_and_the_saved_result_is_shown(
    new_page: Any, site: Site, officer: httpx.Client
) -> None:
    ref = _open_referrals(site)[0]
    page = new_page()
    login_as(page, Role.officer)
    page.goto(f"/web/shipments/{ref.shipment_id}")
    page.locator("#claim").click()
    page.wait_for_load_state()
    assert page.locator("[role=status]").inner_text() == (
        "Referral claimed: record the result or a waiver."
    )
    page.get_by_label("something was found").check()
    page.get_by_label("Finding category").select_option("ammunition")
    for typed in ("10,000", "2.500"):
        page.get_by_label("Quantity seized").fill(typed)
        page.get_by_label("Unit", exact=True).select_option("PCE")
        page.locator("#save-outcome").click()
        page.wait_for_load_state()
        error = page.locator("#err-quantity").inner_text()
        assert f"“{typed}”" in error and "thousands separator" in error
        assert page.locator("#quantity").get_attribute("aria-invalid") == "true"
        assert _referral(site, ref.id).status == "claimed"  # nothing saved
    shot(page, "uat-quantity-ambiguous")
    page.get_by_label("Quantity seized").fill("10 000")
    page.get_by_label("Notes").fill("rounds in the spare wheel")
    page.locator("#save-outcome").click()
    page.wait_for_url(re.compile(rf"/web/shipments/{re.escape(ref.shipment_id)}\?done=outcome"))
    assert page.locator("[role=status]").inner_text() == "Result recorded."
    assert page.locator("#referral-status").get_attribute("data-status") == "inspected"
    assert page.locator("#recorded-finding").inner_text() == "something was found"
    assert page.locator("#recorded-seizures li").inner_text() == (
        "ammunition: 10\u00a0000 pieces (PCE)"
    )
    assert page.locator("#recorded-notes").inner_text() == "rounds in the spare wheel"
    shot(page, "uat-outcome-recorded")
    with site.app.state.session_factory() as session:
        outcome = session.scalars(select(m.Outcome).where(m.Outcome.referral_id == ref.id)).one()
    assert (outcome.quantity, outcome.unit, outcome.category) == (10000.0, "PCE", "ammunition")


def test_a_decimal_comma_is_read_as_decimal(site: Site, officer: httpx.Client) -> None:
    ref = _open_referrals(site)[0]
    assert _claim(officer, ref).status_code == 303
    page = officer.get(f"/web/shipments/{ref.shipment_id}")
    r = officer.post(
        f"/web/referrals/{ref.id}/outcome",
        data={
            "csrf_token": _csrf(page),
            "finding": "yes",
            "category": "parts",
            "quantity": "2,5",
            "unit": "KGM",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/web/shipments/{ref.shipment_id}?done=outcome#decision"
    with site.app.state.session_factory() as session:
        outcome = session.scalars(select(m.Outcome).where(m.Outcome.referral_id == ref.id)).one()
    assert outcome.quantity == 2.5
    shown = officer.get(f"/web/shipments/{ref.shipment_id}")
    assert re.search(r'class="seizure-quantity">2\.5 kilograms \(KGM\)<', shown.text)


# --------------------------------------------------------------------------- F5


def test_queue_reasons_start_with_what_drove_the_priority(
    site: Site, officer: httpx.Client
) -> None:
    page = officer.get(QUEUE)
    reasons = _queue_reasons(page.text)
    with site.app.state.session_factory() as session:
        refs = list(
            session.scalars(
                select(m.Referral).where(
                    m.Referral.office_code == OFFICE, m.Referral.queue_date == DAY
                )
            )
        )
        hit_scores = {
            h.score_id
            for h in session.scalars(select(m.RuleHit).where(m.RuleHit.score_id.is_not(None)))
        }
        rule_name = session.scalars(select(m.Rule.name)).first()
        explanations = {
            s.id: s.explanation or {}
            for s in session.scalars(
                select(m.Score).where(m.Score.id.in_([r.score_id for r in refs]))
            )
        }
    ruled = [r for r in refs if r.score_id in hit_scores]
    assert ruled, "no queue entry hit the rule"
    for ref in ruled:
        assert reasons[ref.shipment_id][0] == f"Rule: {rule_name} (high)", reasons[ref.shipment_id]
        # next to a rule, no model reason whose effect shows as +0.000
        negligible = {
            r["text_en"]
            for r in explanations[ref.score_id].get("reasons") or []
            if abs(r["probability_effect"]) < 0.0005
        }
        assert not negligible & set(reasons[ref.shipment_id][1:])
    watched = f"WEB-{WATCHED:03d}"
    assert (
        "A party or a linked traveller is on a watchlist (exact match: name or document)"
        in reasons[watched][:3]
    )
    for texts in reasons.values():
        assert all("?" not in t for t in texts), texts


# --------------------------------------------------------------------------- F7


def test_russian_pages_show_no_english_codes(site: Site) -> None:
    client = _signed_in(site, "officer1", password_for(Role.officer), "ru")
    try:
        queue = client.get(QUEUE)
        assert queue.status_code == 200 and 'lang="ru"' in queue.text
        text = _text(queue.text)
        assert not re.search(r"\b\d+d\b", text)  # "за последние 30d", "Ожидает 3 d"
        modes = re.findall(r'<span class="muted">[^<]*· [^<]*· ([^<]*)</span>', queue.text)
        assert modes and not {"road", "rail", "air", "sea", "post", "express"} & set(modes)
        with site.app.state.session_factory() as session:
            hit = session.scalars(select(m.RuleHit)).first()
            assert hit is not None
        page = client.get(f"/web/shipments/{hit.shipment_id}")
        assert page.status_code == 200
        table = re.search(r'<table id="rule-hits">.*?</table>', page.text, re.S)
        assert table is not None and "высокая" in table.group(0) and ">high<" not in table.group(0)
        mode = re.search(r"<dt>Вид транспорта</dt><dd>([^<]*)</dd>", page.text)
        assert mode is not None and re.fullmatch(r"[а-яё -]+", mode.group(1)), mode
        reasons = re.search(r'<ol class="reason-list" id="reasons">(.*?)</ol>', page.text, re.S)
        if reasons is not None:
            assert not re.search(r"\b\d+d\b", reasons.group(1))
        # the traveller linked to the first shipment: link kind, journey, departure
        linked = client.get(f"/web/shipments/{site.shipments[0]['shipment_id']}")
        block = re.search(r'<div class="traveller".*?</dl>', linked.text, re.S)
        assert block is not None
        shown = _text(block.group(0))
        assert not re.search(r"same_person|name_variant|\bphone\b|\baddress\b", shown)
        assert "[" not in shown and "'" not in shown  # no Python list repr
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", shown)  # no raw ISO time
    finally:
        client.close()


def test_finding_categories_are_in_the_chosen_language(site: Site, officer: httpx.Client) -> None:
    ref = _open_referrals(site)[0]
    client = _signed_in(site, "officer1", password_for(Role.officer), "ru")
    try:
        assert _claim(client, ref).status_code == 303
        page = client.get(f"/web/shipments/{ref.shipment_id}")
        options = re.findall(r'<option value="(\w+)" >([^<]+)</option>', page.text)
        labels = dict(options)
        assert labels["firearms"] == "огнестрельное оружие"
        assert labels["ammunition"] == "боеприпасы"
        assert all(labels[c] != c for c in FINDING_CATEGORIES)
    finally:
        client.close()


# --------------------------------------------------------------------------- F8


def _second_officer(site: Site) -> httpx.Client:
    with site.app.state.session_factory() as session:
        if session.scalars(select(m.User).where(m.User.username == SECOND_OFFICER)).first() is None:
            create_user(
                session,
                username=SECOND_OFFICER,
                password=password_for(Role.officer),
                role=Role.officer,
                display_name="Second officer of the office",
                office_code=OFFICE,
            )
            session.commit()
    return _signed_in(site, SECOND_OFFICER, password_for(Role.officer))


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_a_claim_conflict_says_who_holds_the_referral(
    site: Site, officer: httpx.Client, lang: str
) -> None:
    ref = _open_referrals(site)[0]
    other = _second_officer(site)
    try:
        if lang == "ru":
            assert other.get("/web/lang/ru").status_code == 303
        stale = other.get(f"/web/shipments/{ref.shipment_id}")  # opened before the claim
        assert _claim(officer, ref).status_code == 303
        r = other.post(
            f"/web/referrals/{ref.id}/claim",
            data={"csrf_token": _csrf(stale), "next": f"/web/shipments/{ref.shipment_id}"},
        )
        assert r.status_code == 409
        title = re.search(r"<h1>([^<]+)</h1>", r.text)
        message = re.search(r'id="error-message"[^>]*>([^<]+)<', r.text)
        assert title is not None and message is not None
        if lang == "en":
            assert title.group(1) == "Already taken"
            assert html.unescape(message.group(1)) == (
                f"Referral {ref.id} of shipment {ref.shipment_id} is already claimed by officer1."
            )
        else:
            assert title.group(1) == "Уже в работе"
            assert "officer1" in message.group(1) and "уже взято в работу" in message.group(1)
        assert "Not allowed" not in r.text and "Доступ запрещён" not in r.text
        assert f'href="/web/shipments/{ref.shipment_id}#decision"' in r.text
        assert f'href="/web/queue?day={DAY.isoformat()}"' in r.text
        # recording a result on it is refused in the same words, beside the form
        r = other.post(
            f"/web/referrals/{ref.id}/outcome",
            data={"csrf_token": _csrf(stale), "finding": "no"},
        )
        assert r.status_code == 422
        assert "officer1" in _text(r.text)
        if lang == "en":
            assert "is already claimed by officer1" in _text(r.text)
    finally:
        other.close()


# --------------------------------------------------------------------------- F15


def test_the_audit_trail_of_a_user_pages_back_and_takes_api_key_actors(site: Site) -> None:
    actor = "apikey:uat web key"
    with site.app.state.session_factory() as session:
        for i in range(503):
            view_traveller(session, TRAVELLER_ID, actor, f"paging check {i:03d}")
        seqs = sorted(session.scalars(select(m.AuditLog.seq).where(m.AuditLog.actor == actor)))
    assert len(seqs) == 503
    client = _signed_in(site, "auditor1", password_for(Role.auditor))
    try:
        page = client.get("/web/audit", params={"user": actor})
        assert page.status_code == 200, page.text
        shown = [int(s) for s in re.findall(r'<tr data-kind="[^"]*"><td>(\d+)</td>', page.text)]
        assert shown == seqs[-500:]
        paging = re.search(r'<p id="audit-paging"[^>]*>(.*?)</p>', page.text, re.S)
        assert paging is not None
        assert "Showing entries 4 to 503 of 503" in _text(paging.group(1))
        older = re.search(r'id="audit-older" href="([^"]+)"', page.text)
        assert older is not None
        back = client.get(html.unescape(older.group(1)))
        shown = [int(s) for s in re.findall(r'<tr data-kind="[^"]*"><td>(\d+)</td>', back.text)]
        assert shown == seqs[:3]
        assert "Showing entries 1 to 3 of 503" in _text(back.text)
        assert 'id="audit-older"' not in back.text and 'id="audit-newest"' in back.text
    finally:
        client.close()


# --------------------------------------------------------------------------- F16


def test_unmasking_on_the_page_needs_the_api_purpose_length_and_names_the_shipment(
    site: Site, officer: httpx.Client
) -> None:
    sid = site.shipments[0]["shipment_id"]
    page = officer.get(f"/web/shipments/{sid}")
    r = officer.post(
        f"/web/travellers/{TRAVELLER_ID}/unmask",
        data={"csrf_token": _csrf(page), "shipment_id": sid, "purpose": "x"},
    )
    assert r.status_code == 422
    assert "at least 5 characters" in r.text
    assert 'data-masked="no"' not in r.text
    r = officer.post(
        f"/web/travellers/{TRAVELLER_ID}/unmask",
        data={"csrf_token": _csrf(page), "shipment_id": sid, "purpose": "check consignee"},
    )
    assert r.status_code == 200 and 'data-masked="no"' in r.text
    with site.app.state.session_factory() as session:
        entry = session.scalars(
            select(m.AuditLog)
            .where(m.AuditLog.kind == "personal_data_view", m.AuditLog.actor == "officer1")
            .order_by(m.AuditLog.seq.desc())
            .limit(1)
        ).one()
    assert entry.payload["purpose"] == "check consignee"
    assert entry.payload["shipment_id"] == sid


# --------------------------------------------------------------------------- ingest F10


def test_the_explanation_api_adds_up_to_the_score(site: Site) -> None:
    with site.app.state.session_factory() as session:
        hit = session.scalars(select(m.RuleHit)).first()
        assert hit is not None
    with site.api(Role.officer) as api:
        detail = api.get(f"/api/v1/shipments/{hit.shipment_id}").json()
        r = api.get(f"/api/v1/shipments/{hit.shipment_id}/explanation")
    assert r.status_code == 200, r.text
    body = r.json()
    contributions = body["contributions"]
    assert len(contributions) > len(body["reasons"])
    total = body["base_value"] + math.fsum(c["log_odds"] for c in contributions)
    assert total == pytest.approx(body["raw_score"], abs=1e-9)
    assert 1 / (1 + math.exp(-body["raw_score"])) == pytest.approx(detail["probability"], rel=1e-9)
    sizes = [abs(c["log_odds"]) for c in contributions]
    assert sizes == sorted(sizes, reverse=True)
    by_feature = {c["feature"]: c for c in contributions}
    for reason in body["reasons"]:
        stored = reason["log_odds"]  # stored rounded to 6 decimals
        assert by_feature[reason["feature"]]["log_odds"] == pytest.approx(stored, abs=1e-6)
        assert "?" not in reason["text_en"] and "?" not in reason["text_ru"]
    json.dumps(body)  # plain JSON all through


@pytest.fixture
def near_site(web_world: Path, tmp_path: Path) -> Iterator[Site]:
    """An own server whose watchlist holds an entity a shipment's consignee only
    nearly matches (generic company words), and one it matches closely."""
    data = tmp_path / "data"
    shutil.copytree(web_world, data)
    app = build_app(f"sqlite:///{data / 'caravan.db'}", data, max_body_bytes=4 * 1024 * 1024)
    with uvicorn_server(app) as base:
        add_users(app)
        records = shipment_payloads(web_world, 2, "NEAR-", OFFICE, DAY)
        records[0]["consignee_name"] = "Mashhad Trading Co."  # 80% similar
        records[1]["consignee_name"] = "Rahmat Trading Company"  # 96% similar
        site = Site(app, base, data, records)
        csv = (
            "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
            "nationality,document_numbers,address,listed_on\n"
            "NM-1,entity,Rahat Trading Company,,,,IR,,,2020-01-15\n"
        )
        with site.api(Role.analyst) as client:
            r = client.post(
                "/api/v1/watchlists/national",
                params={"list_name": "near-test"},
                content=csv.encode(),
                headers={"Content-Type": "text/csv"},
            )
            assert r.status_code == 200, r.text
            assert client.post("/api/v1/shipments/batch", json={"records": records}).is_success
        yield site


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_a_near_miss_is_marked_on_the_shipment_page(near_site: Site, lang: str) -> None:
    client = _signed_in(near_site, "officer1", password_for(Role.officer), lang)
    near = client.get(f"/web/shipments/{near_site.shipments[0]['shipment_id']}")
    close = client.get(f"/web/shipments/{near_site.shipments[1]['shipment_id']}")
    client.close()
    assert near.status_code == 200 and close.status_code == 200
    marked = re.search(r'id="watchlist-near">\(([^)]*)\)', near.text)
    assert marked is not None and "85%" in marked.group(1)
    assert ("priority" if lang == "en" else "приоритете") in marked.group(1)
    assert "Rahat Trading Company" in near.text
    assert 'id="watchlist-near"' not in close.text and "Rahat Trading Company" in close.text


def test_the_reasons_show_their_effect_as_a_factor_on_the_odds(
    site: Site, officer: httpx.Client
) -> None:
    """A reason's effect reads in the chart's unit (odds factor, log-odds), never as a
    probability change rounded to '+0.000' (supervisor round 2, S11)."""
    # a shipment the model gives reasons for (a feature adding at least 0.05 log-odds):
    # which of the day's shipments have one is the world's draw, so it is looked up
    with site.api(Role.officer) as api:
        for ship in site.shipments:
            sid = ship["shipment_id"]
            r = api.get(f"/api/v1/shipments/{sid}/explanation")
            assert r.status_code == 200, r.text
            reasons = r.json()["reasons"]
            if reasons:
                break
    assert reasons, "no shipment of the day has a reason to show"
    page = officer.get(f"/web/shipments/{sid}").text
    listed = re.search(r'<ol class="reason-list" id="reasons">(.*?)</ol>', page, re.S)
    assert listed is not None
    items = re.findall(r"<li>(.*?)</li>", listed.group(1), re.S)
    assert len(items) == len(reasons) and "+0.000" not in listed.group(1)
    for item, reason in zip(items, reasons, strict=True):
        assert f"odds ×{math.exp(reason['log_odds']):.2f}" in html.unescape(item)
        assert f"{reason['log_odds']:+.2f} log-odds" in html.unescape(item)
