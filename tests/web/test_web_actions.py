"""The API's newer actions on the pages, in Debian's Chromium against the app on
uvicorn: closing a decided referral and releasing a claim (shipment page), a
referral displaced by a later arrival naming its successor, the red and yellow
shipments that did not fit the capacity (queue page), deactivating and activating
a rule with its reason (rules page), and the audit log's head with an expected
head to check (audit page); English and Russian."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from data_contracts.schemas import ITEMS, SHIPMENTS
from serving import orm as m
from serving.auth import Role, create_user
from serving.history import contract_schema, frame_of
from serving.policy import TOP_BAND
from serving.scoring import Scored, score_shipments
from serving.services import active_rules, left_out, prepare_shipment
from tests.serving.conftest import password_for
from tests.web.conftest import DAY, Site, login, login_as, shipment_payloads, shot
from tests.web.test_uat_web import _referral

ACT_OFFICE = "KZ-ACT"
ACT_OFFICER = "officer-act"
ACT_CAPACITY = 1
DAY1 = DAY + dt.timedelta(days=10)  # a day of its own: left out for want of capacity
DAY2 = DAY + dt.timedelta(days=11)  # a day of its own: a later arrival displaces
N = 16
POOL = 4 * N  # the world's shipments a day's N are chosen from, by how they score
PROBE_RULE = {
    "id": "web-actions-probe",
    "name": "A rule that matches nothing (switched off and on by the tests)",
    "severity": "low",
    "condition": {"field": "gross_mass_kg", "op": "gt", "value": 1e12},
}


@dataclass
class ActOffice:
    day1: list[dict[str, Any]]  # the shipments ingested for DAY1, in payload order
    queue1: dict[str, Any]  # the API's queue of DAY1


def _referrals(site: Site, office: str, day: dt.date) -> list[m.Referral]:
    with site.app.state.session_factory() as session:
        refs = list(
            session.scalars(
                select(m.Referral)
                .where(m.Referral.office_code == office, m.Referral.queue_date == day)
                .order_by(m.Referral.rank)
            )
        )
        session.expunge_all()
    return refs


def _ingest(site: Site, records: list[dict[str, Any]]) -> None:
    with site.api(Role.analyst) as client:
        r = client.post("/api/v1/shipments/batch", json={"records": records})
        assert r.status_code == 200, r.text
        assert len(r.json()["stored"]) == len(records), r.json()["errors"]


def _arriving_now(site: Site, records: list[dict[str, Any]]) -> list[Scored]:
    """How each record would score arriving now, alone (nothing is stored)."""
    services = site.app.state.services
    prepared = [prepare_shipment(r) for r in records]
    ships = frame_of([p.record for p in prepared], contract_schema(SHIPMENTS))
    items = frame_of([i for p in prepared for i in p.items], contract_schema(ITEMS))
    with site.app.state.session_factory() as session:
        rules = active_rules(session, services)
    with services.history.scoring() as state:
        return score_shipments(ships, items, state, services.holder.handle, rules)


def _api_queue(site: Site, day: dt.date) -> dict[str, Any]:
    with site.api(Role.admin) as client:
        r = client.get(f"/api/v1/queues/{ACT_OFFICE}/{day.isoformat()}")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def act(site: Site) -> Iterator[ActOffice]:
    """An office of its own (capacity 1) with its officer, and DAY1's shipments in."""
    queue = site.app.state.services.queue
    before = dict(queue.office_capacities)
    queue.office_capacities = {**before, ACT_OFFICE: ACT_CAPACITY}
    with site.app.state.session_factory() as session:
        if session.scalar(select(m.User).where(m.User.username == ACT_OFFICER)) is None:
            create_user(
                session,
                username=ACT_OFFICER,
                password=password_for(Role.officer),
                role=Role.officer,
                display_name="Officer of the actions office",
                office_code=ACT_OFFICE,
            )
            session.commit()
    # N of the world's shipments that nothing forces in (a must-inspect rule or an exact
    # watchlist hit enters over capacity), so that ranking fills the one place, red and
    # yellow ones first, so that some do not fit; which shipments those are is the
    # world's draw, so they are chosen by how each would score arriving now
    pool = shipment_payloads(site.data, POOL, "ACT1-", ACT_OFFICE, DAY1)
    fitting = [
        (r, s)
        for r, s in zip(pool, _arriving_now(site, pool), strict=True)
        if s.priority < TOP_BAND
    ]
    flagged_first = sorted(fitting, key=lambda rs: rs[1].lane == "green")
    chosen = {r["shipment_id"] for r, _s in flagged_first[:N]}
    records = [r for r, _s in fitting if r["shipment_id"] in chosen]  # in arrival order
    _ingest(site, records)
    queue1 = _api_queue(site, DAY1)
    assert len(queue1["entries"]) == ACT_CAPACITY, queue1["entries"]
    assert len(queue1["left_out"]) >= 2, "the world gave too few red/yellow shipments"
    yield ActOffice(records, queue1)
    queue.office_capacities = before


