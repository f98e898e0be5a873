"""A batch's rows are written in bulk (one INSERT per table, the audit entries chained
in one loop): they are the rows the one-by-one path writes for the same shipments.
Two apps on copies of one world (SQLite and PostgreSQL): one receives a batch, the
other the same shipments one at a time; the shipments, goods lines, scores, rule
hits and audit entries are compared column by column, as stored (the JSON text
too), but for ids, times and the hashes that cover them. The batch's answer is
what is read back; the audit log verifies (API and `caravan audit verify`) and an
edited entry of the batch is found. The fast canonical form (`audit_chain.plain`)
gives what the general one gives."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from serving import audit_chain
from serving import orm as m
from serving.auth import Role
from serving.scoring import Scored, score_shipments
from serving.services import audit, feature_vector_hash, jsonable, load_shipment, shipment_out
from serving.services._core import _finite, now
from serving.services.audit_log import plain_vector_hash
from serving.services.rules import active_rules
from serving.services.shipments import Prepared, _frames, _write_scored, prepare_shipment
from tests.conftest import caravan_in_process
from tests.serving.conftest import Api, Samples, api_on
from tests.serving.test_api_e2e import tamper_engine
from tests.serving.test_batch_spread import LAST_BIT, _prepare, _records, other_db

API = "/api/v1"
_FIXTURES = (other_db,)  # (the second database, imported for the test here)


# --------------------------------------------------------------------------- canonical form


def _reference_canonical(value: Any) -> str:
    """The canonical JSON as it was computed before the fast path."""
    return json.dumps(
        audit_chain._normalise(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


class _Colour(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


class _Name(str):
    pass


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    scalars = [
        lambda: rng.choice(["", "a", "Жорабеков", "emoji \U0001f600", 'q"uote\\', "\n\t"]),
        lambda: rng.randint(-(10**20), 10**20),
        lambda: rng.choice([True, False, None]),
        lambda: rng.choice([0.1, 1.0, -0.0, 1e-300, 1e300, 3.0000000000000004, 2.5e-7]),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: dt.datetime(2025, 3, 1, 8, rng.randint(0, 59), tzinfo=dt.UTC),
        lambda: dt.datetime(2025, 3, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=6))),
        lambda: dt.date(2025, 3, rng.randint(1, 28)),
    ]
    if depth < 3 and rng.random() < 0.4:
        if rng.random() < 0.5:
            keys = rng.sample(["b", "a", "z", "é", "A", "_x", "10", "9", "feature_1"], 5)
            return {k: _random_value(rng, depth + 1) for k in keys}
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return tuple(items) if rng.random() < 0.3 else items
    return rng.choice(scalars)()


UNUSUAL = [
    {"x": float("nan")},
    [1.0, float("inf")],
    {"when": dt.datetime(2025, 3, 1, 8)},  # naive: refused
    {1: "int key"},
    {"a": 1, 2: "mixed keys"},
    {"colour": _Colour.RED, "level": _Level.HIGH},
    {"n": np.float64(0.25), "i": _Level.HIGH},
    {_Name("sub"): _Name("class")},
    {"set": {1, 2}},
    {"nested": {"deep": [{"nan": float("-inf")}]}},
]


def test_the_fast_canonical_form_is_the_general_one() -> None:
    rng = random.Random(15)
    values = [_random_value(rng) for _ in range(3000)] + UNUSUAL
    for value in values:
        try:
            expected: str | Exception = _reference_canonical(value)
        except ValueError as exc:
            expected = exc
        try:
            got: str | Exception = audit_chain.canonical_json(value)
        except ValueError as exc:
            got = exc
        if isinstance(expected, Exception):  # the same refusal, naming the same path
            assert isinstance(got, ValueError) and str(got) == str(expected), value
            continue
        assert got == expected, value
        # `jsonable` (its fast walk or the text round trip): the same data, keys in the same order
        reference = json.loads(_reference_canonical(_finite(value)))
        assert json.dumps(jsonable(value)) == json.dumps(reference), value
    for value in UNUSUAL[:2] + UNUSUAL[-1:]:  # (non-finite floats: None in `jsonable`)
        reference = json.loads(_reference_canonical(_finite(value)))
        assert json.dumps(jsonable(value)) == json.dumps(reference)
    vector = {"b": 0.1, "a": None, "c": 1.0, "d": 3}
    assert plain_vector_hash(jsonable(vector)) == feature_vector_hash(vector)


# --------------------------------------------------------------------------- the rows


def _rows(api: Api, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The stored rows of the shipments (JSON columns as their stored text)."""

    def read(conn: Any, sql: str) -> list[dict[str, Any]]:
        query = text(sql).bindparams(bindparam("ids", expanding=True))
        return [dict(r._mapping) for r in conn.execute(query, {"ids": ids})]

    with api.app.state.engine.connect() as conn:
        return {
            "shipments": read(
                conn,
                "SELECT shipment_id, office_code, declared_at, CAST(payload AS TEXT) AS "
                "payload, content_hash, received_at FROM shipments "
                "WHERE shipment_id IN :ids ORDER BY shipment_id",
            ),
            "items": read(
                conn,
                "SELECT id, shipment_id, line_no, CAST(payload AS TEXT) AS payload FROM items "
                "WHERE shipment_id IN :ids ORDER BY shipment_id, line_no",
            ),
            "scores": read(
                conn,
                "SELECT id, shipment_id, probability, priority, lane, model_version, "
                "feature_set_version, CAST(feature_vector AS TEXT) AS feature_vector, "
                "CAST(explanation AS TEXT) AS explanation, scored_at FROM scores "
                "WHERE shipment_id IN :ids ORDER BY shipment_id",
            ),
            "hits": read(
                conn,
                "SELECT id, shipment_id, score_id, rule_id, rule_version, hit_at FROM rule_hits "
                "WHERE shipment_id IN :ids ORDER BY shipment_id, rule_id",
            ),
            "audit": read(
                conn,
                "SELECT seq, entry_id, at, kind, actor, entity, entity_id, "
                "CAST(payload AS TEXT) AS payload, prev_hash, hash FROM audit_log "
                "WHERE entity = 'shipment' AND entity_id IN :ids ORDER BY seq",
            ),
        }


