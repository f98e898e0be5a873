"""`caravan validate` and a record resubmitted over the API: a declaration (or an
API/PNR traveller record) that raw/ held and validation rejected may be ingested
again over the API with corrected content (its id is not in validated/). The
service scores and stores it; validate must then export it once and put it in
validated/ exactly once, while the rejected raw row stays in quarantine/ with its
own reason. Records ingested whose id raw/ does not hold are exported once, and
records raw/ already holds with the same content are not exported again.

Real app on a real SQLite database (the data directory's caravan.db, which validate
reads by default), on a copy of the small trained world."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from data_contracts.schemas import CONTRACTS, RAW_TABLES
from data_contracts.settings import DataLayout
from pipelines.validate import input_files, run_validate, write_parquet
from serving.auth import Role
from serving.history import frame_of
from serving.services import jsonable, prepare_shipment, prepare_traveller
from tests.serving.conftest import (  # noqa: F401 - cheap_argon2 is an autouse fixture
    OFFICE,
    Api,
    add_users,
    build_app,
    cheap_argon2,
    payload,
    samples_of,
)
from tests.serving.test_uat2_extras import TRAVELLER

API = "/api/v1"
RESUBMITTED = "RESUB-SHIP-1"
FRESH = "FRESH-SHIP-1"
RESUBMITTED_TR = "RESUB-TR-1"
FRESH_TR = "FRESH-TR-1"
LATE = "0001-late.parquet"  # (an import's name: read before the service's api-*.parquet)


def _traveller(rid: str, **changes: Any) -> dict[str, Any]:
    departure = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    record = {**TRAVELLER, "traveller_record_id": rid, "departure_at": departure.isoformat()}
    return {**record, **changes}


def _write_shipment(layout: DataLayout, body: dict[str, Any], name: str, **changes: Any) -> None:
    """The declaration `body` (with `changes`) as rows of raw/shipments/`name` and
    raw/items/`name`, as an import writes them."""
    prepared = prepare_shipment(body)
    record = {**prepared.record, **changes}
    write_parquet(
        frame_of(prepared.items, CONTRACTS["items"].polars_schema), layout.raw / "items" / name
    )
    write_parquet(
        frame_of([record], CONTRACTS["shipments"].polars_schema), layout.raw / "shipments" / name
    )


def _write_traveller(layout: DataLayout, record: dict[str, Any], name: str, **changes: Any) -> None:
    data, _digest = prepare_traveller(record)
    write_parquet(
        frame_of([{**data, **changes}], CONTRACTS["travellers"].polars_schema),
        layout.raw / "travellers" / name,
    )


@pytest.fixture
def layout(web_world: Path, tmp_path: Path) -> DataLayout:
    root = tmp_path / "data"
    shutil.copytree(web_world, root)
    return DataLayout(root)


def _url(layout: DataLayout) -> str:
    return f"sqlite:///{layout.root / 'caravan.db'}"


@contextmanager
def _serve(layout: DataLayout) -> Iterator[Api]:
    app = build_app(_url(layout), layout.root, max_body_bytes=2 * 1024 * 1024)
    with TestClient(app) as client:
        add_users(app)
        yield Api(app, client)


def _post(api: Api, what: str, body: dict[str, Any]) -> None:
    r = api.client.post(f"{API}/{what}", json=body, headers=api.headers(Role.admin))
    assert r.status_code == 201, r.text


def _read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def _outputs(layout: DataLayout) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    return {
        t: (
            _read(layout.validated / f"{t}.parquet"),
            _read(layout.quarantine / f"{t}.parquet"),
        )
        for t in RAW_TABLES
    }


def _check_every_row_once(layout: DataLayout) -> None:
    """Every raw row is in exactly one of validated/ and quarantine/; accepted ids
    are unique."""
    for table in RAW_TABLES:
        files = input_files(layout.raw, table)
        rows = sum(_read(p).height if p.suffix == ".parquet" else 0 for p in files)
        ok, bad = _outputs(layout)[table]
        assert ok.height + bad.height == rows, table
        key = CONTRACTS[table].id_column
        assert ok[key].n_unique() == ok.height, table
        places = bad.select("_source_file", "_source_row")
        assert places.n_unique() == bad.height, table


def _of(frame: pl.DataFrame, column: str, value: str) -> pl.DataFrame:
    return frame.filter(pl.col(column) == value)


def _exports(layout: DataLayout, table: str) -> list[Path]:
    return sorted((layout.raw / table).glob("api-export-*.parquet"))


def test_a_rejected_record_resubmitted_over_the_api_reaches_validated_exactly_once(
    layout: DataLayout,
) -> None:
    samples = samples_of(layout.root)
    resubmitted = payload(samples, 0, RESUBMITTED)
    fresh = payload(samples, 1, FRESH)
    # raw/ holds the declaration and the traveller record with a code that is no
    # country any more (Yugoslavia): validation rejects them
    _write_shipment(layout, resubmitted, LATE, origin_country="YU")
    _write_traveller(layout, _traveller(RESUBMITTED_TR), LATE, nationality="YU")
    assert run_validate(layout, gx=False, database_url=_url(layout)).pulled == {}
    ships_q = _read(layout.quarantine / "shipments.parquet")
    assert _of(ships_q, "shipment_id", RESUBMITTED)["_rule"].to_list() == ["country:origin_country"]
    travellers_q = _read(layout.quarantine / "travellers.parquet")
    assert _of(travellers_q, "traveller_record_id", RESUBMITTED_TR)["_rule"].to_list() == [
        "country:nationality"
    ]

    # resubmitted corrected over the API (accepted: validated/ does not hold the
    # ids), with a declaration and a traveller record raw/ never held
    with _serve(layout) as api:
        for body in (resubmitted, fresh):
            _post(api, "shipments", body)
        for record in (_traveller(RESUBMITTED_TR), _traveller(FRESH_TR)):
            _post(api, "travellers", record)

    run = run_validate(layout, gx=False, database_url=_url(layout))
    lines = len(resubmitted["items"]) + len(fresh["items"])
    assert run.pulled == {"shipments": 2, "items": lines, "travellers": 2}
    # one export per table, holding each stored record once
    (exported,) = _exports(layout, "shipments")
    assert sorted(_read(exported)["shipment_id"]) == sorted([RESUBMITTED, FRESH])
    (exported_tr,) = _exports(layout, "travellers")
    assert sorted(_read(exported_tr)["traveller_record_id"]) == sorted([RESUBMITTED_TR, FRESH_TR])

    def check() -> None:
        _check_every_row_once(layout)
        out = _outputs(layout)
        ships_ok, ships_bad = out["shipments"]
        items_ok, items_bad = out["items"]
        for sid, body in ((RESUBMITTED, resubmitted), (FRESH, fresh)):
            (accepted,) = _of(ships_ok, "shipment_id", sid).to_dicts()
            assert accepted["origin_country"] == body["origin_country"] != "YU"
            got = sorted(_of(items_ok, "shipment_id", sid)["item_id"])
            assert got == sorted(line["item_id"] for line in body["items"])
        # the rejected raw row, and its goods lines, stay in quarantine/ with their reasons
        (old,) = _of(ships_bad, "shipment_id", RESUBMITTED).to_dicts()
        assert old["_rule"] == "country:origin_country"
        assert old["origin_country"] == "YU"
        assert Path(old["_source_file"]).name == LATE
        old_lines = _of(items_bad, "shipment_id", RESUBMITTED)
        assert old_lines.height == len(resubmitted["items"])
        assert set(old_lines["_rule"]) == {"parent_rejected:shipment_id"}
        assert {Path(f).name for f in old_lines["_source_file"]} == {LATE}
        assert _of(ships_bad, "shipment_id", FRESH).is_empty()
        assert _of(items_bad, "shipment_id", FRESH).is_empty()

        travellers_ok, travellers_bad = out["travellers"]
        for rid in (RESUBMITTED_TR, FRESH_TR):
            (accepted,) = _of(travellers_ok, "traveller_record_id", rid).to_dicts()
            assert accepted["nationality"] == "KZ"
        (old,) = _of(travellers_bad, "traveller_record_id", RESUBMITTED_TR).to_dicts()
        assert old["_rule"] == "country:nationality"
        assert Path(old["_source_file"]).name == LATE
        assert _of(travellers_bad, "traveller_record_id", FRESH_TR).is_empty()

    check()
    first = _outputs(layout)

    # validating again exports nothing and gives the same result
    assert run_validate(layout, gx=False, database_url=_url(layout)).pulled == {}
    assert len(_exports(layout, "shipments")) == 1
    assert len(_exports(layout, "items")) == 1
    assert len(_exports(layout, "travellers")) == 1
    check()
    for table, (ok, bad) in _outputs(layout).items():
        assert ok.equals(first[table][0]), table
        assert bad.equals(first[table][1]), table

    # whatever the order of the files: the rejected rows read after the export
    for table in ("shipments", "items", "travellers"):
        (layout.raw / table / LATE).rename(layout.raw / table / "zz-late.parquet")
    assert run_validate(layout, gx=False, database_url=_url(layout)).pulled == {}
    ships_ok, ships_bad = _outputs(layout)["shipments"]
    assert _of(ships_ok, "shipment_id", RESUBMITTED)["origin_country"].to_list() == [
        resubmitted["origin_country"]
    ]
    assert _of(ships_bad, "shipment_id", RESUBMITTED)["_rule"].to_list() == [
        "country:origin_country"
    ]
    travellers_ok, travellers_bad = _outputs(layout)["travellers"]
    assert _of(travellers_ok, "traveller_record_id", RESUBMITTED_TR).height == 1
    assert _of(travellers_bad, "traveller_record_id", RESUBMITTED_TR)["_rule"].to_list() == [
        "country:nationality"
    ]
    _check_every_row_once(layout)


def test_records_raw_holds_with_the_same_content_are_not_exported_again(
    layout: DataLayout,
) -> None:
    samples = samples_of(layout.root)
    same = payload(samples, 2, "SAME-SHIP-1")
    traveller = _traveller("SAME-TR-1")
    with _serve(layout) as api:
        _post(api, "shipments", same)
        _post(api, "travellers", traveller)
    # raw/ then holds them with the same content, in a file the service did not write
    _write_shipment(layout, jsonable(same), LATE)
    _write_traveller(layout, traveller, LATE)

    assert run_validate(layout, gx=False, database_url=_url(layout)).pulled == {}
    assert _exports(layout, "shipments") == []
    assert _exports(layout, "travellers") == []
    _check_every_row_once(layout)
    out = _outputs(layout)
    assert _of(out["shipments"][0], "shipment_id", "SAME-SHIP-1").height == 1
    assert _of(out["shipments"][1], "shipment_id", "SAME-SHIP-1").is_empty()
    assert _of(out["travellers"][0], "traveller_record_id", "SAME-TR-1").height == 1
    assert _of(out["travellers"][1], "traveller_record_id", "SAME-TR-1").is_empty()


def test_the_label_export_of_a_resubmitted_declaration_replaces_the_rejected_row(
    layout: DataLayout,
) -> None:
    """An outcome recorded on the resubmitted declaration before validate runs: the
    service writes it to raw/ with its outcome (api-<id>.parquet), validate does not
    export it again, and it and its outcome reach validated/."""
    samples = samples_of(layout.root)
    resubmitted = payload(samples, 0, RESUBMITTED)
    _write_shipment(layout, resubmitted, LATE, origin_country="YU")
    run_validate(layout, gx=False, database_url=_url(layout))
    day = dt.date.fromisoformat(str(resubmitted["declared_at"])[:10])
    with _serve(layout) as api:
        _post(api, "shipments", resubmitted)
        admin = api.headers(Role.admin)
        queue = api.client.get(f"{API}/queues/{OFFICE}/{day}", headers=admin)
        assert queue.status_code == 200, queue.text
        (rid,) = [e["id"] for e in queue.json()["entries"] if e["shipment_id"] == RESUBMITTED]
        officer = api.headers(Role.officer)
        claim = api.client.post(f"{API}/referrals/{rid}/claim", headers=officer)
        assert claim.status_code == 200, claim.text
        r = api.client.post(
            f"{API}/referrals/{rid}/outcome", json={"finding": False}, headers=officer
        )
        assert r.status_code == 200, r.text
    assert (layout.raw / "shipments" / f"api-{RESUBMITTED}.parquet").exists()

    for _ in range(2):
        assert run_validate(layout, gx=False, database_url=_url(layout)).pulled == {}
        assert _exports(layout, "shipments") == []
        _check_every_row_once(layout)
        out = _outputs(layout)
        ships_ok, ships_bad = out["shipments"]
        (accepted,) = _of(ships_ok, "shipment_id", RESUBMITTED).to_dicts()
        assert accepted["origin_country"] == resubmitted["origin_country"]
        assert _of(ships_bad, "shipment_id", RESUBMITTED)["_rule"].to_list() == [
            "country:origin_country"
        ]
        assert _of(out["items"][0], "shipment_id", RESUBMITTED).height == len(resubmitted["items"])
        assert _of(out["outcomes"][0], "shipment_id", RESUBMITTED).height == 1
        assert _of(out["outcomes"][1], "shipment_id", RESUBMITTED).is_empty()
