"""Reason texts officers read: true for the value's sign, readable when a value is
missing (never "?"), and Russian without English leftovers ("30d")."""

from __future__ import annotations

import re

import pytest

from features.build import CONTEXT
from features.registry import feature_set_version, refresh_reason_texts, render_reason, specs

# A shipment's context as scoring stores it (every column present).
CONTEXT_ROW = {
    "office_code": "KG-BISHKEK",
    "origin_country": "TR",
    "hs4_main": "7310",
    "value_usd": 104304.2,
    "gross_mass_kg": 812.5,
    "hs_text_line": "steel barrels 200 l for oil",
    "hs_text_code": "731010",
    "arms_fit_line": "steel barrels 200 l for oil",
    "arms_fit_heading": "9305",
    "part_words": "barrels",
}
LANGS = ("en", "ru")


def test_the_context_above_is_the_scoring_context() -> None:
    assert set(CONTEXT_ROW) == set(CONTEXT)


@pytest.mark.parametrize("lang", LANGS)
def test_no_feature_renders_a_question_mark_for_a_missing_value(lang: str) -> None:
    """Every registered feature reads as a sentence when its value is missing."""
    for spec in specs():
        for context in (CONTEXT_ROW, {**CONTEXT_ROW, "hs4_main": "9303"}):
            text = render_reason(spec.name, None, context, lang)
            assert "?" not in text, (spec.name, text)
            assert text.strip(), spec.name


def test_arms_declared_as_arms_reads_as_chapter_93() -> None:
    """description_arms_margin is not computed for lines under chapter 93 (UAT F12)."""
    chapter_93 = {**CONTEXT_ROW, "hs4_main": "9303", "arms_fit_line": None}
    assert render_reason("description_arms_margin", None, chapter_93) == (
        "Goods declared under chapter 93 (arms and ammunition)"
    )
    assert render_reason("description_arms_margin", None, chapter_93, "ru") == (
        "Товары заявлены в группе 93 ТН ВЭД (оружие и боеприпасы)"
    )
    # missing for another reason (no tariff text): not said to be chapter 93
    other = render_reason("description_arms_margin", None, {**CONTEXT_ROW, "arms_fit_line": None})
    assert "93" not in other.replace("9301", "") and "?" not in other


@pytest.mark.parametrize("lang", LANGS)
def test_arms_margin_wording_follows_its_sign(lang: str) -> None:
    """A negative margin means the description is closer to its declared code: it is
    not said to resemble the arms heading "unusually closely" (UAT ingest F9)."""
    negative = render_reason("description_arms_margin", -0.02, CONTEXT_ROW, lang)
    positive = render_reason("description_arms_margin", 0.31, CONTEXT_ROW, lang)
    if lang == "en":
        assert "unusually closely" in positive and "unusually closely" not in negative
        assert "closer to the text of its declared code" in negative
    else:
        assert "необычно близко" in positive and "необычно близко" not in negative
        assert "ближе к тексту заявленного кода" in negative
    decimal = "." if lang == "en" else ","  # (Russian marks decimals with a comma)
    assert f"-0{decimal}02" in negative and f"+0{decimal}31" in positive


def test_unit_value_wording_follows_its_sign() -> None:
    ctx = {"hs4_main": "6403", "origin_country": "TR"}
    assert render_reason("min_unit_value_z", -4.26, ctx) == (
        "Declared value per kg far below usual for HS 6403 from TR (z = -4.3)"
    )
    high = render_reason("min_unit_value_z", 10.0, ctx)
    assert "far above usual" in high and "below" not in high
    assert "выше обычной" in render_reason("min_unit_value_z", 10.0, ctx, "ru")
    near = render_reason("min_unit_value_z", -0.4, ctx)
    assert "far" not in near and "z = -0.4" in near
    mass = render_reason("max_mass_per_unit_z", 0.7, {})
    assert "close to usual" in mass


def test_lead_time_wording_follows_its_sign() -> None:
    assert render_reason("lead_time_hours", 5.0, {}) == "Declared only 5 hours before arrival"
    assert render_reason("lead_time_hours", -3.0, {}) == (
        "Declared 3 hours after the expected arrival"
    )
    assert "only" not in render_reason("lead_time_hours", 300.0, {})


