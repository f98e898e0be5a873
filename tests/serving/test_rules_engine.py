"""Rules engine: checking with paths, evaluation one by one and in batch, YAML, performance."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from serving.rules_engine import (
    Rule,
    RuleValidationError,
    dump_rules_yaml,
    evaluate,
    evaluate_frame,
    field_catalog,
    hits,
    load_rules_yaml,
    parse_rule,
    regex_problem,
    rule_frame,
    rule_performance,
    shipment_hits,
)

AT = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "serving" / "reference" / "example_rules.yaml"

ANALYST_CONDITION: dict[str, Any] = {
    "all": [
        {"field": "item.hs_code", "op": "starts_with", "value": "9305"},
        {"field": "origin_country", "op": "in", "value": ["TR", "AE"]},
        {"field": "consignee_shipments_365d", "op": "lt", "value": 3},
    ]
}


def make(condition: Any, **extra: Any) -> Rule:
    data = {
        "id": "test-rule",
        "version": 1,
        "name": "test",
        "severity": "high",
        "author": "analyst",
        "condition": condition,
        **extra,
    }
    return parse_rule(data)


def errors_of(condition: Any, **extra: Any) -> list[tuple[str, str]]:
    with pytest.raises(RuleValidationError) as info:
        make(condition, **extra)
    return [(e.path, e.message) for e in info.value.errors]


def leaf(field: str, op: str, value: Any = None, *, no_value: bool = False) -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "op": op}
    if not no_value:
        node["value"] = value
    return node


# --------------------------------------------------------------------------- the analyst's rule


class TestAnalystExample:
    rule = make(ANALYST_CONDITION)

    def test_hits_when_all_three_hold(self) -> None:
        ship = {"origin_country": "TR"}
        items = [{"hs_code": "870899"}, {"hs_code": "930599"}]  # second line matches
        assert evaluate(self.rule, ship, items, {"consignee_shipments_365d": 2}, AT)

    @pytest.mark.parametrize(
        ("origin", "lines", "seen"),
        [
            ("KZ", ["930510"], 0),  # origin not in the list
            ("TR", ["930310"], 0),  # rifles, not parts
            ("AE", ["930510"], 3),  # consignee seen 3 times: not fewer than 3
            ("AE", [], 0),  # no goods line
            (None, ["930510"], 0),  # origin missing
            ("TR", ["930510"], None),  # feature missing
        ],
    )
    def test_misses(self, origin: str | None, lines: list[str], seen: int | None) -> None:
        items = [{"hs_code": h} for h in lines]
        feats = {"consignee_shipments_365d": seen}
        assert not evaluate(self.rule, {"origin_country": origin}, items, feats, AT)

    def test_bare_hs_code_points_to_item_field(self) -> None:
        cond = {"all": [leaf("hs_code", "starts_with", "9305")]}
        [(path, message)] = errors_of(cond)
        assert path == "condition.all[0].field"
        assert "unknown field 'hs_code'" in message and "item.hs_code" in message


# --------------------------------------------------------------------------- checking


class TestChecking:
    def test_unknown_field(self) -> None:
        assert errors_of(leaf("colour", "eq", "red")) == [
            ("condition.field", "unknown field 'colour'")
        ]

    def test_dunder_field_is_rejected(self) -> None:
        [(path, message)] = errors_of({"any": [leaf("__class__", "eq", "x")]})
        assert path == "condition.any[0].field"
        assert "not a valid field name" in message

    def test_op_not_for_type(self) -> None:
        [(path, message)] = errors_of({"all": [leaf("origin_country", "lt", "TR")]})
        assert path == "condition.all[0].op"
        assert "'lt' does not apply to origin_country" in message

    def test_unknown_op(self) -> None:
        [(path, message)] = errors_of(leaf("gross_mass_kg", "approx", 3))
        assert path == "condition.op" and "unknown operator 'approx'" in message

    def test_wrong_value_type_points_at_value(self) -> None:
        cond = {
            "all": [
                leaf("item.hs_code", "starts_with", "93"),
                leaf("origin_country", "in", ["TR"]),
                leaf("consignee_shipments_365d", "lt", "three"),
            ]
        }
        [(path, message)] = errors_of(cond)
        assert path == "condition.all[2].value"
        assert "expected a number, got a string" in message

    def test_number_for_text_field_suggests_quoting(self) -> None:
        [(path, message)] = errors_of(leaf("item.hs_code", "eq", 930510))
        assert path == "condition.value" and "quote it" in message

    def test_bad_list_element_path(self) -> None:
        [(path, message)] = errors_of(leaf("mode", "in", ["road", "truck"]))
        assert path == "condition.value[1]"
        assert "'truck' is not a valid mode" in message

    def test_bad_categorical_label(self) -> None:
        [(path, _)] = errors_of(leaf("origin_country_code", "eq", "XX"))
        assert path == "condition.value"

    def test_bad_regex(self) -> None:
        [(path, message)] = errors_of({"not": leaf("item.description", "matches", "([a-z")})
        assert path == "condition.not.value" and "invalid regular expression" in message

    def test_empty_all_and_any(self) -> None:
        assert errors_of({"all": []}) == [("condition.all", "'all' needs at least one condition")]
        [(path, _)] = errors_of({"all": [{"any": []}]})
        assert path == "condition.all[0].any"

    def test_several_errors_reported_together(self) -> None:
        cond = {"any": [leaf("nope", "eq", 1), leaf("gross_mass_kg", "between", [5, 1])]}
        found = errors_of(cond)
        assert [p for p, _ in found] == ["condition.any[0].field", "condition.any[1].value"]
        assert "low value 5 is above the high value 1" in found[1][1]

    def test_effective_to_before_from(self) -> None:
        found = errors_of(
            leaf("gross_mass_kg", "gt", 1),
            effective_from=dt.date(2025, 5, 1),
            effective_to=dt.date(2025, 4, 1),
        )
        assert found[0][0] == "effective_to" and "before effective_from" in found[0][1]

    def test_unknown_key_in_leaf_and_rule(self) -> None:
        [(path, _)] = errors_of({"all": [{"field": "mode", "op": "eq", "value": "air", "x": 1}]})
        assert path == "condition.all[0].x"
        with pytest.raises(RuleValidationError) as info:
            make(leaf("mode", "eq", "air"), colour="red")
        assert info.value.errors[0].path == "colour"

    def test_is_null_takes_no_value_and_others_need_one(self) -> None:
        [(path, _)] = errors_of(leaf("carrier_name", "is_null", True))
        assert path == "condition.value"
        [(path, message)] = errors_of(leaf("carrier_name", "eq", None, no_value=True))
        assert path == "condition" and "needs a 'value'" in message

    def test_combinator_mixed_with_leaf_keys(self) -> None:
        [(path, message)] = errors_of({"all": [leaf("mode", "eq", "air")], "field": "mode"})
        assert path == "condition" and "stand alone" in message

    def test_bad_id_severity_and_version(self) -> None:
        with pytest.raises(RuleValidationError) as info:
            parse_rule(
                {
                    "id": "Bad Id!",
                    "version": 0,
                    "name": "x",
                    "severity": "critical",
                    "author": "a",
                    "condition": {"all": []},
                }
            )
        paths = {e.path for e in info.value.errors}
        assert {"id", "version", "severity", "condition.all"} <= paths

    def test_rule_is_immutable(self) -> None:
        rule = make(leaf("mode", "eq", "air"))
        with pytest.raises(Exception, match="frozen"):
            rule.version = 2  # type: ignore[misc]

    def test_catalog_has_the_three_sources(self) -> None:
        cat = field_catalog()
        assert cat["origin_country"].source == "shipment"
        assert cat["item.hs_code"].multi and cat["transit_countries"].multi
        assert cat["consignee_shipments_365d"].source == "feature"
        assert cat["mode"].source == "shipment"  # shipment column wins over the feature


class TestRegexSafety:
    @pytest.mark.parametrize(
        ("pattern", "fragment"),
        [
            ("(a+)+$", "nested repetition"),
            ("(\\w+\\s?)*x", "nested repetition"),
            ("(ab|a)*c", "alternation"),
            ("(a)\\1", "back-references"),
            ("(?<=x)gun", "look-ahead and look-behind"),
            ("a*b*c*d*", "at most 3"),
            ("x" * 201, "limit is 200"),
        ],
    )
    def test_refused(self, pattern: str, fragment: str) -> None:
        problem = regex_problem(pattern)
        assert problem is not None and fragment in problem

    @pytest.mark.parametrize(
        "pattern", ["(?i)pistol.*grip", "^(spare )?parts?$", "\\b(ak|akm)-?\\d+", "патрон"]
    )
    def test_accepted(self, pattern: str) -> None:
        assert regex_problem(pattern) is None

    def test_match_uses_first_512_characters_in_both_paths(self) -> None:
        rule = make(leaf("item.description", "matches", "gun$"))
        long_text = "x" * 600 + "gun"
        short_text = "x" * 509 + "gun"
        for text, expected in ((long_text, False), (short_text, True)):
            assert evaluate(rule, {}, [{"description": text}], {}, AT) is expected
            ships = pl.DataFrame({"shipment_id": ["s"], "declared_at": [AT]})
            items = pl.DataFrame({"shipment_id": ["s"], "description": [text]})
            assert evaluate_frame([rule], rule_frame(ships, items), AT).height == int(expected)


class TestNoEval:
    def test_code_in_a_value_is_just_a_string(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins

        calls: list[str] = []
        real_import = builtins.__import__

        def spy(name: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real_import(name, *args, **kwargs)

        rule = make(
            {
                "any": [
                    leaf("consignee_name", "eq", "__import__('os').system('touch /tmp/pwned')"),
                    leaf("item.description", "contains", "{{ 7*7 }}"),
                ]
            }
        )
        monkeypatch.setattr(builtins, "__import__", spy)
        code = "__import__('os').system('touch /tmp/pwned')"
        assert evaluate(rule, {"consignee_name": code}, [], {}, AT)
        assert not evaluate(rule, {"consignee_name": "ACME"}, [{"description": "49"}], {}, AT)
        assert "os" not in calls

    def test_yaml_python_tags_are_refused(self) -> None:
        text = (
            "- id: x1\n  version: 1\n  name: x\n  severity: low\n  author: a\n"
            "  condition: !!python/object/apply:os.system ['echo hi']\n"
        )
        with pytest.raises(RuleValidationError) as info:
            load_rules_yaml(text)
        assert info.value.errors[0].path == "yaml"


# --------------------------------------------------------------------------- semantics


class TestSemantics:
    def ev(
        self,
        cond: Any,
        ship: dict[str, Any] | None = None,
        items: list[dict[str, Any]] | None = None,
        feats: dict[str, Any] | None = None,
    ) -> bool:
        return evaluate(make(cond), ship or {}, items or [], feats or {}, AT)

    def test_contains_is_case_insensitive_any_script(self) -> None:
        cond = leaf("item.description", "contains", "ПАТРОН")
        assert self.ev(cond, items=[{"description": "Патроны охотничьи 12 кал."}])
        assert not self.ev(cond, items=[{"description": "болты"}])

    def test_starts_with_list_of_prefixes(self) -> None:
        cond = leaf("item.hs_code", "starts_with", ["9302", "9306"])
        assert self.ev(cond, items=[{"hs_code": "930621"}])
        assert not self.ev(cond, items=[{"hs_code": "930510"}])

    def test_ne_and_not_in_on_lines_mean_no_line(self) -> None:
        ne = leaf("item.origin_country", "ne", "AF")
        assert self.ev(ne, items=[{"origin_country": "KZ"}, {"origin_country": "TR"}])
        assert not self.ev(ne, items=[{"origin_country": "KZ"}, {"origin_country": "AF"}])
        assert self.ev(ne, items=[])
        assert not self.ev(
            leaf("item.origin_country", "not_in", ["AF", "PK"]), items=[{"origin_country": "PK"}]
        )

    def test_missing_scalar_is_false_except_is_null(self) -> None:
        assert not self.ev(leaf("carrier_name", "ne", "X"), ship={"carrier_name": None})
        assert not self.ev(leaf("carrier_name", "not_in", ["X"]), ship={})
        assert self.ev(leaf("carrier_name", "is_null", no_value=True), ship={})
        assert self.ev({"not": leaf("carrier_name", "eq", "X")}, ship={})

    def test_nan_feature_is_missing(self) -> None:
        assert self.ev(
            leaf("lead_time_hours", "is_null", no_value=True),
            feats={"lead_time_hours": float("nan")},
        )
        assert not self.ev(
            leaf("lead_time_hours", "gt", -1), feats={"lead_time_hours": float("nan")}
        )

    def test_between_inclusive(self) -> None:
        cond = leaf("gross_mass_kg", "between", [10, 20])
        assert [self.ev(cond, ship={"gross_mass_kg": m}) for m in (9.99, 10, 20, 20.01)] == [
            False,
            True,
            True,
            False,
        ]

    def test_transit_list_any_element(self) -> None:
        cond = leaf("transit_countries", "in", ["AF"])
        assert self.ev(cond, ship={"transit_countries": ["UZ", "AF"]})
        assert not self.ev(cond, ship={"transit_countries": []})
        assert self.ev(
            leaf("transit_countries", "is_null", no_value=True), ship={"transit_countries": []}
        )

    def test_categorical_feature_by_label(self) -> None:
        labels = field_catalog()["origin_country_code"].values
        code_af = labels.index("AF") + 1
        cond = leaf("origin_country_code", "eq", "AF")
        assert self.ev(cond, feats={"origin_country_code": code_af})
        assert not self.ev(cond, feats={"origin_country_code": code_af + 1})

    def test_flag_accepts_true(self) -> None:
        assert self.ev(leaf("consignee_is_new", "eq", True), feats={"consignee_is_new": 1})

    def test_datetime_field(self) -> None:
        cond = leaf("declared_at", "lt", "2025-06-01T13:00:00+00:00")
        assert self.ev(cond, ship={"declared_at": AT})
        naive = dt.datetime(2025, 6, 1, 14)
        assert not self.ev(cond, ship={"declared_at": naive})  # naive read as UTC

    def test_effective_dates_inclusive(self) -> None:
        rule = make(
            leaf("gross_mass_kg", "gt", 0),
            effective_from=dt.date(2025, 6, 1),
            effective_to=dt.date(2025, 6, 30),
        )
        ship = {"gross_mass_kg": 5.0}
        at_days = [
            dt.datetime(2025, 5, 31, 23, 59, tzinfo=dt.UTC),
            AT,
            dt.datetime(2025, 6, 30, 23, 0, tzinfo=dt.UTC),
            dt.datetime(2025, 7, 1, tzinfo=dt.UTC),
        ]
        assert [evaluate(rule, ship, [], {}, at) for at in at_days] == [False, True, True, False]
        # 2025-07-01 01:00 in Almaty (UTC+5) is 2025-06-30 in UTC: still in force
        almaty = dt.timezone(dt.timedelta(hours=5))
        assert evaluate(rule, ship, [], {}, dt.datetime(2025, 7, 1, 1, tzinfo=almaty))

    def test_hits_records_version(self) -> None:
        rule = make(leaf("gross_mass_kg", "gt", 0), version=4)
        assert [
            (h.rule_id, h.rule_version, h.severity)
            for h in hits([rule], {"gross_mass_kg": 1.0}, [], {}, AT)
        ] == [("test-rule", 4, "high")]


# --------------------------------------------------------------------------- batch = one by one

COUNTRIES = ["TR", "AE", "KZ", "AF", "CN", None]
HS = ["930510", "930621", "930200", "847990", "870899", "610910", None]
DESCRIPTIONS = ["Spare parts", "parts", "Патроны 7.62", "Pistol grip", "T-shirts", "gift", None]
LEAVES: list[dict[str, Any]] = [
    leaf("item.hs_code", "starts_with", "9305"),
    leaf("item.hs_code", "starts_with", ["93", "8479"]),
    leaf("item.hs_code", "eq", "930621"),
    leaf("item.hs_code", "ne", "930510"),
    leaf("item.hs_code", "is_null", no_value=True),
    leaf("item.description", "contains", "PART"),
    leaf("item.description", "matches", "(?i)^(spare )?parts?$"),
    leaf("item.description", "matches", "атрон"),
    leaf("item.origin_country", "not_in", ["AF", "CN"]),
    leaf("item.value", "gt", 500),
    leaf("item.value", "between", [100, 1000]),
    leaf("origin_country", "in", ["TR", "AE"]),
    leaf("origin_country", "ne", "KZ"),
    leaf("origin_country", "not_in", ["AF"]),
    leaf("origin_country", "is_null", no_value=True),
    leaf("mode", "eq", "post"),
    leaf("transit_countries", "in", ["AF"]),
    leaf("transit_countries", "ne", "KZ"),
    leaf("transit_countries", "is_null", no_value=True),
    leaf("gross_mass_kg", "le", 50),
    leaf("gross_mass_kg", "in", [10, 20.5]),
    leaf("package_count", "ge", 3),
    leaf("declared_at", "gt", "2025-06-01"),
    leaf("consignee_shipments_365d", "lt", 3),
    leaf("consignee_shipments_365d", "eq", 0),
    leaf("consignee_shipments_365d", "is_null", no_value=True),
    leaf("consignee_is_new", "eq", 1),
    leaf("origin_country_code", "in", ["AF", "TR"]),
]


def random_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 3 or roll < 0.4:
        return rng.choice(LEAVES)
    if roll < 0.55:
        return {"not": random_condition(rng, depth + 1)}
    kids = [random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {"all" if roll < 0.8 else "any": kids}


def random_world(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], ...]:
    labels = field_catalog()["origin_country_code"].values
    ships, items, feats = [], [], []
    for i in range(n):
        sid = f"s{i:04d}"
        ships.append(
            {
                "shipment_id": sid,
                "declared_at": AT + dt.timedelta(hours=rng.randint(-48, 48)),
                "origin_country": rng.choice(COUNTRIES),
                "mode": rng.choice(["road", "rail", "post", "air"]),
                "transit_countries": rng.choice([None, [], ["KZ"], ["UZ", "AF"], ["AF", "KZ"]]),
                "gross_mass_kg": rng.choice([None, 10.0, 20.5, 49.9, 50.0, 300.0]),
                "package_count": rng.choice([None, 1, 3, 7]),
            }
        )
        for line in range(rng.randint(0, 3)):
            items.append(
                {
                    "shipment_id": sid,
                    "line_no": line + 1,
                    "hs_code": rng.choice(HS),
                    "description": rng.choice(DESCRIPTIONS),
                    "origin_country": rng.choice(COUNTRIES),
                    "value": rng.choice([None, 50.0, 100.0, 999.0, 1000.0, 5000.0]),
                }
            )
        feats.append(
            {
                "shipment_id": sid,
                "consignee_shipments_365d": rng.choice([None, float("nan"), 0.0, 2.0, 3.0, 10.0]),
                "consignee_is_new": rng.choice([0.0, 1.0]),
                "origin_country_code": rng.choice(
                    [0, labels.index("AF") + 1, labels.index("TR") + 1]
                ),
            }
        )
    return ships, items, feats


SHIP_SCHEMA: dict[str, Any] = {
    "shipment_id": pl.String,
    "declared_at": pl.Datetime("us", "UTC"),
    "origin_country": pl.String,
    "mode": pl.String,
    "transit_countries": pl.List(pl.String),
    "gross_mass_kg": pl.Float64,
    "package_count": pl.Int64,
}
ITEM_SCHEMA: dict[str, Any] = {
    "shipment_id": pl.String,
    "line_no": pl.Int64,
    "hs_code": pl.String,
    "description": pl.String,
    "origin_country": pl.String,
    "value": pl.Float64,
}
FEAT_SCHEMA: dict[str, Any] = {
    "shipment_id": pl.String,
    "consignee_shipments_365d": pl.Float64,
    "consignee_is_new": pl.Float64,
    "origin_country_code": pl.Int32,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_agrees_with_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    ships, items, feats = random_world(rng, 150)
    rules = [make(random_condition(rng), version=v + 1) for v in range(40)]
    frame = rule_frame(
        pl.DataFrame(ships, schema=SHIP_SCHEMA),
        pl.DataFrame(items, schema=ITEM_SCHEMA),
        pl.DataFrame(feats, schema=FEAT_SCHEMA),
    )
    by_ship: dict[str, list[dict[str, Any]]] = {s["shipment_id"]: [] for s in ships}
    for it in items:
        by_ship[it["shipment_id"]].append(it)
    feat_of = {f["shipment_id"]: f for f in feats}
    expected = {
        (s["shipment_id"], r.version)
        for r in rules
        for s in ships
        if evaluate(r, s, by_ship[s["shipment_id"]], feat_of[s["shipment_id"]], AT)
    }
    got = evaluate_frame(rules, frame, AT)
    assert set(zip(got["shipment_id"], got["rule_version"], strict=True)) == expected
    assert 0 < len(expected) < len(rules) * len(ships)  # the mix is not degenerate


@pytest.mark.parametrize("seed", [4, 5])
def test_one_shipment_in_python_agrees_with_the_batch_frame(seed: int) -> None:
    """The API's single-shipment path (Python) and the batch path (one Polars pass)
    give the same hits, in the same order, each rule applied on each shipment's own
    declared day (effective dates included)."""
    rng = random.Random(seed)
    ships, items, feats = random_world(rng, 150)
    days = [AT.date() + dt.timedelta(days=d) for d in (-2, -1, 0, 1, 2)]
    rules = []
    for v in range(40):
        dates: dict[str, Any] = {}
        if rng.random() < 0.3:
            dates["effective_from"] = rng.choice(days)
        if rng.random() < 0.3:
            dates["effective_to"] = max(rng.choice(days), dates.get("effective_from", days[0]))
        rules.append(make(random_condition(rng), id=f"r{v % 7}", version=v + 1, **dates))
    rng.shuffle(rules)
    ship_df = pl.DataFrame(ships, schema=SHIP_SCHEMA)
    item_df = pl.DataFrame(items, schema=ITEM_SCHEMA)
    feat_df = pl.DataFrame(feats, schema=FEAT_SCHEMA)

    batch = shipment_hits(rules, ship_df, item_df, feat_df)  # 150 > SMALL_BATCH: Polars
    table = evaluate_frame(rules, rule_frame(ship_df, item_df, feat_df))
    expected: dict[str, list[tuple[str, int, str]]] = {}
    for sid, rid, version, severity in table.iter_rows():
        expected.setdefault(sid, []).append((rid, version, severity))
    assert {k: [(h.rule_id, h.rule_version, h.severity) for h in v] for k, v in batch.items()} == (
        expected
    )
    one_by_one: dict[str, Any] = {}
    for i in range(ship_df.height):
        sid = ships[i]["shipment_id"]
        one = shipment_hits(
            rules,
            ship_df.slice(i, 1),
            item_df.filter(pl.col("shipment_id") == sid),
            feat_df.filter(pl.col("shipment_id") == sid),
        )
        one_by_one.update(one)
    assert one_by_one == batch
    assert 0 < sum(len(v) for v in batch.values()) < len(rules) * len(ships)


def test_batch_expressions_follow_the_condition_not_the_version() -> None:
    """Expressions are kept per condition: two rules sharing an id and version (as
    in tests, or a database rebuilt) never get each other's expression."""
    ships = pl.DataFrame(
        {"shipment_id": ["a", "b"], "declared_at": [AT, AT], "gross_mass_kg": [5.0, 50.0]}
    )
    frame = rule_frame(ships, pl.DataFrame(schema={"shipment_id": pl.String}))
    light = make(leaf("gross_mass_kg", "lt", 10))
    heavy = make(leaf("gross_mass_kg", "gt", 10))
    for _ in range(2):
        assert evaluate_frame([light], frame, AT)["shipment_id"].to_list() == ["a"]
        assert evaluate_frame([heavy], frame, AT)["shipment_id"].to_list() == ["b"]
    # a column of another type is another expression (NaN counts as missing on floats)
    ints = frame.with_columns(pl.col("gross_mass_kg").cast(pl.Int64))
    assert evaluate_frame([heavy], ints, AT)["shipment_id"].to_list() == ["b"]


