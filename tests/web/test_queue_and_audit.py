"""The queue page's marks and filters, and the audit page on a tampered chain, over
real HTTP (no browser needed)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from serving import orm as m
from serving.auth import Role
from serving.policy import AWAITING_DECISION, TOP_BAND
from tests.serving.conftest import OFFICE, add_users, build_app, password_for, uvicorn_server
from tests.web.conftest import DAY, Site, shipment_payloads, web_login

TRIGGERS = "SELECT sql FROM sqlite_master WHERE type='trigger' AND tbl_name='audit_log'"
ROW = re.compile(
    r'<tr class="([^"]*)" data-shipment="([^"]+)" data-status="(\w+)" data-referral="(\d+)"'
)


def rows(html: str) -> list[tuple[str, str, str, int]]:
    return [(c, s, st, int(r)) for c, s, st, r in ROW.findall(html)]


@pytest.fixture
def officer(site: Site) -> Iterator[httpx.Client]:
    client, r = web_login(site, "officer1", password_for(Role.officer))
    assert r.status_code == 303
    yield client
    client.close()


def test_queue_marks_overdue_exploration_and_filters(site: Site, officer: httpx.Client) -> None:
    services = site.app.state.services
    before = services.queue
    # (a limit no age reaches: DAY's shipments were declared long ago, and an entry's
    # age counts from its shipment's declaration)
    services.queue = before.model_copy(update={"overdue_hours": 24 * 365 * 100})
    try:
        page = officer.get("/web/queue", params={"day": DAY.isoformat()})
    finally:
        services.queue = before
    assert page.status_code == 200
    entries = rows(page.text)
    with site.app.state.session_factory() as session:
        refs = {
            r.id: r
            for r in session.scalars(
                select(m.Referral).where(
                    m.Referral.office_code == OFFICE, m.Referral.queue_date == DAY
                )
            )
        }
        lanes = {s.id: s.lane for s in session.scalars(select(m.Score))}
        # DAY is over: its forced entries (must-inspect rule, exact watchlist hit) still
        # awaiting a decision are overdue at once, however recently they were placed
        forced = {
            i for i, r in refs.items() if r.priority >= TOP_BAND and r.status in AWAITING_DECISION
        }
        # with the usual limit (24 h) every entry awaiting a decision is overdue: its
        # shipment has waited since DAY, however recently the entry was placed
        awaiting = {i for i, r in refs.items() if r.status in AWAITING_DECISION}
    assert [r for *_x, r in entries] == sorted(refs, key=lambda i: refs[i].rank)
    for classes, _sid, _status, rid in entries:
        assert f"lane-row-{lanes[refs[rid].score_id]}" in classes
        assert ("exploration" in classes) == (refs[rid].selection_method == "random")
        # a green entry the model ranked into the capacity says why it is there (the
        # lane alone says "release": found in review)
        row = page.text.split(f'data-referral="{rid}"')[1].split("</tr>")[0]
        filled = lanes[refs[rid].score_id] == "green" and refs[rid].selection_method == "model"
        assert ("fills the day&#39;s capacity" in row) == filled, row
    assert "fills the day&#39;s capacity" in page.text  # (the world's queue has such entries)
    assert {rid for classes, *_x, rid in entries if "overdue" in classes.split()} == forced
    page = officer.get("/web/queue", params={"day": DAY.isoformat()})
    marked = {rid for classes, *_x, rid in rows(page.text) if "overdue" in classes.split()}
    assert marked == awaiting and forced <= awaiting
    assert 'class="overdue"' in page.text.split("overdue-list")[1]

    red = officer.get("/web/queue", params={"day": DAY.isoformat(), "lane": "red"})
    red_ids = [rid for *_x, rid in rows(red.text)]
    assert red_ids and all(lanes[refs[i].score_id] == "red" for i in red_ids)
    assert len(red_ids) == sum(lanes[r.score_id] == "red" for r in refs.values())
    by_priority = officer.get("/web/queue", params={"day": DAY.isoformat(), "sort": "priority"})
    ids = [rid for *_x, rid in rows(by_priority.text)]
    assert [refs[i].priority for i in ids] == sorted(
        (r.priority for r in refs.values()), reverse=True
    )
    random_only = officer.get("/web/queue", params={"day": DAY.isoformat(), "exploration": "1"})
    assert {rid for *_x, rid in rows(random_only.text)} == {
        i for i, r in refs.items() if r.selection_method == "random"
    }
    bad = officer.get("/web/queue", params={"day": "2025-13-40"})
    assert 'id="err-day"' in bad.text and 'aria-invalid="true"' in bad.text
    far = officer.get("/web/queue", params={"day": "9999-12-31"})  # (was a 500)
    assert far.status_code == 200 and 'id="err-day"' in far.text


@pytest.fixture
def small_site(web_world: Path, tmp_path: Path) -> Iterator[Site]:
    """An own server and database (this test alters the audit log)."""
    data = tmp_path / "data"
    shutil.copytree(web_world, data)
    app = build_app(f"sqlite:///{data / 'caravan.db'}", data, max_body_bytes=4 * 1024 * 1024)
    with uvicorn_server(app) as base:
        add_users(app)
        records = shipment_payloads(web_world, 4, "TMP-", OFFICE, DAY)
        site = Site(app, base, data, records)
        with site.api(Role.analyst) as client:
            assert client.post("/api/v1/shipments/batch", json={"records": records}).is_success
        yield site


def test_audit_page_reports_a_broken_chain(small_site: Site) -> None:
    site = small_site
    client, _r = web_login(site, "auditor1", password_for(Role.auditor))
    with site.app.state.engine.connect() as conn:
        target = conn.execute(text("SELECT seq, entry_id FROM audit_log ORDER BY seq")).all()[1]
    try:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/web/audit").text)
        assert csrf is not None
        ok = client.post("/web/audit/verify", data={"csrf_token": csrf.group(1)})
        assert 'data-ok="yes"' in ok.text
        engine = site.app.state.engine
        with engine.begin() as conn:
            triggers = [row[0] for row in conn.execute(text(TRIGGERS))]
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text(f"UPDATE audit_log SET actor = 'mallory' WHERE seq = {target.seq}"))
            for sql in triggers:
                if "no_update" in sql:
                    conn.execute(text(sql))
        broken = client.post("/web/audit/verify", data={"csrf_token": csrf.group(1)})
        assert 'data-ok="no"' in broken.text
        assert f"Chain BROKEN at entry {target.seq} ({target.entry_id})" in broken.text
    finally:
        client.close()
