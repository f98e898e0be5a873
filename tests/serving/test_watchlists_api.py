"""Watchlists over HTTP on SQLite and PostgreSQL: uploading the UN SC list (XML) or a
national list (CSV) rescreens the stored shipments; a party that is now listed gets
its watchlist hit, a higher priority and a forced place in the queue."""

from __future__ import annotations

from typing import Any

from serving.auth import Role
from tests.serving.conftest import DAY, OFFICE, Api, Samples, payload

API = "/api/v1"
HEADER = (
    "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
    "nationality,document_numbers,address,listed_on"
)
LISTED_FIRM = "Karavan-Sever Logistika Trading LLP"
LISTED_PERSON = "Timur Bakhtiyarovich Zhorabekov"


def _national(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _un(first: str, second: str, third: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        '<CONSOLIDATED_LIST dateGenerated="2025-01-01T00:00:00Z"><INDIVIDUALS>'
        f"<INDIVIDUAL><DATAID>990001</DATAID><FIRST_NAME>{first}</FIRST_NAME>"
        f"<SECOND_NAME>{second}</SECOND_NAME><THIRD_NAME>{third}</THIRD_NAME>"
        "<REFERENCE_NUMBER>QDi.990</REFERENCE_NUMBER><LISTED_ON>2001-01-01</LISTED_ON>"
        "</INDIVIDUAL></INDIVIDUALS><ENTITIES/></CONSOLIDATED_LIST>"
    ).encode()


def _upload(api: Api, path: str, body: bytes, media: str, **params: str) -> Any:
    return api.client.post(
        f"{API}/watchlists/{path}",
        content=body,
        params=params,
        headers={**api.headers(Role.analyst), "Content-Type": media},
    )


def _detail(api: Api, sid: str) -> dict[str, Any]:
    r = api.client.get(f"{API}/shipments/{sid}", headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_list_upload_rescreens_stored_parties(world_api: Api, samples: Samples) -> None:
    api = world_api
    records = [payload(samples, 20 + i, f"WL-{i}") for i in range(8)]
    records[1]["consignee_name"] = LISTED_FIRM
    records[2]["consignor_name"] = LISTED_PERSON
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": records}, headers=api.headers(Role.analyst)
    )
    assert r.status_code == 200 and len(r.json()["stored"]) == 8, r.text
    before = {sid: _detail(api, sid) for sid in ("WL-1", "WL-2")}
    assert not any(d["watchlist"]["exact"] for d in before.values())

    # national list: the consignee of WL-1 is listed
    loaded = _upload(
        api,
        "national",
        _national(
            f"NAT-7,entity,{LISTED_FIRM},,,,,,,", "NAT-8,entity,Unrelated Name Holding,,,,,,,"
        ),
        "text/csv",
        list_name="KZ-national",
    )
    assert loaded.status_code == 200, loaded.text
    result = loaded.json()
    assert result["added"] == 2 and result["rescreened"] == 8 and result["rescored"] >= 1
    hit = _detail(api, "WL-1")
    assert hit["watchlist"]["exact"] is True and hit["watchlist"]["best_score"] == 100.0
    assert hit["priority"] > before["WL-1"]["priority"] and hit["lane"] == "red"
    assert hit["score_id"] != before["WL-1"]["score_id"]
    assert _detail(api, "WL-2")["watchlist"]["exact"] is False

    # UN SC list (XML): the consignor of WL-2, listed under the same name
    first, second, third = LISTED_PERSON.split()
    un = _upload(api, "un", _un(first, second, third), "application/xml")
    assert un.status_code == 200, un.text
    assert un.json()["list_name"] == "UN-SC" and un.json()["rescored"] >= 1
    assert _detail(api, "WL-2")["watchlist"]["exact"] is True
    assert _detail(api, "WL-1")["watchlist"]["exact"] is True  # the national list stays

    # today's queue: both listed parties' shipments are in, selected by watchlist
    queue = api.client.get(
        f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.officer)
    ).json()
    by_id = {e["shipment_id"]: e for e in queue["entries"]}
    for sid in ("WL-1", "WL-2"):
        assert by_id[sid]["selection_method"] == "watchlist"
        assert by_id[sid]["selection_probability"] == 1.0

    # the rescreen is audited as what changed the score
    audit = api.client.get(
        f"{API}/audit", params={"shipment_id": "WL-1"}, headers=api.headers(Role.auditor)
    ).json()
    assert [e["kind"] for e in audit][:2] == ["score", "rescreen"]
    assert audit[1]["payload"]["watchlist_exact"] is True

    # the entry is taken off the national list: the hit goes away on the next rescreen
    removed = _upload(
        api,
        "national",
        _national("NAT-8,entity,Unrelated Name Holding,,,,,,,"),
        "text/csv",
        list_name="KZ-national",
    )
    assert removed.status_code == 200 and removed.json()["removed"] == 1
    assert _detail(api, "WL-1")["watchlist"]["exact"] is False


def test_bad_lists_are_refused_with_the_reason(world_api: Api) -> None:
    api = world_api
    missing = _upload(
        api, "national", b"reference_number,name\nX-1,Someone\n", "text/csv", list_name="KZ"
    )
    assert missing.status_code == 422
    problem = missing.json()["detail"][0]
    assert problem["loc"] == ["body", "file"] and "entity_type" in problem["msg"]
    bad_type = _upload(
        api, "national", _national("X-1,vehicle,Someone,,,,,,,"), "text/csv", list_name="KZ"
    )
    assert bad_type.status_code == 422 and "entity_type" in bad_type.json()["detail"][0]["msg"]
    not_xml = _upload(api, "un", b"<CONSOLIDATED_LIST><INDIVIDUALS>", "application/xml")
    assert not_xml.status_code == 422
    other_root = _upload(api, "un", b"<LIST/>", "application/xml")
    assert other_root.status_code == 422 and "CONSOLIDATED_LIST" in other_root.text
    forbidden = api.client.post(
        f"{API}/watchlists/national",
        content=_national("X-1,entity,Someone,,,,,,,"),
        headers={**api.headers(Role.officer), "Content-Type": "text/csv"},
    )
    assert forbidden.status_code == 403
