"""The description features of shipments declared wholly under chapter 93, of
shipments whose headings have no tariff text, and of mixed ones (UAT2 DS F1):
the same values by the batch path and by the path for a few lines, and reason
texts that say which case it is.

`description_arms_margin` used to be null in both first cases, and a model
learned that null means arms. Now: the largest margin over the lines declared
outside chapter 93 that were compared, -1 (the bottom of its range, which a
monotone model cannot score above any compared margin) when there is none; and
`description_hs_similarity` is 1 (the end that reads as no mismatch) when no
line's code has tariff text, not null (which LightGBM reads as 0, the risky end,
when it saw no null in training).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import goods, hs_text
from features.build import build_features
from features.context import Params
from features.hs_text import nomenclature_text
from features.registry import render_reason
from tests.features.test_families import history, line, ship

PARAMS = Params()
RIFLES = ("930330", "hunting rifles, bolt action")
CARTRIDGES = ("930621", "cartridges for sporting rifles")
SEAMLESS = ("730441", "stainless steel seamless tubes for boilers")  # 7304: no tariff text
WELDED = ("730640", "stainless steel welded tubes for boilers")  # 7306: has text
FISH = ("030489", "frozen fish fillets of trout")  # 0304: no tariff text
BOLT = ("846693", "bolt carrier and trigger mechanism")  # 8466: has text
CASES: dict[str, tuple[tuple[str, str], ...]] = {
    "all_93": (RIFLES, CARTRIDGES),
    "no_text": (SEAMLESS,),
    "no_text_two_lines": (FISH, SEAMLESS),
    "no_text_and_text": (SEAMLESS, WELDED),
    "93_and_text": (RIFLES, BOLT),
    "93_and_no_text": (RIFLES, FISH),
}
NO_TEXT_EN = "The tariff table has no text to compare the descriptions with"
NO_ARMS_TEXT_EN = (
    "No description compared with the arms headings (no tariff text for the declared codes)"
)
CHAPTER_93_EN = "Goods declared under chapter 93 (arms and ammunition)"


def _frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    h = history(
        [ship(i, i) for i in range(len(CASES))],
        [
            line(i, n, hs_code=code, description=text)
            for i, lines in enumerate(CASES.values())
            for n, (code, text) in enumerate(lines, start=1)
        ],
    )
    return h.shipments, h.items


def _both_paths(fn: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`fn()` by the path for a few lines (text memo cold) and by the batch path."""
    nomenclature_text().memo.clear()
    few = fn()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(goods, "SMALL", -1)
        mp.setattr(hs_text, "MEMO_ROWS", -1)
        batch = fn()
    return few, batch


