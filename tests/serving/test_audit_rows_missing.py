"""Verification from the audit entries to the rows (the other direction of the
cross-check): an entry that records a row (a score, a referral as placed and as
rescored, an outcome as recorded and corrected, a personal-data view, a rule version
and a rule's status) must find it, with the values it recorded; a stored declaration
must still have its content hash. Each tampering is named at the first entry it
breaks; the product's own changes (a rescreen's rescore, a displacement, a
correction, a rule's new version and (de)activation, the traveller purge) leave the
log intact. Over HTTP, on SQLite and PostgreSQL, the tampering done directly in the
database (as someone with the server stopped and the file or the database at hand),
then verified through the services and the command line; `audit replay` of a shipment
whose score row was deleted names the entry that records it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from serving import orm as m
from serving.auth import Role
from serving.retention import purge_travellers
from serving.services import QueueSettings, content_hash
from serving.services.audit_log import AuditReport, audit_report
from tests.conftest import caravan_in_process
from tests.serving.conftest import DAY, OFFICE, Api, Samples, payload
from tests.serving.test_api_e2e import tamper_engine

API = "/api/v1"
RED = "ROWS-MISSING RED MARKER"
LISTED = "Karavan-Sever Logistika Trading LLP"
HEADER = (
    "reference_number,entity_type,name,aliases,name_original_script,date_of_birth,"
    "nationality,document_numbers,address,listed_on"
)
OTHER_DAY = DAY + dt.timedelta(days=3)  # no queue is built for it: its scores are free
FIREARMS = {"finding": True, "category": "firearms", "quantity": 2, "unit": "PCE", "notes": "x"}


def _rule(rule_id: str, value: str) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": f"rows missing {rule_id}",
        "severity": "high",
        "condition": {"all": [{"field": "consignee_name", "op": "eq", "value": value}]},
    }


def _ok(response: Any) -> Any:
    assert response.is_success, response.text
    return response.json()


@dataclasses.dataclass(frozen=True)
class World:
    """What the scenario stored, as ids."""

    engine: Engine
    referrals: dict[str, int]  # shipment -> its referral
    corrected: str  # outcome corrected in place (finding True -> False)
    from_waiver: str  # outcome a waiver was corrected into


def _batch(api: Api, records: list[dict[str, Any]]) -> None:
    body = _ok(
        api.client.post(
            f"{API}/shipments/batch", json={"records": records}, headers=api.headers(Role.analyst)
        )
    )
    assert not body["errors"] and len(body["stored"]) == len(records), body


def _queue(api: Api) -> dict[str, dict[str, Any]]:
    body = _ok(
        api.client.get(f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.admin))
    )
    return {e["shipment_id"]: e for e in body["entries"]}


def _scenario(api: Api, samples: Samples, world: Any) -> World:
    """Every kind of row the log records, with the changes the product makes to them:
    placements, a rescreen's rescore, a displacement, an outcome corrected, a waiver
    corrected into an outcome, views of a traveller record then purged, a rule's new
    version, its deactivation and reactivation."""
    analyst, officer = api.headers(Role.analyst), api.headers(Role.officer)
    api.app.state.services.queue = QueueSettings(queue_capacity=3, exploration_share=0.0)
    _ok(api.client.post(f"{API}/rules", json=_rule("rm-red", RED), headers=analyst))
    _ok(api.client.post(f"{API}/rules", json=_rule("rm-life", "nobody"), headers=analyst))
    changed = {k: v for k, v in _rule("rm-life", "no one at all").items() if k != "id"}
    _ok(api.client.put(f"{API}/rules/rm-life", json=changed, headers=analyst))
    _ok(api.client.post(f"{API}/rules/rm-life/deactivate", json={"reason": "x"}, headers=analyst))
    _ok(api.client.post(f"{API}/rules/rm-life/activate", headers=analyst))

    greens = [payload(samples, 40 + i, f"RM-{i}") for i in range(3)]
    greens[0]["consignee_name"] = LISTED
    greens[1]["consignor_address"] = "Kashgar, Seman Road 1"
    _batch(api, greens)
    _batch(api, [payload(samples, 50 + i, f"RM-X{i}", day=OTHER_DAY) for i in range(2)])
    placed = _queue(api)
    assert set(placed) == {"RM-0", "RM-1", "RM-2"}
    # a rescreen: RM-0's consignee is listed, its entry is brought to the new score
    listed = (HEADER + f"\nRM-1,entity,{LISTED},,,,,,,\n").encode()
    loaded = api.client.post(
        f"{API}/watchlists/national",
        content=listed,
        params={"list_name": "RM-NAT"},
        headers={**analyst, "Content-Type": "text/csv"},
    )
    assert loaded.status_code == 200 and loaded.json()["rescored"] >= 1, loaded.text
    # a red arrival displaces the lowest open entry of the full queue
    red = payload(samples, 47, "RM-RED")
    red["consignee_name"] = RED
    _batch(api, [red])
    queue = _queue(api)
    pushed = [e for e in queue.values() if e["displaced_by"] == queue["RM-RED"]["id"]]
    assert len(pushed) == 1, queue
    kept = next(s for s in ("RM-1", "RM-2") if s != pushed[0]["shipment_id"])
    # an outcome recorded, then corrected; a waiver corrected into an outcome
    first, second = queue["RM-0"]["id"], queue[kept]["id"]
    for rid in (first, second):
        _ok(api.client.post(f"{API}/referrals/{rid}/claim", headers=officer))
    corrected = _ok(
        api.client.post(f"{API}/referrals/{first}/outcome", json=FIREARMS, headers=officer)
    )["outcome_id"]
    fix = {"finding": False, "reason": "recorded on the wrong referral"}
    _ok(api.client.post(f"{API}/referrals/{first}/outcome/correct", json=fix, headers=officer))
    _ok(api.client.post(f"{API}/referrals/{second}/waive", json={"reason": "x"}, headers=officer))
    found = {**FIREARMS, "reason": "inspected after all"}
    _ok(api.client.post(f"{API}/referrals/{second}/outcome/correct", json=found, headers=officer))
    # a traveller record viewed twice (two purposes), then purged with its journey
    row = pl.read_parquet(world / "validated" / "travellers.parquet").head(1).to_dicts()[0]
    record = {
        k: (v.isoformat() if isinstance(v, dt.date | dt.datetime) else v) for k, v in row.items()
    }
    record["traveller_record_id"] = "RM-TR1"
    _ok(api.client.post(f"{API}/travellers", json=record, headers=analyst))
    for purpose in ("case 2026/1", "case 2026/2"):
        seen = api.client.get(
            f"{API}/travellers/RM-TR1", params={"purpose": purpose}, headers=analyst
        )
        assert seen.json()["masked"] is False, seen.text
    with api.app.state.session_factory() as session:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10_000)
        assert purge_travellers(session, later, "dpo") >= 1
        from_waiver = session.scalars(
            select(m.Outcome.outcome_id).where(m.Outcome.referral_id == second)
        ).one()
    return World(
        api.app.state.engine,
        {s: e["id"] for s, e in _queue(api).items()},
        corrected,
        from_waiver,
    )


def _entries(engine: Engine) -> list[m.AuditLog]:
    with Session(engine) as session:
        rows = list(session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq)))
        session.expunge_all()
        return rows


def _seq(entries: list[m.AuditLog], kind: str | tuple[str, ...], **payload: Any) -> int:
    """The seq of the first entry of `kind` whose payload holds `payload`."""
    kinds = (kind,) if isinstance(kind, str) else kind
    return next(
        e.seq
        for e in entries
        if e.kind in kinds and all(e.payload.get(k) == v for k, v in payload.items())
    )


def _first_naming(entries: list[m.AuditLog], referral_id: int) -> int:
    """The seq of the queue entry that placed the referral (built or extended)."""
    return next(
        e.seq
        for e in entries
        if e.kind in ("queue_built", "queue_extended")
        and any(x["referral_id"] == referral_id for x in e.payload["entries"])
    )


@contextmanager
def _tampered(engine: Engine, *statements: str) -> Iterator[AuditReport]:
    """The report of `audit_report` on the database as the statements leave it (in a
    transaction rolled back afterwards: each case starts from the untouched rows)."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            for sql in statements:
                conn.execute(text(sql))
            with Session(bind=conn) as session:
                yield audit_report(session)
        finally:
            trans.rollback()


