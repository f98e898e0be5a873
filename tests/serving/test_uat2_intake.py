"""Intake defects of the second acceptance round (security review), over HTTP on the
real app and database (SQLite and PostgreSQL):

* sec F5: a party name held backwards behind a RIGHT-TO-LEFT OVERRIDE showed as the
  listed name on the pages but evaded screening. Text holding a bidirectional
  formatting character is refused with 422 naming the field and the character; the
  other invisible format characters within visible text (zero-width space, soft
  hyphen) are kept as before, and such a name is still an exact watchlist hit.
* sec F9: ids holding "/" could not be read over the API, and "A/../B" sent the
  officer to another shipment's page. Ids may not hold "/" (422 naming the field); a
  declaration number with slashes is kept in declaration_ref. A record stored before
  the change is still read.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from serving.auth import Role
from serving.services import jsonable, prepare_shipment, prepare_traveller
from tests.serving.conftest import DAY, Api, Samples, payload
from tests.serving.test_watchlists_api import _national, _upload

API = "/api/v1"
LISTED = "Bakhtiyor Karimovich Tashmatov"
RLO, PDF = "\u202e", "\u202c"


def _detail(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    return list(r.json()["detail"])


def _readable(api: Api, sid: str) -> bool:
    r = api.client.get(f"{API}/shipments/{sid}", headers=api.headers(Role.analyst))
    return r.status_code == 200


def _traveller(world: Path, rid: str) -> dict[str, Any]:
    row = pl.read_parquet(world / "validated" / "travellers.parquet").row(0, named=True)
    return {**jsonable(row), "traveller_record_id": rid}


def _list(api: Api) -> None:
    listed_on = (DAY - dt.timedelta(days=2)).isoformat()
    r = _upload(
        api,
        "national",
        _national(f"XSS-2,individual,{LISTED},,,1980-02-03,UZ,AB1234567,,{listed_on}"),
        "text/csv",
        list_name="XSSLIST",
    )
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- F5


def test_a_name_behind_a_right_to_left_override_is_refused_naming_the_field(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    headers = api.headers(Role.analyst)
    _list(api)

    plain = payload(samples, 1, "BIDI-0")
    plain["consignee_name"] = LISTED
    r = api.client.post(f"{API}/shipments", json=plain, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["watchlist"]["exact"] is True and r.json()["must_inspect"] is True

    hidden = payload(samples, 2, "BIDI-1")
    hidden["consignee_name"] = RLO + LISTED[::-1] + PDF  # shows as the listed name
    detail = _detail(api.client.post(f"{API}/shipments", json=hidden, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "consignee_name"]]
    assert "bidirectional formatting character U+202E" in detail[0]["msg"]
    assert "RIGHT-TO-LEFT OVERRIDE" in detail[0]["msg"]
    assert not _readable(api, "BIDI-1")

    # in a batch: the row is an error naming the field, the good row is stored
    good = payload(samples, 3, "BIDI-2")
    r = api.client.post(f"{API}/shipments/batch", json={"records": [good, hidden]}, headers=headers)
    assert r.status_code == 200, r.text
    assert [s["shipment_id"] for s in r.json()["stored"]] == ["BIDI-2"]
    errors = r.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "consignee_name")]
    assert "U+202E" in errors[0]["reason"]
    assert not _readable(api, "BIDI-1")


@pytest.mark.parametrize(
    ("field", "char"),
    [
        ("consignor_name", "\u2067"),  # RIGHT-TO-LEFT ISOLATE
        ("consignee_address", "\u202b"),  # RIGHT-TO-LEFT EMBEDDING
        ("declarant_name", "\u200f"),  # RIGHT-TO-LEFT MARK
        ("carrier_name", "\u061c"),  # ARABIC LETTER MARK
        ("consignee_name", "\u200e"),  # LEFT-TO-RIGHT MARK
        ("consignee_name", "\u2069"),  # POP DIRECTIONAL ISOLATE
    ],
)
def test_every_bidirectional_formatting_character_is_refused(
    world_api: Api, samples: Samples, field: str, char: str
) -> None:
    api = world_api
    bad = payload(samples, 4, "BIDI-X")
    bad[field] = f"Vostok{char} Logistics LLC"
    detail = _detail(
        api.client.post(f"{API}/shipments", json=bad, headers=api.headers(Role.analyst))
    )
    assert [d["loc"] for d in detail] == [["body", field]]
    assert f"U+{ord(char):04X}" in detail[0]["msg"] and "bidirectional" in detail[0]["msg"]


def test_goods_lines_and_travellers_refuse_bidirectional_characters_too(
    world_api: Api, samples: Samples, world: Path
) -> None:
    api = world_api
    headers = api.headers(Role.analyst)
    ship = payload(samples, 5, "BIDI-L")
    ship["items"][0]["description"] = RLO + "selffir gnitnuh" + PDF
    detail = _detail(api.client.post(f"{API}/shipments", json=ship, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "items", 0, "description"]]
    assert "U+202E" in detail[0]["msg"]

    person = _traveller(world, "BIDI-T1")
    person["surname"] = RLO + "votamhsaT" + PDF
    detail = _detail(api.client.post(f"{API}/travellers", json=person, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "surname"]]
    assert "U+202E" in detail[0]["msg"]
    r = api.client.get(f"{API}/travellers/BIDI-T1", headers=headers)
    assert r.status_code == 404


def test_other_invisible_characters_are_kept_and_the_name_is_still_a_hit(
    world_api: Api, samples: Samples
) -> None:
    """Zero-width space and soft hyphen within a name are accepted as before and the
    name is still an exact hit; a name of invisible characters only is still blank."""
    api = world_api
    headers = api.headers(Role.analyst)
    _list(api)
    hidden = payload(samples, 6, "ZW-1")
    hidden["consignee_name"] = "Bakh\u200btiyor Kari\u00admovich Tash\u200dmatov"
    r = api.client.post(f"{API}/shipments", json=hidden, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["watchlist"]["exact"] is True and r.json()["must_inspect"] is True

    blank = payload(samples, 7, "ZW-2")
    blank["consignee_name"] = "\u200b\u2060"
    detail = _detail(api.client.post(f"{API}/shipments", json=blank, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "consignee_name"]]
    assert "invisible" in detail[0]["msg"]


# --------------------------------------------------------------------------- F9


@pytest.mark.parametrize("sid", ["10702020/271126/0012345", "A/../BIDI-0", "SH/./X2", "SH//X3"])
def test_a_shipment_id_with_a_slash_is_a_422_naming_the_field(
    world_api: Api, samples: Samples, sid: str
) -> None:
    api = world_api
    headers = api.headers(Role.analyst)
    bad = payload(samples, 8, sid)
    detail = _detail(api.client.post(f"{API}/shipments", json=bad, headers=headers))
    assert ["body", "shipment_id"] in [d["loc"] for d in detail]
    msg = next(d["msg"] for d in detail if d["loc"] == ["body", "shipment_id"])
    assert "'/' is not allowed in shipment_id" in msg and "declaration_ref" in msg

    r = api.client.post(f"{API}/shipments/batch", json={"records": [bad]}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == []
    assert "shipment_id" in {e["field"] for e in r.json()["errors"]}, r.text


def test_a_declaration_number_with_slashes_goes_in_declaration_ref(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    headers = api.headers(Role.analyst)
    ship = payload(samples, 9, "10702020-271126-0012345")
    ship["declaration_ref"] = "10702020/271126/0012345"
    r = api.client.post(f"{API}/shipments", json=ship, headers=headers)
    assert r.status_code == 201, r.text
    assert _readable(api, "10702020-271126-0012345")
    r = api.client.get(f"{API}/shipments/10702020-271126-0012345/explanation", headers=headers)
    assert r.status_code == 200, r.text


def test_line_and_traveller_ids_with_a_slash_are_refused(
    world_api: Api, samples: Samples, world: Path
) -> None:
    api = world_api
    headers = api.headers(Role.analyst)
    ship = payload(samples, 10, "SLASH-L")
    ship["items"][0]["item_id"] = "SLASH-L/1"
    detail = _detail(api.client.post(f"{API}/shipments", json=ship, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "items", 0, "item_id"]]
    assert "'/' is not allowed in item_id" in detail[0]["msg"]

    person = _traveller(world, "TR/1")
    detail = _detail(api.client.post(f"{API}/travellers", json=person, headers=headers))
    assert [d["loc"] for d in detail] == [["body", "traveller_record_id"]]
    assert "'/' is not allowed in traveller_record_id" in detail[0]["msg"]


def test_the_published_schema_shows_ids_without_a_slash(world_api: Api) -> None:
    schemas = world_api.client.get("/openapi.json").json()["components"]["schemas"]
    patterns = {
        name: schema["properties"][field]["pattern"]
        for name, schema in schemas.items()
        for field in ("shipment_id", "item_id", "traveller_record_id")
        if field in schema.get("properties", {}) and "pattern" in schema["properties"][field]
    }
    assert patterns, "no id pattern published"
    assert all("/" not in p for p in patterns.values()), patterns


def test_records_stored_before_the_change_are_still_read(samples: Samples, world: Path) -> None:
    """A shipment or traveller stored with a "/" in its id by an earlier version is
    re-typed when the service starts and rescreens (context `stored`): it must not
    stop the service. A new record with such an id is refused."""
    old = payload(samples, 11, "OLD/1")
    assert prepare_shipment(old, stored=True).record["shipment_id"] == "OLD/1"
    with pytest.raises(ValidationError, match="'/' is not allowed in shipment_id"):
        prepare_shipment(old)
    person = _traveller(world, "OLD/T1")
    assert prepare_traveller(person, stored=True)[0]["traveller_record_id"] == "OLD/T1"
    with pytest.raises(ValidationError, match="'/' is not allowed in traveller_record_id"):
        prepare_traveller(person)
    # a name with a bidirectional character stored earlier is read as well
    old["consignee_name"] = RLO + LISTED[::-1] + PDF
    assert prepare_shipment(old, stored=True).record["consignee_name"] == old["consignee_name"]