def test_both_paths_name_a_missing_column() -> None:
    rule = make(leaf("consignee_shipments_365d", "lt", 3))
    ships = pl.DataFrame({"shipment_id": ["a"], "declared_at": [AT]})
    items = pl.DataFrame(schema={"shipment_id": pl.String})
    with pytest.raises(KeyError, match="consignee_shipments_365d"):
        shipment_hits([rule], ships, items)  # one shipment: Python
    with pytest.raises(KeyError, match="consignee_shipments_365d"):
        evaluate_frame([rule], rule_frame(ships, items))
    lines = make(leaf("item.hs_code", "starts_with", "93"))
    with pytest.raises(KeyError, match=r"item\.hs_code"):
        shipment_hits([lines], ships, items)


def test_no_rules_and_no_shipments() -> None:
    ships = pl.DataFrame(schema=SHIP_SCHEMA)
    items = pl.DataFrame(schema=ITEM_SCHEMA)
    assert shipment_hits([], ships, items) == {}
    assert shipment_hits([make(leaf("gross_mass_kg", "gt", 0))], ships, items) == {}
    assert evaluate_frame([], rule_frame(ships, items)).columns == [
        "shipment_id",
        "rule_id",
        "rule_version",
        "severity",
    ]


def test_batch_uses_each_declared_day_when_no_time_given() -> None:
    rule = make(leaf("gross_mass_kg", "gt", 0), effective_from=dt.date(2025, 6, 2))
    ships = pl.DataFrame(
        {
            "shipment_id": ["early", "late"],
            "declared_at": [
                dt.datetime(2025, 6, 1, 23, tzinfo=dt.UTC),
                dt.datetime(2025, 6, 2, 0, 30, tzinfo=dt.UTC),
            ],
            "gross_mass_kg": [5.0, 5.0],
        }
    )
    frame = rule_frame(ships, pl.DataFrame(schema={"shipment_id": pl.String}))
    out = evaluate_frame([rule], frame)
    assert out["shipment_id"].to_list() == ["late"]
    assert out.columns == ["shipment_id", "rule_id", "rule_version", "severity"]


