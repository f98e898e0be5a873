"""Audit verification after the acceptance tests (auditor F3, F4, F5, F6, F13, F14, F18),
on real SQLite and PostgreSQL databases, through HTTP, the services and the CLI:

- the lookup columns entity/entity_id must equal the hashed copies (F3);
- verify reports the head (seq and hash) and checks a head recorded earlier
  (`--expect SEQ:HASH`, `?expect=`), so that entries deleted at the end are found; stored
  rows that must have an audit entry (scores, outcomes, referrals, personal-data views,
  rule versions, promotions) are checked against the log (F4);
- verify on a directory without a database fails and creates nothing (F5);
- replay compares the stored score with its audited entry (probability, lane, model,
  feature-vector hash), replays any score of a shipment or all of them (F6, F18);
- the traveller purge audits the database and the file counts (F13), and the rewritten
  file is private (F14).
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from data_contracts.schemas import TRAVELLERS
from serving import orm as m
from serving.auth import Role
from serving.db import make_engine
from serving.services import (
    audit,
    content_hash,
    feature_vector_hash,
    replay,
    replay_all,
    verify_audit,
)
from tests.conftest import caravan, caravan_in_process
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_api_e2e import tamper_engine

API = "/api/v1"
LISTED_FIRM = "Karavan-Sever Logistika Trading LLP"
HEADER = (
    "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
    "nationality,document_numbers,address,listed_on"
)


_tamper = tamper_engine  # (the end-to-end tests' helper)


def _verify(api: Api, **params: str) -> dict[str, Any]:
    r = api.client.get(f"{API}/audit/verify", params=params, headers=api.headers(Role.auditor))
    assert r.status_code == 200, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- F3


def test_an_edited_lookup_column_is_detected(api: Api) -> None:
    before = _verify(api)
    assert before["ok"] is True
    with api.app.state.session_factory() as session:
        entry = session.scalars(
            select(m.AuditLog).where(m.AuditLog.entity == "user").order_by(m.AuditLog.seq)
        ).first()
        assert entry is not None
        seq = entry.seq
    _tamper(api.app.state.engine, [f"UPDATE audit_log SET entity_id = 'HIDDEN' WHERE seq = {seq}"])
    after = _verify(api)
    assert after["ok"] is False and after["first_broken_seq"] == seq
    assert "entity_id" in after["reason"] and "HIDDEN" in after["reason"]


# --------------------------------------------------------------------------- F4


def test_verify_reports_the_head_and_checks_a_recorded_one(api: Api) -> None:
    first = _verify(api)
    head = f"{first['head_seq']}:{first['head_hash']}"
    assert first["ok"] and first["head_seq"] == first["entries"] and len(first["head_hash"]) == 64
    later = _verify(api, expect=head)  # the login of this request added entries after it
    assert (
        later["ok"] is True and later["expected"] == head and later["head_seq"] > first["head_seq"]
    )

    # entries at the end deleted (and new ones appended since): only the recorded head
    # shows it
    _tamper(api.app.state.engine, [f"DELETE FROM audit_log WHERE seq >= {first['head_seq']}"])
    assert _verify(api)["ok"] is True
    gone = _verify(api, expect=head)
    assert gone["ok"] is False and gone["first_broken_seq"] == first["head_seq"]
    assert "rewritten" in gone["reason"]

    # a recorded head whose hash is not the entry's: the log was rewritten
    wrong = f"2:{'0' * 64}"
    rewritten = _verify(api, expect=wrong)
    assert rewritten["ok"] is False and rewritten["first_broken_seq"] == 2
    assert "rewritten" in rewritten["reason"]
    bad = api.client.get(
        f"{API}/audit/verify", params={"expect": "12:zz"}, headers=api.headers(Role.auditor)
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "expect"]
    # entry 0 is never written: a head naming it would confirm nothing
    zero = api.client.get(
        f"{API}/audit/verify", params={"expect": f"0:{'a' * 64}"}, headers=api.headers(Role.auditor)
    )
    assert zero.status_code == 422 and zero.json()["detail"][0]["loc"] == ["query", "expect"]


def _shipment(session: Session, sid: str) -> None:
    at = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    # (an empty declaration, with its content hash as ingest computes it: `caravan
    # audit verify` checks every stored declaration against its hash)
    digest = content_hash({"shipment": {}, "items": []})
    session.add(
        m.Shipment(
            shipment_id=sid, office_code="KZ-ALA", declared_at=at, payload={}, content_hash=digest
        )
    )
    session.flush()


def _score(sid: str) -> m.Score:
    return m.Score(
        shipment_id=sid,
        probability=0.25,
        priority=0.25,
        lane="red",
        model_version="1",
        feature_set_version="fs",
        feature_vector={"f": 1.0},
        explanation=None,
    )


def test_stored_rows_without_their_audit_entry_are_found(db_session: Session) -> None:
    _shipment(db_session, "S1")
    score = _score("S1")
    db_session.add(score)
    db_session.flush()
    audit(
        db_session,
        "score",
        "t",
        {
            "score_id": score.id,
            "probability": 0.25,
            "lane": "red",
            "model_version": "1",
            "feature_vector_sha256": feature_vector_hash({"f": 1.0}),
        },
        entity="shipment",
        entity_id="S1",
    )
    db_session.commit()
    assert verify_audit(db_session)[1].ok

    # a score written behind the log's back
    hidden = _score("S1")
    db_session.add(hidden)
    db_session.commit()
    _n, result, seq = verify_audit(db_session)
    assert not result.ok and seq is None
    assert result.reason == f"score {hidden.id} of shipment S1 has no audit entry"
    db_session.delete(hidden)
    db_session.commit()

    # a personal-data view logged without its audit entry
    db_session.add(
        m.PersonalDataView(
            viewer="officer1", subject_type="traveller", subject_id="TR1", purpose="check case"
        )
    )
    db_session.commit()
    result = verify_audit(db_session)[1]
    assert not result.ok and "TR1 by officer1" in result.reason

    # and a score whose vector was replaced
    db_session.execute(text("DELETE FROM personal_data_views"))
    db_session.execute(
        text(f"UPDATE scores SET feature_vector = '{{\"f\": 2.0}}' WHERE id = {score.id}")
    )
    db_session.commit()
    result = verify_audit(db_session)[1]
    assert not result.ok and "feature vector" in result.reason


# --------------------------------------------------------------------------- F5


def test_verify_on_a_directory_without_a_database_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "caravan-dta"
    r = caravan("audit", "verify", data=typo, check=False)
    assert r.returncode == 2 and "intact" not in r.stdout
    assert f"no database at {typo / 'caravan.db'}" in r.stderr.replace("\n", "")
    assert not typo.exists()
    (typo).mkdir()
    r = caravan("audit", "replay", "S1", data=typo, check=False)
    assert r.returncode == 2 and list(typo.iterdir()) == []


def test_cli_verify_prints_the_head_and_checks_expect(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = caravan_in_process  # the same command in process; two stay real subprocesses
    run(
        "users", "create", "aud", "--role", "auditor", "--password", "Long-Secret-2026x",
        "--by", "root-admin", data=data,
    )  # fmt: skip
    run(
        "users", "create", "ana", "--role", "analyst", "--password", "Long-Secret-2026x",
        "--by", "root-admin", data=data,
    )  # fmt: skip
    out = caravan("audit", "verify", data=data).stdout
    assert "audit log intact: 2 entries" in out
    head = next(line.split()[1] for line in out.splitlines() if line.startswith("head: "))
    assert head.startswith("2:") and len(head) == 66
    assert "unchanged" in run("audit", "verify", "--expect", head, data=data).stdout
    _tamper(
        make_engine(f"sqlite:///{data / 'caravan.db'}"), ["DELETE FROM audit_log WHERE seq = 2"]
    )
    plain = run("audit", "verify", data=data)
    assert plain.returncode == 0  # the rows alone cannot show it
    r = run("audit", "verify", "--expect", head, data=data, check=False)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "deleted" in r.stdout
    r = caravan("audit", "verify", "--expect", "2:abc", data=data, check=False)
    assert r.returncode == 2 and "--expect" in r.stderr
    r = run("audit", "verify", "--expect", f"0:{'a' * 64}", data=data, check=False)
    assert r.returncode == 2 and "--expect" in r.stderr


def test_a_head_before_the_checked_log_confirms_nothing() -> None:
    """The chain check itself refuses a recorded head that names no checked entry
    (seq 0, or before the segment checked), whatever its callers let through."""
    from serving.audit_chain import GENESIS_HASH, verify

    result = verify([], checkpoint=(0, "a" * 64))
    assert result.ok is False and "names no entry" in result.reason
    assert verify([], start_seq=5, anchor_hash=GENESIS_HASH, checkpoint=(3, "b" * 64)).ok is False
    assert verify([]).ok is True


# --------------------------------------------------------------------------- F6, F18


def _national(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def test_replay_compares_with_the_audit_entry_and_replays_any_score(
    world_api: Api, samples: Samples, db_url: str
) -> None:
    api = world_api
    records = [payload(samples, 30 + i, f"RP-{i}") for i in range(3)]
    records[0]["consignee_name"] = LISTED_FIRM
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": records}, headers=api.headers(Role.analyst)
    )
    assert r.status_code == 200 and len(r.json()["stored"]) == 3, r.text
    loaded = api.client.post(
        f"{API}/watchlists/national",
        content=_national(f"NAT-7,entity,{LISTED_FIRM},,,,,,,"),
        params={"list_name": "KZ-national"},
        headers={**api.headers(Role.analyst), "Content-Type": "text/csv"},
    )
    assert loaded.status_code == 200 and loaded.json()["rescored"] >= 1, loaded.text
    holder = api.app.state.services.holder
    factory = api.app.state.session_factory
    with factory() as session:
        results = replay_all(session, holder, "RP-0")
        assert len(results) == 2 and results[0]["score_id"] < results[1]["score_id"]
        assert all(x["matches"] and x["audit_seq"] for x in results), results
        first, latest = results[0]["score_id"], results[1]["score_id"]
        assert replay(session, holder, "RP-0")["score_id"] == latest
        assert replay(session, holder, "RP-0", first)["score_id"] == first
        entries = session.scalars(
            select(m.AuditLog).where(m.AuditLog.entity_id == "RP-0").order_by(m.AuditLog.seq)
        ).all()
        vectors = {s.id: s.feature_vector for s in session.scalars(select(m.Score))}
        recorded = [e.payload for e in entries if e.kind in ("score", "rescreen")]
        assert [p["feature_vector_sha256"] for p in recorded] == [
            feature_vector_hash(vectors[p["score_id"]]) for p in recorded
        ]
        other = replay(session, holder, "RP-1")["score_id"]
        other_vector = vectors[other]

    # the first score row replaced by another shipment's score (as in the finding)
    engine = api.app.state.engine
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE scores SET probability = (SELECT probability FROM scores WHERE id = :o), "
                "feature_vector = (SELECT feature_vector FROM scores WHERE id = :o), "
                "lane = CASE WHEN lane = 'red' THEN 'green' ELSE 'red' END WHERE id = :f"
            ),
            {"o": other, "f": first},
        )
    with factory() as session:
        tampered = replay(session, holder, "RP-0", first)
        assert tampered["matches"] is False and tampered["recomputed_matches"] is True
        assert any(d.startswith("lane ") for d in tampered["differences"])
        assert any("feature vector" in d for d in tampered["differences"])
        assert replay(session, holder, "RP-0")["matches"] is True
    verify = _verify(api)
    assert verify["ok"] is False and f"score {first} of shipment RP-0" in verify["reason"]

    # the command line, on the same database: every score of the shipment
    env = {"CARAVAN_DATABASE_URL": db_url}
    data = api.app.state.layout.root
    r = caravan("audit", "replay", "RP-0", "--all", data=data, check=False, env=env)
    lines = [line for line in r.stdout.splitlines() if line.startswith("shipment RP-0")]
    assert r.returncode == 1 and len(lines) == 2, r.stdout + r.stderr
    assert f"score {first} " in lines[0] and "MISMATCH" in lines[0] and "(audited " in lines[0]
    assert f"score {latest} " in lines[1] and lines[1].endswith("MATCH")
    r = caravan_in_process("audit", "replay", "RP-0", "--score-id", str(latest), data=data, env=env)
    assert r.returncode == 0 and f"score {latest} " in r.stdout
    r = caravan_in_process(
        "audit", "replay", "RP-0", "--score-id", str(other), data=data, check=False, env=env
    )
    assert r.returncode == 1 and f"no score {other} of shipment 'RP-0'" in r.stderr
    assert other_vector  # the other shipment's own vector is untouched


# --------------------------------------------------------------------------- F13, F14


def test_purge_audits_database_and_file_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    today = dt.datetime.now(dt.UTC)
    departures = [today - dt.timedelta(days=d) for d in (5, 250, 400, 500, 600)]
    frame = pl.DataFrame(
        {"traveller_record_id": [f"F{i}" for i in range(5)], "departure_at": departures}
    ).cast({"departure_at": TRAVELLERS.polars_schema["departure_at"]})
    (data / "validated").mkdir(parents=True)
    path = data / "validated" / "travellers.parquet"
    frame.write_parquet(path)
    path.chmod(0o644)
    caravan_in_process(  # (the same command in process; the purge below runs as `caravan`)
        "users", "create", "dpo", "--role", "auditor", "--password", "Long-Secret-2026x",
        "--by", "root-admin", data=data,
    )  # fmt: skip
    engine = make_engine(f"sqlite:///{data / 'caravan.db'}")
    try:
        with engine.begin() as conn:
            for rid, days in (("D1", 10), ("D2", 400)):
                departed = (today - dt.timedelta(days=days)).isoformat()
                conn.execute(
                    text(
                        "INSERT INTO travellers (traveller_record_id, payload, content_hash, "
                        "received_at) VALUES (:r, :p, :r, '2026-01-01 00:00:00')"
                    ),
                    {"r": rid, "p": f'{{"departure_at": "{departed}"}}'},
                )
        done = caravan("travellers", "purge", "--days", "300", "--by", "dpo", data=data)
        assert "1 in the database, 3 in" in done.stdout
        with engine.connect() as conn:
            kind, actor, body = conn.execute(
                text("SELECT kind, actor, payload FROM audit_log ORDER BY seq DESC LIMIT 1")
            ).one()
    finally:
        engine.dispose()
    entry = json.loads(body) if isinstance(body, str) else body
    assert (kind, actor) == ("traveller_purge", "dpo")
    assert entry["records"] == 1 and entry["total"] == 4
    assert entry["file_records"] == {"validated/travellers.parquet": 3}
    assert pl.read_parquet(path).height == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "caravan.db").stat().st_mode) == 0o600
    assert "intact" in caravan_in_process("audit", "verify", data=data).stdout


def test_traveller_files_are_written_private(tmp_path: Path) -> None:
    from pipelines.validate import write_parquet

    # private because the frame holds the contract's personal columns (sec F10), not
    # because of the file's name
    frame = pl.DataFrame({"traveller_record_id": ["T1"], "surname": ["DOE"]})
    write_parquet(frame, tmp_path / "validated" / "travellers.parquet")
    write_parquet(frame, tmp_path / "quarantine" / "travellers.parquet")
    for sub in ("validated", "quarantine"):
        mode = (tmp_path / sub / "travellers.parquet").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
