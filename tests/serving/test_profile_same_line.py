"""The shipped profile `undervalued-arms-lines` on one and the same goods line (UAT
stop 13).

It combined two per-shipment features (`arms_chapter_lines >= 1` and
`min_unit_value_z < -2`), so it fired when the arms line was fairly valued and another
line was cheap. A unit value cannot be written with the line fields there were (a
leaf compares one field with a constant, and the currency is the shipment's), so the
rules engine derives one: `item.value_usd_per_kg`, a line's value in USD (the
shipment's invoice currency at the rates the goods features use) per kg of its net
mass. The profile now asks `line` for an arms-chapter line below a unit value of its
kind. Hand-made shipments, checked alike on every evaluation path and over HTTP."""

from __future__ import annotations

from typing import Any

import polars as pl

from features.context import Params
from serving.auth import Role
from serving.rules_engine import (
    SMALL_BATCH,
    Rule,
    dump_rules_yaml,
    evaluate,
    evaluate_frame,
    load_rules_yaml,
    rule_fields,
    rule_frame,
    shipment_hits,
)
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_rules_engine import AT, EXAMPLES, make

API = "/api/v1"

# (hs_code, description, value, net_mass_kg) per line, and the invoice currency
Line = tuple[str, str, float | None, float | None]
WORLD: dict[str, tuple[str | None, list[Line]]] = {
    # one rifle line at 20 USD/kg (usual: about 220)
    "SAME-LINE": ("USD", [("930330", "hunting rifles", 2_000.0, 100.0)]),
    # the rifles fairly valued (220 USD/kg), sewing machines beside them cheap
    "DIFFERENT-LINES": (
        "USD",
        [
            ("930330", "hunting rifles", 22_000.0, 100.0),
            ("845229", "industrial sewing machines", 50.0, 100.0),
        ],
    ),
    # cartridges: 1 000 000 KZT is about 2 100 USD for 1 000 kg, 2.1 USD/kg
    "AMMO-KZT": ("KZT", [("930621", "shotgun cartridges", 1_000_000.0, 1_000.0)]),
    # the same figures in USD: 1 000 USD/kg
    "AMMO-USD": ("USD", [("930621", "shotgun cartridges", 1_000_000.0, 1_000.0)]),
    # parts (9305) at 30 USD/kg: above their 25; at 20 EUR/kg (21.6 USD): below
    "PARTS-FAIR": ("USD", [("930599", "spare parts for hunting guns", 3_000.0, 100.0)]),
    "PARTS-CHEAP-EUR": ("EUR", [("930599", "spare parts for hunting guns", 2_000.0, 100.0)]),
    # no rate for the currency, no mass, no lines: no unit value, no hit
    "NO-RATE": ("XAU", [("930330", "hunting rifles", 10.0, 100.0)]),
    "NO-MASS": ("USD", [("930330", "hunting rifles", 10.0, None)]),
    "NO-LINES": ("USD", []),
}
PROFILE_HITS = {"SAME-LINE", "AMMO-KZT", "PARTS-CHEAP-EUR"}


def _profile() -> Rule:
    rules = load_rules_yaml(EXAMPLES.read_text(encoding="utf-8"))
    return next(r for r in rules if r.id == "undervalued-arms-lines")


def _frames(
    world: dict[str, tuple[str | None, list[Line]]],
) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    ships = [
        {"shipment_id": sid, "declared_at": AT, "invoice_currency": currency}
        for sid, (currency, _lines) in world.items()
    ]
    items = [
        {
            "shipment_id": sid,
            "line_no": n + 1,
            "hs_code": hs,
            "description": text,
            "value": value,
            "net_mass_kg": mass,
        }
        for sid, (_currency, lines) in world.items()
        for n, (hs, text, value, mass) in enumerate(lines)
    ]
    ship_df = pl.DataFrame(
        ships,
        schema={
            "shipment_id": pl.String,
            "declared_at": pl.Datetime("us", "UTC"),
            "invoice_currency": pl.String,
        },
    )
    item_df = pl.DataFrame(
        items,
        schema={
            "shipment_id": pl.String,
            "line_no": pl.Int64,
            "hs_code": pl.String,
            "description": pl.String,
            "value": pl.Float64,
            "net_mass_kg": pl.Float64,
        },
    )
    return ship_df, item_df, ships, items


