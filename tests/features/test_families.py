"""Feature families on tiny hand-made frames, with values worked out by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS
from features.build import build_features
from features.context import History
from features.registry import REGISTRY, feature_set_version, render_reason, specs
from features.timeline import as_of_counts
from tests import factories as f

T0 = dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def ship(i: int, at: float, **kw: Any) -> dict[str, Any]:
    kw.setdefault("expected_arrival_at", day(at + 1))
    return f.shipment(shipment_id=f"S-{i}", declared_at=day(at), **kw)


def line(i: int, n: int = 1, **kw: Any) -> dict[str, Any]:
    return f.item(item_id=f"S-{i}-{n}", shipment_id=f"S-{i}", line_no=n, **kw)


def history(
    ships: list[dict[str, Any]],
    items: list[dict[str, Any]],
    outcomes: list[dict[str, Any]] | None = None,
) -> History:
    return History(
        pl.DataFrame(ships, schema=SHIPMENTS.polars_schema),
        pl.DataFrame(items, schema=ITEMS.polars_schema),
        pl.DataFrame(outcomes or [], schema=OUTCOMES.polars_schema),
        TRAVELLERS.empty(),
    )


def features_of(h: History) -> pl.DataFrame:
    return build_features(h.shipments, h.items, h)


def test_as_of_counts_use_only_strictly_earlier_events() -> None:
    events = pl.DataFrame(
        {"k": ["a", "a", "a", "b"], "t": [day(0), day(5), day(5), day(1)], "v": [1, 10, 100, 7]}
    )
    queries = pl.DataFrame(
        {"k": ["a", "a", "a", "b", "c"], "t": [day(0), day(5), day(6), day(40), day(1)]}
    )
    out = as_of_counts(
        queries,
        "k",
        "t",
        events,
        "k",
        "t",
        windows={"3d": dt.timedelta(days=3)},
        sums=["v"],
        prefix="p",
    )
    assert out["p_n"].to_list() == [0, 1, 3, 1, 0]
    assert out["p_v"].to_list() == [0, 1, 111, 7, 0]
    assert out["p_n_3d"].to_list() == [0, 0, 2, 0, 0]
    assert out["p_first"].to_list() == [None, day(0), day(0), day(1), None]


def test_consignee_history_counts_and_first_seen() -> None:
    ships = [ship(i, at) for i, at in enumerate([0, 10, 35, 36])]
    out = features_of(history(ships, [line(i) for i in range(4)]))
    assert out["consignee_is_new"].to_list() == [1, 0, 0, 0]
    assert out["consignee_days_since_first"].to_list() == [None, 10.0, 35.0, 36.0]
    assert out["consignee_shipments_30d"].to_list() == [0.0, 1.0, 1.0, 2.0]
    assert out["consignee_shipments_365d"].to_list() == [0.0, 1.0, 2.0, 3.0]


def test_transliterated_names_are_one_party_when_no_id_is_declared() -> None:
    ships = [
        ship(0, 0, consignee_id=None, consignee_name="ИП Абдуллаев Акмал"),
        ship(1, 5, consignee_id=None, consignee_name="IP Abdullayev Akmal"),
        ship(2, 9, consignee_id=None, consignee_name="Karimov Trade LLC"),
    ]
    out = features_of(history(ships, [line(i) for i in range(3)]))
    assert out["consignee_is_new"].to_list() == [1, 0, 1]


def test_findings_count_only_once_recorded() -> None:
    ships = [ship(0, 0), ship(1, 3), ship(2, 10)]
    found = f.outcome(
        outcome_id="O-0",
        shipment_id="S-0",
        inspected_at=day(5),
        finding=True,
        finding_category="parts",
        selection_method="rule",
        selection_probability=1.0,
    )
    out = features_of(history(ships, [line(i) for i in range(3)], [found]))
    # Shipment 1 was declared before the finding on shipment 0 was recorded.
    assert out["consignee_arms_findings"].to_list() == [0.0, 0.0, 1.0]
    assert out["consignee_inspections"].to_list() == [0.0, 0.0, 1.0]


def test_consignees_sharing_a_phone() -> None:
    ships = [
        ship(0, 0, consignee_id="A1", consignee_phone="+7 701 111 2233"),
        ship(1, 1, consignee_id="B2", consignee_phone="+77011112233"),
        ship(2, 2, consignee_id="C3", consignee_phone="+7 (701) 111-22-33"),
        ship(3, 3, consignee_id="A1", consignee_phone="+7 701 111 2233"),
    ]
    out = features_of(history(ships, [line(i) for i in range(4)]))
    # Other consignees seen before with the same phone (the party itself excluded).
    assert out["consignee_phone_shared"].to_list() == [0.0, 1.0, 2.0, 2.0]


def test_goods_lexicon_and_chapter_risk() -> None:
    ships = [ship(0, 0), ship(1, 0), ship(2, 0)]
    items = [
        line(0, hs_code="930599", description="Bolt carrier group and trigger assembly"),
        line(1, hs_code="846693", description="Ствол и затвор для станка"),
        line(2, hs_code="610910", description="Cotton t-shirts, men's"),
    ]
    out = features_of(history(ships, items))
    assert out["hs_chapter_risk"].to_list() == [1.0, 0.2, 0.0]
    assert out["arms_chapter_lines"].to_list() == [1.0, 0.0, 0.0]
    assert out["arms_terms"].to_list()[2] == 0.0
    assert out["part_terms"].to_list() == [1.0, 2.0, 0.0]
    assert out["arms_terms"].to_list()[0] == 1.0  # "bolt carrier"
    assert out["hiding_heading_share"].to_list() == [0.0, 1.0, 0.0]


def test_unit_value_is_compared_with_earlier_months_only() -> None:
    # Twelve lines at about 20 USD/kg in January, then one at 2 USD/kg in February.
    ships = [ship(i, i) for i in range(12)] + [ship(12, 40), ship(13, 40)]
    items = [line(i, value=20.0 * 1100 * (1 + 0.05 * (i % 3))) for i in range(12)]
    items += [line(12, value=2.0 * 1100), line(13, value=20.0 * 1100)]
    out = features_of(history(ships, items))
    z = out["min_unit_value_z"].to_list()
    assert all(v is None for v in z[:12])  # nothing known before January
    assert z[12] is not None and z[12] < -3
    assert z[13] is not None and abs(z[13]) < 1


def test_route_features() -> None:
    ships = [
        ship(0, 0, transit_countries=["KZ"], origin_country="CN"),
        ship(1, 0, transit_countries=["AF", "AE"], origin_country="CN"),
        ship(
            2,
            0,
            origin_country="AF",
            dispatch_country="AF",
            expected_arrival_at=day(0) + dt.timedelta(hours=3),
        ),
    ]
    out = features_of(history(ships, [line(i) for i in range(3)]))
    assert out["transit_off_route"].to_list() == [0.0, 1.0, 0.0]
    assert out["high_risk_transit"].to_list() == [0, 1, 0]
    assert out["high_risk_origin"].to_list() == [0, 0, 1]
    assert out["lead_time_hours"].to_list() == [24.0, 24.0, 3.0]


def test_categoricals_are_stable_integer_codes() -> None:
    ships = [ship(0, 0, mode="road"), ship(1, 0, mode="post")]
    out = features_of(history(ships, [line(0), line(1)]))
    assert out.schema["mode"] == pl.Int32
    modes = REGISTRY["mode"].categories
    assert out["mode"].to_list() == [modes.index("road") + 1, modes.index("post") + 1]


def test_every_feature_has_texts_in_both_languages_and_a_family() -> None:
    assert len(specs()) >= 40
    for spec in specs():
        assert spec.description and spec.reason_en and spec.reason_ru, spec.name
        assert spec.reason_en != spec.reason_ru, spec.name
    assert feature_set_version().startswith("fs2-")


def test_the_feature_set_is_the_same_whichever_module_is_imported_first() -> None:
    """The server imports the feature modules in another order than the command
    line (the server recorded another feature-set version than the model card of
    the model it served, for the same features)."""
    import subprocess
    import sys

    from features.registry import FAMILY_MODULES, SPEC_ORDER

    assert sorted(SPEC_ORDER) == sorted(FAMILY_MODULES)
    script = (
        "import importlib, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "from features.registry import feature_set_version, specs\n"
        "print(feature_set_version(), ','.join(s.name for s in specs()))"
    )
    seen = {
        first: subprocess.run(
            [sys.executable, "-c", script, first], capture_output=True, text=True, check=True
        ).stdout.strip()
        for first in ("serving.app", "pipelines.cli", "features.network", "features.travellers")
    }
    here = f"{feature_set_version()} {','.join(s.name for s in specs())}"
    assert set(seen.values()) == {here}, seen


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "Consignee first seen 3 days ago"),
        ("ru", "Получатель впервые появился 3 дня назад"),
    ],
)
def test_reason_texts_render(lang: str, expected: str) -> None:
    assert render_reason("consignee_days_since_first", 3.2, {}, lang) == expected


def test_reason_text_uses_context_columns() -> None:
    text = render_reason("min_unit_value_z", -4.26, {"hs4_main": "8466", "origin_country": "CN"})
    assert text == ("Declared value per kg far below usual for HS 8466 from CN (z = -4.3)")


def test_reason_texts_read_well_for_missing_values_and_amounts() -> None:
    """A party never seen before is said so (not "first seen ? days ago"), and
    amounts from the context are rounded as people write them."""
    assert render_reason("consignee_days_since_first", None, {}) == "Consignee never seen before"
    assert render_reason("consignor_days_since_first", None, {}, "ru") == (
        "Отправитель ранее не встречался"
    )
    assert render_reason("consignee_days_since_first", 3.0, {}) == "Consignee first seen 3 days ago"
    text = render_reason("log_value_usd", 4.1058, {"value_usd": 12758.3748})
    assert text == "Declared value about 12,758 USD"
    assert "0.0123" in render_reason("log_value_usd", -1.9, {"value_usd": 0.012345})