# --------------------------------------------------------------------------- release, close


def test_an_officer_releases_a_claim_then_closes_the_waived_referral(
    new_page: Any, site: Site, act: ActOffice
) -> None:
    ref = _referrals(site, ACT_OFFICE, DAY1)[0]
    assert ref.status == "open"
    page = new_page()
    login(page, ACT_OFFICER, password_for(Role.officer))
    page.goto(f"/web/shipments/{ref.shipment_id}")
    assert page.locator("#release").count() == 0 and page.locator("#close").count() == 0
    page.locator("#claim").click()
    page.wait_for_load_state()
    assert page.locator("#referral-status").get_attribute("data-status") == "claimed"
    assert page.locator("#close").count() == 0  # not decided yet
    page.locator("#release").click()
    page.wait_for_url(re.compile(r"\?done=released"))
    assert page.locator("[role=status]").inner_text() == (
        "Claim released: the referral is open in the queue again."
    )
    assert page.locator("#referral-status").get_attribute("data-status") == "open"
    assert page.locator("#release").count() == 0
    released = _referral(site, ref.id)
    assert (released.status, released.claimed_by) == ("open", None)
    with site.app.state.session_factory() as session:
        entry = session.scalars(
            select(m.AuditLog)
            .where(m.AuditLog.entity_id == ref.shipment_id, m.AuditLog.kind == "queue_decision")
            .order_by(m.AuditLog.seq.desc())
        ).first()
        assert entry is not None and entry.actor == ACT_OFFICER
        assert entry.payload["action"] == "release"
    # claim again, waive, and close the case
    page.locator("#claim").click()
    page.wait_for_load_state()
    page.get_by_label("Reason for the waiver").fill("documents checked at the border post")
    page.locator("#waive").click()
    page.wait_for_url(re.compile(r"\?done=waived"))
    assert page.locator("#release").count() == 0
    stale = page.context.new_page()  # the same page in a second tab, closed meanwhile
    stale.goto(f"/web/shipments/{ref.shipment_id}")
    page.locator("#close").click()
    page.wait_for_url(re.compile(r"\?done=closed"))
    assert page.locator("[role=status]").inner_text() == "Referral closed."
    assert page.locator("#referral-status").get_attribute("data-status") == "closed"
    status = page.locator("#referral-status").inner_text()
    assert "closed" in status and f"Decided by {ACT_OFFICER}" in status
    assert f"closed by {ACT_OFFICER}" in page.locator("#closed-by").inner_text()
    assert page.locator("#close").count() == 0 and page.locator("#displaced").count() == 0
    shot(page, "web-actions-closed")
    closed = _referral(site, ref.id)
    assert (closed.status, closed.decided_by) == ("closed", ACT_OFFICER)
    assert closed.waiver_reason == "documents checked at the border post"
    # closing it again from the stale tab is refused, saying why
    stale.locator("#close").click()
    stale.wait_for_load_state()
    assert "closed" in stale.locator(".form-errors").inner_text()
    assert stale.locator("#referral-status").get_attribute("data-status") == "closed"


