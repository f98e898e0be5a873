"""Acceptance findings on watchlists (analyst F1-F5), over HTTP on SQLite and
PostgreSQL: the real UN SC list loads through the API; lists loaded over the API
survive a restart (the database is the source of truth, mirrored to
validated/watchlist.parquet); a party designated today is flagged on shipments
declared today; malformed and empty national CSVs are refused naming the row/list."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from tests.serving.conftest import DAY, OFFICE, Api, Samples, add_users, build_app, payload
from tests.serving.test_watchlists_api import _detail, _national, _upload

API = "/api/v1"
UN_XML = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / ("un_sc_consolidated_2018-10-29.xml")
)
LISTED_TODAY = "Yusupov Bakhodir Alisherovich"
LISTED_FIRM = "Karavan-Vostok Trans Logistika LLP"


def _ingest(api: Api, *records: dict[str, Any]) -> None:
    r = api.client.post(
        f"{API}/shipments/batch",
        json={"records": list(records)},
        headers=api.headers(Role.analyst),
    )
    assert r.status_code == 200 and len(r.json()["stored"]) == len(records), r.text


def _active(api: Api, list_name: str) -> dict[str, str]:
    with api.app.state.session_factory() as session:
        rows = session.scalars(
            select(m.WatchlistEntry).where(
                m.WatchlistEntry.list_name == list_name, m.WatchlistEntry.active.is_(True)
            )
        )
        return {r.entry_id: r.name for r in rows}


def _audit_kinds(api: Api) -> list[str]:
    with api.app.state.session_factory() as session:
        return list(session.scalars(select(m.AuditLog.kind).order_by(m.AuditLog.seq)))


@contextmanager
def _serve(db_url: str, data: Path, users: bool) -> Iterator[Api]:
    app = build_app(db_url, data, max_body_bytes=2 * 1024 * 1024)
    with TestClient(app) as client:
        if users:
            add_users(app)
        yield Api(app, client)


# --------------------------------------------------------------------------- F1


@pytest.mark.skipif(not UN_XML.exists(), reason="the real UN SC list is not in ../shared")
def test_real_un_list_loads_over_the_api(make_api: Any, db_url: str, tmp_path: Path) -> None:
    body = UN_XML.read_bytes()
    assert len(body) > 1024 * 1024
    # the test settings' global limit is 64 KiB: only the watchlist routes take more
    api = make_api()
    loaded = _upload(api, "un", body, "application/xml")
    assert loaded.status_code == 200, loaded.text
    result = loaded.json()
    assert result["list_name"] == "UN-SC" and result["entries"] > 900
    assert result["added"] == result["entries"]
    assert len(_active(api, "UN-SC")) == result["entries"]
    # other routes keep the global limit
    too_big = api.client.post(
        f"{API}/shipments",
        content=b"x" * (100 * 1024),
        headers={**api.headers(Role.analyst), "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    # the per-path limits are a setting
    strict = build_app(
        db_url, tmp_path / "strict", max_body_bytes_by_path={"/api/v1/watchlists/un": 512 * 1024}
    )
    with TestClient(strict) as client:  # (the users are in the database already)
        refused = _upload(Api(strict, client), "un", body, "application/xml")
    assert refused.status_code == 413 and "524288" in refused.text


# --------------------------------------------------------------------------- F2


def test_api_lists_survive_a_restart(
    db_url: str, tmp_path: Path, world: Path, samples: Samples
) -> None:
    data = tmp_path / "data"
    shutil.copytree(world, data)
    wl_file = data / "validated" / "watchlist.parquet"
    with _serve(db_url, data, users=True) as api:
        loaded = _upload(
            api,
            "national",
            _national(f"NAT-1,entity,{LISTED_FIRM},,,,,,,"),
            "text/csv",
            list_name="KZ-national",
        )
        assert loaded.status_code == 200, loaded.text
    # the API load is mirrored into validated/watchlist.parquet (batch features)
    assert pl.read_parquet(wl_file)["entry_id"].to_list() == ["KZ-national:NAT-1"]

    # the file is lost (or replaced by an older export): the database still rules
    wl_file.unlink()
    with _serve(db_url, data, users=False) as api:
        record = payload(samples, 3, "RESTART-1")
        record["consignee_name"] = LISTED_FIRM
        _ingest(api, record)
        hit = _detail(api, "RESTART-1")
        assert hit["watchlist"]["exact"] is True and hit["must_inspect"] is True

    # a list only in the file (`caravan watchlist import` before the start) is loaded
    # into the database at start-up, audited, and screened
    from data_contracts.loaders.national import load_national_csv

    csv = tmp_path / "cli.csv"
    csv.write_bytes(_national("CLI-1,individual,Zhanibek Serikovich Oralbayev,,,,,,,"))
    load_national_csv(csv, "KZ-cli").write_parquet(wl_file)
    with _serve(db_url, data, users=False) as api:
        assert _active(api, "KZ-cli") == {"KZ-cli:CLI-1": "Zhanibek Serikovich Oralbayev"}
        assert _active(api, "KZ-national") == {"KZ-national:NAT-1": LISTED_FIRM}
        assert _audit_kinds(api).count("watchlist_change") == 2
        record = payload(samples, 4, "RESTART-2")
        record["consignor_name"] = "Zhanibek Serikovich Oralbayev"
        _ingest(api, record)
        assert _detail(api, "RESTART-2")["watchlist"]["exact"] is True


# --------------------------------------------------------------------------- F3


def test_party_designated_today_is_flagged_now(world_api: Api, samples: Samples) -> None:
    api = world_api
    waiting = payload(samples, 5, "TODAY-1")  # declared on DAY, before the listing
    waiting["consignee_name"] = LISTED_TODAY
    _ingest(api, waiting)
    assert _detail(api, "TODAY-1")["watchlist"]["exact"] is False

    loaded = _upload(
        api,
        "national",
        _national(f"UAT-3,individual,{LISTED_TODAY},,,,UZ,,,{DAY.isoformat()}"),
        "text/csv",
        list_name="UAT-wl",
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["rescored"] >= 1
    hit = _detail(api, "TODAY-1")
    assert hit["watchlist"]["exact"] is True and hit["watchlist"]["best_score"] == 100.0
    assert hit["must_inspect"] is True and hit["lane"] == "red"

    # a shipment declared later the same day is flagged on arrival
    later = payload(samples, 6, "TODAY-2")
    later["declarant_name"] = LISTED_TODAY
    _ingest(api, later)
    assert _detail(api, "TODAY-2")["watchlist"]["exact"] is True

    queue = api.client.get(
        f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.officer)
    ).json()
    by_id = {e["shipment_id"]: e for e in queue["entries"]}
    for sid in ("TODAY-1", "TODAY-2"):
        assert by_id[sid]["selection_method"] == "watchlist"

    # the model's features keep the point-in-time rule: listed on the day of
    # declaration, the entry is not yet in what the features (and training) see
    from data_contracts.schemas import SHIPMENTS
    from features.context import Params
    from features.watchlist import operational, prepare
    from serving.history import frame_of
    from serving.services import prepare_shipment

    ships = frame_of([prepare_shipment(later).record], SHIPMENTS.polars_schema)
    history = api.app.state.services.history.snapshot()
    assert prepare(ships, history, Params())["__wl_exact"].to_list() == [False]
    assert operational(ships, history)["__wl_exact"].to_list() == [True]


# --------------------------------------------------------------------------- F4, F5


def test_malformed_national_csv_is_refused_naming_the_row(world_api: Api) -> None:
    api = world_api
    unterminated = _national('X1,individual,"Foo Bar,,,,UZ,,,2024-01-01')
    r = _upload(api, "national", unterminated, "text/csv", list_name="UAT-bad")
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "row 2" in msg and "unterminated quote" in msg
    after_quote = _national('X1,individual,"Foo" Bar,,,,UZ,,,2024-01-01')
    r = _upload(api, "national", after_quote, "text/csv", list_name="UAT-bad")
    assert r.status_code == 422 and "row 2" in r.json()["detail"][0]["msg"], r.text
    fields = _national("X1,individual,Good Name,,,,UZ,,,2024-01-01", "X2,individual,Short,UZ")
    r = _upload(api, "national", fields, "text/csv", list_name="UAT-bad")
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "row 3 (UAT-bad:X2)" in msg and "has 4 field(s), the header has 10" in msg
    assert _active(api, "UAT-bad") == {}


def test_header_only_csv_is_refused_and_unchanged_lists_are_not_rescreened(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    _ingest(api, payload(samples, 7, "HDR-1"))
    first = _upload(
        api,
        "national",
        _national("K1,entity,Some Listed Firm,,,,,,,"),
        "text/csv",
        list_name="UAT-bad",
    )
    assert first.status_code == 200 and first.json()["rescreened"] > 0, first.text
    changes = _audit_kinds(api).count("watchlist_change")

    empty = _upload(api, "national", _national(), "text/csv", list_name="UAT-bad")
    assert empty.status_code == 422, empty.text
    msg = empty.json()["detail"][0]["msg"]
    assert "no entries" in msg and "UAT-bad" in msg
    assert _active(api, "UAT-bad") == {"UAT-bad:K1": "Some Listed Firm"}
    assert _audit_kinds(api).count("watchlist_change") == changes

    same = _upload(
        api,
        "national",
        _national("K1,entity,Some Listed Firm,,,,,,,"),
        "text/csv",
        list_name="UAT-bad",
    )
    assert same.status_code == 200, same.text
    assert same.json() == {
        "list_name": "UAT-bad",
        "entries": 1,
        "added": 0,
        "removed": 0,
        "changed": 0,
        "rescreened": 0,
        "rescored": 0,
    }


def test_operational_screening_counts_todays_listing_on_both_paths(samples: Samples) -> None:
    """`operational` (the lists as they are now) on the row-by-row path (a few
    shipments) and the frame path (many) alike; `prepare` keeps the features'
    point-in-time rule on both."""
    from data_contracts.loaders import watchlist_frame
    from data_contracts.schemas import SHIPMENTS
    from features.context import Params
    from features.watchlist import SMALL, operational, prepare
    from serving.history import frame_of
    from serving.services import prepare_shipment

    wl = watchlist_frame(
        [
            {
                "entry_id": "T:1",
                "list_name": "T",
                "reference_number": "1",
                "entity_type": "individual",
                "name": LISTED_TODAY,
                "listed_on": DAY,
            }
        ]
    )
    for n in (1, SMALL + 3):
        records = [payload(samples, i, f"OP-{i}") for i in range(n)]
        records[0]["consignee_name"] = LISTED_TODAY
        ships = frame_of([prepare_shipment(r).record for r in records], SHIPMENTS.polars_schema)
        now = operational(ships, wl)
        assert now["__wl_exact"].to_list() == [True] + [False] * (n - 1)
        assert now["__wl_entry"].to_list()[0] == "T:1"
        assert not prepare(ships, wl, Params())["__wl_exact"].any()


# --------------------------------------------------------------------------- near misses


def test_near_miss_is_shown_but_does_not_move_the_priority(
    world_api: Api, samples: Samples
) -> None:
    """A fuzzy match below the alert threshold (85) is stored and shown, but the
    priority and lane are those without it; from the threshold it counts."""
    from serving.policy import priority

    api = world_api
    loaded = _upload(
        api,
        "national",
        _national("NM-1,entity,Rahat Trading Company,,,,IR,,,2020-01-01"),
        "text/csv",
        list_name="UAT-near",
    )
    assert loaded.status_code == 200, loaded.text
    near, alert = payload(samples, 7, "NEAR-1"), payload(samples, 8, "ALERT-1")
    near["consignee_name"] = "Mashhad Trading Co."  # generic words only: 80
    alert["consignee_name"] = "Rahmat Trading Company"  # one letter off: 96
    _ingest(api, near, alert)
    shown = _detail(api, "NEAR-1")
    assert 70 <= shown["watchlist"]["best_score"] < 85 and shown["watchlist"]["exact"] is False
    severities = [h["severity"] for h in shown["rule_hits"]]
    assert shown["priority"] == pytest.approx(priority(shown["probability"], severities))
    hit = _detail(api, "ALERT-1")
    assert hit["watchlist"]["best_score"] >= 85 and hit["watchlist"]["exact"] is False
    assert hit["priority"] >= 0.6 * hit["watchlist"]["best_score"] / 100
    assert hit["lane"] == "red"