def _without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in names}


def _same_vector(a: str, b: str) -> bool:
    """Equal feature vectors (stored text), but the features that may differ in the
    last bit between a shipment scored with others and alone (test_batch_spread)."""
    va, vb = json.loads(a), json.loads(b)
    assert list(va) == list(vb)
    for name in va:
        if va[name] != vb[name]:
            assert name in LAST_BIT and math.isclose(va[name], vb[name], rel_tol=1e-12), name
    return a == b


def _verify(api: Api) -> dict[str, Any]:
    r = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _cli_verify(api: Api, db_url: str) -> Any:
    data = Path(api.app.state.services.layout.root)  # (the app's copy of the world)
    return caravan_in_process(
        "audit", "verify", data=data, check=False, env={"CARAVAN_DATABASE_URL": db_url}
    )


def test_a_batch_writes_the_rows_one_by_one_writes(
    db_url: str, other_db: str, world: Path, samples: Samples, tmp_path: Path
) -> None:
    latest = pl.read_parquet(world / "validated" / "shipments.parquet")["declared_at"].max()
    assert isinstance(latest, dt.datetime)
    latest = latest if latest.tzinfo else latest.replace(tzinfo=dt.UTC)
    records = _records(samples, latest)  # (rules and a listed party hit some of them)
    ids = [r["shipment_id"] for r in records]
    with api_on(db_url, world, tmp_path / "batch") as batch_api:
        _prepare(batch_api)
        r = batch_api.client.post(
            f"{API}/shipments/batch",
            json={"records": records[::-1]},
            headers=batch_api.headers(Role.analyst),
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert not answer["errors"] and len(answer["stored"]) == len(records), answer
        batch = _rows(batch_api, ids)
        # the answer describes the rows written: each as the API reads it back
        headers = batch_api.headers(Role.analyst)
        for out in answer["stored"]:
            back = batch_api.client.get(f"{API}/shipments/{out['shipment_id']}", headers=headers)
            assert back.status_code == 200, back.text
            assert back.json() == out
        # the log verifies: over the API and with `caravan audit verify`
        before = _verify(batch_api)
        assert before["ok"] is True, before
        cli = _cli_verify(batch_api, db_url)
        assert cli.returncode == 0 and "audit log intact" in cli.stdout, cli.stdout + cli.stderr
        # an entry of the batch edited (its lane) is found, at its seq
        edited = batch["audit"][len(ids) // 2]
        body = json.loads(edited["payload"])
        body["lane"] = "green" if body["lane"] != "green" else "red"
        tamper_engine(
            batch_api.app.state.engine,
            [
                "UPDATE audit_log SET payload = '"
                + json.dumps(body).replace("'", "''")
                + f"' WHERE seq = {edited['seq']}"
            ],
        )
        after = _verify(batch_api)
        assert after["ok"] is False and after["first_broken_seq"] == edited["seq"], after
        cli = _cli_verify(batch_api, db_url)
        assert cli.returncode == 1 and "BROKEN" in cli.stdout, cli.stdout + cli.stderr
    with api_on(other_db, world, tmp_path / "single") as single_api:
        _prepare(single_api)
        headers = single_api.headers(Role.analyst)
        for record in records:  # (one by one, in time order)
            one = single_api.client.post(f"{API}/shipments", json=record, headers=headers)
            assert one.status_code == 201, one.text
        single = _rows(single_api, ids)
        assert _verify(single_api)["ok"] is True

    # shipments: all but the time received
    assert [_without(s, "received_at") for s in batch["shipments"]] == [
        _without(s, "received_at") for s in single["shipments"]
    ]
    assert len({s["received_at"] for s in batch["shipments"]}) == 1  # (one request)
    # goods lines: all but their ids, in the same order of ids
    assert [_without(i, "id") for i in batch["items"]] == [
        _without(i, "id") for i in single["items"]
    ]
    # (their ids in the order the batch wrote them: by declaration, then line)
    written = [e["entity_id"] for e in batch["audit"]]
    assert [
        (i["shipment_id"], i["line_no"]) for i in sorted(batch["items"], key=lambda i: i["id"])
    ] == [
        (i["shipment_id"], i["line_no"])
        for i in sorted(
            batch["items"], key=lambda i: (written.index(i["shipment_id"]), i["line_no"])
        )
    ]
    # scores: all but ids and times (the vectors' text but the last-bit features)
    score_of = {}
    vector_same = {}
    for a, b in zip(batch["scores"], single["scores"], strict=True):
        sid = a["shipment_id"]
        vector_same[sid] = _same_vector(a["feature_vector"], b["feature_vector"])
        assert _without(a, "id", "scored_at", "feature_vector") == _without(
            b, "id", "scored_at", "feature_vector"
        ), sid
        score_of[sid] = (a["id"], b["id"])
    assert any(vector_same.values())
    # rule hits: all but ids and times, each pointing at its shipment's score
    assert batch["hits"] and len(batch["hits"]) == len(single["hits"])
    for a, b in zip(batch["hits"], single["hits"], strict=True):
        assert _without(a, "id", "score_id", "hit_at") == _without(b, "id", "score_id", "hit_at")
        assert (a["score_id"], b["score_id"]) == score_of[a["shipment_id"]]
    # audit entries: one per score, in the batch in declaration order, consecutive;
    # the same kind, actor, lookup columns and payload but the score id and the
    # vector's hash (each that of its own stored row)
    assert len(batch["audit"]) == len(single["audit"]) == len(ids)
    seqs = [e["seq"] for e in batch["audit"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(ids)))
    declared = {r["shipment_id"]: r["declared_at"] for r in records}
    order = [declared[e["entity_id"]] for e in batch["audit"]]
    assert order == sorted(order)
    vectors = {
        name: {s["shipment_id"]: json.loads(s["feature_vector"]) for s in rows["scores"]}
        for name, rows in (("batch", batch), ("single", single))
    }
    ids_of = {"batch": 0, "single": 1}
    by_entity = {
        name: {e["entity_id"]: e for e in rows["audit"]}
        for name, rows in (("batch", batch), ("single", single))
    }
    for sid in ids:
        payloads = {}
        for name in ("batch", "single"):
            entry = by_entity[name][sid]
            body = json.loads(entry["payload"])
            assert body["score_id"] == score_of[sid][ids_of[name]]
            assert body["feature_vector_sha256"] == feature_vector_hash(vectors[name][sid])
            # the stored text is the JSON of the canonical data (keys in order)
            assert entry["payload"] == json.dumps(body)
            payloads[name] = _without(body, "score_id", "feature_vector_sha256")
            assert (entry["kind"], entry["actor"], entry["entity"]) == (
                "score",
                "analyst1",
                "shipment",
            )
        assert payloads["batch"] == payloads["single"], sid
    assert any(json.loads(e["payload"])["watchlist_match"] for e in batch["audit"])
    assert any(json.loads(e["payload"])["rule_hits"] for e in batch["audit"])


# --------------------------------------------------------------------------- the writer


def _reference_write(
    session: Session, fresh: list[Prepared], scored: list[Scored], actor: str
) -> None:
    """The rows as the ORM objects wrote them before the bulk INSERTs (the previous
    `_write_scored`, `_score_row` and `_record_score`)."""
    by_id = {p.record["shipment_id"]: p for p in fresh}
    received = now()
    for s in scored:
        p = by_id[s.shipment_id]
        declared = p.record["declared_at"]
        session.add(
            m.Shipment(
                shipment_id=s.shipment_id,
                office_code=str(p.record["office_code"]),
                declared_at=declared.astimezone(dt.UTC) if declared.tzinfo else declared,
                payload=jsonable(p.record),
                content_hash=p.content_hash,
                received_at=received,
            )
        )
    session.flush()
    scores = {}
    for s in scored:
        p = by_id[s.shipment_id]
        session.add_all(
            [
                m.Item(shipment_id=s.shipment_id, line_no=line["line_no"], payload=jsonable(line))
                for line in p.items
            ]
        )
        extra = {
            "reasons": s.explanation,
            "context": jsonable(s.context),
            "must_inspect": s.must_inspect,
            "watchlist_score": s.watchlist_score,
            "watchlist_exact": s.watchlist_exact,
            "watchlist_match": s.watchlist_match,
        }
        scores[s.shipment_id] = m.Score(
            shipment_id=s.shipment_id,
            probability=s.probability,
            priority=s.priority,
            lane=s.lane,
            model_version=s.model_version,
            feature_set_version=s.feature_set_version,
            feature_vector=jsonable(s.features),
            explanation=jsonable(extra),
            scored_at=now(),
        )
    session.add_all(list(scores.values()))
    session.flush()
    for s in scored:
        score = scores[s.shipment_id]
        for hit in s.rule_hits:
            session.add(
                m.RuleHit(
                    shipment_id=s.shipment_id,
                    score_id=score.id,
                    rule_id=hit.rule_id,
                    rule_version=hit.rule_version,
                )
            )
        match = s.watchlist_match
        keys = ("entry_id", "party", "by", "exact", "traveller_record_id", "weak_reason")
        audit(
            session,
            "score",
            actor,
            {
                "shipment_id": s.shipment_id,
                "score_id": score.id,
                "probability": s.probability,
                "priority": s.priority,
                "lane": s.lane,
                "model_version": s.model_version,
                "feature_set_version": s.feature_set_version,
                "rule_hits": [f"{h.rule_id}@v{h.rule_version}" for h in s.rule_hits],
                "watchlist_exact": s.watchlist_exact,
                "watchlist_match": {k: match.get(k) for k in keys} if match else None,
                "feature_vector_sha256": feature_vector_hash(score.feature_vector),
                "content_hash": by_id[s.shipment_id].content_hash,
            },
            entity="shipment",
            entity_id=s.shipment_id,
            flush=False,
        )
    session.commit()


def test_the_bulk_writer_writes_the_rows_of_the_orm_objects(
    db_url: str, other_db: str, world: Path, samples: Samples, tmp_path: Path
) -> None:
    latest = pl.read_parquet(world / "validated" / "shipments.parquet")["declared_at"].max()
    assert isinstance(latest, dt.datetime)
    latest = latest if latest.tzinfo else latest.replace(tzinfo=dt.UTC)
    records = _records(samples, latest)
    fresh = [prepare_shipment(r) for r in records]
    ids = [str(p.record["shipment_id"]) for p in fresh]
    with (
        api_on(db_url, world, tmp_path / "bulk") as bulk,
        api_on(other_db, world, tmp_path / "orm") as orm,
    ):
        for api in (bulk, orm):
            _prepare(api)
        services = bulk.app.state.services
        with bulk.app.state.session_factory() as session:
            rules = active_rules(session, services)
        ships, items = _frames(fresh)
        with services.history.scoring() as state:
            scored = score_shipments(ships, items, state, services.holder.handle, rules)
        assert any(s.rule_hits for s in scored) and any(s.watchlist_match for s in scored)
        with bulk.app.state.session_factory() as session:
            out = _write_scored(session, fresh, scored, "writer")
        with orm.app.state.session_factory() as session:
            _reference_write(session, fresh, scored, "writer")
        new, old = _rows(bulk, ids), _rows(orm, ids)
        assert _verify(bulk)["ok"] is True and _verify(orm)["ok"] is True
    # every column as stored, the JSON text too, but ids, times and chain fields
    assert [_without(s, "received_at") for s in new["shipments"]] == [
        _without(s, "received_at") for s in old["shipments"]
    ]
    assert [_without(i, "id") for i in new["items"]] == [_without(i, "id") for i in old["items"]]
    assert [_without(s, "id", "scored_at") for s in new["scores"]] == [
        _without(s, "id", "scored_at") for s in old["scores"]
    ]
    assert new["hits"] and [_without(h, "id", "score_id", "hit_at") for h in new["hits"]] == [
        _without(h, "id", "score_id", "hit_at") for h in old["hits"]
    ]
    chain = ("seq", "entry_id", "at", "payload", "prev_hash", "hash")
    assert [_without(e, *chain) for e in new["audit"]] == [
        _without(e, *chain) for e in old["audit"]
    ]
    score_id = {
        name: {s["shipment_id"]: s["id"] for s in rows["scores"]}
        for name, rows in (("new", new), ("old", old))
    }
    for a, b in zip(new["audit"], old["audit"], strict=True):
        sid = a["entity_id"]
        pa, pb = json.loads(a["payload"]), json.loads(b["payload"])
        assert (pa["score_id"], pb["score_id"]) == (score_id["new"][sid], score_id["old"][sid])
        # the same text but the score id (each its own row's)
        assert a["payload"] == json.dumps(pa) and b["payload"] == json.dumps(pb)
        assert json.dumps({**pa, "score_id": 0}) == json.dumps({**pb, "score_id": 0})
    for a, b in zip(new["hits"], old["hits"], strict=True):
        assert a["score_id"] == score_id["new"][a["shipment_id"]]
        assert b["score_id"] == score_id["old"][b["shipment_id"]]
    # what `_write_scored` returns is the rows written (as `load_shipment` reads them)
    with bulk.app.state.session_factory() as session:
        for stored in out:
            back = load_shipment(session, stored.shipment.shipment_id)
            assert back is not None
            assert shipment_out(stored) == shipment_out(back)
            for name in ("payload", "received_at"):
                assert getattr(stored.shipment, name) == getattr(back.shipment, name)
            for name in ("feature_vector", "explanation", "scored_at"):
                assert getattr(stored.score, name) == getattr(back.score, name)