def test_an_admin_releases_anyones_claim_in_russian(
    new_page: Any, site: Site, act: ActOffice
) -> None:
    day = DAY1 + dt.timedelta(days=30)
    records = shipment_payloads(site.data, 4, "ACT3-", ACT_OFFICE, day)
    _ingest(site, records)
    _api_queue(site, day)
    ref = _referrals(site, ACT_OFFICE, day)[0]
    officer = new_page()
    login(officer, ACT_OFFICER, password_for(Role.officer))
    officer.goto(f"/web/shipments/{ref.shipment_id}")
    officer.locator("#claim").click()
    officer.wait_for_load_state()
    assert _referral(site, ref.id).claimed_by == ACT_OFFICER
    admin = new_page(locale="ru-RU")
    login_as(admin, Role.admin)
    admin.goto(f"/web/shipments/{ref.shipment_id}")
    assert admin.locator("#release").inner_text() == (
        f"Снять направление с {ACT_OFFICER} (администратор)"
    )
    admin.locator("#release").click()
    admin.wait_for_url(re.compile(r"\?done=released"))
    assert admin.locator("[role=status]").inner_text() == (
        "Направление возвращено: оно снова открыто в очереди."
    )
    assert _referral(site, ref.id).status == "open"


# --------------------------------------------------------------------------- left out


def test_the_queue_page_lists_the_shipments_that_did_not_fit(
    new_page: Any, site: Site, act: ActOffice
) -> None:
    with site.app.state.session_factory() as session:
        expected = [s["shipment_id"] for s in left_out(session, ACT_OFFICE, DAY1)]
    assert expected == [s["shipment_id"] for s in act.queue1["left_out"]]
    page = new_page()
    login(page, ACT_OFFICER, password_for(Role.officer))
    page.goto(f"/web/queue?day={DAY1.isoformat()}")
    assert page.locator("#h-left-out").inner_text() == (
        "Red and yellow shipments that did not fit the capacity"
    )
    items = page.locator("#left-out li")
    assert [items.nth(i).get_attribute("data-shipment") for i in range(items.count())] == expected
    for i, sid in enumerate(expected):
        lane = items.nth(i).locator(".lane")
        assert re.search(r"lane-(red|yellow)", lane.get_attribute("class") or ""), sid
    shot(page, "web-actions-left-out")
    items.nth(0).get_by_role("link", name=expected[0]).click()
    page.wait_for_url(re.compile(rf"/web/shipments/{re.escape(expected[0])}$"))
    assert page.locator("h1").inner_text().startswith(f"Shipment {expected[0]}")
    # in Russian
    ru = new_page(locale="ru-RU")
    login(ru, ACT_OFFICER, password_for(Role.officer))
    ru.goto(f"/web/queue?day={DAY1.isoformat()}")
    assert ru.locator("#h-left-out").inner_text() == (
        "Красные и жёлтые отправки, не вошедшие в лимит"
    )