def test_batch_names_a_missing_column() -> None:
    rule = make(leaf("consignee_shipments_365d", "lt", 3))
    frame = pl.DataFrame({"shipment_id": ["a"], "declared_at": [AT]})
    with pytest.raises(KeyError, match="consignee_shipments_365d"):
        evaluate_frame([rule], frame, AT)


# --------------------------------------------------------------------------- YAML


def test_example_rules_load_and_round_trip() -> None:
    rules = load_rules_yaml(EXAMPLES.read_text(encoding="utf-8"))
    assert 8 <= len(rules) <= 12
    assert len({r.id for r in rules}) == len(rules)
    assert {r.severity for r in rules} >= {"must_inspect", "high", "medium", "low"}
    again = load_rules_yaml(dump_rules_yaml(rules))
    assert again == rules
    assert dump_rules_yaml(again) == dump_rules_yaml(rules)


def test_yaml_errors_carry_rule_index_and_path() -> None:
    text = """
rules:
  - id: good-one
    version: 1
    name: ok
    severity: low
    author: a
    condition: {field: mode, op: eq, value: post}
  - id: bad-one
    version: 1
    name: bad
    severity: high
    author: a
    condition:
      all:
        - {field: item.hs_code, op: starts_with, value: "9305"}
        - {field: origin_country, op: in, value: TR}
  - id: good-one
    version: 1
    name: duplicate
    severity: low
    author: a
    condition: {field: mode, op: eq, value: air}
"""
    with pytest.raises(RuleValidationError) as info:
        load_rules_yaml(text)
    paths = [e.path for e in info.value.errors]
    assert paths == ["rules[1].condition.all[1].value", "rules[2].version"]
    assert "non-empty list" in info.value.errors[0].message
    assert "appears twice" in info.value.errors[1].message


