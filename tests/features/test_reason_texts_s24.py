"""Reason texts that said more, or less, than the values (review s24: revB section 7,
revC sections 1 and 8), rendered for hand-made values, English and Russian exactly:

- `log_value_per_kg` gives the value in USD per kg gross, not "unusual" whatever it is;
- `description_arms_margin` says "unusually closely" only from a margin of 0.05;
- `part_terms` names the words matched (the context column `part_words`), so that
  "barrels" in "steel barrels 200 l for oil" can be seen for what it is; its value
  (the count the model reads) is unchanged;
- a count in a Russian text takes the form of its number (1 отправка, 2 отправки,
  5 отправок, 11 отправок, 21 отправка).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import goods, hs_text
from features.build import CONTEXT, build_features
from features.context import Params
from features.registry import plural, plural_ru, refresh_reason_texts, render_reason, specs
from tests.features.test_families import history, line, ship

PARAMS = Params()
BARRELS = "steel barrels 200 l for oil"
CONTEXT_ROW: dict[str, Any] = {
    "office_code": "KG-BISHKEK",
    "origin_country": "TR",
    "hs4_main": "7310",
    "value_usd": 14029.0,
    "gross_mass_kg": 12971.0,
    "hs_text_line": BARRELS,
    "hs_text_code": "731010",
    "arms_fit_line": "sports goods, other",
    "arms_fit_heading": "9303",
    "part_words": "barrels",
}
# The form a Russian noun takes after each number (written out, not computed):
# 0 отправок, 1 отправка, 2 отправки, 5 отправок, 11 отправок, 12 отправок,
# 21 отправка, 22 отправки, 111 отправок.
ONE, FEW, MANY = 0, 1, 2
FORM_OF = {0: MANY, 1: ONE, 2: FEW, 4: FEW, 5: MANY, 11: MANY, 12: MANY, 14: MANY, 21: ONE}
COUNTS = (1, 2, 5, 11, 21)


def test_the_context_here_is_the_scoring_context() -> None:
    assert set(CONTEXT_ROW) == set(CONTEXT)


# --- the plural helper -----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "отправок"), (1, "отправка"), (2, "отправки"), (3, "отправки"), (4, "отправки"),
        (5, "отправок"), (10, "отправок"), (11, "отправок"), (12, "отправок"),
        (14, "отправок"), (15, "отправок"), (20, "отправок"), (21, "отправка"),
        (22, "отправки"), (25, "отправок"), (101, "отправка"), (111, "отправок"),
        (112, "отправок"), (122, "отправки"), (1001, "отправка"), (2.5, "отправки"),
        (-1, "отправка"),
    ],
)  # fmt: skip
def test_russian_plural_forms(n: float, expected: str) -> None:
    assert plural_ru(n, "отправка", "отправки", "отправок") == expected


def test_plural_of_english_and_of_no_number() -> None:
    assert plural(1, ("match", "matches")) == "match"
    assert [plural(n, ("match", "matches")) for n in (0, 2, 11, 21)] == ["matches"] * 4
    assert plural(None, ("отправка", "отправки", "отправок")) == "отправок"
    assert plural(math.nan, ("match", "matches")) == "matches"


def test_the_form_follows_the_number_as_shown() -> None:
    """5.2 days are shown "5": "5 дней", not the fraction's "5 дня"."""
    assert render_reason("consignee_days_since_first", 5.2, {}, "ru") == (
        "Получатель впервые появился 5 дней назад"
    )
    assert render_reason("consignee_days_since_first", 1.4, {}, "ru") == (
        "Получатель впервые появился 1 день назад"
    )


# --- Russian counts in every count text ------------------------------------------