def test_a_displaced_referral_names_the_entry_that_replaced_it(
    new_page: Any, site: Site, act: ActOffice
) -> None:
    # DAY2's red/yellow shipments by the priority each would get arriving now (DAY1's
    # copies are their history, so a shipment scores otherwise than on DAY1): the
    # weakest arrives first and takes the one place, the strongest arrives later and
    # displaces it. Forced ones (must-inspect, exact watchlist: priority >= 2) would
    # enter over capacity.
    records = shipment_payloads(site.data, POOL, "ACT2-", ACT_OFFICE, DAY2)
    ranked = sorted(
        (s for s in _arriving_now(site, records) if 0.25 <= s.priority < TOP_BAND),
        key=lambda s: s.priority,
    )
    assert len(ranked) >= 2, "the world gave too few yellow or red shipments on DAY2"
    index = {r["shipment_id"]: i for i, r in enumerate(records)}
    weak, strong = index[ranked[0].shipment_id], index[ranked[-1].shipment_id]
    _ingest(site, [records[weak]])
    first = _api_queue(site, DAY2)["entries"]
    assert [e["shipment_id"] for e in first] == [records[weak]["shipment_id"]]
    # the strongest outranks the entry as it arrives (scored with the weakest now in
    # its history): a later, higher-priority arrival
    arriving = _arriving_now(site, [records[strong]])[0]
    assert TOP_BAND > arriving.priority > first[0]["priority"], (arriving, first, ranked)
    _ingest(site, [records[strong]])
    queue2 = _api_queue(site, DAY2)
    by_sid = {e["shipment_id"]: e for e in queue2["entries"]}
    old, new = by_sid[records[weak]["shipment_id"]], by_sid[records[strong]["shipment_id"]]
    assert (old["status"], old["displaced_by"]) == ("closed", new["id"]), (queue2, ranked)
    page = new_page()
    login(page, ACT_OFFICER, password_for(Role.officer))
    page.goto(f"/web/shipments/{old['shipment_id']}")
    assert page.locator("#referral-status").get_attribute("data-status") == "closed"
    assert (
        page.locator("#displaced")
        .inner_text()
        .startswith("Displaced: a later, higher-priority arrival took its place in the queue.")
    )
    link = page.locator("#displaced-by a")
    assert link.inner_text() == (
        f"Replaced by referral {new['id']} (shipment {new['shipment_id']})"
    )
    assert page.locator("#close").count() == 0 and page.locator("#claim").count() == 0
    shot(page, "web-actions-displaced")
    link.click()
    page.wait_for_url(re.compile(rf"/web/shipments/{re.escape(new['shipment_id'])}$"))
    assert page.locator("#referral-status").get_attribute("data-status") == "open"
    # the queue page marks the entry displaced, and lists the shipment among those left out
    page.goto(f"/web/queue?day={DAY2.isoformat()}")
    row = page.locator(f"tr[data-referral='{old['id']}']")
    assert "displaced by a later arrival" in row.inner_text()
    assert page.locator("#capacity").inner_text() == (
        "Capacity used: 1 of 1 (0 decided, 0 claimed, 1 open)"
    )
    assert old["lane"] in ("red", "yellow"), old
    item = page.locator(f"#left-out li[data-shipment='{old['shipment_id']}']")
    assert f"displaced (referral {old['id']})" in item.inner_text()
    # in Russian
    ru = new_page(locale="ru-RU")
    login(ru, ACT_OFFICER, password_for(Role.officer))
    ru.goto(f"/web/shipments/{old['shipment_id']}")
    assert ru.locator("#displaced-by a").inner_text() == (
        f"Заменено направлением {new['id']} (отправка {new['shipment_id']})"
    )


# --------------------------------------------------------------------------- rules


def _rule_active(site: Site, rule_id: str) -> bool:
    with site.app.state.session_factory() as session:
        row = session.get(m.Rule, rule_id)
        assert row is not None
        return bool(row.active)


