"""Watchlist family: best match per shipment, listing dates, distinct-name
screening, point in time, batch = online."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS, WATCHLIST
from features import watchlist
from features.context import History, Params, party_keys
from features.screening import WatchlistIndex
from tests.conftest import count_screenings
from tests.factories import shipment

UTC = dt.UTC


def _entry(entry_id: str, name: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry_id": entry_id,
        "list_name": "UN-SC",
        "reference_number": entry_id.split(":")[-1],
        "entity_type": "individual",
        "name": name,
        "aliases": [],
        "name_original_script": None,
        "dates_of_birth": None,
        "nationalities": None,
        "document_numbers": None,
        "addresses": None,
        "listed_on": dt.date(2020, 1, 1),
        "comments": None,
    }
    row.update(changes)
    return row


WATCH = pl.DataFrame(
    [
        _entry("UN:QDi.1", "ABDULLAEV AKMAL", name_original_script="Абдуллаев Акмал"),
        _entry(
            "UN:QDe.2",
            "TIANSHAN MACHINERY",
            entity_type="entity",
            listed_on=dt.date(2024, 5, 1),
        ),
        _entry("KZ:77", "Karimov Bakhtiyar", document_numbers=["180340012345"]),
    ],
    schema=WATCHLIST.polars_schema,
)


def _at(month: int, day: int = 15) -> dt.datetime:
    return dt.datetime(2024, month, day, 9, 30, tzinfo=UTC)


def _ships(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return party_keys(pl.DataFrame(rows, schema=SHIPMENTS.polars_schema))


def _history(ships: pl.DataFrame, wl: pl.DataFrame | None = WATCH) -> History:
    return History(
        ships,
        ITEMS.empty(),
        OUTCOMES.empty(),
        TRAVELLERS.empty(),
        wl,
    )


@pytest.fixture
def ships() -> pl.DataFrame:
    plain = {"consignee_id": "990000000001", "consignor_name": "Ningbo Bright Lamps Co., Ltd."}
    return _ships(
        [
            # The listed person as a sole trader, Cyrillic, another spelling.
            shipment(shipment_id="W1", consignee_name="ИП Абдуллаев Акмал", **{
                k: v for k, v in plain.items() if k != "consignee_name"}),
            # A typo: fuzzy, not exact.
            shipment(shipment_id="W2", consignee_name="Abdulaev Akmad", **plain),
            # The listed company before its listing date, then after it.
            shipment(shipment_id="W3", declared_at=_at(4), consignee_id="990000000001"),
            shipment(shipment_id="W4", declared_at=_at(6), consignee_id="990000000001"),
            # Nobody listed; the consignee id is a listed document number.
            shipment(shipment_id="W5", consignor_name="Ningbo Bright Lamps Co., Ltd."),
            shipment(shipment_id="W6", **plain),
        ]
    )  # fmt: skip


def _by_id(frame: pl.DataFrame, column: str) -> dict[str, Any]:
    return dict(zip(frame["shipment_id"], frame[column], strict=True))


def test_scores_exact_and_listing_dates(ships: pl.DataFrame) -> None:
    out = watchlist.prepare(ships, _history(ships), Params())
    assert out["shipment_id"].to_list() == ships["shipment_id"].to_list()
    score = _by_id(out, "__wl_score")
    exact = _by_id(out, "__wl_exact")
    assert score["W1"] == 100 and exact["W1"] is True
    assert _by_id(out, "__wl_party")["W1"] == "consignee"
    assert _by_id(out, "__wl_entry")["W1"] == "UN:QDi.1"
    assert 85 <= score["W2"] < 100 and exact["W2"] is False
    # "Urumqi Tianshan Machinery Co., Ltd." is listed on 2024-05-01.
    assert score["W3"] == 0
    assert score["W4"] > 0 and _by_id(out, "__wl_entry")["W4"] == "UN:QDe.2"
    assert score["W6"] == 0 and exact["W6"] is False
    ids = _by_id(out, "__wl_id_match")
    assert ids["W5"] is True and ids["W6"] is False


def test_no_watchlist_gives_zeros(ships: pl.DataFrame) -> None:
    out = watchlist.prepare(ships, _history(ships, None), Params())
    assert out.height == ships.height
    assert out["__wl_score"].to_list() == [0] * ships.height
    assert not out["__wl_exact"].any()


@pytest.mark.parametrize("path", ["frames", "row by row"])
def test_each_distinct_name_is_screened_once(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    # (the frame path screens with `screen`, the row-by-row one with `_screen_few`)
    seen = count_screenings(monkeypatch, "screen" if path == "frames" else "_screen_few")
    monkeypatch.setattr(watchlist, "_INDEX_CACHE", [])  # (a new index: no name screened yet)
    if path == "frames":
        monkeypatch.setattr(watchlist, "SMALL", 0)
    rows = [
        shipment(shipment_id=f"D{i}", consignee_name=["Alpha", "Beta", "Абдуллаев Акмал"][i % 3])
        for i in range(300)
    ]
    ships = _ships(rows)
    out = watchlist.prepare(ships, _history(ships), Params())
    # Three consignee names, one consignor, one declarant.
    assert [len(names) for names in seen] == [5]
    assert out.filter(pl.col("__wl_exact")).height == 100


def test_priming_again_screens_only_names_not_screened_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebuilt feature state primes the history's names again on the same index:
    those already screened are answered from the memo, only new ones are screened,
    and every name keeps the matches screening it alone gives."""
    index = WatchlistIndex.build(WATCH)
    seen = count_screenings(monkeypatch)
    first = ["Абдуллаев Акмал", "Tianshan Machinery LLC", "Nobody Known"]
    watchlist.prime(index, first)
    watchlist.prime(index, [*first, "Abdulaev Akmal", "Karimov B."])
    watchlist.prime(index, first[::-1])
    assert seen == [first, ["Abdulaev Akmal", "Karimov B."]]
    alone = WatchlistIndex.build(WATCH)
    for name in [*first, "Abdulaev Akmal", "Karimov B."]:
        key = (name, watchlist.MAX_ENTRIES_PER_NAME, watchlist.SCORE_FLOOR)
        want = alone.screen_few(
            [name], limit=watchlist.MAX_ENTRIES_PER_NAME, threshold=watchlist.SCORE_FLOOR
        )
        assert index.memo[key] == want[0]
    assert index.memo[(first[0], watchlist.MAX_ENTRIES_PER_NAME, watchlist.SCORE_FLOOR)]