# feature -> the Russian text with {n} for the number and {w} for the word, and the
# word's forms (one, few, many)
RUSSIAN_COUNTS: dict[str, tuple[str, tuple[str, str, str]]] = {
    "transit_count": ("Маршрут проходит через {n} {w} транзита", ("страну", "страны", "стран")),
    "transit_off_route": (
        "Маршрут проходит через {n} {w} вне обычных торговых коридоров",
        ("страну", "страны", "стран"),
    ),
    "item_count": (
        "{n} {w} в одной декларации",
        ("товарная позиция", "товарные позиции", "товарных позиций"),
    ),
    "arms_chapter_lines": (
        "{n} {w} как оружие или боеприпасы (группа 93)",
        ("позиция заявлена", "позиции заявлены", "позиций заявлено"),
    ),
    "arms_terms": (
        "В описании упомянуто оружие или боеприпасы ({n} {w})",
        ("термин", "термина", "терминов"),
    ),
    "part_terms": (
        "В описании слова, обозначающие части оружия: barrels ({n} {w})",
        ("совпадение", "совпадения", "совпадений"),
    ),
    "distinct_chapters": ("Сборная партия: {n} {w} ТН ВЭД", ("группа", "группы", "групп")),
    "consignee_days_since_first": (
        "Получатель впервые появился {n} {w} назад",
        ("день", "дня", "дней"),
    ),
    "consignor_arms_findings": (
        "У отправителя ранее {n} {w} оружия",
        ("изъятие", "изъятия", "изъятий"),
    ),
    "consignee_arms_findings": (
        "У получателя ранее {n} {w} оружия",
        ("изъятие", "изъятия", "изъятий"),
    ),
    "declarant_arms_findings": (
        "У декларанта ранее {n} {w} оружия",
        ("изъятие", "изъятия", "изъятий"),
    ),
    "declarant_inspections": ("Декларант ранее досматривался {n} {w}", ("раз", "раза", "раз")),
    "consignee_shipments_7d": (
        "Получатель: {n} {w} за последние 7 дней",
        ("отправка", "отправки", "отправок"),
    ),
    "consignor_shipments_30d": (
        "Отправитель: {n} {w} за последние 30 дней",
        ("отправка", "отправки", "отправок"),
    ),
    "declarant_shipments_365d": (
        "Декларант: {n} {w} за последние 365 дней",
        ("отправка", "отправки", "отправок"),
    ),
    "consignee_distinct_chapters": (
        "Получатель ранее ввозил товары {n} {w} ТН ВЭД",
        ("группы", "групп", "групп"),
    ),
    "consignee_phone_shared": (
        "Тот же телефон {w}",
        (
            "указывал ещё {n} получатель",
            "указывали ещё {n} получателя",
            "указывали ещё {n} получателей",
        ),
    ),
    "consignee_address_shared": (
        "Тот же адрес {w}",
        (
            "указывал ещё {n} получатель",
            "указывали ещё {n} получателя",
            "указывали ещё {n} получателей",
        ),
    ),
    "network_component_parties": (
        "Получатель или отправитель входит в сеть из {n} {w}",
        ("связанного участника", "связанных участников", "связанных участников"),
    ),
    "network_contact_parties": (
        "Тот же телефон, e-mail или адрес ранее {w}",
        (
            "указывал ещё {n} участник",
            "указывали ещё {n} участника",
            "указывали ещё {n} участников",
        ),
    ),
    "watchlist_parties_matched": (
        "{n} {w} в списке наблюдения",
        (
            "участник сделки похож на запись",
            "участника сделки похожи на записи",
            "участников сделки похожи на записи",
        ),
    ),
    "traveller_trips_180d": (
        "Пассажиры, связанные с участниками сделки, совершили {n} {w} за 180 дней",
        ("поездку", "поездки", "поездок"),
    ),
    "traveller_high_risk_trips_180d": (
        "Пассажиры, связанные с участниками сделки, совершили {n} {w} через страны "
        "высокого риска за 180 дней",
        ("поездку", "поездки", "поездок"),
    ),
    "traveller_one_way_180d": (
        "{n} {w} в одну сторону у пассажиров, связанных с участниками сделки",
        ("билет", "билета", "билетов"),
    ),
    "traveller_cash_180d": (
        "{n} {w} наличными пассажирами, связанными с участниками сделки",
        ("билет оплачен", "билета оплачены", "билетов оплачено"),
    ),
    "traveller_last_minute_180d": (
        "{n} {w} менее чем за 72 часа пассажирами, связанными с участниками сделки",
        ("билет куплен", "билета куплены", "билетов куплено"),
    ),
    "traveller_group_trips_180d": (
        "{n} {w} вместе лицами, связанными с участниками сделки",
        ("поездка забронирована", "поездки забронированы", "поездок забронировано"),
    ),
}


@pytest.mark.parametrize("name", sorted(RUSSIAN_COUNTS))
@pytest.mark.parametrize("n", COUNTS)
def test_russian_counts_agree_with_their_number(name: str, n: int) -> None:
    text, forms = RUSSIAN_COUNTS[name]
    expected = text.format(n=n, w=forms[FORM_OF[n]].format(n=n))
    assert render_reason(name, float(n), CONTEXT_ROW, "ru") == expected