def test_yaml_not_a_list() -> None:
    with pytest.raises(RuleValidationError) as info:
        load_rules_yaml("just: text")
    assert info.value.errors[0].path == "rules"


# --------------------------------------------------------------------------- performance


def test_rule_performance_by_hand() -> None:
    hits_frame = pl.DataFrame(
        {
            "rule_id": ["a", "a", "a", "a", "b", "b", "c"],
            "rule_version": [1, 1, 2, 2, 1, 1, 1],
            "shipment_id": ["s1", "s2", "s3", "s3", "s1", "s4", "s5"],
        }
    )
    outcomes = pl.DataFrame(
        {
            "shipment_id": ["s1", "s2", "s4", "s4"],
            "finding": [True, False, False, True],
            "finding_category": ["parts", None, None, "documentary"],
        }
    )
    perf = rule_performance(hits_frame, outcomes)
    # a: hits s1 s2 s3 (s3 twice counts once); inspected s1 s2; finding s1 -> 1/2
    # b: hits s1 s4; both inspected; both found (s4 on its second inspection) -> 2/2
    # c: hit s5, never inspected -> rate null
    assert perf.to_dicts() == [
        {"rule_id": "a", "hits": 3, "inspected": 2, "findings": 1, "finding_rate": 0.5},
        {"rule_id": "b", "hits": 2, "inspected": 2, "findings": 2, "finding_rate": 1.0},
        {"rule_id": "c", "hits": 1, "inspected": 0, "findings": 0, "finding_rate": None},
    ]
    arms = rule_performance(hits_frame, outcomes, categories=["firearms", "parts", "ammunition"])
    assert arms.filter(pl.col("rule_id") == "b")["findings"].item() == 1
    by_version = rule_performance(hits_frame, outcomes, by_version=True)
    assert by_version.select("rule_id", "rule_version", "hits").rows() == [
        ("a", 1, 2),
        ("a", 2, 1),
        ("b", 1, 2),
        ("c", 1, 1),
    ]
