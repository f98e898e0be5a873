"""Testing a rule on the loaded history (POST /api/v1/rules/backtest): the figures
equal the same counts made directly on the world's files with Polars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data_contracts.schemas import ARMS_CATEGORIES
from serving.auth import Role
from tests.serving.conftest import Api

URL = "/api/v1/rules/backtest"
CH93 = {"field": "item.hs_code", "op": "starts_with", "value": "93"}
REGULAR = {"field": "consignee_shipments_365d", "op": "ge", "value": 20}


def _draft(condition: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": "draft profile", "severity": "high", "condition": condition, **more}


def _expected(data: Path, hit_ids: pl.Series) -> dict[str, Any]:
    """Inspected / findings / arms findings / random draws among `hit_ids`, counted
    straight from validated/outcomes.parquet."""
    outcomes = pl.read_parquet(data / "validated" / "outcomes.parquet").filter(
        pl.col("shipment_id").is_in(hit_ids.implode())
    )
    per = outcomes.group_by("shipment_id").agg(
        pl.col("finding").any().alias("f"),
        (pl.col("finding") & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES))
        .any()
        .alias("a"),
        (pl.col("selection_method").cast(pl.String) == "random").any().alias("r"),
    )
    return {
        "hits": hit_ids.n_unique(),
        "inspected": per.height,
        "findings": int(per["f"].sum()),
        "arms_findings": int(per["a"].sum()),
        "random_inspected": int(per["r"].sum()),
        "random_arms": int(per.filter("r")["a"].sum()),
    }


def _check(out: dict[str, Any], want: dict[str, Any]) -> None:
    assert out["hits"] == want["hits"]
    assert out["inspected"] == want["inspected"]
    assert out["findings"] == want["findings"]
    assert out["arms_findings"] == want["arms_findings"]
    assert out["random"]["inspected_at_random"] == want["random_inspected"]
    assert out["random"]["arms_findings"] == want["random_arms"]
    if want["inspected"]:
        assert out["arms_finding_rate"] == pytest.approx(want["arms_findings"] / want["inspected"])


def test_a_draft_on_goods_lines_counts_what_the_files_hold(world_api: Api, world: Path) -> None:
    items = pl.read_parquet(world / "validated" / "items.parquet")
    hit_ids = items.filter(pl.col("hs_code").str.starts_with("93"))["shipment_id"].unique()
    assert hit_ids.len() > 0
    r = world_api.client.post(
        URL, json={"rule": _draft(CH93)}, headers=world_api.headers(Role.analyst)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rule_id"] == "draft" and out["version"] is None
    ships = pl.read_parquet(world / "validated" / "shipments.parquet")
    assert out["examined"] == ships.height and out["without_features"] == 0
    _check(out, _expected(world, hit_ids))
    assert out["arms_findings"] > 0  # the world hides arms in chapter 93 among others
    base = out["baseline"]
    all_outcomes = pl.read_parquet(world / "validated" / "outcomes.parquet")
    assert base["inspected"] == all_outcomes["shipment_id"].n_unique()
    assert out["lift"] == pytest.approx(out["arms_finding_rate"] / base["arms_finding_rate"])
    assert sum(m["hits"] for m in out["by_month"]) == out["hits"]
    assert set(out["recent_hits"]) <= set(hit_ids.to_list()) and len(out["recent_hits"]) == 20
    newest = ships.filter(pl.col("shipment_id").is_in(hit_ids.implode()))["declared_at"].max()
    first = ships.filter(pl.col("shipment_id") == out["recent_hits"][0])["declared_at"][0]
    assert first == newest


def test_a_feature_rule_reads_the_point_in_time_features(world_api: Api, world: Path) -> None:
    features = pl.read_parquet(world / "features" / "features.parquet")
    hit_ids = features.filter(pl.col("consignee_shipments_365d") >= 20)["shipment_id"]
    assert 0 < hit_ids.len() < features.height
    since, until = dt.date(2025, 1, 1), dt.date(2025, 6, 30)
    in_window = features.filter(
        pl.col("declared_at").dt.date().is_between(since, until)
        & pl.col("shipment_id").is_in(hit_ids.implode())
    )["shipment_id"]
    r = world_api.client.post(
        URL,
        json={"rule": _draft(REGULAR), "since": str(since), "until": str(until)},
        headers=world_api.headers(Role.data_scientist),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    _check(out, _expected(world, in_window))
    assert out["window"]["since"] == str(since)
    assert dt.datetime.fromisoformat(out["window"]["last_declared"]).date() <= until


def test_a_saved_rule_applies_on_its_days_unless_asked_otherwise(
    world_api: Api, world: Path
) -> None:
    analyst = world_api.headers(Role.analyst)
    ships = pl.read_parquet(world / "validated" / "shipments.parquet")
    items = pl.read_parquet(world / "validated" / "items.parquet")
    ch93 = items.filter(pl.col("hs_code").str.starts_with("93"))["shipment_id"]
    start, end = dt.date(2025, 3, 1), dt.date(2025, 3, 31)
    rule = {"id": "ch93-march", **_draft(CH93), "effective_from": str(start)}
    rule["effective_to"] = str(end)
    assert world_api.client.post("/api/v1/rules", json=rule, headers=analyst).status_code == 201
    in_force = ships.filter(
        pl.col("declared_at").dt.date().is_between(start, end)
        & pl.col("shipment_id").is_in(ch93.implode())
    )["shipment_id"]
    out = world_api.client.post(URL, json={"rule_id": "ch93-march"}, headers=analyst).json()
    assert out["rule_id"] == "ch93-march" and out["version"] == 1
    _check(out, _expected(world, in_force))
    every_day = world_api.client.post(
        URL, json={"rule_id": "ch93-march", "effective_dates": False}, headers=analyst
    ).json()
    assert every_day["hits"] == ch93.n_unique() > out["hits"]
    # A draft meant for the future hits nothing on the past unless its dates are set aside.
    future = _draft(CH93, effective_from="2030-01-01")
    r = world_api.client.post(URL, json={"rule": future}, headers=analyst).json()
    assert r["hits"] == 0
    r = world_api.client.post(
        URL, json={"rule": future, "effective_dates": False}, headers=analyst
    ).json()
    assert r["hits"] == ch93.n_unique()


def test_bad_requests_are_refused_with_their_reason(world_api: Api, world: Path) -> None:
    analyst = world_api.headers(Role.analyst)
    post = world_api.client.post
    r = post(URL, json={"rule": _draft(CH93), "rule_id": "x1"}, headers=analyst)
    assert r.status_code == 422 and "either rule_id" in r.text
    assert post(URL, json={"rule_id": "no-such-rule"}, headers=analyst).status_code == 404
    bad = _draft({"field": "no_such_field", "op": "eq", "value": 1})
    r = post(URL, json={"rule": bad}, headers=analyst)
    assert r.status_code == 422 and "no_such_field" in r.text
    r = post(
        URL,
        json={"rule": _draft(CH93), "since": "2025-02-01", "until": "2025-01-01"},
        headers=analyst,
    )
    assert r.status_code == 422 and "until" in r.text
    r = post(URL, json={"rule": _draft(CH93)}, headers=world_api.headers(Role.officer))
    assert r.status_code == 403
    # Without batch features there is nothing to test on: said, not a 500.
    (world_api.app.state.services.layout.features / "features.parquet").rename(
        world_api.app.state.services.layout.features / "moved.parquet"
    )
    r = post(URL, json={"rule": _draft(CH93)}, headers=analyst)
    assert r.status_code == 409 and "caravan features" in r.json()["detail"]


def test_date_and_age_rules_read_the_shipments_birth_dates(world_api: Api, world: Path) -> None:
    ships = pl.read_parquet(world / "validated" / "shipments.parquet")
    born = ships.filter(pl.col("consignee_birth_date").is_not_null())
    young = born.filter(pl.col("consignee_birth_date") >= dt.date(1990, 1, 1))
    assert 0 < young.height < born.height
    analyst = world_api.headers(Role.analyst)
    since_1990 = {"field": "consignee_birth_date", "op": "ge", "value": "1990-01-01"}
    r = world_api.client.post(URL, json={"rule": _draft(since_1990)}, headers=analyst)
    assert r.status_code == 200, r.text
    _check(r.json(), _expected(world, young["shipment_id"]))
    # an age is derived from the birth date and the declaration: every consignee
    # with a birth date is younger than 200, and one without never matches
    any_age = {"field": "consignee_age", "op": "lt", "value": 200}
    r = world_api.client.post(URL, json={"rule": _draft(any_age)}, headers=analyst)
    assert r.status_code == 200, r.text
    assert r.json()["hits"] == born.height
