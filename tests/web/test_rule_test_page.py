"""Testing a rule on the history from the rule page, in Debian's Chromium against the
app on uvicorn: an analyst tests the form as typed (nothing saved), an auditor tests
a saved rule; the figures are the ones counted straight from the world's files."""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from serving.auth import Role
from tests.web.conftest import RULE, Site, login_as, shot


def _hits(site: Site, prefixes: tuple[str, ...]) -> int:
    items = pl.read_parquet(site.data / "validated" / "items.parquet")
    hit = items.filter(pl.any_horizontal(pl.col("hs_code").str.starts_with(p) for p in prefixes))
    return hit["shipment_id"].n_unique()


def _figure(page: Any, selector: str) -> int:
    """The first whole number in an element's text (digits grouped by any space)."""
    text = page.locator(selector).inner_text()
    match = re.search(r"\d[\d\s\u00a0\u202f]*", text)
    assert match is not None, text
    return int(re.sub(r"\D", "", match.group(0)))


def test_an_analyst_tests_a_draft_without_saving_it(new_page: Any, site: Site) -> None:
    page = new_page()
    login_as(page, Role.analyst)
    page.goto("/web/rules/new")
    page.locator("#id").fill("draft-ch93-test")
    page.locator("#name").fill("Chapter 93 lines")
    page.locator("#severity").select_option("high")
    page.locator("#condition").fill('{"field": "item.hs_code", "op": "starts_with", "value": "93"}')
    with page.expect_navigation():
        page.locator("#test-rule").click()
    assert page.locator("#backtest").is_visible()
    assert _figure(page, "#backtest-hits") == _hits(site, ("93",)) > 0
    # The site ingested its day's shipments over the API after `caravan features`:
    # they are left out, and said to be.
    assert _figure(page, "#backtest-without") >= len(site.shipments)
    assert page.locator("#backtest-months tbody tr").count() >= 12
    # What was typed is still in the form, and nothing was saved.
    assert page.locator("#name").input_value() == "Chapter 93 lines"
    with site.api(Role.analyst) as api:
        assert api.get("/api/v1/rules/draft-ch93-test/versions").status_code == 404
    # A condition the engine refuses is shown beside the field, not tested.
    page.locator("#condition").fill('{"field": "no_such_field", "op": "eq", "value": 1}')
    with page.expect_navigation():
        page.locator("#test-rule").click()
    assert page.locator("#backtest").count() == 0
    assert "no_such_field" in page.locator("#err-condition").inner_text()


def test_an_auditor_tests_a_saved_rule_in_russian(new_page: Any, site: Site) -> None:
    page = new_page(locale="ru-RU")
    login_as(page, Role.auditor)
    page.goto(f"/web/rules/{RULE['id']}")
    assert page.locator("#rule-form").count() == 0  # an auditor reads, does not edit
    with page.expect_navigation():
        page.locator("#test-rule").click()
    assert "Результат на истории" in page.locator("#backtest-title").inner_text()
    prefixes = tuple(c["value"] for c in RULE["condition"]["any"])  # type: ignore[index]
    assert _figure(page, "#backtest-hits") == _hits(site, prefixes)
    shot(page, "rule-test-ru")
