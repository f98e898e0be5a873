"""A batch of shipments declared at different instants is stored with the values the
same shipments get when sent one by one in time order: two apps on copies of one
world (SQLite and PostgreSQL), one receives the batch (in another order), the other
the shipments one at a time; every stored probability, priority, lane, feature
vector, reason, rule hit and watchlist hit is the same. The shipments share
parties, phones, e-mails and road vehicles in many patterns, some at one instant,
some across a month's end, some through parties the batch links only by the
shipments declared between them."""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select

from serving import orm as m
from serving.auth import Role
from tests.serving.conftest import Api, Samples, api_on, payload

API = "/api/v1"
HEADER = (
    "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
    "nationality,document_numbers,address,listed_on"
)
LISTED = "Zeta Newcomer Trading LLP"
# Features that may differ in the last bit between a shipment scored with others
# and alone, as between a batch of one instant or `caravan features` and the API's
# one shipment (not this path's doing): a time difference divided by a constant
# (Polars divides a column of several values by a constant as a product with its
# reciprocal, one value by a quotient: see `features.trader._days`), and the goods
# z-scores of a line whose reference month took several lines of one request at
# once (the reference's float sums are grouped per append:
# `features.timeline.AsOfTable.append`).
LAST_BIT = {
    "lead_time_hours",
    *(f"{role}_days_since_first" for role in ("consignee", "consignor", "declarant")),
    "min_unit_value_z",
    "max_mass_per_unit_z",
}
RULES = [
    {  # reads the trader family (counts the batch's earlier shipments)
        "id": "sp-repeat",
        "name": "consignee seen twice within 30 days",
        "severity": "high",
        "condition": {"field": "consignee_shipments_30d", "op": "ge", "value": 2},
    },
    {  # reads the network family
        "id": "sp-network",
        "name": "a network of three parties",
        "severity": "medium",
        "condition": {"field": "network_component_parties", "op": "ge", "value": 3},
    },
]


