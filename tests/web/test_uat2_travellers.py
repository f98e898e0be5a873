"""Traveller personal data on the shipment page (round-2 acceptance findings sec F1,
an A8), over real HTTP against the app on uvicorn (a server of its own: the tests
ingest shipments and records).

F1: an officer cannot unmask a traveller record through a shipment he ingested
himself; the page says why. A8: a record of the loaded history (validated/) linked
to the shipment's parties is listed (masked) and unmasked with a purpose (logged)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from serving.services import jsonable
from tests.serving.conftest import OFFICE, add_users, build_app, password_for, uvicorn_server
from tests.web.conftest import DAY, Site, shipment_payloads, web_login

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PNR_ID = "PNR-WEB-F1"


def _csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


def _history_record(world: Path) -> dict[str, Any]:
    """A traveller record of the loaded history with a name and a phone."""
    return (
        pl.read_parquet(world / "validated" / "travellers.parquet")
        .filter(
            pl.col("surname").is_not_null()
            & pl.col("given_names").is_not_null()
            & pl.col("contact_phone").is_not_null()
            & pl.col("document_number").is_not_null()
        )
        .sort("traveller_record_id")
        .row(0, named=True)
    )


@pytest.fixture(scope="module")
def own_site(web_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The app on uvicorn (SQLite file) with users of every role and three shipments
    of OFFICE: HIST-0 (analyst) whose consignee is a record of the loaded history,
    PNR-1 (analyst) and OWN-2 (the officer himself) whose consignee is an API record."""
    data = tmp_path_factory.mktemp("trav-site") / "data"
    shutil.copytree(web_world, data)
    app = build_app(f"sqlite:///{data / 'caravan.db'}", data, max_body_bytes=4 * 1024 * 1024)
    with uvicorn_server(app) as base:
        add_users(app)
        held = _history_record(web_world)
        ships = shipment_payloads(web_world, 3, "X-", OFFICE, DAY)
        named = [
            ("HIST-0", f"{held['surname']} {held['given_names']}", held["contact_phone"]),
            ("PNR-1", "Nurmatov Ulugbek Alisherovich", "+996 700 000 001"),
            ("OWN-2", "Nurmatov Ulugbek Alisherovich", "+996 700 000 001"),
        ]
        for ship, (sid, name, phone) in zip(ships, named, strict=True):
            ship.update(shipment_id=sid, consignee_name=name, consignee_phone=phone)
            for line in ship["items"]:
                line.update(shipment_id=sid, item_id=f"{sid}-{line['line_no']}")
        site = Site(app, base, data, ships)
        record = dict(jsonable(held))
        record.update(
            traveller_record_id=PNR_ID,
            surname="NURMATOV",
            given_names="ULUGBEK ALISHEROVICH",
            document_number="FA7788123",
            contact_phone="+996 700 000 001",
        )
        with site.api(Role.analyst) as client:
            assert client.post("/api/v1/travellers", json=record).status_code == 201
            for ship in ships[:2]:
                r = client.post("/api/v1/shipments", json=ship)
                assert r.status_code == 201, r.text
        with site.api(Role.officer) as client:
            r = client.post("/api/v1/shipments", json=ships[2])
            assert r.status_code == 201, r.text
        site.held = held  # type: ignore[attr-defined]
        yield site


@pytest.fixture
def officer(own_site: Site) -> Iterator[httpx.Client]:
    client, r = web_login(own_site, "officer1", password_for(Role.officer))
    assert r.status_code == 303, r.text
    try:
        yield client
    finally:
        client.close()


def _views(site: Site) -> list[tuple[str, str | None, str | None]]:
    with site.app.state.session_factory() as session:
        rows = session.scalars(
            select(m.AuditLog)
            .where(m.AuditLog.kind == "personal_data_view")
            .order_by(m.AuditLog.seq)
        ).all()
        return [(r.actor, r.entity_id, r.payload.get("shipment_id")) for r in rows]


def _unmask(
    officer: httpx.Client, sid: str, record: str = PNR_ID, purpose: str = "check consignee"
) -> httpx.Response:
    """The shipment page's unmask form, sent for `record` through shipment `sid`."""
    page = officer.get(f"/web/shipments/{sid}")
    return officer.post(
        f"/web/travellers/{record}/unmask",
        data={"csrf_token": _csrf(page), "shipment_id": sid, "purpose": purpose},
    )


def test_the_page_refuses_unmasking_through_a_shipment_the_officer_ingested(
    own_site: Site, officer: httpx.Client
) -> None:
    page = officer.get("/web/shipments/OWN-2")
    assert page.status_code == 200
    assert f'data-record="{PNR_ID}" data-masked="yes"' in page.text  # listed, masked
    before = _views(own_site)
    r = _unmask(officer, "OWN-2")
    assert r.status_code == 403, r.text[:500]
    assert "You ingested this shipment yourself" in r.text
    assert 'data-masked="no"' not in r.text and "FA7788123" not in r.text
    assert _views(own_site) == before

    # the same record through a shipment an analyst ingested
    r = _unmask(officer, "PNR-1")
    assert r.status_code == 200, r.text[:500]
    assert 'data-masked="no"' in r.text and "FA7788123" in r.text
    assert _views(own_site)[-1] == ("officer1", PNR_ID, "PNR-1")


def test_the_page_refuses_unmasking_through_a_shipment_of_an_officer_key(
    own_site: Site, officer: httpx.Client, web_world: Path
) -> None:
    """An officer's API key names no person: a shipment it ingested is no link for an
    officer (found in review: ingesting with one got round the rule above)."""
    with own_site.api(Role.admin) as admin:
        made = admin.post(
            "/api/v1/users/api-keys",
            json={"name": "post scanner", "role": "officer", "office_code": OFFICE},
        )
        assert made.status_code == 201, made.text
    ship = shipment_payloads(web_world, 4, "Y-", OFFICE, DAY)[3]
    ship.update(
        shipment_id="KEY-3",
        consignee_name="Nurmatov Ulugbek Alisherovich",
        consignee_phone="+996 700 000 001",
    )
    for line in ship["items"]:
        line.update(shipment_id="KEY-3", item_id=f"KEY-3-{line['line_no']}")
    r = httpx.post(
        f"{own_site.base}/api/v1/shipments", json=ship, headers={"X-API-Key": made.json()["key"]}
    )
    assert r.status_code == 201, r.text
    page = officer.get("/web/shipments/KEY-3")
    assert f'data-record="{PNR_ID}" data-masked="yes"' in page.text
    r = _unmask(officer, "KEY-3")
    assert r.status_code == 403, r.text[:500]
    assert "came with an officer&#39;s API key" in r.text
    assert 'data-masked="no"' not in r.text and "FA7788123" not in r.text


def test_a_linked_record_of_the_loaded_history_is_listed_and_unmasked(
    own_site: Site, officer: httpx.Client
) -> None:
    held: dict[str, Any] = own_site.held  # type: ignore[attr-defined]
    rid = str(held["traveller_record_id"])
    page = officer.get("/web/shipments/HIST-0")
    assert page.status_code == 200
    assert "No linked traveller record" not in page.text
    assert f'data-record="{rid}" data-masked="yes"' in page.text
    assert str(held["contact_phone"]) not in page.text.split('id="h-travellers"')[1]
    r = _unmask(officer, "HIST-0", rid, purpose="courier check")
    assert r.status_code == 200, r.text[:500]
    assert f'data-record="{rid}" data-masked="no"' in r.text
    assert str(held["document_number"]) in r.text
    assert _views(own_site)[-1] == ("officer1", rid, "HIST-0")
