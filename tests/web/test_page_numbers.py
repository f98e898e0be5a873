"""Figures on the pages written the reader's way (sup S14): digits grouped by a
no-break space, a decimal comma in Russian, whole counts without ".0", goods values
with the invoice currency; and the access-denied page naming the role in the
reader's language. The formatting helper itself, and the shipment page over real
HTTP against the app on uvicorn."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving.auth import Role
from serving.web.i18n import Translator
from serving.web.views import Step, Waterfall, fmt_quantity, waterfall_svg
from tests.serving.conftest import OFFICE, password_for
from tests.web.conftest import DAY, Site, web_login

NBSP = "\u00a0"
NUMBERS_DAY = DAY + dt.timedelta(days=41)  # a day of its own (no other test uses it)
SID = "SH0000099760-D250413"


@pytest.mark.parametrize(
    ("value", "lang", "how", "shown"),
    [
        (140951048.05, "ru", {"places": 2}, f"140{NBSP}951{NBSP}048,05"),
        (140951048.05, "en", {"places": 2}, f"140{NBSP}951{NBSP}048.05"),
        (6120.98, "ru", {}, f"6{NBSP}120,98"),
        (41.0, "ru", {}, "41"),
        (1500.0, "en", {}, f"1{NBSP}500"),
        (2.5, "ru", {}, "2,5"),
        (0.0098, "ru", {"places": 4}, "0,0098"),
        (0.789, "ru", {"places": 3, "signed": True}, "+0,789"),
        (-0.25, "en", {"places": 3, "signed": True}, "-0.250"),
        (602.6, "ru", {"places": 2}, "602,60"),
        (None, "ru", {}, ""),
    ],
)
def test_figures_are_written_the_readers_way(
    value: float | None, lang: str, how: dict[str, Any], shown: str
) -> None:
    assert fmt_quantity(value, lang, **how) == shown


def test_the_waterfall_writes_russian_figures_with_a_decimal_comma() -> None:
    w = Waterfall(-2.0, -1.25, [Step("a", 1.0), Step("b", -0.25)])
    ru = str(waterfall_svg(w, Translator("ru")))
    assert "p=0,119" in ru and "+1,000" in ru and "-0,250" in ru
    assert not re.search(r">[-+]?\d+\.\d+<", ru)  # no decimal point in a figure
    en = str(waterfall_svg(w, Translator("en")))
    assert "p=0.119" in en and "+1.000" in en


def _text(page: str) -> str:
    """The page's visible text, spaces kept as they are (no-break ones too)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.fixture(scope="module")
def declared(site: Site) -> dict[str, Any]:
    """A shipment with a nine-digit KRW invoice, a fractional mass and whole counts."""
    base = site.shipments[0]
    at = dt.datetime(NUMBERS_DAY.year, NUMBERS_DAY.month, NUMBERS_DAY.day, 9, tzinfo=dt.UTC)
    line = dict(base["items"][0])
    line.update(
        shipment_id=SID,
        item_id=f"{SID}-1",
        line_no=1,
        quantity=41.0,
        quantity_unit="PCE",
        net_mass_kg=5890.5,
        value=140951048.05,
    )
    record = {
        **base,
        "shipment_id": SID,
        "office_code": OFFICE,
        "declared_at": at.isoformat(),
        "expected_arrival_at": (at + dt.timedelta(hours=6)).isoformat(),
        "invoice_amount": 140951048.05,
        "invoice_currency": "KRW",
        "gross_mass_kg": 6120.98,
        "package_count": 1200,
        "items": [line],
    }
    with site.api(Role.analyst) as analyst:
        r = analyst.post("/api/v1/shipments", json=record)
        assert r.status_code == 201, r.text
    return record


@pytest.fixture
def officer_ru(site: Site) -> Iterator[httpx.Client]:
    client, r = web_login(site, "officer1", password_for(Role.officer))
    assert r.status_code == 303, r.text
    assert client.get("/web/lang/ru").status_code == 303
    yield client
    client.close()


def test_the_shipment_page_writes_its_figures_in_russian(
    officer_ru: httpx.Client, declared: dict[str, Any]
) -> None:
    page = officer_ru.get(f"/web/shipments/{SID}")
    assert page.status_code == 200 and 'lang="ru"' in page.text
    text = _text(page.text)
    assert f"140{NBSP}951{NBSP}048,05 KRW" in text  # invoice (header) and goods value
    goods = re.search(r'<table id="goods">.*?</table>', page.text, re.S)
    assert goods is not None
    cells = _text(goods.group(0))
    assert "41 PCE" in cells and "41.0" not in cells
    assert f"5{NBSP}890,5" in cells
    assert f"140{NBSP}951{NBSP}048,05 KRW" in cells  # the line's value with its currency
    assert f"6{NBSP}120,98" in text and "6120.98" not in text
    assert f"1{NBSP}200" in text
    assert "140951048.05" not in text
    probability = re.search(r'<dd id="probability">([^<]*)</dd>', page.text)
    assert probability is not None and re.fullmatch(r"\d,\d{4}", probability.group(1))
    # English: the same figures with a decimal point, grouped the same way
    officer_ru.get("/web/lang/en")
    en = _text(officer_ru.get(f"/web/shipments/{SID}").text)
    assert f"140{NBSP}951{NBSP}048.05 KRW" in en and f"6{NBSP}120.98" in en


def test_access_denied_names_the_role_in_the_readers_language(officer_ru: httpx.Client) -> None:
    page = officer_ru.get("/web/rules")
    assert page.status_code == 403
    text = _text(page.text)
    assert "Ваша роль (инспектор по целевому отбору) не даёт доступа к этой странице." in text
    assert "(officer)" not in text
    officer_ru.get("/web/lang/en")
    en = _text(officer_ru.get("/web/rules").text)
    assert "Your role (targeting officer) may not open this page." in en
