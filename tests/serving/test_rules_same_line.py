"""Rules on one and the same goods line (analyst finding A12).

Outside `line`, each `item.` leaf means "any line" on its own (unchanged: stored rule
versions evaluate as before); `line: <condition>` holds when one goods line satisfies
the whole condition, with `not` negating for that line. Checked when saved (errors
point at the faulty part), evaluated alike on the single-shipment path (Python) and
the batch path (Polars), kept through YAML export and import; the shipped example
profile `arms-terms-under-other-chapter` now catches a misdeclared line beside a
declared arms line."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest
import yaml

from serving.auth import Role
from serving.rules_engine import (
    SMALL_BATCH,
    Rule,
    dump_rules_yaml,
    evaluate,
    evaluate_frame,
    load_rules_yaml,
    rule_frame,
    shipment_hits,
)
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_rules_engine import (
    AT,
    EXAMPLES,
    FEAT_SCHEMA,
    ITEM_SCHEMA,
    LEAVES,
    SHIP_SCHEMA,
    errors_of,
    leaf,
    make,
    random_world,
)

API = "/api/v1"

ARMS_WORDS = "(?i)(pistol|rifle|carbine|receiver|silencer|magazine|cartridge|затвор)"
WEAPON_LINE_OUTSIDE_93 = {
    "line": {
        "all": [
            leaf("item.description", "matches", ARMS_WORDS),
            {"not": leaf("item.hs_code", "starts_with", "93")},
        ]
    }
}
BRAKE_PADS_AND_BREECH_SAME_LINE = {
    "line": {
        "all": [
            leaf("item.hs_code", "starts_with", "8708"),
            leaf("item.description", "contains", "затвор"),
        ]
    }
}
# The finding's shipments: UAN-IT-01 hides a rifle-scope line beside a declared arms
# line, UAN-IT-02 has the rifle-scope line alone, UAN-IT-03 declares brake pads and
# a breech correctly (chapter 93), on two different lines.
LINES: dict[str, list[tuple[str, str]]] = {
    "IT-01": [("930529", "pistol grips, polymer"), ("901320", "rifle scopes 4x32")],
    "IT-02": [("901320", "rifle scopes 4x32")],
    "IT-03": [("870830", "brake pads for trucks"), ("930591", "затвор для охотничьего ружья")],
    "ARMS-ONLY": [("930529", "pistol grips, polymer")],
    "HIDDEN-BREECH": [("870830", "brake pads"), ("870899", "затвор, запасная часть")],
    "NO-LINES": [],
}


def _world(
    lines: dict[str, list[tuple[str, str]]],
) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]:
    ships = [{"shipment_id": sid, "declared_at": AT} for sid in lines]
    items = [
        {"shipment_id": sid, "line_no": n + 1, "hs_code": hs, "description": text}
        for sid, rows in lines.items()
        for n, (hs, text) in enumerate(rows)
    ]
    item_df = pl.DataFrame(
        items,
        schema={
            "shipment_id": pl.String,
            "line_no": pl.Int64,
            "hs_code": pl.String,
            "description": pl.String,
        },
    )
    ship_df = pl.DataFrame(
        ships, schema={"shipment_id": pl.String, "declared_at": pl.Datetime("us", "UTC")}
    )
    return ship_df, item_df, items


def _hit(rule: Rule, lines: dict[str, list[tuple[str, str]]] = LINES) -> set[str]:
    """The shipments `rule` hits, checked equal on every path: one by one in Python
    (`evaluate`), a few shipments through `shipment_hits` (Python), the batch frame
    (`evaluate_frame`), and `shipment_hits` over more than SMALL_BATCH (Polars)."""
    ship_df, item_df, items = _world(lines)
    one = {
        sid
        for sid in lines
        if evaluate(
            rule, {"declared_at": AT}, [i for i in items if i["shipment_id"] == sid], {}, AT
        )
    }
    few = set(shipment_hits([rule], ship_df, item_df))
    batch = set(evaluate_frame([rule], rule_frame(ship_df, item_df), AT)["shipment_id"])
    copies = SMALL_BATCH // len(lines) + 1
    many_lines = {f"{sid}#{k}": rows for k in range(copies) for sid, rows in lines.items()}
    many_ships, many_items, _ = _world(many_lines)
    assert many_ships.height > SMALL_BATCH
    many = {sid.split("#")[0] for sid in shipment_hits([rule], many_ships, many_items)}
    assert one == few == batch == many
    return one


def _example(rule_id: str) -> Rule:
    return next(r for r in load_rules_yaml(EXAMPLES.read_text("utf-8")) if r.id == rule_id)


# --------------------------------------------------------------------------- meaning


def test_a_line_with_weapon_words_outside_chapter_93_beside_a_declared_arms_line() -> None:
    assert _hit(make(WEAPON_LINE_OUTSIDE_93)) == {"IT-01", "IT-02", "HIDDEN-BREECH"}
    # the same leaves without `line` keep their meaning: "some line has weapon words"
    # and "no line is in chapter 93" (what the shipped profile did, missing IT-01)
    loose = make({"all": WEAPON_LINE_OUTSIDE_93["line"]["all"]})
    assert _hit(loose) == {"IT-02", "HIDDEN-BREECH"}


def test_the_shipped_profile_means_the_same_line() -> None:
    profile = _example("arms-terms-under-other-chapter")
    assert "line" in profile.condition
    assert _hit(profile) == {"IT-01", "IT-02"}  # its words do not include "затвор"


def test_the_shipped_generic_parts_profile_can_hit() -> None:
    """It replaced a profile of descriptions that are only "parts" or "gift", which
    intake refuses: it could never hit (found in review)."""
    profile = _example("generic-parts-where-arms-parts-hide")
    lines = {
        "GUN-PARTS": [("930599", "spare parts for hunting guns, assorted")],
        "TOOL-PARTS": [("846693", "parts and accessories for machine tools")],
        "RU-PARTS": [("848790", "запчасти для станков")],
        "CAR-PARTS": [("870899", "spare parts for trucks")],  # (another heading)
        "GRIPS": [("930529", "pistol grips, polymer")],  # (no generic word)
        "SPLIT": [("930529", "pistol grips"), ("870899", "spare parts for trucks")],
    }
    assert _hit(profile, lines) == {"GUN-PARTS", "TOOL-PARTS", "RU-PARTS"}


def test_conditions_on_the_same_line_do_not_fire_across_two_lines() -> None:
    assert _hit(make(BRAKE_PADS_AND_BREECH_SAME_LINE)) == {"HIDDEN-BREECH"}
    # unchanged outside `line`: any line each (documented), so IT-03 still hits
    across = make({"all": BRAKE_PADS_AND_BREECH_SAME_LINE["line"]["all"]})
    assert _hit(across) == {"IT-03", "HIDDEN-BREECH"}


def test_not_inside_line_negates_for_that_line_and_outside_for_every_line() -> None:
    in_93 = leaf("item.hs_code", "starts_with", "93")
    some_line_outside_93 = make({"line": {"not": in_93}})
    assert _hit(some_line_outside_93) == {"IT-01", "IT-02", "IT-03", "HIDDEN-BREECH"}
    no_line_in_93 = make({"not": {"line": in_93}})
    assert _hit(no_line_in_93) == {"IT-02", "HIDDEN-BREECH", "NO-LINES"}
    assert _hit(make({"not": in_93})) == {"IT-02", "HIDDEN-BREECH", "NO-LINES"}


def test_line_with_shipment_fields_beside_it() -> None:
    rule = make(
        {
            "all": [
                {"line": leaf("item.hs_code", "starts_with", "9013")},
                leaf("declared_at", "ge", "2025-06-01"),
            ]
        }
    )
    assert _hit(rule) == {"IT-01", "IT-02"}


def test_inside_line_a_missing_value_matches_only_is_null() -> None:
    """Inside `line` an `item.` field is that line's single value: as on any
    single-valued field, a missing value makes every operator false but is_null."""
    ships = pl.DataFrame(
        {"shipment_id": ["a", "b", "c"], "declared_at": [AT] * 3},
        schema={"shipment_id": pl.String, "declared_at": pl.Datetime("us", "UTC")},
    )
    items = pl.DataFrame(
        {
            "shipment_id": ["a", "a", "b"],
            "line_no": [1, 2, 1],
            "value": [None, 5.0, float("nan")],
            "origin_country": ["TR", None, "CN"],
        },
        schema={
            "shipment_id": pl.String,
            "line_no": pl.Int64,
            "value": pl.Float64,
            "origin_country": pl.String,
        },
    )
    dicts = items.to_dicts()

    def hit(condition: dict[str, Any]) -> set[str]:
        rule = make(condition)
        one = {
            sid
            for sid in ("a", "b", "c")
            if evaluate(rule, {}, [d for d in dicts if d["shipment_id"] == sid], {}, AT)
        }
        batch = set(evaluate_frame([rule], rule_frame(ships, items), AT)["shipment_id"])
        assert one == batch == set(shipment_hits([rule], ships, items))
        return one

    value_null = leaf("item.value", "is_null", no_value=True)
    assert hit({"line": value_null}) == {"a", "b"}  # NaN counts as missing
    assert hit({"line": leaf("item.value", "ne", 5)}) == set()
    # a line with no value and an origin other than CN: line 1 of "a"
    assert hit({"line": {"all": [value_null, leaf("item.origin_country", "ne", "CN")]}}) == {"a"}
    assert hit({"line": {"all": [value_null, leaf("item.origin_country", "eq", "TR")]}}) == {"a"}
    assert (
        hit(
            {
                "line": {
                    "all": [leaf("item.value", "gt", 1), leaf("item.origin_country", "eq", "TR")]
                }
            }
        )
        == set()
    )
    assert hit({"not": {"line": value_null}}) == {"c"}  # no line at all: no line matches


# --------------------------------------------------------------------------- both paths


LINE_LEAVES = [node for node in LEAVES if str(node.get("field", "")).startswith("item.")]


def _random_line_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 2 or roll < 0.4:
        return rng.choice(LINE_LEAVES)
    if roll < 0.6:
        return {"not": _random_line_condition(rng, depth + 1)}
    kids = [_random_line_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {"all" if roll < 0.85 else "any": kids}


def _random_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 2 or roll < 0.3:
        return rng.choice(LEAVES)
    if roll < 0.55:
        return {"line": _random_line_condition(rng)}
    if roll < 0.65:
        return {"not": _random_condition(rng, depth + 1)}
    kids = [_random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {"all" if roll < 0.85 else "any": kids}


@pytest.mark.parametrize("seed", [11, 12])
def test_random_line_rules_agree_on_both_paths(seed: int) -> None:
    rng = random.Random(seed)
    ships, items, feats = random_world(rng, 150)
    rules = [make(_random_condition(rng), id=f"r{v % 5}", version=v + 1) for v in range(40)]
    assert sum("line" in str(r.condition) for r in rules) >= 10
    ship_df = pl.DataFrame(ships, schema=SHIP_SCHEMA)
    item_df = pl.DataFrame(items, schema=ITEM_SCHEMA)
    feat_df = pl.DataFrame(feats, schema=FEAT_SCHEMA)
    by_ship: dict[str, list[dict[str, Any]]] = {s["shipment_id"]: [] for s in ships}
    for it in items:
        by_ship[it["shipment_id"]].append(it)
    feat_of = {f["shipment_id"]: f for f in feats}
    expected = {
        (s["shipment_id"], r.id, r.version)
        for r in rules
        for s in ships
        if evaluate(r, s, by_ship[s["shipment_id"]], feat_of[s["shipment_id"]], AT)
    }
    table = evaluate_frame(rules, rule_frame(ship_df, item_df, feat_df), AT)
    assert set(table.select("shipment_id", "rule_id", "rule_version").iter_rows()) == expected
    assert 0 < len(expected) < len(rules) * len(ships)
    batch = shipment_hits(rules, ship_df, item_df, feat_df)  # > SMALL_BATCH: Polars
    few: dict[str, Any] = {}
    for i in range(0, ship_df.height, 50):  # <= SMALL_BATCH: Python
        part = ship_df.slice(i, 50)
        ids = part["shipment_id"]
        few.update(
            shipment_hits(
                rules,
                part,
                item_df.filter(pl.col("shipment_id").is_in(ids.implode())),
                feat_df.filter(pl.col("shipment_id").is_in(ids.implode())),
            )
        )
    assert few == batch


# --------------------------------------------------------------------------- checking


def test_only_goods_line_fields_inside_line_each_error_at_its_place() -> None:
    errors = errors_of(
        {
            "all": [
                {
                    "line": {
                        "all": [
                            leaf("item.hs_code", "starts_with", "93"),
                            leaf("origin_country", "eq", "TR"),
                            {"not": leaf("consignee_shipments_365d", "lt", 3)},
                        ]
                    }
                },
                {"line": {"any": [{"line": leaf("item.hs_code", "starts_with", "93")}]}},
                {"line": [leaf("item.hs_code", "starts_with", "93")]},
                {"line": leaf("hs_code", "starts_with", "93")},
                {"line": leaf("item.hs_code", "starts_with", "9.3")},
            ]
        }
    )
    by_path = dict(errors)
    assert set(by_path) == {
        "condition.all[0].line.all[1].field",
        "condition.all[0].line.all[2].not.field",
        "condition.all[1].line.any[0].line",
        "condition.all[2].line",
        "condition.all[3].line.field",
        "condition.all[4].line.value",
    }
    assert "only goods-line fields" in by_path["condition.all[0].line.all[1].field"]
    assert "'origin_country' is a shipment field" in by_path["condition.all[0].line.all[1].field"]
    assert "is a feature" in by_path["condition.all[0].line.all[2].not.field"]
    assert "cannot be nested" in by_path["condition.all[1].line.any[0].line"]
    assert "got a list" in by_path["condition.all[2].line"]
    assert "did you mean 'item.hs_code'?" in by_path["condition.all[3].line.field"]
    assert "1 to 10 digits" in by_path["condition.all[4].line.value"]


def test_line_counts_towards_the_size_and_stands_alone() -> None:
    one_line = {"line": leaf("item.hs_code", "starts_with", "93")}  # two conditions
    make({"all": [one_line] * 99})  # 1 + 99 * 2 = 199 conditions: accepted
    [(path, message)] = errors_of({"all": [one_line] * 100})  # 201
    assert path == "condition"
    assert "more than 200 conditions" in message and "all/any/not/line" in message
    [(path, message)] = errors_of({**one_line, "any": [leaf("mode", "eq", "road")]})
    assert path == "condition" and "stand alone" in message


def test_line_rules_round_trip_through_yaml() -> None:
    rules = [make(WEAPON_LINE_OUTSIDE_93), make(BRAKE_PADS_AND_BREECH_SAME_LINE, id="brakes")]
    text = dump_rules_yaml(rules)
    assert yaml.safe_load(text)["rules"][0]["condition"]["line"]["all"][1]["not"]
    assert load_rules_yaml(text) == rules
    written = """rules:
  - id: scopes-outside-93
    name: scopes
    severity: high
    condition:
      line:
        all:
          - {field: item.description, op: contains, value: scope}
          - not: {field: item.hs_code, op: starts_with, value: "93"}
