"""Browser tests of the pages: a small trained world, the app on a real uvicorn
server (SQLite file) with users of every role, and Debian's Chromium driven by
Playwright (never downloaded: `playwright install` is not used).

Without /usr/bin/chromium the tests are skipped, unless CI=true: then they fail."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI

from serving.auth import Role, create_user
from serving.services import jsonable
from tests.serving.conftest import (  # noqa: F401 - cheap_argon2 is an autouse fixture
    OFFICE,
    add_users,
    build_app,
    cheap_argon2,
    password_for,
    uvicorn_server,
)

CHROMIUM = Path(os.environ.get("CARAVAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAY = dt.date(2025, 3, 3)
OTHER_OFFICE = "KZ-OTHER"
SHIPMENTS_IN_QUEUE = 24
TRAVELLER_ID = "TR-WEB-1"
WATCHED = SHIPMENTS_IN_QUEUE - 1  # the consignee of this shipment is on a watchlist
RULE = {
    "id": "arms-headings",
    "name": "Arms chapter 93 and headings used to hide parts",
    "severity": "high",
    "condition": {
        "any": [
            {"field": "item.hs_code", "op": "starts_with", "value": "93"},
            {"field": "item.hs_code", "op": "starts_with", "value": "8483"},
            {"field": "item.hs_code", "op": "starts_with", "value": "9005"},
        ]
    },
}


def artifacts_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    base = (
        Path(os.environ["CARAVAN_ARTIFACTS"])
        if os.environ.get("CARAVAN_ARTIFACTS")
        else root / "test-artifacts"
    )
    path = base / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the browser tests when Chromium is absent, except on CI, where that fails
    (in the `browser` fixture). Tests that need no browser always run."""
    if CHROMIUM.exists() or os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (install Debian's chromium)")
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


# --------------------------------------------------------------------------- the world


def shipment_payloads(
    world: Path, n: int, prefix: str, office: str, day: dt.date
) -> list[dict[str, Any]]:
    """`n` validated shipments of the world (a quarter of them trafficking) re-declared
    at `office` on `day`."""
    validated = pl.read_parquet(world / "validated" / "shipments.parquet")
    truth = pl.read_parquet(world / "truth" / "truth.parquet")
    bad = validated.join(truth.filter(pl.col("is_trafficking")), on="shipment_id", how="semi")
    good = validated.join(truth.filter(~pl.col("is_trafficking")), on="shipment_id", how="semi")
    k = n // 4
    ships = pl.concat([good.tail(n - k), bad.tail(k)]).to_dicts()
    items = pl.read_parquet(world / "validated" / "items.parquet")
    items = items.filter(pl.col("shipment_id").is_in([s["shipment_id"] for s in ships]))
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in items.to_dicts():
        lines.setdefault(row["shipment_id"], []).append(row)
    out = []
    for i, ship in enumerate(ships):
        sid = f"{prefix}{i:03d}"
        at = dt.datetime(day.year, day.month, day.day, 8, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
        record = {
            **ship,
            "shipment_id": sid,
            "office_code": office,
            "declared_at": at,
            "expected_arrival_at": at + dt.timedelta(hours=6),
            "items": [
                {**line, "shipment_id": sid, "item_id": f"{sid}-{line['line_no']}"}
                for line in lines[ship["shipment_id"]]
            ],
        }
        out.append(jsonable(record))
    return out


def traveller_linked_to(world: Path, shipment: dict[str, Any], record_id: str) -> dict[str, Any]:
    """A traveller record whose name and phone are the consignee's (linked to the shipment)."""
    row = pl.read_parquet(world / "validated" / "travellers.parquet").head(1).to_dicts()[0]
    surname, _, given = str(shipment["consignee_name"]).partition(" ")
    row.update(
        traveller_record_id=record_id,
        surname=surname or "Consignee",
        given_names=given or None,
        contact_phone=shipment.get("consignee_phone") or row.get("contact_phone"),
    )
    return dict(jsonable(row))


# --------------------------------------------------------------------------- the server


@dataclass
class Site:
    app: FastAPI
    base: str
    data: Path
    shipments: list[dict[str, Any]]

    def api_token(self, username: str, password: str) -> str:
        r = httpx.post(
            f"{self.base}/api/v1/auth/login", data={"username": username, "password": password}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def api(self, role: Role) -> httpx.Client:
        name = f"{role.value.replace('_', '-')}1"
        token = self.api_token(name, password_for(role))
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def office_queue(
        self, office: str, officer: str, password: str, prefix: str, day: dt.date, n: int
    ) -> dict[str, int]:
        """An officer of an office of their own and `n` shipments declared there on
        `day`, through the API: the day's queue as the officer reads it, shipment id
        -> referral id."""
        with self.app.state.session_factory() as session:
            create_user(
                session, username=officer, password=password, role=Role.officer, office_code=office
            )
            session.commit()
        records = shipment_payloads(self.data, n, prefix, office, day)
        with self.api(Role.analyst) as client:
            r = client.post("/api/v1/shipments/batch", json={"records": records})
            assert r.status_code == 200 and len(r.json()["stored"]) == n, r.text
        token = self.api_token(officer, password)
        with httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            queue = client.get(f"/api/v1/queues/{office}/{day.isoformat()}")
            assert queue.status_code == 200, queue.text
        return {e["shipment_id"]: e["id"] for e in queue.json()["entries"]}


@pytest.fixture(scope="session")
def site(web_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The app on uvicorn (SQLite file), users of every role plus an officer of another
    office, and a day's shipments ingested through the API."""
    data = tmp_path_factory.mktemp("site") / "data"
    shutil.copytree(web_world, data)
    app = build_app(f"sqlite:///{data / 'caravan.db'}", data, max_body_bytes=4 * 1024 * 1024)
    with uvicorn_server(app) as base:
        add_users(app)
        with app.state.session_factory() as session:
            create_user(
                session,
                username="officer2",
                password=password_for(Role.officer),
                role=Role.officer,
                display_name="Officer of another office",
                office_code=OTHER_OFFICE,
            )
            session.commit()
        records = shipment_payloads(web_world, SHIPMENTS_IN_QUEUE, "WEB-", OFFICE, DAY)
        site = Site(app, base, data, records)
        with site.api(Role.analyst) as client:
            r = client.post("/api/v1/rules", json=RULE)
            assert r.status_code == 201, r.text
            listed = records[WATCHED]["consignee_name"]
            csv = (
                "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
                f"nationality,document_numbers,address,listed_on\nKZ-17,entity,{listed},,,,,,,"
                "2020-01-15\n"
            )
            r = client.post(
                "/api/v1/watchlists/national",
                params={"list_name": "kz-national"},
                content=csv.encode(),
                headers={"Content-Type": "text/csv"},
            )
            assert r.status_code == 200, r.text
            r = client.post("/api/v1/shipments/batch", json={"records": records})
            assert r.status_code == 200, r.text
            assert len(r.json()["stored"]) == len(records), r.json()["errors"]
            traveller = traveller_linked_to(web_world, records[0], TRAVELLER_ID)
            r = client.post("/api/v1/travellers", json=traveller)
            assert r.status_code == 201, r.text
        yield site


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"CI=true but there is no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Any, site: Site) -> Iterator[Any]:
    """Open pages in fresh browser contexts (own cookies) at 1366x768."""
    contexts: list[Any] = []

    def factory(locale: str = "en-GB") -> Any:
        context = browser.new_context(
            base_url=site.base, viewport={"width": 1366, "height": 768}, locale=locale
        )
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield factory
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under the artefacts directory."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, username: str, password: str) -> None:
    page.goto("/web/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    with page.expect_navigation():
        page.locator("#password").press("Enter")


def login_as(page: Any, role: Role) -> None:
    login(page, f"{role.value.replace('_', '-')}1", password_for(role))


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_login(site: Site, username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=site.base, follow_redirects=False, timeout=60)
    form = client.get("/web/login")
    token = CSRF.search(form.text)
    assert token is not None
    r = client.post(
        "/web/login",
        data={"csrf_token": token.group(1), "username": username, "password": password},
    )
    return client, r