def test_point_in_time_and_batch_equals_online(ships: pl.DataFrame) -> None:
    history = _history(ships)
    batch = watchlist.prepare(ships, history, Params())
    for i in range(ships.height):
        one = ships.slice(i, 1)
        online = watchlist.prepare(one, history, Params())
        cut = watchlist.prepare(one, history.known_before(one["declared_at"][0]), Params())
        assert online.row(0) == batch.row(i)
        assert cut.row(0) == batch.row(i)


def test_features_read_the_prepared_columns(ships: pl.DataFrame) -> None:
    out = watchlist.prepare(ships, _history(ships), Params())
    values = out.select(
        watchlist.watchlist_best_score(),
        watchlist.watchlist_exact(),
        watchlist.watchlist_parties_matched(),
        watchlist.watchlist_id_match(),
    )
    assert values.row(0) == (100, 1, 1, 0)
    assert values.row(5) == (0, 0, 0, 0)


def test_a_few_shipments_in_python_equal_the_frame_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row-by-row path (online: one shipment) gives the frame path's columns:
    listing dates (before, on, after the day), exact and fuzzy names, documents,
    roles tied on score, no party names, unknown names."""
    parties: list[dict[str, Any]] = [
        {"consignee_name": "Абдуллаев Акмал"},
        {"consignor_name": "Tianshan Machinery LLC", "consignee_name": "Abdulaev Akmal"},
        {"consignee_name": "Karimov B.", "consignee_id": "1803 4001 2345"},
        {"consignor_name": "Tianshan Machinery", "declarant_name": "TIANSHAN MACHINERY"},
        {"consignee_name": None, "consignor_name": None, "declarant_name": None},
        {"consignee_name": "Nobody Known", "declarant_id": "180340012345"},
    ]
    rows = [
        shipment(shipment_id=f"S{month}-{k}", declared_at=_at(month, 1 if month == 5 else 15), **p)
        for month in (1, 5, 6)
        for k, p in enumerate(parties)
    ]
    ships = _ships(rows)
    index = WatchlistIndex.build(WATCH)
    for start in range(0, ships.height, 3):
        chunk = ships.slice(start, 3)
        few = watchlist.prepare(chunk, WATCH, Params(), index)
        with monkeypatch.context() as m:
            m.setattr(watchlist, "SMALL", 0)
            frame = watchlist.prepare(chunk, WATCH, Params(), index)
        assert few.to_dicts() == frame.to_dicts()
        assert few.schema == frame.schema
    hits = watchlist.prepare(ships.head(3), WATCH, Params(), index)
    assert hits["__wl_score"].to_list()[0] > 0
