"""The goods family's path for a few lines (`features.goods.SMALL`: the API's one
shipment) gives exactly what the batch path gives: `prepare`, `Reference.append`,
the text scores, and the Python stand-ins for Polars (strings, regexes, sums)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from data_contracts.settings import DataLayout
from features import goods, hs_text
from features.context import History, Params
from features.hs_text import nomenclature_text, normalise, normalised, plain
from pipelines.features import load_history
from tests.features.test_families import day, history, line, ship

PARAMS = Params()


@pytest.fixture(scope="module")
def world(small_world: DataLayout) -> History:
    return load_history(small_world)


@pytest.fixture(scope="module")
def reference(world: History) -> goods.Reference:
    return goods.Reference.build(world.shipments, world.items, PARAMS)


@pytest.fixture
def batch_path() -> Iterator[pytest.MonkeyPatch]:
    """A context in which every call takes the batch path (frames, no memo)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(goods, "SMALL", -1)
        mp.setattr(hs_text, "MEMO_ROWS", -1)
        yield mp


def _prepare_both(
    ships: pl.DataFrame, items: pl.DataFrame, ref: goods.Reference
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`prepare` by the small path (text memo cold, then warm) and by the batch path."""
    assert goods._small(ships, items)
    ref.text.memo.clear()
    cold = goods.prepare(ships, items, ref, PARAMS)
    warm = goods.prepare(ships, items, ref, PARAMS)
    assert_frame_equal(cold, warm, check_exact=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(goods, "SMALL", -1)
        mp.setattr(hs_text, "MEMO_ROWS", -1)
        batch = goods.prepare(ships, items, ref, PARAMS)
    return cold, batch


def _items_of(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    return items.join(ships.select("shipment_id"), on="shipment_id", how="semi")


def test_sampled_shipments_equal_the_batch(world: History, reference: goods.Reference) -> None:
    full = goods.prepare(world.shipments, world.items, reference, PARAMS)
    assert full.schema == pl.Schema(goods.PREPARED_SCHEMA)
    rng = np.random.default_rng(7)
    compared = 0
    for k in range(150):
        rows = rng.choice(world.shipments.height, 1 + k % 5, replace=False)
        ships = world.shipments[rows.tolist()]
        items = _items_of(world.items, ships)
        if not goods._small(ships, items):
            continue
        few, batch = _prepare_both(ships, items, reference)
        assert_frame_equal(few, batch, check_exact=True)
        # ... and what the batch over the whole history gave them.
        want = ships.select("shipment_id").join(
            full, on="shipment_id", how="left", maintain_order="left"
        )
        assert_frame_equal(few, want, check_exact=True)
        compared += 1
    assert compared > 100


# Hand-made lines: a reference of 8 earlier lines for 846693 x CN, 3 + 3 for 930510
# (TR and CN: below MIN_REFERENCE per origin, enough per HS6), none for the rest.
_PAST = [(i, 10 * i, "8466930000", "CN", 1000.0 + 37 * i) for i in range(8)] + [
    (8 + i, 10 * i + 5, "9305100000", "TR" if i < 3 else "CN", 4000.0 * (1 + i)) for i in range(6)
]
_NEW: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    (  # English arms and part terms, a code with a reference, a tie for hs4_main
        {"invoice_currency": "USD"},
        [
            {
                "description": "Rifle scope 7.62 caliber, bolt carrier group, 12 gauge barrels",
                "hs_code": "8466930000",
            },
            {"description": "Trigger and firing pins; magazine springs", "hs_code": "8205590000"},
            {"description": "Lathe chucks", "hs_code": "8466200000", "value": 18400.0},
        ],
    ),
    (  # Russian terms, a code whose origin has too few earlier lines (HS6 instead)
        {"invoice_currency": "RUB"},
        [
            {
                "description": "Затворная рама и ствол для карабина, патроны 5,45 — ПРИЦЕЛ",
                "hs_code": "9305100000",
                "origin_country": "TR",
            },
            {"description": "Запасные части: пружина возвратная", "hs_code": "9305100000"},
        ],
    ),
    (  # nulls, zero quantity and mass, a code without tariff text, short codes
        {"invoice_currency": "EUR"},
        [
            {"description": None, "value": None, "hs_code": "7318150000"},
            {"quantity": 0.0, "description": "bolts assembly, hex", "hs_code": "7318"},
            {"net_mass_kg": 0.0, "quantity": 0.0, "hs_code": "0101210000"},
            {"description": "", "hs_code": "93", "line_no": None},
            {"value": -5.0, "description": "ammo boxes", "hs_code": "3926"},
            {"hs_code": None, "description": "rifle"},
            {"value": 0.0, "hs_code": "8466930000"},  # log 0
            {"net_mass_kg": 0.0, "hs_code": "8466930000"},
        ],
    ),
    ({"invoice_currency": "XXX"}, [{"description": "pistol grips"}]),  # unknown currency
    ({"invoice_currency": None}, [{"description": "Silencers", "hs_code": "9306"}]),
    (  # texts Python and Polars treat differently (handled by Polars)
        {"invoice_currency": "USD"},
        [
            {"description": "rıfle barrel İ", "hs_code": "8466930000"},
            {"description": "ружье\u0301 охотничье", "hs_code": "9303"},
            {"description": "x² gun\x1cpowder ΣΤΟΚΟΣ", "hs_code": "9305100000"},
        ],
    ),
    ({"invoice_currency": "USD"}, []),  # a shipment without lines
    ({"invoice_currency": "USD"}, [{"value": None, "hs_code": "8466930000"}]),  # (no value)
]


def _hand_made() -> tuple[History, pl.DataFrame, pl.DataFrame]:
    past = history(
        [ship(i, at) for i, at, *_ in _PAST],
        [
            line(i, hs_code=code, origin_country=origin, value=value)
            for i, _, code, origin, value in _PAST
        ],
    )
    new = history(
        [ship(100 + k, 200 + k, **changes) for k, (changes, _) in enumerate(_NEW)],
        [
            line(100 + k, n) | changes
            for k, (_, lines) in enumerate(_NEW)
            for n, changes in enumerate(lines, start=1)
        ],
    )
    return past, new.shipments, new.items


def test_hand_made_lines_equal_the_batch() -> None:
    past, ships, items = _hand_made()
    ref = goods.Reference.build(past.shipments, past.items, PARAMS)
    few, batch = _prepare_both(ships, items, ref)
    assert_frame_equal(few, batch, check_exact=True)
    # The cases are there: references by HS6 x origin and by HS6, and none.
    by_id = {r["shipment_id"]: r for r in few.to_dicts()}
    assert by_id["S-100"]["__min_uv_z"] is not None and by_id["S-101"]["__min_uv_z"] is not None
    assert by_id["S-104"]["__min_uv_z"] is None and by_id["S-106"]["__chapters"] is None
    assert by_id["S-102"]["__min_uv_z"] == -10.0  # (a zero value: log 0, clipped)
    assert by_id["S-107"]["__min_uv_z"] is None and by_id["S-107"]["__max_mpu_z"] is not None
    assert by_id["S-100"]["__arms_terms"] >= 3 and by_id["S-101"]["__part_terms"] >= 3
    assert by_id["S-103"]["__min_uv_z"] is None  # (unknown currency: no value in USD)
    for i in range(ships.height):  # one at a time
        one = ships.slice(i, 1)
        few, batch = _prepare_both(one, _items_of(items, one), ref)
        assert_frame_equal(few, batch, check_exact=True)


def test_appending_a_few_lines_equals_the_batch_append(world: History) -> None:
    past, ships, items = _hand_made()
    cut = world.shipments["declared_at"].sort()[int(world.shipments.height * 0.8)]
    early = world.shipments.filter(pl.col("declared_at") < cut)
    late = world.shipments.filter(pl.col("declared_at") >= cut).sort("declared_at").head(40)
    cases = [
        (past.shipments, past.items, [ships.slice(i, 1) for i in range(ships.height)], items),
        (early, _items_of(world.items, early), [late.slice(i, 1) for i in range(40)], world.items),
    ]
    for base_ships, base_items, news, new_items in cases:
        few = goods.Reference.build(base_ships, base_items, PARAMS)
        batch = goods.Reference.build(base_ships, base_items, PARAMS)
        for one in news:
            lines = _items_of(new_items, one)
            assert goods._small(one, lines)
            few.append(one, lines, PARAMS)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(goods, "SMALL", -1)
                batch.append(one, lines, PARAMS)
        for name, table in few.tables.items():
            order = [table.key, table.time]
            assert_frame_equal(
                table.frame().sort(order),
                batch.tables[name].frame().sort(order),
                check_exact=True,
            )


def test_few_lines_are_the_line_frame() -> None:
    _, ships, items = _hand_made()
    frame = goods._line_frame(ships, items, PARAMS)
    lines = goods._few_lines(ships, items, PARAMS)
    for column, values in lines.items():
        assert_frame_equal(
            pl.DataFrame({column: values}, schema={column: frame.schema[column]}),
            frame.select(column),
            check_exact=True,
        )


def test_reference_z_is_the_polars_formula(world: History, reference: goods.Reference) -> None:
    """The numpy z-scores (one formula for both paths) are what these Polars
    expressions give, bit for bit."""
    lines = goods._line_frame(world.shipments, world.items, PARAMS)
    window = {"ref": dt.timedelta(days=PARAMS.reference_window_days)}
    for value in goods.VALUES:
        want: pl.Series | None = None
        for key in goods.KEYS:
            stats = goods.as_of_query(
                lines, key, "__month", reference.tables[(value, key)], windows=window, prefix="r"
            )
            n = pl.col("r_n_ref").cast(pl.Float64)
            mean = pl.col(f"r_{value}_ref") / n
            var = (pl.col("r___sq_ref") / n - mean**2).clip(lower_bound=0.04)
            zk = (
                stats.with_columns(lines[value])
                .select(
                    pl.when(n >= goods.MIN_REFERENCE).then(
                        ((pl.col(value) - mean) / var.sqrt()).clip(-10, 10)
                    )
                )
                .to_series()
            )
            want = zk if want is None else want.fill_null(zk)
        assert want is not None and want.null_count() < len(want) // 2
        column = lines[value]
        z, scored = goods._reference_z(
            lines, column.to_numpy(), column.is_not_null().to_numpy(), reference, value, PARAMS
        )
        got = pl.Series(z).scatter(np.flatnonzero(~scored), None)
        assert_series_equal(got, want, check_names=False, check_exact=True)


def test_text_scores_of_few_pairs_equal_the_batch(world: History) -> None:
    model = nomenclature_text()
    pairs = list(
        dict.fromkeys(zip(world.items["description"], world.items["hs_code"], strict=True))
    )
    pairs += [(d, c) for _, lines in _NEW for d, c in _pairs(lines)]
    pairs += [(None, "9305"), ("rifle", None), (None, None), ("затвор", "12")]
    pairs = list(dict.fromkeys(pairs))
    want = model._score(
        pl.Series([p[0] for p in pairs], dtype=pl.String),
        pl.Series([p[1] for p in pairs], dtype=pl.String),
    )
    got = [row for i in range(0, len(pairs), 7) for row in model._score_few(pairs[i : i + 7])]
    assert_frame_equal(
        pl.DataFrame(got, schema=hs_text.SCORE_SCHEMA, orient="row"), want, check_exact=True
    )


def _pairs(lines: list[dict[str, Any]]) -> Iterator[tuple[str | None, str | None]]:
    defaults = line(0)
    for changes in lines:
        row = defaults | changes
        yield row["description"], row["hs_code"]


def test_tfidf_is_scikit_learns_transform() -> None:
    model = nomenclature_text()
    texts = pl.Series(["Parts of machine tools", "затворная рама", "", None, "x" * 300])
    want = model.idf.transform(hs_text.ngram_counts(texts))
    got = hs_text._tfidf(model.idf, hs_text.ngram_counts(texts))
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(got, part), getattr(want, part))


def _plain_chars() -> list[str]:
    return [chr(i) for i in range(0x2200) if not 0xD800 <= i < 0xE000 and plain(chr(i))]


def test_plain_characters_behave_in_python_as_in_polars() -> None:
    chars = _plain_chars()
    assert {"a", "Я", "ё", "№", "—", " ", "\t"} <= set(chars)
    assert not {"ı", "İ", "²", "\x1c", "\u0301", "Σ"} & set(chars)
    series = pl.Series(chars)
    assert series.str.to_lowercase().to_list() == [c.lower() for c in chars]
    for cls in (r"\w", r"\s"):
        compiled = re.compile(cls)
        expected = [compiled.fullmatch(c) is not None for c in chars]
        assert series.str.contains(f"^{cls}$").to_list() == expected, cls
    letters = sorted({c for c in goods.ARMS_TERMS + goods.PART_TERMS if c.isalpha()})
    for letter in letters:  # case-insensitive matches of the patterns' letters
        compiled = re.compile(f"(?i){letter}")
        expected = [compiled.fullmatch(c) is not None for c in chars]
        assert series.str.contains(f"(?i)^{letter}$").to_list() == expected, letter


def test_plain_texts_normalise_and_count_as_in_polars() -> None:
    rng = np.random.default_rng(3)
    chars = _plain_chars()
    words = [
        "Rifle", "RIFLES", "pistol", "ammo", "Cartridges", "firing pins", "Bolt carriers",
        "ствол", "Ствола", "ЗАТВОРНАЯ", "магазины", "пружина возвратная", "патроны", "Порох",
        "прицел", "ночного видения", "thermal imaging sights", "bolt assembly", "7.62", "5,45",
        "9mm", "9 mm", "12ga", "12 gauge", ".308", "x.223",
    ]  # fmt: skip
    texts: list[str] = []
    for _ in range(3000):
        parts = [
            str(rng.choice(words)) if rng.random() < 0.6 else str(rng.choice(chars))
            for _ in range(int(rng.integers(0, 12)))
        ]
        seps = [str(rng.choice([" ", "", "  ", "\t", ",", "-", "\n", "_"])) for _ in parts]
        texts.append("".join(p + s for p, s in zip(parts, seps, strict=True)))
    texts += ["rıfle", "ружье\u0301", "x²", "a\x1cb", "ΟΔΟΣ ΣΑΣ"]  # (not plain: Polars)
    series = pl.Series(texts, dtype=pl.String)
    assert normalised(texts) == normalise(series).to_list()
    with_null = [*texts, None]
    for pattern in (goods._ARMS, goods._PARTS):
        expected = pl.Series(with_null, dtype=pl.String).str.count_matches(pattern).to_list()
        assert goods._term_counts(with_null, pattern) == expected
    assert sum(goods._term_counts(texts, goods._ARMS)) > 500  # (the patterns did match)


def test_group_sums_are_polars_group_sums() -> None:
    rng = np.random.default_rng(5)
    special = [math.inf, -math.inf, math.nan, -0.0, 0.0, 1e308, -1e308, 5e-324, None, 1.0, 3.5]
    groups = [
        [special[i] for i in rng.integers(0, len(special), size)]
        for size in range(1, 10)
        for _ in range(300)
    ]
    groups += [list(rng.normal(0, 1e3, n) * np.exp(rng.normal(0, 5, n))) for n in (3, 9, 64)]
    frame = pl.DataFrame(
        {"g": [i for i, g in enumerate(groups) for _ in g], "x": [x for g in groups for x in g]},
        schema={"g": pl.Int64, "x": pl.Float64},
    )
    # Groups in runs, and interleaved (each group's values in their order).
    interleaved = frame.with_columns(pl.int_range(pl.len()).over("g").alias("k")).sort("k", "g")
    for order in (frame, interleaved.drop("k")):
        sums = order.group_by("g").agg(pl.col("x").sum()).sort("g")["x"].to_list()
        for values, want in zip(groups, sums, strict=True):
            got = goods._group_sum(values)
            assert (math.isnan(got) and math.isnan(want)) or (
                got == want and math.copysign(1, got) == math.copysign(1, want)
            ), values


def test_small_calls_take_the_small_path(
    world: History, reference: goods.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    few = goods._prepare_few
    monkeypatch.setattr(goods, "_prepare_few", lambda s, *a: calls.append(s.height) or few(s, *a))
    one = world.shipments.slice(3, 1)
    goods.prepare(one, _items_of(world.items, one), reference, PARAMS)
    assert calls == [1]
    many = world.shipments.head(goods.SMALL + 1)
    goods.prepare(many, _items_of(world.items, many), reference, PARAMS)
    assert calls == [1]


def test_months_are_truncated_as_polars_does() -> None:
    at = [day(0), day(30.7), day(400), dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)]
    ships = pl.DataFrame(
        [ship(i, 0) | {"declared_at": t} for i, t in enumerate(at)],
        schema=history([], []).shipments.schema,
    )
    items = pl.DataFrame([line(i) for i in range(len(at))], schema=history([], []).items.schema)
    lines = goods._few_lines(ships, items, PARAMS)
    assert lines["__month"] == goods._line_frame(ships, items, PARAMS)["__month"].to_list()
