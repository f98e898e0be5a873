"""Traveller family: entity resolution of API/PNR records to parties, the
per-shipment features, point in time, batch = online, and the resolution's
precision and recall on the synthetic world."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS
from features import travellers
from features.context import History, Params, party_keys
from features.travellers import link_travellers, shipment_parties
from tests.factories import shipment, traveller

UTC = dt.UTC
PARTY_SCHEMA = {c: pl.String for c in ("party_key", "name", "phone", "email", "address")}


def _travellers(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=TRAVELLERS.polars_schema)


def _parties(rows: list[tuple[str, str, str | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=PARTY_SCHEMA, orient="row")


def _link(links: pl.DataFrame, rec: str, party: str) -> tuple[str, float] | None:
    row = links.filter((pl.col("traveller_record_id") == rec) & (pl.col("party_key") == party))
    return None if row.height == 0 else (row["link_kind"][0], row["confidence"][0])


def _other(rec: str, surname: str, given: str, doc: str, **changes: Any) -> dict[str, Any]:
    """Another person: own name and document, no contacts unless given."""
    row: dict[str, Any] = {
        "traveller_record_id": rec,
        "surname": surname,
        "given_names": given,
        "name_native": None,
        "document_number": doc,
        "contact_phone": None,
        "contact_email": None,
        "contact_address": None,
    }
    row.update(changes)
    return traveller(**row)


def test_link_kinds_and_confidence() -> None:
    recs = _travellers(
        [
            traveller(traveller_record_id="T1"),  # Abdullayev Akmal, +998 90 123 45 67
            _other("T2", "KARIMOV", "RUSTAM", "FA0000002", contact_phone="+7 701 200 30 40"),
            _other(
                "T3", "SAIDOVA", "MALIKA", "FA0000003",
                contact_address="Tashkent, Chilonzar street 15, office 7",
            ),
            _other("T4", "NURLANOV", "ASKAR", "FA0000004", contact_phone="+7 777 111 00 99"),
            _other("T5", "KARIMOV", "RUSTAM", "FA0000005", contact_email="rk@silk.uz"),
            _other("T6", "YUSUPOV", "TIMUR", "FA0000006"),
            _other("T7", "SAIDOV", "AZIZ", "FA0000007"),
            _other("T8", "SAIDOV", "AZIZ", "FA0000008"),
        ]
    )  # fmt: skip
    parties = _parties(
        [
            ("ip_initials", "ИП Абдуллаев А.", "+998 (90) 123-45-67", None, None),
            ("ip_full", "IP Abdullaev Akmal", "998901234567", None, None),
            ("company_phone", 'ООО "Silk Road Trade"', "8 701 200 30 40", "rk@silk.uz", None),
            ("company_addr", 'TOO "Orient"', None, None, "Tashkent, Chilanzar street 15, office 7"),
            ("swapped", 'TOO "West"', None, None, "Tashkent, Chilanzar street 7, office 15"),
            ("person_phone", "Rakhimov Timur", "+7 777 111 00 99", None, None),
            ("unique_name", "Юсупов Тимур", None, None, None),
            ("namesake", "Saidov Aziz", None, None, None),
        ]
    )  # fmt: skip
    links = link_travellers(parties, recs)
    assert _link(links, "T1", "ip_full") == ("same_person", 0.99)
    assert _link(links, "T1", "ip_initials") == ("same_person", 0.95)
    # A different person on the company's phone; the e-mail alone is weaker.
    assert _link(links, "T2", "company_phone") == ("phone", 0.9)
    assert _link(links, "T5", "company_phone") == ("phone", 0.5)
    # One letter off in a long address, same numbers in the same order.
    assert _link(links, "T3", "company_addr") == ("address", 0.75)
    assert _link(links, "T3", "swapped") is None
    # A private person's phone in somebody else's booking: weak.
    assert _link(links, "T4", "person_phone") == ("phone", 0.6)
    # A name alone links only when nobody else bears it.
    assert _link(links, "T6", "unique_name") == ("name_variant", 0.6)
    assert links.filter(pl.col("party_key") == "namesake").height == 0
    assert set(links.columns) == {"traveller_record_id", "party_key", "link_kind", "confidence"}


def test_phone_of_two_companies_links_to_both_less_surely() -> None:
    recs = _travellers(
        [_other("T1", "KARIMOV", "RUSTAM", "FA01", contact_phone="+7 701 200 30 40")]
    )
    parties = _parties(
        [
            ("a", 'ООО "Silk Road Trade"', "+7 701 200 30 40", None, None),
            ("a", 'OOO "Silk Road Trade"', "+7 701 200 30 40", None, None),  # same name
            ("b", 'ТОО "Altyn Market"', "+7 701 200 30 40", None, "Almaty, Abaya 5"),
            ("c", 'ТОО "Kaspiy"', None, None, "Almaty, Abaya 5"),
        ]
    )
    alone = link_travellers(parties.filter(pl.col("party_key") == "a"), recs)
    assert _link(alone, "T1", "a") == ("phone", 0.9)
    both = link_travellers(parties, recs)
    assert _link(both, "T1", "a") == ("phone", 0.8)
    assert _link(both, "T1", "b") == ("phone", 0.8)
    assert _link(both, "T1", "c") is None


DECLARED = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _ago(days: float) -> dt.datetime:
    return DECLARED - dt.timedelta(days=days)


def _trip(rec: str, days_ago: float, **changes: Any) -> dict[str, Any]:
    dep = _ago(days_ago)
    row = {
        "traveller_record_id": rec,
        "departure_at": dep,
        "booked_at": dep - dt.timedelta(days=20),
    }
    row.update(changes)
    return traveller(**row)


@pytest.fixture
def world() -> tuple[pl.DataFrame, pl.DataFrame]:
    ships = party_keys(
        pl.DataFrame(
            [
                shipment(
                    shipment_id="S1",
                    declared_at=DECLARED,
                    consignee_id=None,
                    consignee_name="ИП Абдуллаев Акмал",
                    consignee_phone="+998 90 123 45 67",
                ),
                shipment(shipment_id="S0", declared_at=_ago(100)),
                shipment(shipment_id="S2", declared_at=_ago(-30), consignee_name="Other"),
            ],
            schema=SHIPMENTS.polars_schema,
        )
    )
    broker_phone = "+7 72831 22 333"  # the declarant's phone in the factory row
    trips = _travellers(
        [
            # 12 days before: Kabul, one way, cash, booked the day before.
            _trip("R1", 12, route=["TAS", "KBL"], route_countries=["UZ", "AF"], one_way=True,
                  payment_form="cash", booked_at=_ago(13)),
            # 61 days before, in a group with a broker's employee (R5).
            _trip("R2", 61, group_id="G1"),
            _other("R5", "KIM", "OLEG", "FA0000005", contact_phone=broker_phone,
                   departure_at=_ago(61), booked_at=_ago(81), group_id="G1"),
            # Outside the 180-day window, but a link all the same.
            _trip("R3", 200, route=["TAS", "KBL"], route_countries=["UZ", "AF"]),
            # After the declaration: unknown at the time.
            _trip("R4", -9, route=["TAS", "KBL"], route_countries=["UZ", "AF"], one_way=True),
        ]
    )  # fmt: skip
    return ships, trips


def _history(ships: pl.DataFrame, trips: pl.DataFrame) -> History:
    return History(ships, ITEMS.empty(), OUTCOMES.empty(), trips)


def test_features_count_recent_linked_trips(world: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    ships, trips = world
    out = travellers.prepare(ships, _history(ships, trips), Params())
    assert out["shipment_id"].to_list() == ["S1", "S0", "S2"]
    s1 = out.row(0, named=True)
    assert s1["__tr_conf"] == pytest.approx(0.99)
    assert s1["__tr_trips"] == 3  # R1, R2, R5
    assert s1["__tr_high_risk"] == 1
    assert s1["__tr_one_way"] == 1
    assert s1["__tr_cash"] == 1
    assert s1["__tr_last_minute"] == 1
    assert s1["__tr_group"] == 2  # R2 and R5 booked together
    # S0, 100 days before S1: its parties are the factory's company and the
    # broker; the broker's employee (R5) travelled only after S0.
    s0 = out.row(1, named=True)
    assert s0["__tr_trips"] == 0 and s0["__tr_conf"] == 0.0
    # S2: the broker's employee (R5) is linked through the declarant's phone.
    s2 = out.row(2, named=True)
    assert s2["__tr_trips"] == 1 and s2["__tr_conf"] == pytest.approx(0.9)


def test_nationality_is_never_used(world: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    ships, trips = world
    before = travellers.prepare(ships, _history(ships, trips), Params())
    other = trips.with_columns(pl.lit("AF").alias("nationality"))
    after = travellers.prepare(ships, _history(ships, other), Params())
    assert before.equals(after)


def test_point_in_time_and_batch_equals_online(world: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    ships, trips = world
    history = _history(ships, trips)
    batch = travellers.prepare(ships, history, Params())
    for i in range(ships.height):
        one = ships.slice(i, 1)
        online = travellers.prepare(one, history, Params())
        cut = travellers.prepare(one, history.known_before(one["declared_at"][0]), Params())
        assert online.row(0) == batch.row(i)
        assert cut.row(0) == batch.row(i)


def test_resolution_on_the_synthetic_world() -> None:
    """Precision and recall of the links used by the features (confidence >=
    FEATURE_MIN_CONFIDENCE) against the world's truth. Parties are resolved per
    mention (shipment, role) and mapped to the generator's party id."""
    from pipelines.synthetic import WorldConfig, generate_world

    w = generate_world(WorldConfig(n_shipments=100_000, seed=7))
    mentions = shipment_parties(party_keys(w.shipments)).with_columns(
        (pl.col("shipment_id") + "|" + pl.col("role")).alias("party_key")
    )
    links = link_travellers(mentions, w.travellers).filter(
        pl.col("confidence") >= travellers.FEATURE_MIN_CONFIDENCE
    )
    to_truth = mentions.select("party_key", "shipment_id", "role").join(
        w.parties.rename({"party_key": "true_key"}), on=["shipment_id", "role"]
    )
    predicted = (
        links.join(to_truth, on="party_key")
        .select("traveller_record_id", pl.col("true_key").alias("party_key"))
        .unique()
    )
    truth = w.traveller_links.select("traveller_record_id", "party_key", "link_kind")
    hits = predicted.join(truth, on=["traveller_record_id", "party_key"])
    precision = hits.height / predicted.height
    recall = hits.height / truth.height
    # All truth links count: a sole trader travelling under another spelling of
    # his name is found through the date of birth or the identity document his
    # declarations carry. (Addresses that parties of several names declare stay
    # too weak alone: they cost precision far more than they add recall.)
    print(f"precision={precision:.3f} recall={recall:.3f}")
    assert precision >= 0.95
    assert recall >= 0.90