def _hit(rule: Rule, world: dict[str, tuple[str | None, list[Line]]] = WORLD) -> set[str]:
    """The shipments `rule` hits, the same on every path: one by one (`evaluate`), a few
    through `shipment_hits` (Python), the batch frame, and over SMALL_BATCH (Polars)."""
    ship_df, item_df, ships, items = _frames(world)
    one = {
        s["shipment_id"]
        for s in ships
        if evaluate(rule, s, [i for i in items if i["shipment_id"] == s["shipment_id"]], {}, AT)
    }
    few = set(shipment_hits([rule], ship_df, item_df))
    batch = set(evaluate_frame([rule], rule_frame(ship_df, item_df), AT)["shipment_id"])
    copies = SMALL_BATCH // len(world) + 1
    many_world = {f"{sid}#{k}": v for k in range(copies) for sid, v in world.items()}
    many_ships, many_items, _, _ = _frames(many_world)
    assert many_ships.height > SMALL_BATCH
    many = {sid.split("#")[0] for sid in shipment_hits([rule], many_ships, many_items)}
    assert one == few == batch == many, (one, few, batch, many)
    return one


def test_the_profile_needs_the_undervalued_line_to_be_the_arms_line() -> None:
    assert _hit(_profile()) == PROFILE_HITS
    assert "DIFFERENT-LINES" not in PROFILE_HITS


def test_the_old_shipment_level_profile_fired_on_two_different_lines() -> None:
    old = make(
        {
            "all": [
                {"field": "arms_chapter_lines", "op": "ge", "value": 1},
                {"field": "min_unit_value_z", "op": "lt", "value": -2.0},
            ]
        }
    )
    _ships, _items, ships, items = _frames({"DIFFERENT-LINES": WORLD["DIFFERENT-LINES"]})
    # its features: one chapter-93 line, and a line (the sewing machines) far below its usual
    features = {"arms_chapter_lines": 1.0, "min_unit_value_z": -3.5}
    assert evaluate(old, ships[0], items, features, AT)


def test_a_line_unit_value_is_in_usd_per_kg_at_the_features_rates() -> None:
    rates = Params().usd_per_unit
    for currency, value, mass in (("USD", 2_000.0, 100.0), ("KZT", 1e6, 1e3), ("EUR", 2e3, 1e2)):
        usd_per_kg = value * rates[currency] / mass
        line: Line = ("930330", "rifles", value, mass)
        world: dict[str, tuple[str | None, list[Line]]] = {"L": (currency, [line])}
        below = make(
            {"line": {"field": "item.value_usd_per_kg", "op": "lt", "value": usd_per_kg * 1.001}}
        )
        above = make(
            {"line": {"field": "item.value_usd_per_kg", "op": "gt", "value": usd_per_kg * 0.999}}
        )
        assert _hit(below, world) == _hit(above, world) == {"L"}, currency
    # outside `line`, as any goods-line field: any line; is_null when none has a value
    missing = make({"field": "item.value_usd_per_kg", "op": "is_null"})
    assert _hit(missing) == {"NO-RATE", "NO-MASS", "NO-LINES"}


def test_the_profile_reads_the_inputs_a_backtest_loads() -> None:
    # the backtest selects the goods-line columns and shipment columns a rule reads
    assert {"item.value", "item.net_mass_kg", "invoice_currency", "item.hs_code"} == set(
        rule_fields(_profile())
    )


# --------------------------------------------------------------------------- over HTTP


def _record(samples: Samples, i: int, sid: str, currency: str, lines: list[Line]) -> dict[str, Any]:
    record = payload(samples, i, sid)
    record["invoice_currency"] = currency
    template = record["items"][0]
    record["items"] = [
        {
            **template,
            "line_no": n + 1,
            "item_id": f"{sid}-{n + 1}",
            "hs_code": hs,
            "description": text,
            "value": value,
            "net_mass_kg": mass,
        }
        for n, (hs, text, value, mass) in enumerate(lines)
    ]
    return record


def test_the_imported_profile_hits_only_the_same_line_when_shipments_arrive(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    r = api.client.post(
        f"{API}/rules/import",
        content=dump_rules_yaml([_profile()]).encode(),
        headers={**analyst, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    names = ("SAME-LINE", "DIFFERENT-LINES", "AMMO-KZT", "AMMO-USD")
    hit = set()
    for n, name in enumerate(names):  # one by one: the API's single-shipment path
        currency, lines = WORLD[name]
        assert currency is not None
        record = _record(samples, n, f"UVA-{name}", currency, lines)
        r = api.client.post(f"{API}/shipments", json=record, headers=analyst)
        assert r.status_code == 201, r.text
        if "undervalued-arms-lines" in {h["rule_id"] for h in r.json()["rule_hits"]}:
            hit.add(name)
    assert hit == {"SAME-LINE", "AMMO-KZT"}