def test_network_hops_agree_below_the_limit() -> None:
    """1-4 steps (5 or more is the wording "no party within 4 steps")."""
    ru = [render_reason("network_hops_to_arms", float(n), {}, "ru") for n in (1, 2, 4)]
    assert ru == [
        f"Связан через {n} {w} с участником, у которого изымали оружие"
        for n, w in ((1, "звено"), (2, "звена"), (4, "звена"))
    ]
    assert render_reason("network_hops_to_arms", 5.0, {}, "ru") == (
        "Нет участников с изъятием оружия в пределах 4 звеньев от получателя или отправителя"
    )


def test_the_review_examples_read_right() -> None:
    """The three texts the review quoted, now."""
    assert render_reason("consignee_shipments_30d", 2.0, {}, "ru") == (
        "Получатель: 2 отправки за последние 30 дней"
    )
    assert render_reason("transit_count", 1.0, {}, "ru") == (
        "Маршрут проходит через 1 страну транзита"
    )
    assert render_reason("consignee_arms_findings", 1.0, {}, "ru") == (
        "У получателя ранее 1 изъятие оружия"
    )


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("transit_count", 1, "Route crosses 1 transit country"),
        ("transit_count", 2, "Route crosses 2 transit countries"),
        ("transit_count", 21, "Route crosses 21 transit countries"),
        ("transit_off_route", 1, "Route crosses 1 country off the usual trade corridors"),
        ("transit_off_route", 5, "Route crosses 5 countries off the usual trade corridors"),
        ("item_count", 1, "1 goods line in one declaration"),
        ("item_count", 11, "11 goods lines in one declaration"),
        ("distinct_chapters", 1, "Mixed consignment: 1 HS chapter"),
        ("distinct_chapters", 2, "Mixed consignment: 2 HS chapters"),
        ("consignee_shipments_30d", 1, "Consignee: 1 shipment(s) in the last 30 days"),
    ],
)
def test_english_counts(name: str, n: int, expected: str) -> None:
    assert render_reason(name, float(n), CONTEXT_ROW, "en") == expected


def test_a_missing_count_reads_without_a_question_mark() -> None:
    assert render_reason("consignee_shipments_30d", None, {}, "ru") == (
        "Нет данных: Получатель: — отправок за последние 30 дней"
    )
    for spec in specs():
        for lang in ("en", "ru"):
            text = render_reason(spec.name, None, CONTEXT_ROW, lang)
            assert "{" not in text and "?" not in text, (spec.name, text)
            for n in (*COUNTS, 0):
                text = render_reason(spec.name, float(n), CONTEXT_ROW, lang)
                assert not re.search(r"\{|\w\|\w", text), (spec.name, text)


# --- the value per kg ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "kg", "en", "ru"),
    [
        # SH0000099908: 14,029 USD for 12,971 kg, the bar that lowered the risk
        (14029.0, 12971.0, "1.08", "1,08"),
        # SH0000099857: bicycles and toys, 8,455 USD for 1,052 kg
        (8455.0, 1052.0, "8.04", "8,04"),
        (762.0, 190.0, "4.01", "4,01"),
        (250_000.0, 50.0, "5,000", "5\u00a0000"),
        (12.0, 50_000.0, "0.00024", "0,00024"),
    ],
)
def test_value_per_kg_gives_the_value(usd: float, kg: float, en: str, ru: str) -> None:
    value = math.log10(usd / kg)  # the feature's value, as the model reads it
    assert render_reason("log_value_per_kg", value, CONTEXT_ROW) == (
        f"Declared value about {en} USD per kg gross"
    )
    assert render_reason("log_value_per_kg", value, CONTEXT_ROW, "ru") == (
        f"Заявленная стоимость около {ru} USD за кг брутто"
    )


def test_value_per_kg_missing_and_never_unusual() -> None:
    assert render_reason("log_value_per_kg", None, CONTEXT_ROW) == (
        "Declared value per kg gross not known (no value in USD)"
    )
    assert render_reason("log_value_per_kg", None, CONTEXT_ROW, "ru") == (
        "Заявленная стоимость за кг брутто неизвестна (нет стоимости в USD)"
    )
    for value in (-3.0, 0.0, 0.03, 2.0, 6.0):
        assert "unusual" not in render_reason("log_value_per_kg", value, CONTEXT_ROW)
        assert "Необычн" not in render_reason("log_value_per_kg", value, CONTEXT_ROW, "ru")


# --- the arms-heading margin --------------------------------------------------------

