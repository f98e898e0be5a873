"""The few-lines text scoring (`NomenclatureText._score_few`, numpy on each
description's row) gives the batch scoring's numbers to the bit, on random
descriptions: words of the tariff texts (long overlaps, which the sums add in
blocks), other words in Latin and Cyrillic, empty and blank texts, missing
descriptions and codes, codes without text, national codes longer than the table's."""

from __future__ import annotations

import random

import polars as pl
from polars.testing import assert_frame_equal

from features import hs_text
from features.hs_text import nomenclature_text


def _pairs(seed: int, n: int) -> list[tuple[str | None, str | None]]:
    model = nomenclature_text()
    rng = random.Random(seed)
    texts = list(model.code_rows)
    table = hs_text.load_text_table(hs_text.default_table_path())
    tariff = table["en"].drop_nulls().to_list() + table["ru"].drop_nulls().to_list()
    words = [w for text in tariff for w in text.split()]
    words += ["bolt", "carrier", "затвор", "ствол", "Ёж", "spare", "x" * 40, "TRIGGER", "магазин"]
    codes: list[str | None] = [*texts, None, "0000", "93", "930590", "8466930000", "84669399"]
    pairs: list[tuple[str | None, str | None]] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.05:
            description: str | None = None
        elif kind < 0.1:
            description = rng.choice(["", "  ", "ab", "\t"])
        elif kind < 0.2:  # a whole tariff text, maybe twice (hundreds of shared n-grams)
            description = rng.choice(tariff) * rng.randint(1, 2)
        else:
            description = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        pairs.append((description, rng.choice(codes)))
    return list(dict.fromkeys(pairs))


def test_few_pairs_score_as_the_batch_to_the_bit() -> None:
    model = nomenclature_text()
    pairs = _pairs(3, 1500)
    want = model._score(
        pl.Series([p[0] for p in pairs], dtype=pl.String),
        pl.Series([p[1] for p in pairs], dtype=pl.String),
    )
    got = [row for i in range(0, len(pairs), 3) for row in model._score_few(pairs[i : i + 3])]
    assert_frame_equal(
        pl.DataFrame(got, schema=hs_text.SCORE_SCHEMA, orient="row"), want, check_exact=True
    )
    # (the sample reaches what the scores can be: matches, mismatches, no text)
    sims = want["hs_text_sim"]
    assert sims.null_count() > 0 and (sims > 0.9).any() and (sims < 0.2).any()


def test_a_row_is_the_sparse_tfidf_row() -> None:
    model = nomenclature_text()
    for description, _ in _pairs(4, 300):
        if description is None:
            continue
        norm = hs_text.normalised([description])
        want = hs_text._tfidf(model.idf, hs_text.hashed_counts(norm))
        indices, data = model._few_row(norm[0])
        assert indices.tolist() == want.indices.tolist()
        assert data.tobytes() == want.data.tobytes()