def _line_scores(lines: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    return (
        nomenclature_text()
        .score(pl.Series([t for _, t in lines]), pl.Series([c for c, _ in lines]))
        .to_dicts()
    )


@pytest.fixture(scope="module")
def prepared() -> dict[str, dict[str, Any]]:
    ships, items = _frames()
    reference = goods.Reference.build(ships, items, PARAMS)
    few, batch = _both_paths(lambda: goods.prepare(ships, items, reference, PARAMS))
    assert goods._small(ships, items)
    assert_frame_equal(few, batch, check_exact=True)
    return dict(zip(CASES, few.to_dicts(), strict=True))


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    ships, items = _frames()
    h = history(ships.to_dicts(), items.to_dicts())
    few, batch = _both_paths(lambda: build_features(ships, items, h))
    assert_frame_equal(few, batch, check_exact=True)
    return dict(zip(CASES, few.to_dicts(), strict=True))


def test_the_table_has_text_for_some_headings_and_not_others() -> None:
    sims = [s["hs_text_sim"] for s in _line_scores((SEAMLESS, FISH, WELDED, BOLT, RIFLES))]
    assert sims[:2] == [None, None] and None not in sims[2:]


def test_all_lines_under_chapter_93(prepared: dict[str, dict[str, Any]]) -> None:
    row = prepared["all_93"]
    assert row["__arms_margin"] == -1.0  # no line outside chapter 93: none reads as arms
    assert row["arms_fit_line"] is None and row["arms_fit_heading"] is None
    # chapter 93 has tariff text: the similarity is computed (not the no-text value)
    assert row["__hs_text_sim"] == pytest.approx(
        min(s["hs_text_sim"] for s in _line_scores(CASES["all_93"]))
    )
    assert row["__hs_text_sim"] < 1.0 and row["__ch93"] == 2


@pytest.mark.parametrize("case", ["no_text", "no_text_two_lines"])
def test_no_tariff_text(prepared: dict[str, dict[str, Any]], case: str) -> None:
    row = prepared[case]
    assert row["__arms_margin"] == -1.0  # not null: null was learned as arms
    assert row["__hs_text_sim"] == 1.0  # not null: LightGBM reads null as 0, "no match"
    assert row["hs_text_line"] is None and row["hs_text_code"] is None
    assert row["arms_fit_line"] is None and row["arms_fit_heading"] is None
    assert row["__ch93"] == 0


def test_lines_without_text_are_left_out_of_mixed_shipments(
    prepared: dict[str, dict[str, Any]],
) -> None:
    _, welded = _line_scores(CASES["no_text_and_text"])
    row = prepared["no_text_and_text"]
    assert row["__hs_text_sim"] == pytest.approx(welded["hs_text_sim"])
    assert row["__arms_margin"] == pytest.approx(welded["arms_text_sim"] - welded["hs_text_sim"])
    assert row["hs_text_line"] == WELDED[1] and row["arms_fit_line"] == WELDED[1]

    rifles, bolt = _line_scores(CASES["93_and_text"])
    row = prepared["93_and_text"]  # the chapter 93 line is not in the margin
    assert row["__arms_margin"] == pytest.approx(bolt["arms_text_sim"] - bolt["hs_text_sim"])
    assert row["__arms_margin"] > 0 and row["arms_fit_line"] == BOLT[1]
    assert row["__hs_text_sim"] == pytest.approx(min(rifles["hs_text_sim"], bolt["hs_text_sim"]))

    rifles, _ = _line_scores(CASES["93_and_no_text"])
    row = prepared["93_and_no_text"]  # nothing outside chapter 93 compared
    assert row["__arms_margin"] == -1.0 and row["arms_fit_line"] is None
    assert row["__hs_text_sim"] == pytest.approx(rifles["hs_text_sim"])


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_reasons_say_which_case_it_is(built: dict[str, dict[str, Any]], lang: str) -> None:
    def text(case: str, name: str) -> str:
        row = built[case]
        return render_reason(name, row[name], row, lang)

    margin, sim = "description_arms_margin", "description_hs_similarity"
    chapter_93 = text("all_93", margin)
    no_text = text("no_text", margin)
    assert chapter_93 != no_text
    assert text("93_and_no_text", margin) == chapter_93
    assert text("no_text_two_lines", margin) == no_text
    assert text("no_text", sim) == text("no_text_two_lines", sim)
    if lang == "en":
        assert chapter_93 == CHAPTER_93_EN
        assert no_text == NO_ARMS_TEXT_EN
        assert text("no_text", sim) == NO_TEXT_EN
        assert text("no_text_and_text", sim).startswith(f"Description '{WELDED[1]}'")
        assert text("93_and_text", margin).startswith(f"Description '{BOLT[1]}' resembles")
    assert "93" not in no_text and "?" not in no_text + chapter_93
    # the features the model reads: no null for either case
    for case in ("all_93", "no_text", "93_and_no_text"):
        assert built[case][margin] == -1.0
    assert built["no_text"][sim] == 1.0 and built["all_93"][sim] < 1.0
    assert built["all_93"]["arms_chapter_lines"] == 2
    assert built["no_text"]["arms_chapter_lines"] == 0