def test_russian_texts_have_no_english_window_units() -> None:
    """ "за последние 30d" (UAT F7) reads "за последние 30 дней"."""
    assert render_reason("consignee_shipments_30d", 0, {}, "ru") == (
        "Получатель: 0 отправок за последние 30 дней"
    )
    assert render_reason("declarant_shipments_365d", 4, {}) == (
        "Declarant: 4 shipment(s) in the last 365 days"
    )
    window = re.compile(r"\d+d\b")
    for spec in specs():
        for value in (0.0, 3.0, None):
            ru = render_reason(spec.name, value, CONTEXT_ROW, "ru")
            assert not window.search(ru), (spec.name, ru)


def test_transport_mode_is_translated() -> None:
    mode = next(s for s in specs() if s.name == "mode")
    rail = mode.categories.index("rail") + 1
    assert render_reason("mode", rail, {}, "ru") == "Вид транспорта: железнодорожный"
    assert render_reason("mode", rail, {}) == "Mode of transport: rail"


def test_stored_reasons_are_rendered_again_from_their_values() -> None:
    """A reason stored with yesterday's wording is shown with today's."""
    stored = [
        {
            "feature": "description_arms_margin",
            "value": -0.02,
            "log_odds": 0.4,
            "text_en": "Description 'x' resembles the text of HS 9305 unusually closely",
            "text_ru": "old",
        }
    ]
    fresh = refresh_reason_texts(stored, CONTEXT_ROW)
    assert fresh[0]["log_odds"] == 0.4 and fresh[0]["value"] == -0.02
    assert "unusually closely" not in fresh[0]["text_en"]
    assert fresh[0]["text_ru"].startswith("Описание «steel barrels")


def test_texts_do_not_change_the_feature_set_version() -> None:
    """The version pins names, kinds, monotonicity and categories, not the wording."""
    assert re.fullmatch(r"fs2-[0-9a-f]{10}", feature_set_version())


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("high_risk_origin", 0.0, "Origin and dispatch countries are not on the high-risk list"),
        ("high_risk_transit", 0.0, "Route crosses no high-risk country"),
        ("consignee_is_new", 0.0, "Consignee seen before"),
        ("watchlist_exact", 0.0, "No party's name is the same as a name on a watchlist"),
        ("watchlist_id_match", 0.0, "No party's identification number is listed on a watchlist"),
        ("traveller_link_confidence", 0.0, "No party is linked to a traveller record"),
        (
            "network_hops_to_arms",
            5.0,
            "No party with an arms finding within 4 steps of the consignee or consignor",
        ),
        ("consignee_is_new", 1.0, "Consignee never seen before"),
        (
            "network_hops_to_arms",
            2.0,
            "Linked within 2 step(s) to a party whose shipment had an arms finding",
        ),
    ],
)
def test_a_flag_that_is_off_is_not_described_as_on(name: str, value: float, expected: str) -> None:
    """The waterfall shows every feature, also those lowering the risk: a flag at 0 is
    not said to be set ("RU is on the high-risk list" for a country that is not)."""
    assert render_reason(name, value, CONTEXT_ROW) == expected
    ru = render_reason(name, value, CONTEXT_ROW, "ru")
    assert ru and "?" not in ru and not re.search(r"[A-Za-z]{4}", ru), ru
    if name == "high_risk_origin":
        assert ru == "Страны происхождения и отправления не в списке высокого риска"


def test_numbers_are_written_as_each_language_writes_them() -> None:
    """An English thousands comma reads as a decimal mark in Russian ("104,304 USD"
    would be about 104 dollars): Russian texts group thousands with a no-break
    space and mark decimals with a comma; English keeps "104,304" and "0.5"."""
    context = {**CONTEXT_ROW, "value_usd": 104_304.2}
    en = render_reason("log_value_usd", 5.02, context, "en")
    ru = render_reason("log_value_usd", 5.02, context, "ru")
    assert "104,304" in en
    assert "104\u00a0304" in ru and "104,304" not in ru
    assert render_reason("extra_duty_rate", 0.5, {}, "ru").endswith("0,5")
    assert render_reason("extra_duty_rate", 0.5, {}, "en").endswith("0.5")