@pytest.fixture
def other_db(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second empty database of the backend under test."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


def _party(record: dict[str, Any], role: str, name: str, contact: str, **given: Any) -> None:
    """A party of `name` with contacts of its own (`contact`), unless `given`."""
    record[f"{role}_id"] = None
    record[f"{role}_name"] = name
    record[f"{role}_phone"] = given.get(
        "phone", f"+7 701 {zlib.crc32(contact.encode()) % 10**7:07d}"
    )
    record[f"{role}_email"] = given.get("email", f"{contact}@spread-test.kz")
    record[f"{role}_address"] = given.get("address", f"{contact} street 1, Almaty")
    record[f"{role}_document_number"] = None
    record[f"{role}_birth_date"] = None


def _records(samples: Samples, latest: dt.datetime) -> list[dict[str, Any]]:
    """The batch, in declaration order (ties: same instant), across a month's end."""
    month = (latest + dt.timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0)
    boundary = (month + dt.timedelta(days=32)).replace(day=1, microsecond=0)
    start = boundary - dt.timedelta(hours=2)
    assert start > latest
    plan: list[tuple[int, dict[str, Any]]] = []  # (minutes after start, what)
    # a history trader's shipments (its parties as the history knows them), some
    # at one instant, on both sides of the month's end
    for k, minute in enumerate([0, 10, 10, 45, 130, 135]):
        plan.append((minute, {"template": 0, "keep": True, "tag": f"hist-{k}"}))
    # another history trader once, and a third one on a shared road vehicle
    plan.append((20, {"template": 3, "keep": True, "tag": "hist-b"}))
    for k, minute in enumerate([25, 40, 140]):
        plan.append((minute, {"template": 5 + k, "vehicle": "KZ 777 SPR", "tag": f"truck-{k}"}))
    # a component grown by the batch alone: Zeta Holding and Zeta Second share a
    # phone (S0); a newcomer shares Zeta Holding's new e-mail (S1); then Zeta
    # Second, sharing nothing with S1, reads both (S2)
    plan.append((30, {"template": 9, "zeta": "S0", "tag": "zeta-0"}))
    plan.append((50, {"template": 10, "zeta": "S1", "tag": "zeta-1"}))
    plan.append((60, {"template": 11, "zeta": "S2", "tag": "zeta-2"}))
    plan.append((131, {"template": 12, "zeta": "S2", "tag": "zeta-3"}))
    # new traders sharing a phone with a history party, and an e-mail between them
    plan.append((35, {"template": 13, "phone_of": 3, "tag": "phone-0"}))
    plan.append((35, {"template": 14, "phone_of": 3, "tag": "phone-1"}))
    plan.append((70, {"template": 15, "email": "shared", "tag": "mail-0"}))
    plan.append((125, {"template": 16, "email": "shared", "tag": "mail-1"}))
    # unrelated new traders in between
    for k, minute in enumerate([5, 15, 55, 118, 121, 150]):
        plan.append((minute, {"template": 20 + k, "tag": f"solo-{k}"}))
    ships, _items = samples
    out = []
    for minute, what in sorted(plan, key=lambda p: p[0]):
        sid = f"SP-{what['tag']}"
        record = payload(samples, what["template"], sid)
        at = start + dt.timedelta(minutes=minute)
        record["declared_at"] = at.isoformat()
        record["expected_arrival_at"] = (at + dt.timedelta(hours=6)).isoformat()
        tag = what["tag"]
        if not what.get("keep"):
            _party(record, "consignee", f"Spread {tag} Consignee LLP", f"{tag}-ce")
            _party(record, "consignor", f"Spread {tag} Consignor Ltd", f"{tag}-cr")
        _party(record, "declarant", f"Spread {tag} Broker", f"{tag}-dc")
        if "vehicle" in what:
            record["mode"] = "road"
            record["conveyance_ref"] = what["vehicle"]
        elif not what.get("keep"):
            record["mode"] = "air"
        if "phone_of" in what:
            record["consignee_phone"] = ships[what["phone_of"]]["consignee_phone"]
        if "email" in what:
            record["consignee_email"] = "desk@shared-spread.kz"
        zeta = what.get("zeta")
        if zeta == "S0":
            _party(record, "consignee", "Zeta Holding LLP", "zeta-h", phone="+7 702 5550101")
            _party(record, "consignor", "Zeta Second Ltd", "zeta-s", phone="+7 702 5550101")
        elif zeta == "S1":
            _party(
                record,
                "consignee",
                "Zeta Holding LLP",
                "zeta-h",
                phone="+7 702 5550101",
                email="office@zeta-new.kz",
            )
            _party(record, "consignor", LISTED, "zeta-n", email="office@zeta-new.kz")
        elif zeta == "S2":
            _party(record, "consignee", "Zeta Second Ltd", f"{tag}-x", phone="+7 702 5550999")
        out.append(record)
    return out


def _prepare(api: Api) -> None:
    """The same rules and watchlist on both apps."""
    analyst = api.headers(Role.analyst)
    for rule in RULES:
        r = api.client.post(f"{API}/rules", json=rule, headers=analyst)
        assert r.status_code == 201, r.text
    csv = f"{HEADER}\nSPR-1,entity,{LISTED},,,,,,,2001-01-01\n".encode()
    r = api.client.post(
        f"{API}/watchlists/national",
        content=csv,
        params={"list_name": "KZ-spread"},
        headers={**analyst, "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text


def _stored(api: Api, ids: list[str]) -> dict[str, dict[str, Any]]:
    """What was stored for each shipment: its score row and its rule hits."""
    out: dict[str, dict[str, Any]] = {}
    with api.app.state.session_factory() as session:
        for sid in ids:
            scores = list(session.scalars(select(m.Score).where(m.Score.shipment_id == sid)))
            assert len(scores) == 1, sid
            score = scores[0]
            hits = session.execute(
                select(m.RuleHit.rule_id, m.RuleHit.rule_version).where(
                    m.RuleHit.score_id == score.id
                )
            )
            out[sid] = {
                "probability": score.probability,
                "priority": score.priority,
                "lane": score.lane,
                "model_version": score.model_version,
                "feature_set_version": score.feature_set_version,
                "feature_vector": score.feature_vector,
                "explanation": score.explanation,
                "rule_hits": sorted(tuple(h) for h in hits),
            }
    return out


def test_a_spread_batch_stores_what_one_by_one_stores(
    db_url: str, other_db: str, world: Path, samples: Samples, tmp_path: Path
) -> None:
    latest = pl.read_parquet(world / "validated" / "shipments.parquet")["declared_at"].max()
    assert isinstance(latest, dt.datetime)
    latest = latest if latest.tzinfo else latest.replace(tzinfo=dt.UTC)
    records = _records(samples, latest)
    ids = [r["shipment_id"] for r in records]
    with api_on(db_url, world, tmp_path / "batch") as batch_api:
        _prepare(batch_api)
        r = batch_api.client.post(
            f"{API}/shipments/batch",
            json={"records": records[::-1]},  # (the declaration times order them)
            headers=batch_api.headers(Role.analyst),
        )
        assert r.status_code == 200, r.text
        assert not r.json()["errors"] and len(r.json()["stored"]) == len(records), r.json()
        batch = _stored(batch_api, ids)
    with api_on(other_db, world, tmp_path / "single") as single_api:
        _prepare(single_api)
        headers = single_api.headers(Role.analyst)
        for record in records:  # (one by one, in time order)
            one = single_api.client.post(f"{API}/shipments", json=record, headers=headers)
            assert one.status_code == 201, one.text
        single = _stored(single_api, ids)
    for sid in ids:
        a, b = batch[sid], single[sid]
        va, vb = a["feature_vector"], b["feature_vector"]
        assert va.keys() == vb.keys()
        differ = [n for n in va if va[n] != vb[n]]
        assert set(differ) <= LAST_BIT, (sid, [(n, va[n], vb[n]) for n in differ])
        for name in differ:
            assert math.isclose(va[name], vb[name], rel_tol=1e-12), (sid, name, va[name], vb[name])
        assert {**a, "feature_vector": None} == {**b, "feature_vector": None}, sid
    # the patterns are there: the batch's own earlier shipments are counted ...
    vectors = {sid: batch[sid]["feature_vector"] for sid in ids}
    assert (
        vectors["SP-hist-5"]["consignee_shipments_30d"]
        > vectors["SP-hist-0"]["consignee_shipments_30d"]
    )
    assert (
        vectors["SP-hist-1"]["consignee_shipments_30d"]
        == vectors["SP-hist-2"]["consignee_shipments_30d"]
    )  # (one instant: neither counts the other)
    # ... the newcomer S1 linked reaches Zeta Second (S2), which shares nothing with S1
    assert vectors["SP-zeta-1"]["network_component_parties"] == 2.0
    assert vectors["SP-zeta-2"]["network_component_parties"] == 3.0
    # ... and rules and the watchlist acted
    hit = {rule for sid in ids for rule, _v in batch[sid]["rule_hits"]}
    assert hit == {"sp-repeat", "sp-network"}
    assert batch["SP-zeta-1"]["explanation"]["watchlist_exact"] is True