CLOSE_EN = (
    "Description 'sports goods, other' is about as close to the text of HS 9303 (arms, "
    "ammunition) as to the text of its declared code (similarity to HS 9303 minus "
    "similarity to the declared code: {v})"
)
CLOSE_RU = (
    "Описание «sports goods, other» примерно так же близко к тексту ТН ВЭД 9303 (оружие, "
    "боеприпасы), как к тексту заявленного кода (сходство с 9303 минус сходство с "
    "заявленным кодом: {v})"
)
UNUSUAL_EN = (
    "Description 'sports goods, other' resembles the text of HS 9303 (arms, ammunition) "
    "unusually closely for its declared code (similarity to HS 9303 minus similarity to "
    "the declared code: {v})"
)
UNUSUAL_RU = (
    "Описание «sports goods, other» необычно близко к тексту ТН ВЭД 9303 (оружие, "
    "боеприпасы) для заявленного кода (сходство с 9303 минус сходство с заявленным "
    "кодом: {v})"
)


@pytest.mark.parametrize(
    ("margin", "en", "ru"),
    [
        (0.004, CLOSE_EN.format(v="+0.00"), CLOSE_RU.format(v="+0,00")),
        (0.0105, CLOSE_EN.format(v="+0.01"), CLOSE_RU.format(v="+0,01")),
        (0.044, CLOSE_EN.format(v="+0.04"), CLOSE_RU.format(v="+0,04")),
        # from 0.05 as shown: the text never says "+0.05" both ways
        (0.0496, UNUSUAL_EN.format(v="+0.05"), UNUSUAL_RU.format(v="+0,05")),
        (0.05, UNUSUAL_EN.format(v="+0.05"), UNUSUAL_RU.format(v="+0,05")),
        (0.31, UNUSUAL_EN.format(v="+0.31"), UNUSUAL_RU.format(v="+0,31")),
    ],
)
def test_arms_margin_is_unusual_only_from_a_meaningful_size(
    margin: float, en: str, ru: str
) -> None:
    assert render_reason("description_arms_margin", margin, CONTEXT_ROW) == en
    assert render_reason("description_arms_margin", margin, CONTEXT_ROW, "ru") == ru


def test_a_negative_arms_margin_keeps_its_text() -> None:
    assert render_reason("description_arms_margin", -0.02, CONTEXT_ROW) == (
        "Description 'sports goods, other' is closer to the text of its declared code than "
        "to HS 9303 (arms, ammunition), but less clearly than usual (similarity to HS 9303 "
        "minus similarity to the declared code: -0.02)"
    )


# --- the firearm-part words -----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "words", "en", "ru"),
    [
        (1, "barrels", "barrels (1 match)", "barrels (1 совпадение)"),
        (2, "barrels", "barrels (2 matches)", "barrels (2 совпадения)"),
        (5, "barrel, trigger", "barrel, trigger (5 matches)", "barrel, trigger (5 совпадений)"),
        (11, "ствол", "ствол (11 matches)", "ствол (11 совпадений)"),
        (21, "затвор", "затвор (21 matches)", "затвор (21 совпадение)"),
    ],
)
def test_part_terms_name_the_words(n: int, words: str, en: str, ru: str) -> None:
    context = {**CONTEXT_ROW, "part_words": words}
    assert render_reason("part_terms", float(n), context) == (
        f"Description uses firearm-part words: {en}"
    )
    assert render_reason("part_terms", float(n), context, "ru") == (
        f"В описании слова, обозначающие части оружия: {ru}"
    )


def test_part_terms_without_words_or_count() -> None:
    none = {**CONTEXT_ROW, "part_words": None}
    assert render_reason("part_terms", 0.0, none) == "No firearm-part words in the descriptions"
    assert render_reason("part_terms", 0.0, none, "ru") == (
        "В описаниях нет слов, обозначающих части оружия"
    )
    # a score stored before the context kept the words: the count alone
    old = {k: v for k, v in CONTEXT_ROW.items() if k != "part_words"}
    assert render_reason("part_terms", 2.0, old) == (
        "Description uses firearm-part words (2 matches)"
    )
    assert render_reason("part_terms", 2.0, old, "ru") == (
        "В описании слова, обозначающие части оружия (2 совпадения)"
    )
    stored = [{"feature": "part_terms", "value": 1.0, "text_en": "old", "text_ru": "old"}]
    fresh = refresh_reason_texts(stored, CONTEXT_ROW)[0]
    assert fresh["text_en"] == "Description uses firearm-part words: barrels (1 match)"


def test_arms_terms_at_zero_say_none() -> None:
    assert render_reason("arms_terms", 0.0, CONTEXT_ROW) == (
        "No firearm or ammunition terms in the descriptions"
    )
    assert render_reason("arms_terms", 0.0, CONTEXT_ROW, "ru") == (
        "В описаниях нет слов, обозначающих оружие или боеприпасы"
    )