def _broken(report: AuditReport, seq: int, *words: str) -> None:
    assert report.result.ok is False, "the tampering was not detected"
    assert report.broken_seq == seq, (report.broken_seq, seq, report.result.reason)
    for word in words:
        assert word in report.result.reason, (word, report.result.reason)


def _replace_text(engine: Engine, table: str, where: str, old: str, new: str) -> str:
    if engine.dialect.name == "sqlite":
        return f"UPDATE {table} SET payload = replace(payload, '{old}', '{new}') WHERE {where}"
    return (
        f"UPDATE {table} SET payload = CAST(replace(CAST(payload AS TEXT), '{old}', '{new}') "
        f"AS JSON) WHERE {where}"
    )


def test_entries_whose_rows_are_gone_or_changed_are_named(
    world_api: Api, samples: Samples, world: Any, db_url: str
) -> None:
    api = world_api
    w = _scenario(api, samples, world)
    engine = w.engine
    entries = _entries(engine)
    report = audit_report_of(engine)
    assert report.result.ok, report.result.reason  # the product's own changes are no tampering

    def score_of(sid: str) -> tuple[int, int]:
        entry = next(e for e in entries if e.kind == "score" and e.entity_id == sid)
        return int(entry.payload["score_id"]), entry.seq

    # a score row deleted (its rule hits with it: the foreign key)
    score, seq = score_of("RM-X0")
    gone = (
        f"DELETE FROM rule_hits WHERE score_id = {score}",
        f"DELETE FROM scores WHERE id = {score}",
    )
    with _tampered(engine, *gone) as report:
        _broken(report, seq, f"score {score} of shipment RM-X0", "no row")
    # a shipment deleted with its goods lines and score
    score, seq = score_of("RM-X1")
    with _tampered(
        engine,
        "DELETE FROM rule_hits WHERE shipment_id = 'RM-X1'",
        "DELETE FROM scores WHERE shipment_id = 'RM-X1'",
        "DELETE FROM items WHERE shipment_id = 'RM-X1'",
        "DELETE FROM shipments WHERE shipment_id = 'RM-X1'",
    ) as report:
        _broken(report, seq, f"score {score} of shipment RM-X1", "no row")

    # a referral deleted; its priority or rank changed
    red = w.referrals["RM-RED"]
    with _tampered(engine, f"DELETE FROM referrals WHERE id = {red}") as report:
        _broken(report, _first_naming(entries, red), f"referral {red} of shipment RM-RED")
    placed = _seq(entries, "queue_placement", referral_id=red)
    with _tampered(engine, f"UPDATE referrals SET priority = 0.0001 WHERE id = {red}") as report:
        _broken(report, placed, f"referral {red}", "priority 0.0001")
    with _tampered(engine, f"UPDATE referrals SET rank = 99 WHERE id = {red}") as report:
        _broken(report, _first_naming(entries, red), f"referral {red}", "rank 99")
    # the rescored entry: its priority as the rescore (not its placement) recorded it
    rescored = w.referrals["RM-0"]
    rescore = _seq(entries, "queue_rescore", referral_id=rescored)
    with _tampered(engine, f"UPDATE referrals SET priority = 0.0001 WHERE id = {rescored}") as r:
        _broken(r, rescore, f"referral {rescored}", "priority 0.0001")

    # a personal-data view deleted
    view = _seq(entries, "personal_data_view", purpose="case 2026/1")
    with _tampered(
        engine,
        "DELETE FROM personal_data_views WHERE id = (SELECT min(id) FROM personal_data_views)",
    ) as report:
        _broken(report, view, "RM-TR1", "case 2026/1")

    # the declaration edited after it was scored
    edit = _replace_text(engine, "shipments", "shipment_id = 'RM-1'", "Kashgar", "Kabul")
    with _tampered(engine, edit) as report:
        _broken(report, score_of("RM-1")[1], "shipment RM-1", "content hash")
    with _tampered(
        engine,
        "DELETE FROM items WHERE id = (SELECT max(id) FROM items WHERE shipment_id = 'RM-2')",
    ) as report:
        _broken(report, score_of("RM-2")[1], "shipment RM-2", "content hash")
    # ... and with its stored hash made to match the edit: the score entry written at
    # ingest records the declaration's hash
    with Session(engine) as session:
        ship = session.get(m.Shipment, "RM-1")
        assert ship is not None
        goods = [
            i.payload
            for i in session.scalars(
                select(m.Item).where(m.Item.shipment_id == "RM-1").order_by(m.Item.line_no)
            )
        ]
        assert content_hash({"shipment": ship.payload, "items": goods}) == ship.content_hash
        edited = json.loads(json.dumps(ship.payload).replace("Kashgar", "Kabul"))
        forged = content_hash({"shipment": edited, "items": goods})
    first_score = next(e for e in entries if e.seq == score_of("RM-1")[1])
    assert first_score.payload["content_hash"] == ship.content_hash
    with _tampered(
        engine, edit, f"UPDATE shipments SET content_hash = '{forged}' WHERE shipment_id = 'RM-1'"
    ) as report:
        _broken(report, score_of("RM-1")[1], "shipment RM-1", "declaration was replaced")

    # outcomes: deleted; changed after their correction
    first = _seq(entries, "outcome", outcome_id=w.corrected)
    with _tampered(
        engine,
        f"DELETE FROM outcome_seizures WHERE outcome_id = '{w.corrected}'",
        f"DELETE FROM outcomes WHERE outcome_id = '{w.corrected}'",
    ) as report:
        _broken(report, first, f"outcome {w.corrected}", "no row")
    correction = _seq(entries, "outcome", outcome_id=w.corrected, action="correct")
    with _tampered(
        engine, f"UPDATE outcomes SET finding = true WHERE outcome_id = '{w.corrected}'"
    ) as report:
        _broken(report, correction, f"outcome {w.corrected}", "finding True (audited False)")
    # (the outcome a waiver became: its first entry is the correction)
    made = _seq(entries, "outcome", outcome_id=w.from_waiver)
    with _tampered(
        engine, f"UPDATE outcomes SET category = 'parts' WHERE outcome_id = '{w.from_waiver}'"
    ) as report:
        _broken(report, made, f"outcome {w.from_waiver}", "category 'parts'")

    # rules: a version deleted; a rule's status changed
    version = next(
        e.seq
        for e in entries
        if e.kind == "rule_change" and (e.payload.get("rule") or {}).get("version") == 2
    )
    with _tampered(
        engine, "DELETE FROM rule_versions WHERE rule_id = 'rm-life' AND version = 2"
    ) as report:
        _broken(report, version, "rule rm-life version 2", "no row")
    created = _seq(entries, "rule_change", entity_id="rm-red", action="create")
    with _tampered(engine, "UPDATE rules SET active = false WHERE rule_id = 'rm-red'") as report:
        _broken(report, created, "rule rm-red is inactive but audited active")
    reactivated = _seq(entries, "rule_change", rule_id="rm-life", action="activate")
    with _tampered(engine, "UPDATE rules SET active = false WHERE rule_id = 'rm-life'") as report:
        _broken(report, reactivated, "rule rm-life is inactive")

    # the command line, with the tampering committed (the server does nothing meanwhile)
    score, seq = score_of("RM-X0")
    tamper_engine(engine, list(gone))
    env = {"CARAVAN_DATABASE_URL": db_url}
    data = api.app.state.layout.root
    out = caravan_in_process("audit", "verify", data=data, env=env, check=False)
    assert out.returncode == 1 and "intact" not in out.stdout, out.stdout
    assert f"BROKEN at entry seq={seq} " in out.stdout, out.stdout
    assert f"score {score} of shipment RM-X0" in " ".join(out.stdout.split())
    replay = caravan_in_process("audit", "replay", "RM-X0", data=data, env=env, check=False)
    said = " ".join(replay.stderr.split())  # (as wrapped at any width)
    assert replay.returncode == 1 and "no scored shipment" not in said, said
    assert f"score {score} of shipment RM-X0 is recorded by audit entry seq={seq}" in said
    assert "no row in the database" in said
    # --all: the rescored RM-0's older score deleted is named beside the kept one
    with Session(engine) as session:
        older, latest = session.scalars(
            select(m.Score.id).where(m.Score.shipment_id == "RM-0").order_by(m.Score.id)
        ).all()
    tamper_engine(
        engine,
        [
            f"DELETE FROM rule_hits WHERE score_id = {older}",
            f"DELETE FROM scores WHERE id = {older}",
        ],
    )
    every = caravan_in_process("audit", "replay", "RM-0", "--all", data=data, env=env, check=False)
    said = " ".join(every.stdout.split())  # (as wrapped at any width)
    lines = [f"score {line}".strip() for line in said.split("shipment RM-0 score ")[1:]]
    assert every.returncode == 1, every.stdout
    assert len(lines) == 2 and lines[1].startswith(f"score {latest} "), lines
    assert lines[0].startswith(f"score {older} (database): MISMATCH"), lines
    assert "no row in the database" in lines[0] and lines[1].endswith("MATCH"), lines


def audit_report_of(engine: Engine) -> AuditReport:
    with Session(engine) as session:
        return audit_report(session)


def test_a_declaration_wiped_with_its_hash_zeroed_is_found(db_session: Session) -> None:
    """A stored declaration is checked against its own content hash, an empty one
    too (a placeholder exemption would let a wiped declaration with a zeroed hash
    pass)."""
    at = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    digest = content_hash({"shipment": {}, "items": []})
    db_session.add(
        m.Shipment(
            shipment_id="S0", office_code=OFFICE, declared_at=at, payload={}, content_hash=digest
        )
    )
    db_session.commit()
    assert audit_report(db_session).result.ok
    db_session.execute(
        text("UPDATE shipments SET content_hash = :h WHERE shipment_id = 'S0'"), {"h": "0" * 64}
    )
    db_session.commit()
    report = audit_report(db_session)
    assert not report.result.ok and "shipment S0" in report.result.reason
    assert report.broken_seq is None  # no entry records it
