"""The network's and travellers' paths for a few shipments (features.network,
features.travellers): computed in Python, they give the frame paths' values, and
appending shipments one at a time gives the tables and the later features of a
rebuild, hub caps included (edges of one instant reorder the caps)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.schemas import ARMS_CATEGORIES
from data_contracts.settings import DataLayout
from features import network, travellers
from features.context import PARTY_ROLES, History, Params, party_keys
from pipelines.features import load_history

STRANGE = [
    None, "", " ", "\t+7 (701) 111-22-33\n", "8 701 111 22 33 ext. 5", "12345", "123456",
    "+7 701 111 22 33 44 55", " Mail@Example.COM ", "\x1cmail@x.kz\x1f", "\x0bA\x0c", "a b",
    "ab-12 cd", "Ка 123 АВ 01", "＋７ ７０１ １１１ ２２ ３３", "٠١٢٣٤٥٦٧٨٩",
    "\xa0user@MAIL.ru\u2003", "STRASSE ß", "İstanbul", "ǅ", "ΣΑΣ", "x\u0085", "01 KZ 123 ABC",
    "kz-777-aaa", "ul lenina d 12 kv 5", "12a 5 b12 7_8 9", "д 12/3 кв ٣", "12３ 4",
]  # fmt: skip


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    h = load_history(small_world)
    return History(party_keys(h.shipments), h.items, h.outcomes, h.travellers, h.watchlist)


def _random_strings(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "0123456789 +-().@_abcXYZ\t\n\x0b\x0c\r\x1c\x1f\x7fЖжß\xa0٣３"
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(count)]


def _expr_keys(values: Sequence[str | None], expr: pl.Expr) -> list[str | None]:
    return pl.DataFrame({"v": values}, schema={"v": pl.String}).select(expr).to_series().to_list()


def test_python_keys_equal_the_expressions() -> None:
    values: list[str | None] = [*STRANGE, *_random_strings(1, 3000)]
    v = pl.col("v")
    for expr, ascii_key in [
        (network.phone_key, network._phone_ascii),
        (network.email_key, network._email_ascii),
        (network.vehicle_key, network._vehicle_ascii),
        (travellers._number_block, travellers._number_block_ascii),
    ]:
        assert network.keys_of(values, expr, ascii_key) == _expr_keys(values, expr(v))
        # (every ASCII value through the Python twin, the rest through the expression)
        ascii_only = [s for s in values if s is not None and s.isascii()]
        assert [ascii_key(s) for s in ascii_only] == _expr_keys(ascii_only, expr(v))
    series = pl.Series("v", values, dtype=pl.String)
    assert [None if s is None else network._address_of(s) for s in values] == (
        network.address_key(series).to_list()
    )
    times = [
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_999),
        dt.datetime(2024, 2, 29, 23, 59),
        dt.datetime(2024, 3, 1),
        dt.datetime(2025, 3, 30, 1, 2, 3, 4),
    ]
    for tz in (None, dt.UTC):
        stamps = pl.Series([t.replace(tzinfo=tz) for t in times])
        assert [network._epoch(t) for t in stamps] == network._epoch_us(stamps)
        assert network._months(stamps) == stamps.dt.truncate("1mo").to_list()


def _odd(ships: pl.DataFrame) -> pl.DataFrame:
    """The shipments with odd contacts: nulls, non-ASCII, white space, no digits."""
    rng = random.Random(3)
    changes = {
        f"{role}_{c}": pl.Series([rng.choice(STRANGE) for _ in range(ships.height)])
        for role in PARTY_ROLES
        for c in ("phone", "email", "address")
    }
    changes["conveyance_ref"] = pl.Series([rng.choice(STRANGE) for _ in range(ships.height)])
    changes["consignee_key"] = ships["consignee_key"].scatter([0], [None])
    return ships.with_columns(**changes)


def test_small_mentions_and_edges_equal_the_frame_paths(history: History) -> None:
    ships = history.shipments
    rng = np.random.default_rng(5)
    samples = [ships[rng.choice(ships.height, size=k, replace=False)] for k in [1] * 20 + [2, 5, 9]]
    samples += [_odd(s) for s in samples[-4:]]
    for sample in samples:
        small = network.mentions(sample)
        assert_frame_equal(small, network._mentions(sample))
        times = sample["declared_at"].cast(pl.Int64).to_list()
        firsts = network._first_edges(sample, small, times)
        raw = network._raw_edges(sample, small)
        want = dict(
            zip(
                zip(raw["a"].to_list(), raw["b"].to_list(), strict=True),
                raw["t"].cast(pl.Int64).to_list(),
                strict=True,
            )
        )
        assert firsts == want
        assert len(want) > 3


def test_small_flagged_equals_the_frame_path(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    ships, outcomes = history.shipments, history.outcomes
    arms = outcomes.filter(
        pl.col("finding") & pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES)
    )
    assert arms.height > 3
    # The same finding recorded again later, and one for a shipment not held.
    again = arms.head(2).with_columns(pl.col("inspected_at") + dt.timedelta(days=3))
    stray = arms.head(1).with_columns(pl.lit("NOT-HELD").alias("shipment_id"))
    samples = [outcomes.sample(k, seed=k) for k in (1, 2, 9)]
    samples += [pl.concat([arms.sample(k, seed=k), again, stray, outcomes.sample(k, seed=k)])
                for k in (1, 3)]  # fmt: skip
    for sample in samples:
        small = network._flagged(sample, ships)
        with monkeypatch.context() as m:
            m.setattr(network, "SMALL_MAX_SHIPMENTS", -1)
            assert_frame_equal(small, network._flagged(sample, ships))
    assert small.height > 0


def _warm(tables: network.Tables) -> network.Tables:
    """Build now what an online query builds on first use (as the feature state's warm-up)."""
    tables.ends.index()
    tables.components()
    latest = tables.latest
    assert latest is not None
    month = latest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    tables.hops(month).at(month)
    return tables


def _new_shipments(history: History, cut: dt.datetime, seed: int) -> pl.DataFrame:
    """A random sample of the shipments after `cut`, in time order, in pairs at
    one instant: the second of a pair is for the first's consignee, with another
    address that ranks first among its edges: it pushes the first's edges down
    its hub cap. In every other pair that consignee is new and shares its phone
    with a new consignor of its own: the phone's edge at the consignee is pushed
    beyond the cap, and the two are no longer connected. Led by a shipment at
    the instant of the last one before `cut`."""
    ships = history.shipments
    later = ships.filter(pl.col("declared_at") >= cut)
    rng = np.random.default_rng(seed)
    sample = later[np.sort(rng.choice(later.height, size=40, replace=False))].sort("declared_at")
    columns = ["declared_at", "mode", "consignee_key", "consignee_address", "consignee_phone",
               "consignee_email", "consignor_key", "consignor_phone", "consignor_email",
               "consignor_address"]  # fmt: skip
    rows = {c: sample[c].to_list() for c in columns}
    for i in range(1, sample.height, 2):
        first = {c: rows[c][i - 1] for c in columns}
        if i % 4 == 1:
            phone = f"+7 799 000 00 {i:02d}"
            first |= {"mode": "air", "consignee_key": f"id:NEW-{i}", "consignee_phone": phone,
                      "consignee_email": None, "consignor_key": f"id:NEW-SUPPLIER-{i}",
                      "consignor_phone": phone, "consignor_email": None,
                      "consignor_address": None}  # fmt: skip
        second = {
            "declared_at": first["declared_at"],
            "mode": "air",
            "consignee_key": first["consignee_key"],
            "consignee_address": f"0 aaa street {i}",
            "consignee_phone": f"+7 700 000 00 {i:02d}",
        }
        for c in columns:
            rows[c][i - 1] = first[c]
            rows[c][i] = second.get(c, rows[c][i])
    sample = sample.with_columns(pl.Series(c, rows[c], dtype=sample.schema[c]) for c in columns)
    last = ships.filter(pl.col("declared_at") < cut).sort("declared_at").tail(1)
    return pl.concat([last.with_columns(pl.lit("FIRST").alias("shipment_id")), sample])


def _same(left: pl.DataFrame, right: pl.DataFrame, order: list[str]) -> None:
    assert_frame_equal(left.sort(order), right.sort(order))


@pytest.mark.parametrize("seed", [1, 2])
def test_appending_one_at_a_time_equals_a_rebuild(
    history: History, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small caps: most nodes reach them, so that new edges rank beyond them or
    # push held edges of their instant beyond them.
    monkeypatch.setattr(network, "HUB_LIMIT", 3)
    monkeypatch.setattr(network, "VEHICLE_LIMIT", 1)
    drops: list[int] = []
    drop_edges = network.Tables._drop_edges

    def counted(self: network.Tables, pushed: dict[tuple[str, str], int]) -> None:
        drops.append(len(pushed))
        drop_edges(self, pushed)

    monkeypatch.setattr(network.Tables, "_drop_edges", counted)
    ships, outcomes, params = history.shipments, history.outcomes, Params()
    cut = ships["declared_at"].sort()[int(ships.height * 0.8)]
    new = _new_shipments(history, cut, seed)
    end = new["declared_at"].max()
    past = history.known_before(cut)
    tables = _warm(network.Tables(past.shipments, past.outcomes))
    people = travellers.Tables(past.shipments, past.travellers, params)
    pending = outcomes.filter(pl.col("inspected_at").is_between(cut, end, closed="left"))
    # Arms findings on new shipments, recorded at their instant.
    arms = outcomes.filter(pl.col("finding_category").cast(pl.String).is_in(ARMS_CATEGORIES))
    pending = pl.concat(
        [pending]
        + [
            arms.head(1).with_columns(
                pl.lit(f"ARMS-{k}").alias("outcome_id"),
                pl.lit(new["shipment_id"][k]).alias("shipment_id"),
                pl.lit(new["declared_at"][k])
                .cast(arms.schema["inspected_at"])
                .alias("inspected_at"),
            )
            for k in (4, 11, 20)
        ]
    )
    appended, online, flagged = [past.outcomes], [], tables.flagged.height
    for i in range(new.height):
        one = new.slice(i, 1)
        # As the API: the outcomes recorded before it, its features, then itself.
        found = pending.filter(pl.col("inspected_at") < one["declared_at"][0])
        pending = pending.join(found, on="outcome_id", how="anti")
        appended.append(found)
        tables.append(new.clear(), found, pl.concat([past.shipments, new.head(i)]))
        mentions = network.mentions(one) if i % 2 else None  # (or computed)
        online.append(network.prepare(one, tables, params, mentions))
        tables.append(one, found.clear(), pl.concat([past.shipments, new.head(i + 1)]), mentions)
        people.append(one, None, params, mentions)
    assert sum(drops) > 0  # held edges were pushed beyond a cap
    all_ships = pl.concat([past.shipments, new])
    all_outcomes = pl.concat(appended)
    rebuilt = network.Tables(all_ships, all_outcomes)
    batch = network.prepare(all_ships, rebuilt, params)
    assert_frame_equal(pl.concat(online), batch.slice(past.shipments.height))
    assert tables.flagged.height > flagged  # findings were appended
    rebuilt_people = travellers.Tables(all_ships, past.travellers, params)
    _same(tables.edges, rebuilt.edges, ["t", "a", "b"])
    _same(tables.ends.rows(), rebuilt.ends.rows(), ["node", "other"])
    assert_frame_equal(tables.flagged, rebuilt.flagged)
    assert tables.latest == rebuilt.latest
    for mine, theirs in [
        *zip(tables.contacts.values(), rebuilt.contacts.values(), strict=True),
        *zip(people.shared.values(), rebuilt_people.shared.values(), strict=True),
    ]:
        _same(mine.firsts.rows(), theirs.firsts.rows(), mine.firsts.order)
        _same(mine.counts.frame(), theirs.counts.frame(), mine.counts.rows.order)
    # The same later features: online (the appended union-find and BFS, kept
    # warm), from the rebuild, and from the frame path (mentions, batch edges).
    assert tables._components is not None
    again = new.with_columns(
        pl.format("AGAIN-{}", "shipment_id").alias("shipment_id"), pl.lit(end).alias("declared_at")
    )
    after = pl.concat([again, ships.filter(pl.col("declared_at") >= end).head(20)])
    for i in range(after.height):
        one = after.slice(i, 1)
        got = network.prepare(one, tables, params)
        assert_frame_equal(got, network.prepare(one, rebuilt, params))
        with monkeypatch.context() as m:
            m.setattr(network, "SMALL_MAX_SHIPMENTS", -1)
            assert_frame_equal(got, network.prepare(one, rebuilt, params))
            people_frame = travellers.prepare(one, rebuilt_people, params)
        assert_frame_equal(travellers.prepare(one, people, params), people_frame)


def test_few_shipments_equal_the_batch(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    ships, params = history.shipments, Params()
    tables = network.Tables(ships, history.outcomes)
    batch = network.prepare(ships, tables, params)
    assert batch["__net_component"].max() > 1 and batch["__net_hops"].min() == 0  # type: ignore[operator]
    rng = np.random.default_rng(7)
    for k in [1] * 20 + [3, 8, 33]:
        rows = rng.choice(ships.height, size=k, replace=False)
        sample = ships[rows]
        got = network.prepare(sample, tables, params)
        assert_frame_equal(got, batch[rows])
        with monkeypatch.context() as m:
            m.setattr(network, "SMALL_MAX_SHIPMENTS", -1)
            assert_frame_equal(network.prepare(sample, tables, params), got)