def test_an_analyst_deactivates_a_rule_with_a_reason_and_activates_it(
    new_page: Any, site: Site
) -> None:
    rid = str(PROBE_RULE["id"])
    with site.api(Role.analyst) as client:
        r = client.post("/api/v1/rules", json=PROBE_RULE)
        assert r.status_code == 201, r.text
    page = new_page()
    login_as(page, Role.analyst)
    page.goto("/web/rules")
    row = page.locator(f"tr[data-rule='{rid}']")
    assert row.get_attribute("data-active") == "yes"
    # without a reason: refused, the rule stays active
    row.get_by_role("button", name="Deactivate").click()
    page.wait_for_load_state()
    row = page.locator(f"tr[data-rule='{rid}']")
    assert row.locator(f"#err-reason-{rid}").inner_text() == (
        "A reason is required to deactivate a rule."
    )
    assert row.locator(f"#reason-{rid}").get_attribute("aria-invalid") == "true"
    assert _rule_active(site, rid)
    row.get_by_label("Reason for deactivating").fill("replaced by the new arms rule")
    row.get_by_role("button", name="Deactivate").click()
    page.wait_for_url(re.compile(rf"/web/rules\?deactivated={rid}$"))
    assert page.locator("[role=status]").inner_text() == (
        f"Rule {rid} deactivated: it no longer hits."
    )
    row = page.locator(f"tr[data-rule='{rid}']")
    assert row.get_attribute("data-active") == "no"
    assert row.locator(".rule-active").inner_text() == "inactive: never evaluated"
    assert not _rule_active(site, rid)
    with site.app.state.session_factory() as session:
        entry = session.scalars(
            select(m.AuditLog)
            .where(m.AuditLog.entity == "rule", m.AuditLog.entity_id == rid)
            .order_by(m.AuditLog.seq.desc())
        ).first()
        assert entry is not None and entry.actor == "analyst1"
        assert entry.payload["action"] == "deactivate"
        assert entry.payload["reason"] == "replaced by the new arms rule"
    shot(page, "web-actions-rule-inactive")
    row.get_by_role("button", name="Activate").click()
    page.wait_for_url(re.compile(rf"/web/rules\?activated={rid}$"))
    assert page.locator(f"tr[data-rule='{rid}']").get_attribute("data-active") == "yes"
    assert _rule_active(site, rid)
    # in Russian; a reader (data scientist) sees no buttons
    ru = new_page(locale="ru-RU")
    login_as(ru, Role.analyst)
    ru.goto("/web/rules")
    assert ru.locator(f"#deactivate-{rid}").inner_text() == "Отключить"
    reader = new_page()
    login_as(reader, Role.data_scientist)
    reader.goto("/web/rules")
    assert reader.locator(f"tr[data-rule='{rid}']").count() == 1
    assert reader.locator(f"#deactivate-{rid}").count() == 0


# --------------------------------------------------------------------------- audit head


def _head(site: Site) -> tuple[int, str]:
    with site.app.state.session_factory() as session:
        row = session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq.desc())).first()
        assert row is not None
        return int(row.seq), str(row.hash)


def test_the_audit_page_shows_the_head_and_checks_an_expected_one(
    new_page: Any, site: Site
) -> None:
    page = new_page()
    login_as(page, Role.auditor)
    page.goto("/web/audit")
    page.locator("#verify").click()
    page.wait_for_load_state()
    seq, digest = _head(site)
    assert page.locator("#verify-result").get_attribute("data-ok") == "yes"
    head = page.locator("#verify-head")
    assert (head.get_attribute("data-seq"), head.get_attribute("data-hash")) == (str(seq), digest)
    assert page.locator("#verify-head-value").inner_text() == f"{seq}:{digest}"
    assert f"entry {seq}, hash {digest}" in head.inner_text()
    shot(page, "web-actions-audit-head")
    # the head written down is checked again
    page.get_by_label("Expected head (SEQ:HASH, optional)").fill(f"{seq}:{digest}")
    page.locator("#verify").click()
    page.wait_for_load_state()
    assert page.locator("#verify-result").get_attribute("data-ok") == "yes"
    assert page.locator("#verify-expected").inner_text() == (
        f"The recorded head {seq}:{digest} is still there with that hash."
    )
    # a head whose hash is not the log's: broken
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    page.get_by_label("Expected head (SEQ:HASH, optional)").fill(f"{seq}:{wrong}")
    page.locator("#verify").click()
    page.wait_for_load_state()
    assert page.locator("#verify-result").get_attribute("data-ok") == "no"
    assert page.locator("#verify-expected").count() == 0
    # not SEQ:HASH: the field says so, nothing is verified
    page.get_by_label("Expected head (SEQ:HASH, optional)").fill("12-abc")
    page.locator("#verify").click()
    page.wait_for_load_state()
    assert page.locator("#err-expect").inner_text().startswith("Write the head as SEQ:HASH")
    assert page.locator("#verify-result").count() == 0
    # in Russian
    ru = new_page(locale="ru-RU")
    login_as(ru, Role.auditor)
    ru.goto("/web/audit")
    ru.locator("#verify").click()
    ru.wait_for_load_state()
    assert ru.locator("#verify-head").inner_text().startswith("Последняя запись журнала: №")
