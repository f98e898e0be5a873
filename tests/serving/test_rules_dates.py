"""Rules on the parties' dates of birth (analyst finding A14).

`consignor_birth_date`, `consignee_birth_date` and `declarant_birth_date` (date columns
of the SHIPMENTS contract) are rule fields compared with an ISO date `YYYY-MM-DD`
(anything else refused, naming the place); `<role>_age` is the party's age in whole
years on the day of `declared_at` (UTC). A missing date never matches, except
`is_null`. Both evaluation paths (Python one by one, Polars in batch) agree."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from serving.auth import Role
from serving.rules_engine import (
    SMALL_BATCH,
    Rule,
    evaluate,
    evaluate_frame,
    field_catalog,
    load_rules_yaml,
    rule_frame,
    shipment_hits,
)
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_rules_engine import errors_of, leaf, make

API = "/api/v1"
U = dt.UTC
NOON = dt.datetime(2026, 11, 27, 12, tzinfo=U)


def _paths(rule: Rule, ships: list[dict[str, Any]]) -> set[str]:
    """The shipments `rule` hits, checked equal one by one (`evaluate`, each on its
    own declared day), in a few (`shipment_hits`, Python), in the batch frame and in
    more than SMALL_BATCH (`shipment_hits`, Polars)."""
    schema = {
        "shipment_id": pl.String,
        "declared_at": pl.Datetime("us", "UTC"),
        "consignee_birth_date": pl.Date,
        "declarant_birth_date": pl.Date,
    }
    frame_rows = [{k: s.get(k) for k in schema} for s in ships]
    ship_df = pl.DataFrame(frame_rows, schema=schema)
    items = pl.DataFrame(schema={"shipment_id": pl.String})
    one = {s["shipment_id"] for s in ships if evaluate(rule, s, [], {}, NOON)}
    few = set(shipment_hits([rule], ship_df, items))
    batch = set(evaluate_frame([rule], rule_frame(ship_df, items), NOON)["shipment_id"])
    copies = SMALL_BATCH // len(ships) + 1
    many_df = pl.concat(
        [ship_df.with_columns(pl.col("shipment_id") + f"#{k}") for k in range(copies)]
    )
    many = {sid.split("#")[0] for sid in shipment_hits([rule], many_df, items)}
    assert one == few == batch == many, (one, few, batch, many)
    return one


BORN = {
    "dec31": dt.date(2002, 12, 31),
    "jan01": dt.date(2003, 1, 1),
    "jan02": dt.date(2003, 1, 2),
    "none": None,
}
BIRTH_SHIPS = [
    {"shipment_id": sid, "declared_at": NOON, "consignee_birth_date": born}
    for sid, born in BORN.items()
]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gt", "2003-01-01", {"jan02"}),
        ("ge", "2003-01-01", {"jan01", "jan02"}),
        ("lt", "2003-01-01", {"dec31"}),
        ("le", "2003-01-01", {"dec31", "jan01"}),
        ("eq", "2003-01-01", {"jan01"}),
        ("ne", "2003-01-01", {"dec31", "jan02"}),  # a missing date never matches
        ("between", ["2002-12-31", "2003-01-01"], {"dec31", "jan01"}),
        ("is_null", None, {"none"}),
    ],
)
def test_birth_date_compared_as_calendar_dates(op: str, value: Any, expected: set[str]) -> None:
    node = leaf("consignee_birth_date", op, value, no_value=op == "is_null")
    assert _paths(make(node), BIRTH_SHIPS) == expected


def test_every_party_birth_date_is_a_date_field_with_an_age() -> None:
    catalog = field_catalog()
    for role in ("consignor", "consignee", "declarant"):
        assert catalog[f"{role}_birth_date"].type == "date"
        assert catalog[f"{role}_age"].type == "number"


def test_the_findings_rule_and_a_yaml_date() -> None:
    young = make(leaf("consignee_birth_date", "gt", "2003-01-01"), id="t-young")
    assert _paths(young, BIRTH_SHIPS) == {"jan02"}
    [from_yaml] = load_rules_yaml(
        """rules:
  - id: t-young
    name: young consignee
    severity: low
    condition: {field: consignee_birth_date, op: gt, value: 2003-01-01}