PART_CASES = {
    "barrels": ((("731010", BARRELS),), 1, "barrels"),
    "two_lines": (
        (("846693", "Trigger and BARREL for tools"), ("731010", "barrel bolts for doors, steel")),
        3,
        "barrel, trigger",
    ),
    "russian": ((("848180", "Затвор дисковый, затворы"),), 2, "затвор, затворы"),
    "many": (
        (("950699", "barrel trigger receiver magazine slide stock grip sear"),),
        8,
        "barrel, grip, magazine, receiver, sear, …",
    ),
    "none": ((("620520", "men's cotton shirts"),), 0, None),
    "not_plain": ((("731010", "ствол\u0301 barrel"),), 2, None),  # checked below
}


def _part_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    h = history(
        [ship(i, i) for i in range(len(PART_CASES))],
        [
            line(i, n, hs_code=code, description=text)
            for i, (lines, _, _) in enumerate(PART_CASES.values())
            for n, (code, text) in enumerate(lines, start=1)
        ],
    )
    return h.shipments, h.items


def test_part_words_reach_the_context_by_both_paths() -> None:
    """The words matched are a context column (`CONTEXT`), the same by the path for a
    few shipments and by the batch path; the count the model reads is unchanged."""
    ships, items = _part_frames()
    h = history(ships.to_dicts(), items.to_dicts())
    hs_text.nomenclature_text().memo.clear()
    few = build_features(ships, items, h)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(goods, "SMALL", -1)
        mp.setattr(hs_text, "MEMO_ROWS", -1)
        batch = build_features(ships, items, h)
    assert_frame_equal(few, batch, check_exact=True)
    rows = dict(zip(PART_CASES, few.to_dicts(), strict=True))
    for case, (_, count, words) in PART_CASES.items():
        assert rows[case]["part_terms"] == count, case
        if case != "not_plain":
            assert rows[case]["part_words"] == words, case
    # (a description Python's regex may not read as Polars does: Polars' words)
    expected = pl.Series(["ствол\u0301 barrel"]).str.extract_all(goods._PARTS).to_list()[0]
    assert rows["not_plain"]["part_words"] == ", ".join(sorted(w.lower() for w in expected))
    text = render_reason("part_terms", rows["barrels"]["part_terms"], rows["barrels"])
    assert text == "Description uses firearm-part words: barrels (1 match)"


def test_term_words_in_python_are_polars_words() -> None:
    """`_term_words` (the few lines' path) gives `_term_frame`'s `__part_words`
    (Polars) on random texts, plain or not."""
    rng = np.random.default_rng(24)
    words = [
        "Barrel", "BARRELS", "trigger", "Triggers", "receiver", "magazines", "slide", "stock",
        "grips", "muzzle-brake", "muzzlebrake", "sear", "handguard", "buffer tube",
        "recoil springs", "bolt assembly", "bolts assembled", "ствол", "Ствольная", "ЗАТВОР",
        "магазин", "спусковой", "курок", "приклад", "цевьё", "рукоятка", "пружина",
        "возвратная", "barrelled", "x", "ё", "\u0301", "İ", "ß",
    ]  # fmt: skip
    texts: list[str | None] = [None, "", "no parts here"]
    for _ in range(2000):
        parts = [str(rng.choice(words)) for _ in range(int(rng.integers(0, 8)))]
        seps = [str(rng.choice([" ", "", "-", ",", "\n"])) for _ in parts]
        texts.append("".join(p + s for p, s in zip(parts, seps, strict=True)))
    counts = goods._term_counts(texts, goods._PARTS)
    frame = pl.DataFrame({"description": texts}, schema={"description": pl.String})
    polars_words = (
        frame.join(
            goods._term_frame(frame),
            on="description",
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .get_column("__part_words")
        .to_list()
    )
    python_words = goods._term_words(texts, counts)
    assert [w or [] for w in polars_words] == python_words
    assert sum(map(len, python_words)) > 2000  # (the pattern did match)
    assert any(t is not None and not hs_text.plain(t) for t in texts)


def test_words_text_is_the_polars_join() -> None:
    lists = [[], ["b"], ["b", "a"], list("gfedcba"), ["ствол", "barrel", "Zeta"]]
    frame = pl.DataFrame({"w": lists}, schema={"w": pl.List(pl.String)})
    # `_joined_words` takes a sorted list of distinct words (the aggregate's)
    sorted_frame = frame.select(pl.col("w").list.unique().list.sort())
    joined = sorted_frame.select(goods._joined_words("w").alias("t"))["t"].to_list()
    assert joined == [goods._words_text(set(w)) for w in lists]
    assert joined[:4] == [None, "b", "a, b", "a, b, c, d, e, …"]
