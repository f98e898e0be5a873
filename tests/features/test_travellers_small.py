"""The travellers family's path for a few parties / shipments (`_link_few`,
`_prepare_few`): computed in Python over the index's lookups, it gives exactly
the frame path's links and features, on samples of the synthetic world that link
and that do not, and on hand-made odd cases (nulls, scripts, initials, shared
contacts, company names, namesakes, documents, birth dates, odd strings)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS
from data_contracts.settings import DataLayout
from features import travellers
from features.context import PARTY_ROLES, History, Params, party_keys
from features.travellers import WINDOW, link_travellers, shipment_parties
from pipelines.features import load_history
from tests.factories import shipment, traveller

UTC = dt.UTC
DAY = dt.timedelta(days=1)


def _same_links(
    parties: pl.DataFrame, index: travellers.TravellerIndex, monkeypatch: pytest.MonkeyPatch
) -> pl.DataFrame:
    """The links of `parties` by both paths, asserted equal."""
    assert parties.height <= travellers.SMALL_MAX_PARTIES
    few = link_travellers(parties, index)
    with monkeypatch.context() as m:
        m.setattr(travellers, "SMALL_MAX_PARTIES", -1)  # no input is small
        frame = link_travellers(parties, index)
    assert_frame_equal(few, frame)
    return few


def _same_features(
    ships: pl.DataFrame, tables: travellers.Tables, monkeypatch: pytest.MonkeyPatch
) -> pl.DataFrame:
    """`prepare` of `ships` by both paths, asserted equal."""
    params = Params()
    assert ships.height * len(PARTY_ROLES) <= travellers.SMALL_MAX_PARTIES
    few = travellers.prepare(ships, tables, params)
    with monkeypatch.context() as m:
        m.setattr(travellers, "SMALL_MAX_PARTIES", -1)
        frame = travellers.prepare(ships, tables, params)
    assert_frame_equal(few, frame)
    return few


# ---------------------------------------------------------------- synthetic world


@pytest.fixture(scope="module")
def history(small_world: DataLayout) -> History:
    h = load_history(small_world)
    return History(party_keys(h.shipments), h.items, h.outcomes, h.travellers, h.watchlist)


@pytest.fixture(scope="module")
def mentions(history: History) -> pl.DataFrame:
    """Every party mention of the world (with birth dates and documents), one
    party per (shipment, role), and whether the frame path links it."""
    parties = shipment_parties(history.shipments).with_columns(
        (pl.col("shipment_id") + "|" + pl.col("role")).alias("party_key")
    )
    links = link_travellers(parties, history.travellers)
    linked = links.select("party_key").unique().with_columns(pl.lit(True).alias("linked"))
    return parties.join(linked, on="party_key", how="left").with_columns(
        pl.col("linked").fill_null(False)
    )


def test_few_parties_of_the_world_link_as_the_frame(
    history: History, mentions: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = travellers.TravellerIndex(history.travellers)
    columns = ["party_key", "name", "phone", "email", "address", "birth_date", "document_number"]
    linked = mentions.filter(pl.col("linked"))
    unlinked = mentions.filter(~pl.col("linked"))
    assert linked.height > 100
    rng = random.Random(5)
    kinds: set[str] = set()
    for size in [1] * 40 + [2, 3, 5, 8, 13, 30, 60, 96]:
        rows = rng.sample(range(linked.height), size)
        others = rng.sample(range(unlinked.height), size // 2)
        sample = pl.concat([linked[rows], unlinked[others]]).sample(fraction=1.0, seed=size)
        sample = sample.head(travellers.SMALL_MAX_PARTIES)
        links = _same_links(sample.select(columns), index, monkeypatch)
        kinds |= set(links["link_kind"].to_list())
        # The same with the shared flags given (some null).
        flags = {
            f: pl.Series([rng.choice([True, False, None]) for _ in range(sample.height)])
            for f in travellers.SHARED_FLAGS
        }
        _same_links(sample.select(columns).with_columns(**flags), index, monkeypatch)
    assert kinds >= {"same_person", "phone", "address"}


def test_few_shipments_of_the_world_get_the_frame_features(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    ships = history.shipments
    tables = travellers.Tables(ships, history.travellers, Params())
    batch = travellers.prepare(ships, tables, Params())
    linked = [i for i, conf in enumerate(batch["__tr_conf"]) if conf > 0]
    assert len(linked) > 50
    rng = random.Random(9)
    for size in [1] * 60 + [2, 3, 7, 16, 32]:
        rows = rng.sample(linked, size) + rng.sample(range(ships.height), size // 2)
        got = _same_features(ships[rows[:32]], tables, monkeypatch)
        # (and a shipment's features do not depend on the others asked with it)
        assert_frame_equal(got, batch[rows[:32]])


# ---------------------------------------------------------------- hand-made cases


def _other(rec: str, surname: str | None, given: str | None, doc: str, **changes: Any) -> dict:
    """Another person: own name and document, no birth date nor contacts unless given."""
    row: dict[str, Any] = {
        "traveller_record_id": rec,
        "surname": surname,
        "given_names": given,
        "name_native": None,
        "document_number": doc,
        "date_of_birth": None,
        "contact_phone": None,
        "contact_email": None,
        "contact_address": None,
    }
    row.update(changes)
    return traveller(**row)


RECORDS = [
    traveller(traveller_record_id="T01"),  # Abdullayev Akmal, +998 90 123 45 67, FA1234567
    _other("T02", "KARIMOV", "RUSTAM", "FA0000002", contact_phone="+7 701 200 30 40",
           name_native="Каримов Рустам Тимурович", date_of_birth=dt.date(1975, 2, 3)),
    _other("T03", "KARIMOV", "RUSTAM", "FA0000003", contact_email="rk@silk.uz",
           date_of_birth=dt.date(1979, 1, 1)),
    _other("T04", "SAIDOVA", "MALIKA", "FA0000004",
           contact_address="Tashkent, Chilonzar street 15, office 7"),
    _other("T05", "NURLANOV", "ASKAR", "FA0000005", contact_phone="+7 777 111 00 99",
           contact_address="д 12/3 кв ٣"),
    _other("T06", "YUSUPOV", "TIMUR", "FA0000006", name_native="Юсупов Тимур"),
    _other("T07", "SAIDOV", "AZIZ", "FA0000007"),
    _other("T08", "SAIDOV", "AZIZ", "FA0000008", contact_email="info@silk.uz"),
    _other("T09", "ISMAILOV", "ALEKSANDR", "AB 12 34", contact_phone="+7 701 200 30 40",
           date_of_birth=dt.date(1990, 7, 7)),
    _other("T10", "ISMOILOV", "ALEXANDER", "N0 123-456", contact_phone="87012003040",
           contact_email=" INFO@Silk.UZ ", date_of_birth=dt.date(1990, 7, 7)),
    _other("T11", "LI", None, "E1234567", name_native="李小龍", contact_phone="+86 991 555 0101"),
    _other("T12", None, None, "X", contact_phone="12345", contact_email="",
           contact_address="   "),
    _other("T13", "ТОО ORIENT", "", "Y99999", contact_address="Almaty, Abaya 5",
           contact_phone="+7 727 300 1122"),
    _other("T14", "KIM", "OLEG", "FA0000014", contact_address="Almaty, Abaya 5",
           contact_email="\x1crk@silk.uz\x1f", date_of_birth=dt.date(1980, 5, 1)),
    _other("T15", "ABDULLAEV", "A", "FA1234567", date_of_birth=dt.date(1980, 5, 1),
           contact_address="Tashkent, Chilanzar 12"),
]  # fmt: skip

NAMES = [
    None, "", "ИП Абдуллаев А.", "IP Abdullaev Akmal", 'ООО "Silk Road Trade"', "Karimov Rustam",
    "Каримов Рустам Азизович", "Saidov Aziz", "Юсупов Тимур", "Ismoilov Aleksandr", "Ismailov A.",
    "李小龍", "Li Xiaolong", 'TOO "Orient"', "Kim O.", "  ", "Abdullaev A.", "ТОО Алматы Техника",
    "Karimov Rustam Timurovic",
]  # fmt: skip
PHONES = [
    None, "", "+998 (90) 123-45-67", "8 701 200 30 40", "+7 777 111 00 99", "12345",
    "＋７ ７０１ ２００ ３０ ４０", "+86 991 555 0101", "+7 727 300 1122", "\t+7 (701) 200-30-40\n",
]  # fmt: skip
EMAILS = [None, "", "rk@silk.uz", " RK@SILK.UZ ", "info@silk.uz", "\x1crk@silk.uz\x1f", "a@b.c"]
ADDRESSES = [
    None, "", "   ", "Tashkent, Chilanzar street 15, office 7",
    "Tashkent, Chilanzar street 7, office 15", "Tashkent, Chilonzar street 15, office 7",
    "д 12/3 кв ٣", "д 12/3 кв 3", "Almaty, Abaya 5", "Almaty, Abaya 5a", "Tashkent, Chilanzar 12",
    "Ташкент, Чиланзар 12",
]  # fmt: skip
BIRTHS = [None, dt.date(1980, 5, 1), dt.date(1975, 2, 3), dt.date(1990, 7, 7), dt.date(1985, 6, 1)]
DOCUMENTS = [None, "", "FA 1234567", "fa1234567", "FA0000002", "AB1234", "N0123456", "E1234567"]


def _records() -> pl.DataFrame:
    return pl.DataFrame(RECORDS, schema=TRAVELLERS.polars_schema)


def _random_parties(
    rng: random.Random, n: int, keys: int, pools: dict[str, list[Any]] | None = None
) -> pl.DataFrame:
    """`n` mentions of at most `keys` parties (a party may have several mentions),
    each field drawn from its pool (`pools`: column -> values; default this file's)."""
    pick = rng.choice
    pools = pools or {
        "name": NAMES,
        "phone": PHONES,
        "email": EMAILS,
        "address": ADDRESSES,
        "birth_date": BIRTHS,
        "document_number": DOCUMENTS,
    }
    return pl.DataFrame(
        {
            "party_key": [pick([*[f"p{k}" for k in range(keys)], None]) for _ in range(n)],
            **{c: [pick(pool) for _ in range(n)] for c, pool in pools.items()},
        },
        schema={
            **{c: pl.String for c in ("party_key", "name", "phone", "email", "address")},
            "birth_date": pl.Date,
            "document_number": pl.String,
        },
    )


def test_hand_made_parties_link_as_the_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    index = travellers.TravellerIndex(_records())
    rng = random.Random(1)
    kinds: set[tuple[str, float]] = set()
    for trial in range(300):
        parties = _random_parties(rng, rng.randint(1, 12), rng.randint(1, 6))
        if trial % 3 == 0:  # the shared flags given, some null
            parties = parties.with_columns(
                pl.Series(f, [rng.choice([True, False, None]) for _ in range(parties.height)])
                for f in rng.sample(travellers.SHARED_FLAGS, rng.randint(1, 3))
            )
        if trial % 5 == 0:  # no identity columns
            parties = parties.drop("birth_date", "document_number")
        links = _same_links(parties, index, monkeypatch)
        kinds |= set(links.select("link_kind", "confidence").iter_rows())
    # Every kind of evidence and every confidence level took part.
    assert {k for k, _ in kinds} == set(travellers.LINK_KINDS)
    assert {c for _, c in kinds} == set(travellers.CONFIDENCE.values())


def test_hand_made_parties_link_as_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few links of the small path checked by hand (both paths agree on them)."""
    parties = pl.DataFrame(
        {
            "party_key": ["ip", "company", "person", "namesake", "doc", "born", "native"],
            "name": ["ИП Абдуллаев А.", 'ООО "Silk Road Trade"', "Rakhimov Timur", "Saidov Aziz",
                     "IP Abdulaev Akmal", "Ismoilov Aleksandr", "Karimov Rustam Timurovic"],
            "phone": ["+998 (90) 123-45-67", "8 701 200 30 40", "+7 777 111 00 99", None, None,
                      None, "+7 701 200 30 40"],
            "email": [None, "rk@silk.uz", None, None, None, None, None],
            "address": [None] * 7,
            "birth_date": [None, None, None, None, None, dt.date(1990, 7, 7), None],
            "document_number": [None, None, None, None, "FA 1234567", None, None],
        }
    )  # fmt: skip
    index = travellers.TravellerIndex(_records())
    got = {}
    native = pl.col("party_key") == "native"
    for some in (parties.filter(~native), parties.filter(native)):  # (not sharing a phone)
        links = _same_links(some, index, monkeypatch)
        got |= {(r, p): (k, c) for r, p, k, c in links.iter_rows()}
    assert got["T01", "ip"] == ("same_person", 0.95)
    assert got["T02", "company"] == ("phone", 0.9)
    assert got["T03", "company"] == ("phone", 0.5)
    assert got["T05", "person"] == ("phone", 0.6)
    assert got["T01", "doc"] == ("same_person", 0.99)
    assert got["T10", "born"] == ("same_person", 0.97)
    # Close to the native name (patronymic and all), a letter off: the initials level.
    assert got["T02", "native"] == ("same_person", 0.95)
    assert not any(p == "namesake" for _, p in got)


DECLARED = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _trip(rec: str, days_ago: float, **changes: Any) -> dict[str, Any]:
    """A trip of the record `rec` of `RECORDS`, departed `days_ago` before DECLARED."""
    row = dict(next(r for r in RECORDS if r["traveller_record_id"] == rec))
    dep = DECLARED - days_ago * DAY
    row.update(traveller_record_id=f"{rec}-{days_ago}", departure_at=dep, booked_at=dep - 20 * DAY)
    row.update(changes)
    return row


def test_hand_made_shipments_get_the_frame_features(monkeypatch: pytest.MonkeyPatch) -> None:
    trips = pl.DataFrame(
        [
            _trip("T01", 12, route_countries=["UZ", "AF"], one_way=True, payment_form="cash",
                  booked_at=DECLARED - 13 * DAY),
            _trip("T01", 61, group_id="G1"),
            _trip("T02", 61, group_id="G1"),
            _trip("T09", 61, group_id="G1", booked_at=None),
            _trip("T01", 200, route_countries=None, one_way=None),
            _trip("T05", -9, route_countries=["UZ", "AF"]),
            _trip("T13", 3, payment_form=None, group_id="G2"),
            _trip("T14", 3, group_id="G2"),
            _trip("T14", 1, departure_at=None),
            _trip("T11", 100),
            # The window's edges for shipments declared at DECLARED or a day before.
            _trip("T01", 0),  # at the very instant: not before
            _trip("T01", 180),  # the window's first instant
            _trip("T01", 180.5, departure_at=DECLARED - WINDOW - dt.timedelta(microseconds=1)),
            _trip("T01", 181),
        ],
        schema=TRAVELLERS.polars_schema,
    )  # fmt: skip
    rng = random.Random(2)
    # A sole trader on T01's phone and a company declaring it too (two links of
    # one record, the stronger first), then random parties.
    rows = [
        shipment(shipment_id=f"E{days}", declared_at=DECLARED - days * DAY,
                 consignee_name="IP Abdullaev Akmal", consignee_phone="+998 (90) 123-45-67",
                 declarant_name='ООО "Silk Road Trade"', declarant_phone="998901234567")
        for days in (0, 1)
    ]  # fmt: skip
    for i in range(60):
        row = shipment(
            shipment_id=f"S{i:02d}", declared_at=DECLARED - rng.choice([0, 0, 1, 90]) * DAY
        )
        for role in PARTY_ROLES:
            row[f"{role}_name"] = rng.choice(NAMES)
            row[f"{role}_phone"] = rng.choice(PHONES)
            row[f"{role}_email"] = rng.choice(EMAILS)
            row[f"{role}_address"] = rng.choice(ADDRESSES)
            row[f"{role}_id"] = rng.choice([None, f"ID{rng.randint(0, 9)}"])
        rows.append(row)
    ships = party_keys(pl.DataFrame(rows, schema=SHIPMENTS.polars_schema))
    ships = ships.sort("declared_at")
    history = History(ships, ITEMS.empty(), OUTCOMES.empty(), trips)
    tables = travellers.Tables(ships, trips, Params())
    batch = travellers.prepare(ships, history, Params())
    assert (batch["__tr_conf"] >= travellers.FEATURE_MIN_CONFIDENCE).sum() > 10
    assert batch["__tr_group"].max() > 0  # type: ignore[operator]
    assert batch["__tr_cash"].max() > 0  # type: ignore[operator]
    for i in range(ships.height):
        assert_frame_equal(_same_features(ships[i : i + 1], tables, monkeypatch), batch[i : i + 1])
    for start in range(0, ships.height, 32):
        got = _same_features(ships[start : start + 32], tables, monkeypatch)
        assert_frame_equal(got, batch[start : start + 32])