def test_point_in_time_on_a_synthetic_world() -> None:
    from pipelines.synthetic import WorldConfig, generate_world

    w = generate_world(WorldConfig(n_shipments=3000, seed=11))
    ships = party_keys(w.shipments.filter(pl.col("declared_at").is_not_null()))
    history = History(ships, ITEMS.empty(), w.outcomes, w.travellers)
    batch = travellers.prepare(ships, history, Params())
    linked = batch.filter(pl.col("__tr_trips") > 0)
    assert linked.height > 0
    rows = list(range(0, ships.height, 97))
    position = {sid: i for i, sid in enumerate(ships["shipment_id"])}
    rows += [position[s] for s in linked["shipment_id"].head(20)]
    for i in rows:
        one = ships.slice(i, 1)
        cut = travellers.prepare(one, history.known_before(one["declared_at"][0]), Params())
        online = travellers.prepare(one, history, Params())
        assert cut.row(0) == batch.row(i) == online.row(0)


def test_birth_date_and_document_link_a_person_under_another_spelling() -> None:
    recs = _travellers(
        [
            _other("T1", "ABDULLAYEV", "AKMAL", "FA1234567", date_of_birth=dt.date(1980, 5, 1),
                   name_native="Абдуллаев Акмал Рустамович"),
            # Same day, same surname and given name, another father: a namesake.
            _other("T2", "KARIMOV", "RUSTAM", "FA7654321", date_of_birth=dt.date(1975, 2, 3),
                   name_native="Каримов Рустам Тимурович"),
            # Same day, only the initials agree: not enough.
            _other("T3", "SAIDOV", "ALISHER", "FA5555555", date_of_birth=dt.date(1990, 7, 7)),
        ]
    )  # fmt: skip
    parties = pl.DataFrame(
        {
            "party_key": ["variant", "initials", "namesake", "doc_only", "doc_other_name"],
            "name": ["ИП Абдулаев Акмал Рустамович", "Saidov A.Z.", "ИП Каримов Рустам Азизович",
                     "IP Abdulaev Akmal", "Petrov Ivan"],
            "phone": [None] * 5,
            "email": [None] * 5,
            "address": [None] * 5,
            "birth_date": [dt.date(1980, 5, 1), dt.date(1990, 7, 7), dt.date(1975, 2, 3),
                           None, None],
            "document_number": [None, None, None, "FA 1234567", "FA1234567"],
        }
    )  # fmt: skip
    links = link_travellers(parties, recs)
    assert _link(links, "T1", "variant") == ("same_person", 0.97)
    assert _link(links, "T1", "doc_only") == ("same_person", 0.99)
    assert _link(links, "T3", "initials") is None
    assert _link(links, "T2", "namesake") is None
    # A number alone, under an unrelated name: a typing error, not a link.
    assert _link(links, "T1", "doc_other_name") is None
