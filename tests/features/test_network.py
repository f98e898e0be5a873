"""Network family: component sizes, shared contacts and hops to arms findings,
point in time, batch = online."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS
from features import network
from features.context import History, Params, party_keys
from tests.factories import outcome, shipment

UTC = dt.UTC


def _at(day: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2024, 1, 1, hour, tzinfo=UTC) + dt.timedelta(days=day)


def _ship(sid: str, day: int, cnee: str, phone: str, **changes: Any) -> dict[str, Any]:
    """A shipment whose consignee (no id, so keyed by name) is `cnee` with `phone`,
    its own address and e-mail, from a consignor of its own."""
    row = shipment(
        shipment_id=sid,
        declared_at=_at(day),
        consignee_id=None,
        consignee_name=cnee,
        consignee_phone=phone,
        consignee_address=f"{cnee} street 1",
        consignee_email=None,
        consignor_id=None,
        consignor_name=f"Supplier of {cnee}",
        consignor_phone=None,
        consignor_email=None,
        consignor_address=None,
        declarant_id=None,
        declarant_name=f"Declarant {sid}",
        declarant_phone=None,
        declarant_email=None,
        declarant_address=None,
        conveyance_ref=f"CAR-{sid}",
    )
    row.update(changes)
    return row


def _ships(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return party_keys(pl.DataFrame(rows, schema=SHIPMENTS.polars_schema))


def _history(ships: pl.DataFrame, outcomes: list[dict[str, Any]] | None = None) -> History:
    return History(
        ships,
        ITEMS.empty(),
        pl.DataFrame(outcomes or [], schema=OUTCOMES.polars_schema),
        TRAVELLERS.empty(),
    )


def _by_id(frame: pl.DataFrame, column: str) -> dict[str, Any]:
    return dict(zip(frame["shipment_id"], frame[column], strict=True))


@pytest.fixture
def shared_phone() -> pl.DataFrame:
    phone = "+7 701 111 22 33"
    return _ships(
        [
            _ship("S1", 0, "Alpha Trade", phone),
            _ship("S2", 1, "Beta Trade", "8 (701) 111-22-33"),  # same phone, other writing
            _ship("S3", 2, "Alpha Trade", phone),
            _ship("S4", 2, "Gamma Trade", phone),  # same instant as S3: not before it
            _ship("S5", 3, "Alpha Trade", phone),
            _ship("S6", 3, "Delta Trade", "+7 702 999 00 00"),
        ]
    )


def test_component_grows_only_with_earlier_shipments(shared_phone: pl.DataFrame) -> None:
    out = network.prepare(shared_phone, _history(shared_phone), Params())
    assert out["shipment_id"].to_list() == shared_phone["shipment_id"].to_list()
    size = _by_id(out, "__net_component")
    # S1: Alpha is new. S2: Beta is new (its phone was Alpha's, but Beta itself
    # has no edge yet). S3: Alpha + Beta. S4 at the same instant as S3: Gamma is
    # new, S3's edges do not count. S5: Alpha, Beta, Gamma.
    assert size == {"S1": 1, "S2": 1, "S3": 2, "S4": 1, "S5": 3, "S6": 1}


def test_contact_parties_counts_others_behind_the_phone(shared_phone: pl.DataFrame) -> None:
    out = network.prepare(shared_phone, _history(shared_phone), Params())
    shared = _by_id(out, "__net_contact_parties")
    # Before S2 the phone belonged to Alpha only; before S3 to Alpha and Beta
    # (Alpha itself not counted); before S5 also to Gamma.
    assert shared == {"S1": 0, "S2": 1, "S3": 1, "S4": 2, "S5": 2, "S6": 0}


def test_trade_edges_do_not_make_components(shared_phone: pl.DataFrame) -> None:
    rows = [
        _ship("T1", 0, "Alpha Trade", "+7 701 000 00 01", consignor_name="Big Supplier"),
        _ship("T2", 1, "Beta Trade", "+7 701 000 00 02", consignor_name="Big Supplier"),
        _ship("T3", 2, "Gamma Trade", "+7 701 000 00 03", consignor_name="Big Supplier"),
    ]
    ships = _ships(rows)
    out = network.prepare(ships, _history(ships), Params())
    assert out["__net_component"].to_list() == [1, 1, 1]


def test_hub_limit_stops_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every consignee here has 4 neighbours (address, phone, vehicle, consignor),
    # all within the limit at its end; the phone reaches the limit after 4 parties.
    monkeypatch.setattr(network, "HUB_LIMIT", 4)
    phone = "+7 701 555 55 55"
    names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]
    rows = [_ship(f"H{i}", i, f"{n} Trade", phone) for i, n in enumerate(names)]
    rows += [
        _ship("L1", 9, "Epsilon Trade", phone),  # fifth party on the phone: not joined
        _ship("L2", 9, "Alpha Trade", phone),
    ]
    ships = _ships(rows)
    size = _by_id(network.prepare(ships, _history(ships), Params()), "__net_component")
    assert size["L1"] == 1
    assert size["L2"] == 4


def test_hops_to_arms_use_findings_of_earlier_months() -> None:
    rows = [
        _ship("A1", 10, "Arms Holder", "+7 701 000 00 10", consignor_name="Arms Supplier"),
        _ship("A2", 12, "Phone Sharer", "+7 701 000 00 10"),
        _ship("A3", 20, "Phone Sharer", "+7 777 000 00 99"),  # January: finding not yet known
        _ship("A4", 40, "Phone Sharer", "+7 777 000 00 99"),  # February
        _ship("A5", 40, "Arms Holder", "+7 701 000 00 10"),
        _ship("A6", 41, "Other Buyer", "+7 701 999 99 99", consignor_name="Arms Supplier"),
        _ship("A7", 41, "Stranger", "+7 705 123 45 67"),
        _ship("B1", 5, "Arms Holder", "+7 701 000 00 10", consignor_name="Second Supplier"),
        _ship("B2", 42, "New Buyer", "+7 705 000 11 22", consignor_name="Second Supplier"),
    ]
    ships = _ships(rows)
    finding = outcome(
        outcome_id="O1",
        shipment_id="A1",
        inspected_at=_at(15),
        finding=True,
        finding_category="firearms",
    )
    hops = _by_id(network.prepare(ships, _history(ships, [finding]), Params()), "__net_hops")
    none = network.MAX_HOPS + 1
    assert hops["A3"] == none  # the snapshot of January starts before the finding
    assert hops["A5"] == 0  # the party itself
    assert hops["A6"] == 0  # the consignor of the seized shipment is flagged too
    assert hops["B2"] == 1  # its consignor sold to the flagged consignee before
    assert hops["A4"] == 2  # consignee - phone - flagged consignee
    assert hops["A7"] == none


def test_point_in_time_and_batch_equals_online(shared_phone: pl.DataFrame) -> None:
    extra = [
        _ship("P1", 35, "Alpha Trade", "+7 701 111 22 33", consignor_name="Arms Supplier"),
        _ship("P2", 70, "Epsilon", "+7 701 111 22 33"),
        _ship("P3", 71, "Zeta", "+7 702 999 00 00", consignor_name="Arms Supplier"),
    ]
    ships = pl.concat([shared_phone, _ships(extra)])
    outcomes = [
        outcome(outcome_id="O1", shipment_id="S1", inspected_at=_at(20), finding=True,
                finding_category="ammunition"),
        outcome(outcome_id="O2", shipment_id="P1", inspected_at=_at(36), finding=True,
                finding_category="parts"),
    ]  # fmt: skip
    history = _history(ships, outcomes)
    batch = network.prepare(ships, history, Params())
    assert batch["__net_hops"].min() == 0
    for i in range(ships.height):
        one = ships.slice(i, 1)
        online = network.prepare(one, history, Params())
        cut = network.prepare(one, history.known_before(one["declared_at"][0]), Params())
        assert online.row(0) == batch.row(i)
        assert cut.row(0) == batch.row(i)


def test_point_in_time_on_a_synthetic_world() -> None:
    from pipelines.synthetic import WorldConfig, generate_world

    w = generate_world(WorldConfig(n_shipments=3000, seed=11))
    ships = party_keys(w.shipments.filter(pl.col("declared_at").is_not_null()))
    history = History(ships, ITEMS.empty(), w.outcomes, w.travellers)
    batch = network.prepare(ships, history, Params())
    assert (batch["__net_component"] > 1).any()
    for i in range(0, ships.height, 97):
        one = ships.slice(i, 1)
        cut = network.prepare(one, history.known_before(one["declared_at"][0]), Params())
        assert cut.row(0) == batch.row(i)
