"""Acceptance round 2 on watchlists (analyst A3, A4, A5, A9, A10), over HTTP on
SQLite and PostgreSQL:

* a party presenting a listed identity document (or id) is an exact hit: red,
  must-inspect, in the queue, and the watchlist block names the entry matched by
  document (online and on the rescreen after a list load);
* a traveller record linked to a party is screened: its listed name or document
  is an exact hit naming the record;
* a list change's audit entry names the entries added, changed and removed, and a
  score's or rescreen's audit entry the entry that matched;
* the national-list endpoint refuses the UN list's name and requires a list name;
* a national CSV separated by semicolons is refused saying so."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from data_contracts.loaders.national import COLUMNS
from serving import orm as m
from serving.auth import Role
from serving.services import jsonable
from tests.factories import traveller
from tests.serving.conftest import DAY, OFFICE, Api, Samples, password_for, payload, username_for
from tests.serving.test_uat_users import _web_login
from tests.serving.test_watchlists_api import _detail, _national, _un, _upload

API = "/api/v1"
LISTED = "Iskanderov Bakyt Temirovich"
PASSPORT = "AN1234567"
KG_3 = (
    f"KG-3,individual,{LISTED},Iskanderov Bakit,Искандеров Бакыт Темирович,1980-05-05,KG,"
    f"{PASSPORT},,2020-11-01"
)
KG_4 = "KG-4,entity,Ala-Too Listed Holding,,,,KG,,,2020-11-01"
KG_5 = "KG-5,individual,Osmonov Listed Person,,,,KG,ZZ9988776,,2020-11-01"
PHONE = "+996 555 123 45 67"


def _person(samples: Samples, i: int, sid: str, **changes: Any) -> dict[str, Any]:
    """A shipment to OFFICE on DAY whose consignee is a natural person not listed."""
    record = payload(samples, i, sid)
    record.update(
        {
            "consignee_name": "IP Kurmanov Aibek",
            "consignee_id": "990000000777",
            "consignee_document_number": None,
            "consignee_birth_date": None,
            **changes,
        }
    )
    return record


def _ingest(api: Api, *records: dict[str, Any]) -> None:
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": list(records)}, headers=api.headers(Role.analyst)
    )
    assert r.status_code == 200 and len(r.json()["stored"]) == len(records), r.text


def _load(api: Api, *rows: str, list_name: str = "KG-NAT") -> dict[str, Any]:
    r = _upload(api, "national", _national(*rows), "text/csv", list_name=list_name)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _audit(api: Api, **params: str) -> list[dict[str, Any]]:
    r = api.client.get(
        f"{API}/audit", params={**params, "limit": "1000"}, headers=api.headers(Role.auditor)
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def _page(api: Api, sid: str) -> str:
    client = TestClient(api.app, follow_redirects=False)
    _web_login(client, username_for(Role.analyst), password_for(Role.analyst))
    page = client.get(f"/web/shipments/{sid}")
    assert page.status_code == 200, page.text
    return page.text


def _queue(api: Api) -> dict[str, dict[str, Any]]:
    r = api.client.get(
        f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.officer)
    )
    assert r.status_code == 200, r.text
    return {e["shipment_id"]: e for e in r.json()["entries"]}


# --------------------------------------------------------------------------- A9


def test_a_listed_document_acts_like_an_exact_hit(world_api: Api, samples: Samples) -> None:
    api = world_api
    _load(api, KG_3, KG_4)
    _ingest(
        api,
        # the listed passport (with a space), under another name
        _person(
            samples,
            1,
            "DOC-1",
            consignee_document_number="AN 1234567",
            consignee_birth_date="1980-05-05",
        ),
        # the listed number as the consignee's id
        _person(samples, 2, "DOC-2", consignee_id=PASSPORT),
        _person(samples, 3, "DOC-3"),
    )
    for sid in ("DOC-1", "DOC-2"):
        hit = _detail(api, sid)
        assert hit["must_inspect"] is True and hit["lane"] == "red", sid
        assert hit["watchlist"]["exact"] is True
        assert hit["watchlist"]["match"] == {
            "entry_id": "KG-NAT:KG-3",
            "name": LISTED,
            "party": "consignee",
            "by": "document",
            "exact": True,
            "traveller_record_id": None,
            "entity_type": "individual",
            "score": 100,
            "words": None,
            "weak": False,
            "weak_reason": None,
        }
    plain = _detail(api, "DOC-3")
    assert plain["watchlist"]["exact"] is False and plain["must_inspect"] is False
    assert plain["watchlist"]["match"] is None or plain["watchlist"]["match"]["by"] == "name"
    # always in the queue, as an exact watchlist hit
    queue = _queue(api)
    assert queue["DOC-1"]["selection_method"] == "watchlist"
    assert queue["DOC-2"]["selection_method"] == "watchlist"
    # the score's audit entry names the entry that matched (and no document number)
    scored = _audit(api, shipment_id="DOC-1", kind="score")
    assert scored[-1]["payload"]["watchlist_exact"] is True
    assert scored[-1]["payload"]["watchlist_match"] == {
        "entry_id": "KG-NAT:KG-3",
        "party": "consignee",
        "by": "document",
        "exact": True,
        "traveller_record_id": None,
        "weak_reason": None,
    }
    assert PASSPORT not in str(scored[-1]["payload"])
    # the page says which entry matched, by document
    page = _page(api, "DOC-1")
    assert 'id="watchlist-by-document"' in page and "KG-NAT:KG-3" in page


def test_a_rescreen_finds_a_listed_document_and_the_audit_names_the_entries(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    _ingest(api, _person(samples, 4, "RS-1", consignee_document_number=PASSPORT))
    assert _detail(api, "RS-1")["watchlist"]["exact"] is False

    loaded = _load(api, KG_3, KG_4, KG_5)
    assert loaded["added"] == 3 and loaded["rescored"] >= 1
    hit = _detail(api, "RS-1")
    assert hit["must_inspect"] is True and hit["watchlist"]["match"]["entry_id"] == "KG-NAT:KG-3"
    assert hit["watchlist"]["match"]["by"] == "document"
    rescreen = _audit(api, shipment_id="RS-1", kind="rescreen")
    assert rescreen[-1]["payload"]["watchlist_match"]["entry_id"] == "KG-NAT:KG-3"
    change = _audit(api, kind="watchlist_change")[-1]["payload"]
    assert change["added_ids"] == ["KG-NAT:KG-3", "KG-NAT:KG-4", "KG-NAT:KG-5"]
    assert change["changed_ids"] == [] and change["removed_ids"] == []
    assert change["names"]["KG-NAT:KG-3"] == LISTED and change["names_complete"] is True

    # KG-3 taken off the list, KG-4 renamed: the audit says which, the hit goes
    again = _load(api, KG_4.replace("Ala-Too Listed Holding", "Ala-Too Holding Group"), KG_5)
    assert (again["added"], again["changed"], again["removed"]) == (0, 1, 1)
    change = _audit(api, kind="watchlist_change")[-1]
    assert change["actor"] == username_for(Role.analyst)
    assert change["payload"]["removed_ids"] == ["KG-NAT:KG-3"]
    assert change["payload"]["changed_ids"] == ["KG-NAT:KG-4"]
    assert change["payload"]["added_ids"] == []
    assert change["payload"]["names"] == {
        "KG-NAT:KG-3": LISTED,
        "KG-NAT:KG-4": "Ala-Too Holding Group",
    }
    after = _detail(api, "RS-1")
    assert after["watchlist"]["exact"] is False and after["must_inspect"] is False
    last = _audit(api, shipment_id="RS-1", kind="rescreen")[-1]["payload"]
    assert last["watchlist_exact"] is False
    assert last["watchlist_match"] is None or last["watchlist_match"]["entry_id"] != "KG-NAT:KG-3"


# --------------------------------------------------------------------------- A10


def _listed_traveller(record_id: str) -> dict[str, Any]:
    return dict(
        jsonable(
            traveller(
                traveller_record_id=record_id,
                surname="ISKANDEROV",
                given_names="BAKYT",
                name_native="Искандеров Бакыт Темирович",
                date_of_birth=dt.date(1980, 5, 5),
                nationality="KG",
                document_number="ZZ9988776",  # (KG-5's: a second, separate listing)
                document_country="KG",
                contact_phone=PHONE,
                contact_email=None,
                contact_address=None,
                booked_at=dt.datetime(2025, 2, 20, 8, tzinfo=dt.UTC),
                departure_at=dt.datetime(2025, 3, 1, 6, tzinfo=dt.UTC),
                route=["FRU", "IST"],
                route_countries=["KG", "TR"],
                payment_form="cash",
            )
        )
    )


def _company(samples: Samples, i: int, sid: str) -> dict[str, Any]:
    record = payload(samples, i, sid)
    record.update(
        consignee_name='OsOO "Altyn Trade"',
        consignee_phone=PHONE,
        consignee_email=None,
        consignee_document_number=None,
        consignee_birth_date=None,
    )
    return record


def test_a_linked_traveller_on_a_list_is_an_exact_hit(world_api: Api, samples: Samples) -> None:
    api = world_api
    r = api.client.post(
        f"{API}/travellers", json=_listed_traveller("TRV-LISTED"), headers=api.headers(Role.analyst)
    )
    assert r.status_code == 201, r.text
    # stored before the list is loaded: the rescreen finds it (the history's records)
    _ingest(api, _company(samples, 5, "TRV-1"))
    assert _detail(api, "TRV-1")["watchlist"]["exact"] is False
    _load(api, KG_3)
    hit = _detail(api, "TRV-1")
    assert hit["must_inspect"] is True and hit["lane"] == "red"
    match = hit["watchlist"]["match"]
    assert (match["entry_id"], match["party"], match["traveller_record_id"]) == (
        "KG-NAT:KG-3",
        "consignee",
        "TRV-LISTED",
    )
    assert match["by"] == "name" and match["exact"] is True
    rescreen = _audit(api, shipment_id="TRV-1", kind="rescreen")[-1]["payload"]
    assert rescreen["watchlist_match"]["traveller_record_id"] == "TRV-LISTED"

    # scored online (the feature state's records): only its document is listed now
    _load(api, KG_5)
    _ingest(api, _company(samples, 6, "TRV-2"))
    hit = _detail(api, "TRV-2")
    assert hit["must_inspect"] is True and hit["watchlist"]["exact"] is True
    match = hit["watchlist"]["match"]
    assert (match["entry_id"], match["by"], match["traveller_record_id"]) == (
        "KG-NAT:KG-5",
        "document",
        "TRV-LISTED",
    )
    assert _queue(api)["TRV-2"]["selection_method"] == "watchlist"
    # the page names the record, not the traveller's data
    page = _page(api, "TRV-2")
    assert 'id="watchlist-traveller">TRV-LISTED<' in page
    assert "ZZ9988776" not in page


# --------------------------------------------------------------------------- A5, A4


def test_the_national_endpoint_refuses_the_un_list_name(world_api: Api) -> None:
    api = world_api
    first, second, third = LISTED.split()
    assert _upload(api, "un", _un(first, second, third), "application/xml").status_code == 200
    body = _national("X-1,individual,Test Person Onee,,,,KG,,,2026-11-01")
    for name in ("UN-SC", "un-sc"):
        r = _upload(api, "national", body, "text/csv", list_name=name)
        assert r.status_code == 422, r.text
        problem = r.json()["detail"][0]
        assert problem["loc"] == ["query", "list_name"]
        assert "reserved for the UN Security Council list" in problem["msg"]
    # the name is required: two lists never replace each other by default
    r = _upload(api, "national", body, "text/csv")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "list_name"]
    with api.app.state.session_factory() as session:
        active = session.scalars(
            select(m.WatchlistEntry.entry_id).where(m.WatchlistEntry.active.is_(True))
        ).all()
    assert active == ["UN-SC:QDi.990"]


def test_a_semicolon_separated_list_is_refused_saying_so(world_api: Api) -> None:
    text = (
        ";".join(COLUMNS)
        + "\nKG-1;entity;Khan Tengri Holding;;Хан Тенгри Холдинг;;KG;;;2026-11-27\n"
    )
    r = _upload(api := world_api, "national", text.encode(), "text/csv", list_name="KG-NAT")
    assert r.status_code == 422, r.text
    problem = r.json()["detail"][0]
    assert problem["loc"] == ["body", "file"]
    assert "separated by semicolons (;)" in problem["msg"] and "needs commas" in problem["msg"]
    with api.app.state.session_factory() as session:
        assert session.scalars(select(m.WatchlistEntry)).first() is None


def test_the_cli_requires_a_national_list_name(tmp_path: Path) -> None:
    from pipelines.cli import app

    csv = tmp_path / "kg.csv"
    csv.write_bytes(_national("KG-1,entity,Khan Tengri Holding,,,,KG,,,2026-11-27"))
    runner = CliRunner()
    base = ["watchlist", "import", "--data", str(tmp_path / "data"), "--national", str(csv)]
    missing = runner.invoke(app, base)
    assert missing.exit_code == 2 and "--list-name" in missing.output
    reserved = runner.invoke(app, [*base, "--list-name", "UN-SC"])
    assert reserved.exit_code == 2 and "reserved" in reserved.output
    assert not (tmp_path / "data" / "validated" / "watchlist.parquet").exists()
    loaded = runner.invoke(app, [*base, "--list-name", "KG-NAT"])
    assert loaded.exit_code == 0, loaded.output


def test_the_cli_import_warns_that_the_service_screens_with_its_database(
    world_api: Api, db_url: str, tmp_path: Path
) -> None:
    """Found in review: `caravan watchlist import` on a deployment whose service holds
    lists in its database only rewrote validated/watchlist.parquet, silently; the
    service kept screening with the database's copy. It now says so, and how to load
    the list so that the service screens with it."""
    from tests.conftest import caravan_in_process

    _load(world_api, KG_4)  # the service holds KG-NAT
    csv = tmp_path / "kg.csv"
    csv.write_bytes(_national(KG_4, KG_5))
    env = {"CARAVAN_DATABASE_URL": db_url}
    data = tmp_path / "data"
    same = caravan_in_process(
        "watchlist", "import", "--national", str(csv), "--list-name", "KG-NAT", data=data, env=env
    )
    assert "screens with its database's copy of KG-NAT" in same.stderr, same.stderr
    assert "POST /api/v1/watchlists" in same.stderr
    other = caravan_in_process(
        "watchlist", "import", "--national", str(csv), "--list-name", "KG-NEW", data=data, env=env
    )
    assert "takes KG-NEW only at its next start" in other.stderr, other.stderr
    assert "KG-NAT" not in other.stderr
    # a data directory without a database (before the first start): nothing to say
    fresh = caravan_in_process(
        "watchlist",
        "import",
        "--national",
        str(csv),
        "--list-name",
        "KG-NAT",
        data=tmp_path / "fresh",
        env={"CARAVAN_DATABASE_URL": ""},
    )
    assert "warning" not in fresh.stderr, fresh.stderr
