"""The Python path of the operational screening for a few shipments (the API's
one): the parties' comparison keys (`features.travellers._party_keys_few`) and
the linked travellers' hits (`features.watchlist._traveller_hits`) give exactly
what the frame path (`_party_keys`, the parties frame) gives, on random odd
parties (scripts, transliterations, Unicode digits and spaces, missing fields,
shared contacts, flags given), on the parties of a synthetic world and on its
shipments screened against a list naming some of their linked travellers."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.schemas import SHIPMENTS, TRAVELLERS, WATCHLIST
from data_contracts.settings import DataLayout
from features import travellers, watchlist
from features.context import PARTY_ROLES as ROLES
from features.context import History, party_keys
from features.state import FeatureState
from features.travellers import FEATURE_MIN_CONFIDENCE, link_travellers, shipment_parties
from pipelines.features import load_history
from tests.factories import shipment, traveller
from tests.features.test_travellers_small import _random_parties as random_parties

UTC = dt.UTC

NAMES = [
    None, "", "  ", "ИП Абдуллаев А.", "IP Abdullaev Akmal", "Abdullayev Akmal", "ABDULLAEV A.",
    'ООО "Silk Road Trade"', "Silk Road Trade LLC", "Каримов Рустам Азизович", "Karimov Rustam",
    "Qarimov Rustam", "Юсупов Тимур", "Yusupov Timur", "Xodjaev Baxtiyor", "Ходжаев Бахтиёр",
    "Ismoilov Aleksandr", "Ismailov Alexander", "李小龍", "Li Xiaolong", "Ёлкин Пётр",
    "Е\u0308лкин Петр", "O'tkir Zokirov", "Oʻtkir Zokirov", "TOO «Orient»", "ТОО Ориент",
    "Müller GmbH", "İstanbul Ticaret", "ŞİRKET", "ß-Handel", "Kim O.", "Ким Олег",
]  # fmt: skip
PHONES = [
    None, "", "12345", "+998 (90) 123-45-67", "998901234567", "8 701 200 30 40",
    "+7 701 200 30 40", "＋７ ７０１ ２００ ３０ ４０", "٠٧٠١٢٠٠٣٠٤٠", "\t+7 (701) 200-30-40\n",
    "+86 991 555 0101", "tel: +7 727 300 1122 ext. 5",
]  # fmt: skip
EMAILS = [
    None, "", "   ", "rk@silk.uz", " RK@SILK.UZ ", "\x1crk@silk.uz\x1f", "info@silk.uz",
    "ÄBC@Müller.de", "äbc@müller.de", "\u00a0info@silk.uz\u2003", "ŞİRKET@mail.tr",
]  # fmt: skip
ADDRESSES = [
    None, "", "   ", "Tashkent, Chilanzar street 15, office 7",
    "Tashkent, Chilanzar street 7, office 15", "Tashkent, Chilonzar street 15, office 7",
    "Ташкент, Чиланзар 12", "Tashkent, Chilanzar 12", "д 12/3 кв ٣", "д 12/3 кв 3",
    "Almaty, Abaya 5", "Almaty, Abaya 5a", "г. Алматы, пр. Абая, 5",
]  # fmt: skip
BIRTHS = [None, dt.date(1980, 5, 1), dt.date(1975, 2, 3), dt.date(1990, 7, 7)]
DOCUMENTS = [
    None, "", "1234", "FA 1234567", "fa1234567", "FA-123-4567", "АВ 123456", "N0 123-456",
    "ßtraße12345", "İD99887", "Ⅻ12345",
]  # fmt: skip


def _sortable(party: tuple[Any, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, repr(v)) for v in party)


def _same_keys(parties: pl.DataFrame) -> list[travellers._Party]:
    """The comparison keys of `parties` by both paths, asserted equal (as sets of
    rows with their multiplicity: the frame's row order is unspecified)."""
    few = travellers._party_keys_few(*travellers._party_rows(parties))
    frame = [travellers._Party(*row) for row in travellers._party_keys(parties).iter_rows()]
    assert sorted(few, key=_sortable) == sorted(frame, key=_sortable)
    for party in few:  # (the same types too, not only equal values)
        assert [type(v) for v in party] == [type(v) for v in frame[frame.index(party)]]
    return few


def _random_parties(rng: random.Random, n: int, keys: int) -> pl.DataFrame:
    """`n` mentions of at most `keys` parties, from this file's odd values."""
    pools = {
        "name": NAMES,
        "phone": PHONES,
        "email": EMAILS,
        "address": ADDRESSES,
        "birth_date": BIRTHS,
        "document_number": DOCUMENTS,
    }
    return random_parties(rng, n, keys, pools)


def test_odd_parties_get_the_frame_keys() -> None:
    rng = random.Random(13)
    shared_seen = set()
    for trial in range(400):
        parties = _random_parties(rng, rng.randint(1, 40), rng.randint(1, 8))
        if trial % 3 == 0:  # some shared flags given, some of them null
            parties = parties.with_columns(
                pl.Series(f, [rng.choice([True, False, None]) for _ in range(parties.height)])
                for f in rng.sample(travellers.SHARED_FLAGS, rng.randint(1, 3))
            )
        if trial % 5 == 0:  # no identity columns
            parties = parties.drop("birth_date", "document_number")
        if trial % 7 == 0 and "birth_date" in parties.columns:
            # birth dates as datetimes (cast to dates, as the frame casts them)
            parties = parties.with_columns(pl.col("birth_date").cast(pl.Datetime("us")))
        if trial % 11 == 0:  # a party repeated word for word
            parties = pl.concat([parties, parties.head(2)])
        keys = _same_keys(parties)
        shared_seen |= {(p.phone_shared, p.email_shared, p.address_shared) for p in keys}
    # Both values of every computed flag occurred.
    for i in range(3):
        assert {s[i] for s in shared_seen} >= {True, False}


def test_no_party_and_null_keys_only() -> None:
    empty = _random_parties(random.Random(1), 0, 1)
    assert _same_keys(empty) == []
    nulls = _random_parties(random.Random(2), 5, 1).with_columns(
        pl.lit(None, dtype=pl.String).alias("party_key")
    )
    assert _same_keys(nulls) == []


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    h = load_history(small_world)
    return History(party_keys(h.shipments), h.items, h.outcomes, h.travellers, h.watchlist)


def test_world_parties_get_the_frame_keys(history: History) -> None:
    parties = shipment_parties(history.shipments).with_columns(
        (pl.col("shipment_id") + "|" + pl.col("role")).alias("party_key")
    )
    rng = random.Random(3)
    for size in [1, 2, 3] * 30 + [13, 50, 96, 400]:
        start = rng.randrange(0, parties.height - size)
        _same_keys(parties.slice(start, size))
        sample = parties[rng.sample(range(parties.height), size)]
        _same_keys(sample)


def _listed_travellers(history: History, rng: random.Random) -> pl.DataFrame:
    """A national list naming some of the travellers linked to the world's parties:
    by their Latin name, by their native-script name (a transliteration of it), by
    a spelling variant, or by their travel document only."""
    parties = shipment_parties(history.shipments).with_columns(
        (pl.col("shipment_id") + "|" + pl.col("role")).alias("party_key")
    )
    links = link_travellers(parties, history.travellers).filter(
        pl.col("confidence") >= FEATURE_MIN_CONFIDENCE
    )
    linked = links.get_column("traveller_record_id").unique().sort().to_list()
    assert len(linked) > 40
    records = history.travellers.filter(pl.col("traveller_record_id").is_in(linked)).sort(
        "traveller_record_id"
    )
    rows = []
    for k, r in enumerate(records.sample(40, seed=rng.randrange(1000)).iter_rows(named=True)):
        full = f"{r['surname']} {r['given_names'] or ''}".strip()
        how = k % 4
        name = {0: full, 1: r["name_native"] or full, 2: full.replace("ov", "off")}.get(how)
        rows.append(
            {
                "entry_id": f"NAT:T{k}",
                "list_name": "NAT",
                "reference_number": f"T{k}",
                "entity_type": "individual",
                "name": name or f"Unrelated Person {k}",
                "aliases": [],
                "name_original_script": None,
                "dates_of_birth": None,
                "nationalities": None,
                "document_numbers": [r["document_number"]] if how in (0, 3) else None,
                "addresses": None,
                "listed_on": dt.date(2030, 1, 1),  # (after every shipment: now counts)
                "comments": None,
            }
        )
    listed = pl.DataFrame(rows, schema=WATCHLIST.polars_schema)
    if history.watchlist is None:
        return listed
    return pl.concat([history.watchlist.select(WATCHLIST.polars_schema.names()), listed])


def _same_operational(
    ships: pl.DataFrame, source: Any, monkeypatch: pytest.MonkeyPatch
) -> pl.DataFrame:
    few = watchlist.operational(ships, source)
    with monkeypatch.context() as m:
        m.setattr(travellers, "SMALL_KEYS", -1)  # no input is small: the frames
        m.setattr(watchlist, "SMALL", 0)
        frame = watchlist.operational(ships, source)
    assert_frame_equal(few, frame)
    return few


def test_world_shipments_screen_as_the_frame(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    listed = _listed_travellers(history, rng)
    world = History(history.shipments, history.items, history.outcomes, history.travellers, listed)
    state = FeatureState.build(world)
    ships = history.shipments
    # The shipments whose linked travellers are listed, and any others.
    batch = watchlist.operational(ships, world)
    hit = [i for i, t in enumerate(batch["__wl_traveller"].to_list()) if t is not None]
    assert len(hit) > 10
    by = set()
    for size in [1] * 80 + [2, 3, 7, 16, 32]:
        rows = rng.sample(hit, min(size, len(hit))) + rng.sample(range(ships.height), size)
        sample = ships[rows[:32]]
        got = _same_operational(sample, state, monkeypatch)
        _same_operational(sample, world, monkeypatch)
        by |= set(got.filter(pl.col("__wl_traveller").is_not_null())["__wl_by"].to_list())
    assert by == {"name", "document"}


def test_hand_made_shipments_screen_as_the_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Odd party fields (scripts, missing values, Unicode digits) against records
    whose names and documents are listed."""
    records = pl.DataFrame(
        [
            traveller(traveller_record_id="T1"),  # Abdullayev Akmal, +998 90 123 45 67
            traveller(
                traveller_record_id="T2",
                surname="KARIMOV",
                given_names="RUSTAM",
                name_native="Каримов Рустам",
                document_number="FA0000002",
                contact_phone="+7 701 200 30 40",
                contact_email="rk@silk.uz",
                contact_address="Tashkent, Chilanzar street 15, office 7",
            ),
        ],
        schema=TRAVELLERS.polars_schema,
    )
    listed = pl.DataFrame(
        [
            {
                "entry_id": "NAT:1",
                "list_name": "NAT",
                "reference_number": "1",
                "entity_type": "individual",
                "name": "Karimov Rustam",
                "aliases": ["Qarimov Rustam"],
                "name_original_script": "Каримов Рустам",
                "dates_of_birth": None,
                "nationalities": None,
                "document_numbers": ["FA1234567"],
                "addresses": None,
                "listed_on": None,
                "comments": None,
            }
        ],
        schema=WATCHLIST.polars_schema,
    )
    rng = random.Random(11)
    rows = []
    for k in range(60):
        row = shipment(shipment_id=f"S-{k}")
        for role in ("consignor", "consignee", "declarant"):
            row[f"{role}_name"] = rng.choice([n for n in NAMES if n is not None])
            row[f"{role}_phone"] = rng.choice(PHONES)
            row[f"{role}_email"] = rng.choice(EMAILS)
            row[f"{role}_address"] = rng.choice(ADDRESSES)
        rows.append(row)
    ships = pl.DataFrame(rows, schema=SHIPMENTS.polars_schema)
    history = History(ships.clear(), pl.DataFrame(), pl.DataFrame(), records, listed)
    travellers_hit = 0
    for k in range(ships.height):
        got = _same_operational(ships[k : k + 1], history, monkeypatch)
        travellers_hit += got["__wl_traveller"].is_not_null().sum()
    for start in range(0, ships.height, 20):
        _same_operational(ships.slice(start, 20), history, monkeypatch)
    assert travellers_hit > 5


def test_a_shipments_hits_do_not_depend_on_the_shipments_screened_with_it(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Screened alone, in a small batch (the Python path) or a large one (the
    frames), a shipment gets the same linked-traveller hits: its parties' shared
    contact flags are its own, not those of the shipments beside it (another
    trader at the consignee's address in the same batch lowered its traveller
    links below the cut)."""
    rng = random.Random(5)
    listed = _listed_travellers(history, rng)
    world = History(history.shipments, history.items, history.outcomes, history.travellers, listed)
    ships = history.shipments
    screened = watchlist.operational(ships, world)
    hit = [i for i, t in enumerate(screened["__wl_traveller"].to_list()) if t is not None]
    assert len(hit) > 10
    # Beside each hit shipment, another trader declaring its parties' phones,
    # e-mails and addresses under other names.
    alone = pl.concat([watchlist.operational(ships[i : i + 1], world) for i in hit])
    twins = ships[hit].with_columns(
        pl.col("shipment_id") + "-NEIGHBOUR",
        *[pl.lit(f"Neighbour {role} Trading LLC").alias(f"{role}_name") for role in ROLES],
        *[pl.lit(None, dtype=pl.String).alias(f"{role}_id") for role in ROLES],
    )
    n = len(hit)
    for size in (2, 10, 2 * n):  # small batches and one over the Python path's size
        batch = pl.concat([ships[hit], twins]).sort("shipment_id")
        got = pl.concat(
            [
                watchlist.operational(batch.slice(start, size), world)
                for start in range(0, batch.height, size)
            ]
        ).filter(pl.col("shipment_id").is_in(ships[hit]["shipment_id"].implode()))
        assert_frame_equal(got.sort("shipment_id"), alone.sort("shipment_id"))
