"""Acceptance round 2 (analyst A4, A5, A9, A10), the screening logic: a party's
listed identity document (or id) and a linked traveller's listed name or document
are exact operational hits (`features.watchlist.operational`), on the row-by-row
and the frame paths, while the model's features keep their values; a national
CSV separated by semicolons is refused saying so; the UN list's name is reserved."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data_contracts.loaders import ReferenceFileError
from data_contracts.loaders.national import COLUMNS, load_national_csv, read_national_csv
from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from features import watchlist
from features.context import History, Params, party_keys
from tests.factories import shipment, traveller

UTC = dt.UTC
LISTED = "Iskanderov Bakyt Temirovich"
PASSPORT = "AN1234567"


def _entry(entry_id: str, name: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry_id": entry_id,
        "list_name": "KG-NAT",
        "reference_number": entry_id.split(":")[-1],
        "entity_type": "individual",
        "name": name,
        "aliases": ["Iskanderov Bakit"],
        "name_original_script": "Искандеров Бакыт Темирович",
        "dates_of_birth": ["1980-05-05"],
        "nationalities": ["KG"],
        "document_numbers": [PASSPORT],
        "addresses": None,
        # listed on the day of the shipments: the features do not count it yet,
        # the operational screening (the lists as they are now) does
        "listed_on": dt.date(2024, 3, 15),
        "comments": None,
    }
    row.update(changes)
    return row


WATCH = pl.DataFrame(
    [
        _entry("KG-NAT:KG-3", LISTED),
        _entry(
            "KG-NAT:KG-9",
            "Old Listing Person",
            aliases=[],
            name_original_script=None,
            document_numbers=["ZX7654321"],
            listed_on=dt.date(2020, 1, 1),
        ),
    ],
    schema=WATCHLIST.polars_schema,
)

# Nobody of these names is listed (the declarant's and consignor's names stay
# below the floor against WATCH).
PLAIN = {
    "consignee_name": "IP Kurmanov Aibek",
    "consignee_id": "990000000777",
    "consignee_document_number": None,
    "consignee_birth_date": None,
}


def _ships(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return party_keys(pl.DataFrame(rows, schema=SHIPMENTS.polars_schema))


def _history(ships: pl.DataFrame, travellers: list[dict[str, Any]] | None = None) -> History:
    frame = (
        pl.DataFrame(travellers, schema=TRAVELLERS.polars_schema)
        if travellers
        else TRAVELLERS.empty()
    )
    return History(ships, ITEMS.empty(), OUTCOMES.empty(), frame, WATCH)


def _by_id(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["shipment_id"]: row for row in frame.iter_rows(named=True)}


def _both_paths(
    ships: pl.DataFrame, source: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, dict[str, Any]]:
    """`operational` row by row and on the frame path: the same rows."""
    few = watchlist.operational(ships, source)
    with monkeypatch.context() as m:
        m.setattr(watchlist, "SMALL", 0)
        frame = watchlist.operational(ships, source)
    assert few.to_dicts() == frame.to_dicts()
    return _by_id(few)


# --------------------------------------------------------------------------- A9


def test_a_listed_document_number_is_an_exact_operational_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ships = _ships(
        [
            # the consignee presents the listed passport (written with a space)
            shipment(
                shipment_id="D1",
                **{
                    **PLAIN,
                    "consignee_document_number": "AN 1234567",
                    "consignee_birth_date": dt.date(1980, 5, 5),
                },
            ),
            # the listed number given as the consignee's id
            shipment(shipment_id="D2", **{**PLAIN, "consignee_id": PASSPORT}),
            # the declarant's document, another entry (listed long ago)
            shipment(shipment_id="D3", **PLAIN, declarant_document_number="zx-7654321"),
            # nobody listed
            shipment(shipment_id="D4", **PLAIN),
        ]
    )
    now = _both_paths(ships, WATCH, monkeypatch)
    for sid, party in (("D1", "consignee"), ("D2", "consignee")):
        hit = now[sid]
        assert hit["__wl_exact"] is True, sid
        assert (hit["__wl_entry"], hit["__wl_by"], hit["__wl_party"]) == (
            "KG-NAT:KG-3",
            "document",
            party,
        )
        assert hit["__wl_name"] == LISTED and hit["__wl_traveller"] is None
    assert now["D3"]["__wl_exact"] is True
    assert (now["D3"]["__wl_entry"], now["D3"]["__wl_party"]) == ("KG-NAT:KG-9", "declarant")
    assert now["D4"]["__wl_exact"] is False and now["D4"]["__wl_entry"] is None
    assert now["D4"]["__wl_by"] is None

    # The model's features are what they were: the document number is not read,
    # the id match stays a feature (point in time: KG-3 counts from the next day).
    features = _by_id(watchlist.prepare(ships, _history(ships), Params()))
    assert [features[s]["__wl_exact"] for s in ("D1", "D2", "D3", "D4")] == [False] * 4
    assert [features[s]["__wl_id_match"] for s in ("D1", "D2", "D3", "D4")] == [
        False,
        False,
        False,
        False,
    ]

    def next_day(**changes: Any) -> pl.DataFrame:
        at = dt.datetime(2024, 3, 16, 9, tzinfo=UTC)
        return _ships([shipment(shipment_id="D5", **{**PLAIN, **changes}, declared_at=at)])

    later = next_day(consignee_id=PASSPORT)
    assert watchlist.prepare(later, _history(later), Params())["__wl_id_match"].to_list() == [True]
    later = next_day(consignee_document_number=PASSPORT)
    assert watchlist.prepare(later, _history(later), Params())["__wl_id_match"].to_list() == [False]


def test_an_exact_name_still_wins_and_a_near_miss_is_not_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ships = _ships(
        [
            shipment(shipment_id="N1", **{**PLAIN, "consignee_name": f"IP {LISTED}"}),
            shipment(
                shipment_id="N2", **{**PLAIN, "consignee_name": "Iskandarov Bakyt Temurovich"}
            ),
        ]
    )
    now = _both_paths(ships, WATCH, monkeypatch)
    assert now["N1"]["__wl_exact"] is True and now["N1"]["__wl_by"] == "name"
    assert now["N1"]["__wl_score"] == 100
    assert now["N2"]["__wl_exact"] is False and now["N2"]["__wl_by"] == "name"
    assert 70 <= now["N2"]["__wl_score"] < 100


# --------------------------------------------------------------------------- A10


def _listed_traveller(**changes: Any) -> dict[str, Any]:
    return traveller(
        **{
            "traveller_record_id": "TR-LISTED",
            "surname": "ISKANDEROV",
            "given_names": "BAKYT",
            "name_native": "Искандеров Бакыт Темирович",
            "date_of_birth": dt.date(1980, 5, 5),
            "nationality": "KG",
            "document_number": PASSPORT,
            "document_country": "KG",
            "contact_phone": "+996 555 123 45 67",
            "contact_email": None,
            "contact_address": None,
            **changes,
        }
    )


def test_a_linked_travellers_listed_name_or_document_is_an_exact_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    company = {
        **PLAIN,
        "consignee_name": 'OsOO "Altyn Trade"',
        "consignee_phone": "+996 555 123 45 67",
        "consignee_email": None,
    }
    ships = _ships(
        [
            # a company whose phone the listed traveller booked with (link 0.9)
            shipment(shipment_id="T1", **company),
            # a sole trader under another name with that phone: a weak link (0.6),
            # below the linkage's threshold: not screened
            shipment(
                shipment_id="T2",
                **{**company, "consignee_name": "IP Kurmanov Aibek"},
            ),
            # no link at all
            shipment(shipment_id="T3", **PLAIN),
        ]
    )
    travellers = [
        _listed_traveller(),
        # linked to T1 as well, listed only by its document number (another name)
        _listed_traveller(
            traveller_record_id="TR-DOC",
            surname="DOE",
            given_names="JOHN",
            name_native=None,
            document_number="ZX7654321",
            date_of_birth=dt.date(1970, 1, 1),
        ),
    ]
    history = _history(ships, travellers)
    now = _both_paths(ships, history, monkeypatch)
    hit = now["T1"]
    assert hit["__wl_exact"] is True
    assert (hit["__wl_entry"], hit["__wl_party"], hit["__wl_traveller"]) == (
        "KG-NAT:KG-3",
        "consignee",
        "TR-LISTED",
    )
    assert hit["__wl_by"] == "name" and hit["__wl_score"] == 100
    assert now["T2"]["__wl_exact"] is False and now["T2"]["__wl_traveller"] is None
    assert now["T3"]["__wl_exact"] is False and now["T3"]["__wl_traveller"] is None

    # only the document of the linked traveller is listed
    only_doc = _history(ships, travellers[1:])
    hit = _both_paths(ships.head(1), only_doc, monkeypatch)["T1"]
    assert hit["__wl_exact"] is True
    assert (hit["__wl_entry"], hit["__wl_by"], hit["__wl_traveller"]) == (
        "KG-NAT:KG-9",
        "document",
        "TR-DOC",
    )
    # the watchlist frame alone screens no traveller; the features never do
    assert watchlist.operational(ships.head(1), WATCH)["__wl_exact"].to_list() == [False]
    assert watchlist.prepare(ships, history, Params())["__wl_exact"].to_list() == [False] * 3


def test_many_shipments_link_as_one_shipment_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over `SMALL_MAX_PARTIES` parties the links are found a chunk at a time, with
    the shared-contact flags computed over all of them: the hits of each shipment
    screened alone."""
    from features.travellers import SMALL_MAX_PARTIES

    linked = {
        **PLAIN,
        "consignee_name": 'OsOO "Altyn Trade"',
        "consignee_phone": "+996 555 123 45 67",
        "consignee_email": None,
    }
    rows = [shipment(shipment_id=f"P{i:03d}", **PLAIN) for i in range(SMALL_MAX_PARTIES // 3 + 5)]
    rows[3] = shipment(shipment_id="P003", **linked)
    # another company declaring the same phone (a shared number: linked less surely)
    rows[-1] = shipment(shipment_id="P-LAST", **{**linked, "consignee_name": "TOO Beta Trade"})
    ships = _ships(rows)
    history = _history(ships, [_listed_traveller()])
    together = watchlist.operational(ships, history)
    alone = pl.concat([watchlist.operational(ships.slice(i, 1), history) for i in range(len(rows))])
    assert together.to_dicts() == alone.to_dicts()
    hits = _by_id(together)
    assert hits["P003"]["__wl_traveller"] == "TR-LISTED" and hits["P003"]["__wl_exact"] is True
    assert hits["P-LAST"]["__wl_traveller"] == "TR-LISTED"
    assert sum(row["__wl_exact"] for row in hits.values()) == 2


def test_the_feature_state_screens_its_traveller_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online scoring passes the feature state: its records (history and appended)."""
    from features.state import FeatureState

    base = _ships([shipment(shipment_id="H1", **PLAIN)])
    state = FeatureState.build(_history(base, [_listed_traveller()]))
    ship = _ships(
        [
            shipment(
                shipment_id="T1",
                **{**PLAIN, "consignee_name": 'OsOO "Altyn Trade"'},
                consignee_phone="+996 555 123 45 67",
                declared_at=dt.datetime(2024, 3, 20, 9, tzinfo=UTC),
            )
        ]
    )
    hit = _both_paths(ship, state, monkeypatch)["T1"]
    assert hit["__wl_exact"] is True and hit["__wl_traveller"] == "TR-LISTED"


# --------------------------------------------------------------------------- A4, A5


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_semicolon_separated_list_is_refused_saying_so(tmp_path: Path) -> None:
    row = "KG-1;entity;Khan Tengri Holding;;Хан Тенгри Холдинг;;KG;;;2026-11-27"
    path = _csv(tmp_path, ";".join(COLUMNS) + "\n" + row + "\n")
    with pytest.raises(ReferenceFileError) as refused:
        load_national_csv(path, "KG-NAT")
    message = str(refused.value)
    assert "semicolons (;)" in message and "needs commas (,)" in message
    assert "missing column" not in message
    # a tab-separated one too; a header really lacking a column still says which
    tabs = _csv(tmp_path, "\t".join(COLUMNS) + "\n" + row.replace(";", "\t") + "\n")
    with pytest.raises(ReferenceFileError, match="separated by tabs"):
        load_national_csv(tabs, "KG-NAT")
    short = _csv(tmp_path, ",".join(COLUMNS[:-1]) + "\n")
    with pytest.raises(ReferenceFileError, match="missing column\\(s\\): listed_on"):
        load_national_csv(short, "KG-NAT")
    # the comma-separated file loads
    good = _csv(tmp_path, ",".join(COLUMNS) + "\n" + row.replace(";", ",") + "\n")
    assert load_national_csv(good, "KG-NAT")["entry_id"].to_list() == ["KG-NAT:KG-1"]


@pytest.mark.parametrize("name", ["UN-SC", "un-sc", "Un-Sc"])
def test_the_un_list_name_is_reserved(tmp_path: Path, name: str) -> None:
    path = _csv(tmp_path, ",".join(COLUMNS) + "\nX-1,individual,Test Person,,,,KG,,,\n")
    with pytest.raises(ValueError, match="reserved for the UN Security Council list"):
        read_national_csv(path, name)