"""
    [rule] = load_rules_yaml(written)
    assert _hit(rule) == {"IT-01", "IT-02"}


# --------------------------------------------------------------------------- over HTTP


def _shipment(samples: Samples, i: int, sid: str, lines: list[tuple[str, str]]) -> dict[str, Any]:
    record = payload(samples, i, sid)
    template = record["items"][0]
    record["items"] = [
        {
            **template,
            "line_no": n + 1,
            "item_id": f"{sid}-{n + 1}",
            "hs_code": hs,
            "description": text,
        }
        for n, (hs, text) in enumerate(lines)
    ]
    return record


def test_a_line_rule_saved_over_http_hits_the_findings_shipments(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    rule = {
        "id": "scopes-outside-93",
        "name": "Weapon words on a line declared outside chapter 93",
        "severity": "high",
        "condition": WEAPON_LINE_OUTSIDE_93,
    }
    r = api.client.post(f"{API}/rules", json=rule, headers=analyst)
    assert r.status_code == 201, r.text
    assert r.json()["condition"] == WEAPON_LINE_OUTSIDE_93

    bad = {**rule, "id": "mixed", "condition": {"line": leaf("origin_country", "eq", "TR")}}
    r = api.client.post(f"{API}/rules", json=bad, headers=analyst)
    assert r.status_code == 422, r.text
    [detail] = r.json()["detail"]
    assert detail["loc"] == ["body", "condition", "line", "field"]
    assert "only goods-line fields" in detail["msg"]

    records = [
        _shipment(samples, n, f"UAN-{name}", LINES[name])
        for n, name in enumerate(("IT-01", "IT-02", "IT-03", "ARMS-ONLY"))
    ]
    hits = {}
    for record in records:  # one by one: the API's single-shipment path
        r = api.client.post(f"{API}/shipments", json=record, headers=analyst)
        assert r.status_code == 201, r.text
        hits[record["shipment_id"]] = {h["rule_id"] for h in r.json()["rule_hits"]}
    assert {sid for sid, found in hits.items() if "scopes-outside-93" in found} == {
        "UAN-IT-01",
        "UAN-IT-02",
    }

    # kept through export and import (a re-import changes nothing)
    exported = api.client.get(f"{API}/rules/export", headers=analyst)
    assert exported.status_code == 200
    mine = [x for x in yaml.safe_load(exported.text)["rules"] if x["id"] == "scopes-outside-93"]
    assert mine and mine[0]["condition"] == WEAPON_LINE_OUTSIDE_93
    r = api.client.post(
        f"{API}/rules/import",
        content=exported.text.encode(),
        headers={**analyst, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == [] and "scopes-outside-93" in r.json()["unchanged"]