"""
    )
    assert _paths(from_yaml, BIRTH_SHIPS) == {"jan02"}


@pytest.mark.parametrize(
    ("op", "value", "path", "words"),
    [
        ("gt", "2003-01-01T00:00:00", "condition.value", "without a time"),
        ("gt", "2003-01-01T00:00:00Z", "condition.value", "YYYY-MM-DD"),
        ("eq", "01.01.2003", "condition.value", "expected an ISO date YYYY-MM-DD"),
        ("eq", "20030101", "condition.value", "YYYY-MM-DD"),
        ("eq", 20030101, "condition.value", "YYYY-MM-DD"),
        ("lt", "2003-02-30", "condition.value", "'2003-02-30'"),
        ("between", ["2003-01-01", "tomorrow"], "condition.value[1]", "YYYY-MM-DD"),
        ("between", ["2003-01-02", "2003-01-01"], "condition.value", "above the high value"),
        ("contains", "2003", "condition.op", "does not apply to consignee_birth_date"),
        ("in", ["2003-01-01"], "condition.op", "does not apply to consignee_birth_date"),
    ],
)
def test_a_date_value_other_than_an_iso_date_is_refused(
    op: str, value: Any, path: str, words: str
) -> None:
    [(where, message)] = errors_of(leaf("consignee_birth_date", op, value))
    assert where == path
    assert words in message
    if where != "condition.op" and "above" not in words:
        assert "consignee_birth_date is a date" in message


def test_a_birth_date_held_as_a_date_time_is_its_day_in_utc_on_both_paths() -> None:
    """A frame or record holding a date field as a date-time (not the contract's
    type) is read as the day in UTC on both paths, never as midnight."""
    late = dt.datetime(2003, 1, 1, 22, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # 2nd UTC
    ships = pl.DataFrame(
        {"shipment_id": ["late"], "declared_at": [NOON], "consignee_birth_date": [late]}
    )
    items = pl.DataFrame(schema={"shipment_id": pl.String})
    for op, expected in (("eq", "2003-01-02"), ("gt", "2003-01-01"), ("le", "2003-01-02")):
        rule = make(leaf("consignee_birth_date", op, expected))
        assert evaluate(rule, {"consignee_birth_date": late}, [], {}, NOON)
        assert evaluate_frame([rule], rule_frame(ships, items), NOON).height == 1
        assert set(shipment_hits([rule], ships, items)) == {"late"}


# --------------------------------------------------------------------------- age


AGE_SHIPS: list[dict[str, Any]] = [
    # 18 years old on 27 November 2026 (UTC): from midnight UTC, not before
    {
        "shipment_id": "turns18",
        "declared_at": dt.datetime(2026, 11, 27, 0, 0, tzinfo=U),
        "declarant_birth_date": dt.date(2008, 11, 27),
    },
    {
        "shipment_id": "eve18",
        "declared_at": dt.datetime(2026, 11, 26, 23, 59, 59, tzinfo=U),
        "declarant_birth_date": dt.date(2008, 11, 27),
    },
    # 02:00 in Almaty (UTC+5) on the 27th is still the 26th in UTC: 17
    {
        "shipment_id": "almaty",
        "declared_at": dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        "declarant_birth_date": dt.date(2008, 11, 27),
    },
    # born on 29 February: a year older on 1 March of a common year, on 29 February
    # of a leap year
    {
        "shipment_id": "feb28",
        "declared_at": dt.datetime(2026, 2, 28, 12, tzinfo=U),
        "declarant_birth_date": dt.date(2008, 2, 29),
    },
    {
        "shipment_id": "mar01",
        "declared_at": dt.datetime(2026, 3, 1, 12, tzinfo=U),
        "declarant_birth_date": dt.date(2008, 2, 29),
    },
    {
        "shipment_id": "leap",
        "declared_at": dt.datetime(2028, 2, 29, 12, tzinfo=U),
        "declarant_birth_date": dt.date(2008, 2, 29),
    },
    {"shipment_id": "nobirth", "declared_at": NOON, "declarant_birth_date": None},
    {
        "shipment_id": "old",
        "declared_at": NOON,
        "declarant_birth_date": dt.date(1950, 12, 31),
    },
]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 18, {"turns18", "mar01"}),
        ("eq", 17, {"eve18", "almaty", "feb28"}),
        ("eq", 20, {"leap"}),
        ("lt", 18, {"eve18", "almaty", "feb28"}),
        ("ge", 18, {"turns18", "mar01", "leap", "old"}),
        ("between", [18, 20], {"turns18", "mar01", "leap"}),
        ("in", [20, 75], {"leap", "old"}),
        ("ne", 17, {"turns18", "mar01", "leap", "old"}),  # no birth date: no age, no match
        ("gt", 17.5, {"turns18", "mar01", "leap", "old"}),
        ("is_null", None, {"nobirth"}),
    ],
)
def test_age_in_whole_years_on_the_declared_day(op: str, value: Any, expected: set[str]) -> None:
    node = leaf("declarant_age", op, value, no_value=op == "is_null")
    assert _paths(make(node), AGE_SHIPS) == expected


def test_age_needs_the_birth_date_column_on_both_paths() -> None:
    rule = make(leaf("consignor_age", "lt", 21))
    ships = pl.DataFrame({"shipment_id": ["a"], "declared_at": [NOON]})
    items = pl.DataFrame(schema={"shipment_id": pl.String})
    with pytest.raises(KeyError, match="consignor_birth_date"):
        shipment_hits([rule], ships, items)
    with pytest.raises(KeyError, match="consignor_birth_date"):
        evaluate_frame([rule], rule_frame(ships, items))


def test_an_age_takes_a_number() -> None:
    [(where, message)] = errors_of(leaf("consignee_age", "lt", "18"))
    assert where == "condition.value" and "consignee_age is a number" in message


# --------------------------------------------------------------------------- over HTTP


def test_a_birth_date_rule_is_saved_and_hits_over_http(world_api: Api, samples: Samples) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    young = {
        "id": "t-young",
        "name": "young consignee",
        "severity": "low",
        "condition": {"field": "consignee_birth_date", "op": "gt", "value": "2003-01-01"},
    }
    r = api.client.post(f"{API}/rules", json=young, headers=analyst)
    assert r.status_code == 201, r.text
    under21 = {
        "id": "t-under21",
        "name": "consignee under 21 on the declared day",
        "severity": "low",
        "condition": {"field": "consignee_age", "op": "lt", "value": 21},
    }
    r = api.client.post(f"{API}/rules", json=under21, headers=analyst)
    assert r.status_code == 201, r.text
    timed = {
        **young,
        "id": "t-timed",
        "condition": {**young["condition"], "value": "2003-01-01T00:00:00Z"},
    }
    r = api.client.post(f"{API}/rules", json=timed, headers=analyst)
    assert r.status_code == 422, r.text
    [detail] = r.json()["detail"]
    assert detail["loc"] == ["body", "condition", "value"]
    assert "consignee_birth_date is a date" in detail["msg"]

    # declared on 3 March 2025 (conftest's DAY): born 2005-06-01 is 19, 2003-01-01
    # not after the date but 22, 1970 neither; no birth date never matches
    born = {"UAD-1": "2005-06-01", "UAD-2": "2003-01-01", "UAD-3": "1970-01-01", "UAD-4": None}
    hits = {}
    for n, (sid, day) in enumerate(born.items()):
        record = payload(samples, n, sid)
        record["consignee_birth_date"] = day
        r = api.client.post(f"{API}/shipments", json=record, headers=analyst)
        assert r.status_code == 201, r.text
        hits[sid] = {h["rule_id"] for h in r.json()["rule_hits"]} & {"t-young", "t-under21"}
    assert hits == {
        "UAD-1": {"t-young", "t-under21"},
        "UAD-2": set(),
        "UAD-3": set(),
        "UAD-4": set(),
    }
