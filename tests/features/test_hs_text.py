"""Descriptions against the nomenclature text of their declared HS code
(`features.hs_text`) and the goods family features built on it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.feature_extraction.text import CountVectorizer

from data_contracts.loaders import ReferenceFileError
from data_contracts.loaders.hs import load_hs_nomenclature
from features.hs_text import (
    NomenclatureText,
    default_table_path,
    gram_bucket,
    load_text_table,
    ngram_counts,
    nomenclature_text,
    normalise,
)
from features.registry import render_reason
from pipelines.synthetic import WorldConfig, generate_world
from pipelines.synthetic import catalog as cat
from tests.features.test_families import features_of, history, line, ship

HS_FILE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "hs_nomenclature_2022.csv"


def sims(
    descriptions: list[str | None], codes: list[str], model: NomenclatureText | None = None
) -> list[float | None]:
    model = model or nomenclature_text()
    out = model.score(pl.Series(descriptions, dtype=pl.String), pl.Series(codes))
    return out["hs_text_sim"].to_list()


def known(
    descriptions: list[str | None], codes: list[str], model: NomenclatureText | None = None
) -> list[float]:
    """`sims` where every code has a text (so every value is a number)."""
    values = sims(descriptions, codes, model)
    assert all(v is not None for v in values)
    return [float(v or 0.0) for v in values]


def test_hashed_ngrams_are_scikit_learns_char_ngrams() -> None:
    texts = pl.Series(
        ["Hello  World", "затворная рама\tдля  станка", "a", "", None, "x" * 600, "Ствол 7.62 мм"]
    )
    counts = ngram_counts(texts)
    analyzer = CountVectorizer(analyzer="char", ngram_range=(3, 5), lowercase=False)
    grams_of = analyzer.build_analyzer()
    for i, text in enumerate(normalise(texts).to_list()):
        expected: dict[int, float] = {}
        for gram in grams_of(text) if text is not None else []:
            expected[gram_bucket(gram)] = expected.get(gram_bucket(gram), 0.0) + 1.0
        row = counts.getrow(i)
        assert dict(zip(row.indices.tolist(), row.data.tolist(), strict=True)) == expected
    assert counts[5].sum() == 600 + 599 + 598  # 602 characters with the two spaces


def test_a_matching_description_scores_high_and_a_mismatching_one_low() -> None:
    honest, cover, other = known(
        [
            "Parts and accessories for machine tools: tool holders and lathe chucks",
            "bolt carrier group, trigger mechanism",
            "Parts and accessories for machine tools: tool holders and lathe chucks",
        ],
        ["8466930000", "8466930000", "6109100000"],
    )
    assert honest > 0.3
    assert cover < honest / 3
    # The same honest words under an unrelated code match poorly too.
    assert other < honest / 3


def test_russian_descriptions_match_the_russian_text() -> None:
    en, ru, ru_wrong = known(
        ["centrifugal pumps for water", "насосы центробежные для воды", "насосы центробежные"],
        ["841370", "841370", "640399"],
    )
    assert ru > 0.3 and en > 0.3
    assert abs(ru - en) < 0.25  # either language is matched against its own text
    assert ru_wrong < ru / 3


def test_a_russian_only_or_english_only_table(tmp_path: Path) -> None:
    table = tmp_path / "tariff.csv"
    table.write_text(
        "hscode,en,ru\n"
        "8413,,Насосы жидкостные; насосы центробежные\n"
        "8482,Ball or roller bearings,\n"
        "9305,Parts and accessories of firearms: barrels bolts triggers,\n",
        encoding="utf-8",
    )
    model = NomenclatureText.fit(load_text_table(table))
    ru, en_vs_ru_text, en = known(
        ["насосы центробежные", "centrifugal pumps", "ball bearings"],
        ["841370", "841370", "848210"],
        model,
    )
    assert ru > 0.5 and en > 0.5
    assert en_vs_ru_text < 0.1  # no translation: an English line against Russian-only text


def test_unknown_code_or_missing_description_is_null_not_zero() -> None:
    known, unknown, missing = sims(
        ["cotton t-shirts", "cotton t-shirts", None], ["610910", "999999", "610910"]
    )
    assert known is not None and known > 0
    assert unknown is None
    assert missing is None


def test_every_prefix_of_a_national_code_is_compared(tmp_path: Path) -> None:
    table = tmp_path / "national.csv"
    table.write_text(
        "hscode,en,ru\n"
        "8466,Parts and accessories for machine-tools,\n"
        "846693,For machines of headings 8456 to 8461,\n"
        "8466930001,Chucks for lathes,Патроны токарные\n",
        encoding="utf-8",
    )
    model = NomenclatureText.fit(load_text_table(table))
    national, heading_only = known(
        ["патроны токарные", "патроны токарные"], ["8466930001", "8466930009"], model
    )
    assert national > 0.9 > heading_only


def test_bad_tables_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("hscode,en\n84661,five digits\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match="4, 6, 8 or 10 digits"):
        load_text_table(bad)
    other = tmp_path / "other.csv"
    other.write_text("code,text\n8466,x\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match="expected columns"):
        load_text_table(other)


def test_scoring_all_lines_at_once_equals_one_by_one() -> None:
    descriptions = [
        "steel bolts M8 with nuts",
        "затворная рама для пневмоинструмента",
        "steel bolts M8 with nuts",
        "hunting rifles",
        "binoculars 10x42",
    ]
    codes = ["731815", "846693", "7318159000", "930330", "900510"]
    model = nomenclature_text()
    together = model.score(pl.Series(descriptions), pl.Series(codes))
    one_by_one = pl.concat(
        [
            model.score(pl.Series([d]), pl.Series([c]))
            for d, c in zip(descriptions, codes, strict=True)
        ]
    )
    assert_frame_equal(together, one_by_one, check_exact=False, abs_tol=1e-12)
    assert together["hs_text_sim"].null_count() == 0
    assert nomenclature_text() is model  # fitted once per process


def test_arms_wording_fits_chapter_93() -> None:
    out = nomenclature_text().score(
        pl.Series(["затворная рама и ударно-спусковой механизм", "cotton bed linen sets"]),
        pl.Series(["846693", "630231"]),
    )
    arms, linen = out.to_dicts()
    assert arms["arms_text_heading"] == "9305"
    assert arms["arms_text_sim"] > arms["hs_text_sim"]
    assert linen["arms_text_sim"] < linen["hs_text_sim"]


def test_family_values_in_build_features() -> None:
    ships = [ship(0, 0), ship(1, 0), ship(2, 0), ship(3, 0)]
    items = [
        line(0, 1, hs_code="8466930000", description="Parts and accessories for machine tools"),
        line(0, 2, hs_code="8466930000", description="bolt carrier and trigger mechanism"),
        line(1, 1, hs_code="846729", description="Шлифмашины угловые электрические"),
        line(2, 1, hs_code="999999", description="cotton t-shirts"),
        line(3, 1, hs_code="930330", description="hunting rifles, bolt action"),
    ]
    out = features_of(history(ships, items))
    per_line = nomenclature_text().score(
        pl.Series([i["description"] for i in items]), pl.Series([i["hs_code"] for i in items])
    )
    s = per_line["hs_text_sim"].to_list()
    a = per_line["arms_text_sim"].to_list()
    sim = out["description_hs_similarity"].to_list()
    assert sim[0] == pytest.approx(min(s[0], s[1]))  # the worst line
    assert sim[1] == pytest.approx(s[2])
    # no text for the code: not compared, at the end that reads as no mismatch (a
    # null would read as 0, "no match", to a model that saw none; UAT2 DS F1)
    assert sim[2] == 1.0 and out["hs_text_line"].to_list()[2] is None
    assert sim[3] == pytest.approx(s[4])
    assert out["hs_text_line"].to_list()[:2] == [items[1]["description"], items[2]["description"]]
    assert out["hs_text_code"].to_list()[0] == "846693"
    margin = out["description_arms_margin"].to_list()
    assert margin[0] == pytest.approx(max(a[0] - s[0], a[1] - s[1]))
    assert margin[0] > 0 > margin[1]
    assert margin[3] == -1.0  # declared as arms: nothing is hidden (UAT2 DS F1)
    assert out["arms_fit_heading"].to_list()[0] == "9305"
    row = out.row(0, named=True)
    en = render_reason("description_hs_similarity", row["description_hs_similarity"], row)
    assert en == (
        "Description 'bolt carrier and trigger mechanism' hardly matches the tariff text of "
        f"HS 846693 (similarity {row['description_hs_similarity']:.2f})"
    )
    ru = render_reason("description_arms_margin", row["description_arms_margin"], row, "ru")
    assert "«bolt carrier and trigger mechanism»" in ru and "9305" in ru


@pytest.mark.reference
def test_project_table_codes_exist_in_hs_2022_and_the_full_nomenclature_loads() -> None:
    real = load_hs_nomenclature(HS_FILE)
    ours = load_text_table(default_table_path())
    missing = set(ours["hscode"]) - set(real["hscode"])
    assert not missing
    assert ours.filter(pl.col("en").is_null() | pl.col("ru").is_null()).height == 0
    # A deployment may point at the full nomenclature (UN Comtrade layout).
    full = nomenclature_text(HS_FILE)
    assert full.texts.height > 6000
    honest, cover = known(
        ["lathes for removing metal, horizontal", "bolt carrier group"], ["845819", "845819"], full
    )
    assert honest > 0.3 > cover


def test_misdeclared_lines_of_the_synthetic_world_score_lower() -> None:
    """Lines the generator's typologies declared under a cover code with their own
    wording (cat.PARTS_*, AMMO_COVER, OPTICS_COVER, POSTAL_*) against lawful lines
    described with their code's usual text."""
    rates = {"parts_misdeclared": 0.02, "postal_split": 0.02, "dual_use_optics": 0.01}
    world = generate_world(WorldConfig(n_shipments=4000, seed=5, typology_rates=rates))
    cover = {
        d
        for _, d in (
            *cat.PARTS_DESCRIPTIONS,
            *cat.PARTS_WORDED,
            *cat.AMMO_COVER,
            *cat.OPTICS_COVER,
            *cat.POSTAL_COVER,
            *cat.POSTAL_WORDED,
        )
    }
    own = pl.DataFrame(
        [(g.hs6, t) for g in cat.GOODS for t in (*g.en, *g.ru)],
        schema=["hs6", "description"],
        orient="row",
    ).with_columns(pl.lit(True).alias("own_text"))
    lines = (
        world.items.select("shipment_id", "hs_code", "description")
        .join(world.truth.select("shipment_id", "is_trafficking"), on="shipment_id")
        .with_columns(pl.col("hs_code").str.slice(0, 6).alias("hs6"))
        .join(own, on=["hs6", "description"], how="left")
        .with_columns(pl.col("own_text").fill_null(False))
    )
    scored = pl.concat(
        [lines, nomenclature_text().score(lines["description"], lines["hs_code"])],
        how="horizontal",
    ).with_columns((pl.col("arms_text_sim") - pl.col("hs_text_sim")).alias("margin"))
    mismatched = scored.filter(
        pl.col("is_trafficking") & pl.col("description").is_in(sorted(cover)) & ~pl.col("own_text")
    )
    honest = scored.filter(~pl.col("is_trafficking") & pl.col("own_text"))
    assert mismatched.height >= 30 and honest.height > 1000
    mis_sim, honest_sim = mismatched["hs_text_sim"].mean(), honest["hs_text_sim"].mean()
    assert mis_sim is not None and honest_sim is not None
    assert mis_sim < honest_sim - 0.1  # type: ignore[operator]
    assert mismatched["margin"].mean() > honest["margin"].mean()  # type: ignore[operator]


def test_small_calls_from_the_memo_equal_the_full_scoring() -> None:
    """The API's one-shipment calls answer recurring pairs from the memo: the same
    values, types and order as scoring them afresh, nulls included."""
    descriptions = ["bolt carrier and trigger", None, "ball bearings", "bolt carrier and trigger"]
    codes = ["846693", "846693", "848210", "846693"]
    model = nomenclature_text()
    d, c = pl.Series(descriptions, dtype=pl.String), pl.Series(codes)
    fresh = model._score(d, c)
    first = model.score(d, c)
    assert (descriptions[0], codes[0]) in model.memo
    again = model.score(d, c)
    assert_frame_equal(first, fresh, check_exact=True)
    assert_frame_equal(again, fresh, check_exact=True)
    assert again["hs_text_sim"][1] is None
