"""The batch shortcuts of the party keys, goods and trader history steps give the
values of the plain computation they replace:

* `party_keys` normalises only the names of the parties without an
  identification number (the only names a key reads);
* the goods step computes its tariff-text scores and lexicon counts once per
  distinct (description, code) pair (`goods._pair_columns`), the distinct
  (key, month) pairs of both reference keys from one grouping
  (`goods._key_pairs`), each line's month from its shipment's, and returns its
  grouping without the final join when the groups are the shipments in order;
* within `shared_normalisation`, the trader step takes the consignees' contacts
  its tables' build normalised instead of normalising them again.

Each is compared with the plain computation (written out here as it was), on the
synthetic world and on random frames (keys, times and values missing, repeated,
tied)."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import context, goods, hs_text, names, trader
from features.context import PARTY_ROLES, History, Params, party_keys
from features.names import normalise_names, shared_normalisation
from pipelines.features import load_history

PARAMS = Params()


@pytest.fixture(scope="module")
def world(small_world: DataLayout) -> History:
    return load_history(small_world)


# --- party keys ------------------------------------------------------------------


def _plain_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """`party_keys` as written before: every name of the three roles normalised."""
    n = frame.height
    names = normalise_names(
        pl.concat([frame.get_column(f"{role}_name").cast(pl.String) for role in PARTY_ROLES]),
        sort_tokens=True,
    )
    keys = []
    for i, role in enumerate(PARTY_ROLES):
        ident = pl.col(f"{role}_id").cast(pl.String).str.replace_all(context._ID_STRIP, "")
        keys.append(
            pl.when(ident.is_not_null() & (ident.str.len_chars() > 0))
            .then(pl.lit("id:") + ident)
            .otherwise(pl.lit("name:") + pl.lit(names.slice(i * n, n)))
            .alias(f"{role}_key")
        )
    return frame.with_columns(keys)


@pytest.mark.parametrize("seed", range(6))
def test_party_keys_normalise_only_the_names_they_read(
    world: History, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    ships = world.shipments.sample(n=min(400, world.shipments.height), seed=seed)
    # Identification numbers given, missing, empty, blank or only stripped characters.
    idents = [None, "", " ", "./-", "\u00a0", "KZ 123.456-7", "12 34", "id"]
    ships = ships.with_columns(
        pl.Series(f"{r}_id", [rng.choice(idents) for _ in range(ships.height)], dtype=pl.String)
        if rng.random() < 0.7
        else pl.col(f"{r}_id")
        for r in PARTY_ROLES
    )
    assert ships.height > context.SMALL_KEYS  # (the frame path)
    asked: list[pl.Series] = []

    def spy(series: pl.Series, *, sort_tokens: bool = False) -> pl.Series:
        asked.append(series)
        return normalise_names(series, sort_tokens=sort_tokens)

    monkeypatch.setattr(context, "normalise_names", spy)
    got = party_keys(ships)
    monkeypatch.undo()
    assert_frame_equal(got, _plain_keys(ships), check_exact=True)
    # ... and the row-by-row rule's keys.
    for role in PARTY_ROLES:
        assert got.get_column(f"{role}_key").to_list() == context._few_keys(ships, role)
    # The names asked are those of the parties without an identification number.
    (series,) = asked
    n = ships.height
    for i, role in enumerate(PARTY_ROLES):
        keys = got.get_column(f"{role}_key").to_list()
        names = ships.get_column(f"{role}_name").cast(pl.String).to_list()
        assert series.slice(i * n, n).to_list() == [
            None if (k or "").startswith("id:") else v for v, k in zip(names, keys, strict=True)
        ]
    assert series.drop_nulls().len() < series.len()  # (some names were not asked)


# --- goods -----------------------------------------------------------------------


def test_distinct_rows_are_uniques_in_order_and_index_every_row() -> None:
    rng = random.Random(5)
    frame = pl.DataFrame(
        {
            "d": [rng.choice([None, "a", "b", "", "rifle"]) for _ in range(2000)],
            "c": [rng.choice([None, "8466", "93"]) for _ in range(2000)],
        }
    )
    rows, index = goods._distinct_rows(frame)
    assert_frame_equal(rows, frame.unique(maintain_order=True), check_exact=True)
    assert_frame_equal(rows[index], frame, check_exact=True)


def _plain_pair_columns(lines: pl.DataFrame, text: hs_text.NomenclatureText) -> pl.DataFrame:
    """The text scores of every line and the lexicon counts joined to every line, as
    `prepare` computed them before."""
    scores = text.score(lines["description"], lines["hs_code"])
    terms = lines.select("description").join(
        goods._term_frame(lines), on="description", how="left", maintain_order="left",
        nulls_equal=True,
    )  # fmt: skip
    return pl.concat([scores, terms.drop("description")], how="horizontal")


def test_pair_columns_equal_the_scores_and_counts_of_every_line(world: History) -> None:
    lines = goods._line_frame(world.shipments, world.items, PARAMS)
    text = goods.nomenclature_for(PARAMS)
    assert lines.height > hs_text.MEMO_ROWS
    assert_frame_equal(
        goods._pair_columns(lines, text), _plain_pair_columns(lines, text), check_exact=True
    )
    # Odd lines: descriptions and codes missing, empty, repeated, unknown to the tariff.
    rng = random.Random(3)
    odd = lines.head(500).with_columns(
        pl.Series("description", [rng.choice([None, "", "rifle barrels", "Затвор", "bolts"])
                                  for _ in range(500)], dtype=pl.String),
        pl.Series("hs_code", [rng.choice([None, "93", "9305100000", "0101", "8466930000"])
                              for _ in range(500)], dtype=pl.String),
    )  # fmt: skip
    assert_frame_equal(
        goods._pair_columns(odd, text), _plain_pair_columns(odd, text), check_exact=True
    )


def test_key_pairs_are_the_distinct_pairs_of_each_key(world: History) -> None:
    lines = goods._line_frame(world.shipments, world.items, PARAMS)
    queries = lines.select(*goods.KEYS, "__month")
    both = goods._key_pairs(queries)
    for key in goods.KEYS:
        asked, pair = both[key]
        alone, alone_pair = goods._distinct_pairs(queries, key)
        assert pair is not None and alone_pair is not None
        assert_frame_equal(asked[pair], queries.select(key, "__month"), check_exact=True)
        assert asked.height == asked.unique().height == alone.height
    assert goods._key_pairs(queries.head(goods.DISTINCT_MIN_LINES)) == {}


def test_line_months_are_their_shipments_months(world: History) -> None:
    lines = goods._line_frame(world.shipments, world.items, PARAMS)
    assert_frame_equal(
        lines.select("__month"),
        lines.select(goods._month(pl.col("declared_at")).alias("__month")),
        check_exact=True,
    )


def test_prepare_without_the_final_join_equals_the_join(world: History) -> None:
    ref = goods.Reference.build(world.shipments, world.items, PARAMS)
    full = goods.prepare(world.shipments, world.items, ref, PARAMS)
    # Shipments in another order, some without lines, one unknown: the join's rows.
    extra = world.shipments.head(3).with_columns(
        pl.Series("shipment_id", ["NEW-1", "NEW-2", "NEW-3"])
    )
    # (the history's shipments, by the join: three more shipments without lines)
    joined = goods.prepare(pl.concat([world.shipments, extra]), world.items, ref, PARAMS)
    assert_frame_equal(full, joined.head(world.shipments.height), check_exact=True)
    for ships in (
        world.shipments.reverse(),
        pl.concat([world.shipments, extra]),
        world.shipments.sample(fraction=0.5, seed=1),
    ):
        got = goods.prepare(ships, world.items, ref, PARAMS)
        want = ships.select("shipment_id").join(
            full, on="shipment_id", how="left", maintain_order="left"
        )
        assert_frame_equal(got, want, check_exact=True)


# --- trader ----------------------------------------------------------------------


def _tables(world: History) -> tuple[pl.DataFrame, trader.Tables]:
    keyed = party_keys(world.shipments)
    flags = keyed.select("shipment_id", (pl.col("gross_mass_kg") > 1000).alias("undervalued"))
    tables = trader.Tables.build(
        trader.shipment_events(keyed, flags),
        world.items,
        trader.outcome_events(world.outcomes, keyed),
    )
    return keyed, tables


def test_contacts_normalised_by_the_build_are_shared_with_prepare(world: History) -> None:
    keyed = party_keys(world.shipments)
    plain = trader.prepare(keyed, _tables(world)[1])  # (no memo: each normalised)

    def contacts_held() -> int:
        return sum(what == "contact" for what, _, _ in names._SHARED.memo)

    with shared_normalisation():
        keyed, tables = _tables(world)
        assert contacts_held() == len(trader.CONTACT_FIELDS)
        assert_frame_equal(trader.prepare(keyed, tables), plain, check_exact=True)
        assert contacts_held() == len(trader.CONTACT_FIELDS)  # (the build's taken)
        for k, contact in enumerate(trader.CONTACT_FIELDS):
            column = keyed.get_column(f"consignee_{contact}")
            # Contacts the build never saw: normalised now (a new entry).
            unseen = keyed.with_columns(
                column.scatter([0, 5], ["+7 (701) NEW", "Улица Новая, д. 1"]).alias(column.name)
            )
            assert_frame_equal(
                trader._normalised_column(unseen, contact).to_frame(),
                unseen.select(trader._normalise(pl.col(column.name)).alias(f"__{contact}")),
                check_exact=True,
            )
            assert contacts_held() == len(trader.CONTACT_FIELDS) + k + 1
