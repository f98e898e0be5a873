"""The API end to end over HTTP, on SQLite and PostgreSQL, with a real trained model:
ingest -> queue -> claim -> outcome -> label; idempotency; batch errors; waivers;
office isolation; the role matrix; audit tampering; replay; hot swap of the champion."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from sqlalchemy import text

from data_contracts.settings import DataLayout
from serving.auth import Role, create_user
from serving.deps import endpoint_roles
from tests.serving.conftest import (
    DAY,
    OFFICE,
    Api,
    add_users,
    build_app,
    password_for,
    payload,
    uvicorn_server,
)

API = "/api/v1"


def _batch(api: Api, records: list[dict[str, Any]], role: Role = Role.analyst) -> Any:
    r = api.client.post(
        f"{API}/shipments/batch", json={"records": records}, headers=api.headers(role)
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_ingest_queue_claim_outcome_becomes_training_label(world_api: Api, samples: Any) -> None:
    api = world_api
    officer = api.headers(Role.officer)
    records = [payload(samples, i, f"API-{i:03d}") for i in range(25)]
    bad_country = payload(samples, 25, "API-BAD1")
    bad_country["origin_country"] = "XX"
    missing = payload(samples, 26, "API-BAD2")
    del missing["consignee_name"]
    extra = payload(samples, 27, "API-BAD3")
    extra["surprise"] = 1
    body = _batch(api, [*records[:10], bad_country, *records[10:], missing, extra])
    assert len(body["stored"]) == 25
    errors = {(e["index"], e["field"]) for e in body["errors"]}
    assert (10, "origin_country") in errors
    assert (26, "consignee_name") in errors
    assert (27, "surprise") in errors
    assert all(e["reason"] for e in body["errors"])

    detail = api.client.get(f"{API}/shipments/API-001", headers=officer).json()
    assert detail["model_version"] == "1" and detail["feature_set_version"]
    assert detail["lane"] in ("red", "yellow", "green") and 0 <= detail["probability"] <= 1
    expl = api.client.get(f"{API}/shipments/API-001/explanation", headers=officer)
    assert expl.status_code == 200, expl.text
    assert isinstance(expl.json()["reasons"], list)

    queue = api.client.get(f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=officer).json()
    assert queue["built_now"] is True and queue["entries"]
    assert len(queue["entries"]) == min(25, queue["capacity"])
    methods = {e["selection_method"] for e in queue["entries"]}
    assert "random" in methods
    again = api.client.get(f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=officer).json()
    assert again["built_now"] is False
    assert [e["id"] for e in again["entries"]] == [e["id"] for e in queue["entries"]]

    first, second = queue["entries"][0], queue["entries"][1]
    claimed = api.client.post(f"{API}/referrals/{first['id']}/claim", headers=officer)
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "officer1"
    twice = api.client.post(f"{API}/referrals/{first['id']}/claim", headers=officer)
    assert twice.status_code == 409
    outcome = api.client.post(
        f"{API}/referrals/{first['id']}/outcome",
        json={"finding": True, "category": "firearms", "quantity": 2, "unit": "PCE", "notes": "x"},
        headers=officer,
    )
    assert outcome.status_code == 200, outcome.text
    assert outcome.json()["referral"]["status"] == "inspected"
    assert outcome.json()["referral"]["decided_by"] == "officer1"

    # waiver: refused without a reason
    assert api.client.post(f"{API}/referrals/{second['id']}/claim", headers=officer).is_success
    for bad in ({}, {"reason": "   "}):
        r = api.client.post(f"{API}/referrals/{second['id']}/waive", json=bad, headers=officer)
        assert r.status_code == 422
    ok = api.client.post(
        f"{API}/referrals/{second['id']}/waive", json={"reason": "seal intact"}, headers=officer
    )
    assert ok.status_code == 200 and ok.json()["waiver_reason"] == "seal intact"

    # the outcome is a label for the next training run
    from models.dataset import Target, labels
    from pipelines.modelling import read_outcomes
    from pipelines.validate import run_validate

    layout = DataLayout(Path(api.app.state.layout.root))
    run_validate(layout, gx=False)
    lab = labels(read_outcomes(layout), Target.ARMS).filter(
        pl.col("shipment_id") == first["shipment_id"]
    )
    assert lab.height == 1 and lab["label"][0] == 1
    assert lab["selection_probability"][0] == pytest.approx(first["selection_probability"])

    audit = api.client.get(
        f"{API}/audit",
        params={"shipment_id": first["shipment_id"]},
        headers=api.headers(Role.auditor),
    ).json()
    kinds = [e["kind"] for e in audit]
    assert kinds[0] == "score" and "outcome" in kinds and "queue_decision" in kinds
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor)).json()
    assert verify["ok"] is True and verify["entries"] > 25


def test_idempotent_ingest_and_conflict(world_api: Api, samples: Any) -> None:
    api = world_api
    headers = api.headers(Role.officer)
    body = payload(samples, 3, "API-IDEM")
    first = api.client.post(f"{API}/shipments", json=body, headers=headers)
    assert first.status_code == 201, first.text
    same = api.client.post(f"{API}/shipments", json=body, headers=headers)
    assert same.status_code == 200 and same.json() == first.json()
    changed = {**body, "gross_mass_kg": body["gross_mass_kg"] + 1}
    assert api.client.post(f"{API}/shipments", json=changed, headers=headers).status_code == 409
    batch = _batch(api, [body, changed])
    assert [s["shipment_id"] for s in batch["unchanged"]] == ["API-IDEM"]
    assert batch["errors"][0]["index"] == 1 and batch["errors"][0]["field"] == "shipment_id"
    bad = {**body, "package_count": "3"}  # strict: no lax parsing
    r = api.client.post(f"{API}/shipments", json=bad, headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "package_count"]


def test_officer_of_another_office_is_forbidden(world_api: Api, samples: Any) -> None:
    api = world_api
    _batch(api, [payload(samples, i, f"API-O{i}") for i in range(3)])
    with api.app.state.session_factory() as session:
        create_user(
            session,
            username="officer2",
            password=password_for(Role.officer),
            role=Role.officer,
            display_name="Other office",
            office_code="KZ-OTHER",
        )
        session.commit()
    login = api.client.post(
        f"{API}/auth/login", data={"username": "officer2", "password": password_for(Role.officer)}
    )
    other = {"Authorization": f"Bearer {login.json()['access_token']}"}
    day = DAY.isoformat()
    assert api.client.get(f"{API}/queues/{OFFICE}/{day}", headers=other).status_code == 403
    assert api.client.get(f"{API}/queues/{OFFICE}/overdue", headers=other).status_code == 403
    assert api.client.get(f"{API}/shipments/API-O1", headers=other).status_code == 403
    entries = api.client.get(
        f"{API}/queues/{OFFICE}/{day}", headers=api.headers(Role.officer)
    ).json()["entries"]
    r = api.client.post(f"{API}/referrals/{entries[0]['id']}/claim", headers=other)
    assert r.status_code == 403
    r = api.client.post(f"{API}/shipments", json=payload(samples, 9, "API-O9"), headers=other)
    assert r.status_code == 403


def _fill(path: str) -> str:
    values = {
        "office": OFFICE,
        "day": DAY.isoformat(),
        "shipment_id": "NO-SUCH",
        "referral_id": "999999",
        "rule_id": "no-such-rule",
        "record_id": "NO-SUCH",
        "key_id": "999999",
        "version": "999999",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_role_matrix(world_api: Api) -> None:
    api = world_api
    matrix = endpoint_roles(api.app)
    promoters = {Role.data_scientist, Role.admin}
    assert matrix[("POST", f"{API}/models/{{version}}/promote")] == promoters
    assert matrix[("GET", f"{API}/models")] == promoters | {Role.auditor}
    assert matrix[("GET", f"{API}/models/promotions")] == promoters | {Role.auditor}
    headers = {role: api.headers(role) for role in Role}
    checked = 0
    for (method, path), allowed in sorted(matrix.items()):
        if allowed is None:
            continue
        for role in Role:
            r = api.client.request(method, _fill(path), headers=headers[role], content=b"")
            if role in allowed:
                assert r.status_code not in (401, 403), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
            checked += 1
        if path == f"{API}/auth/logout":  # every role has just signed out: sign in again
            headers = {role: api.headers(role) for role in Role}
    assert checked >= 5 * 25


def _tamper(api: Api, statements: list[str]) -> None:
    tamper_engine(api.app.state.engine, statements)


def tamper_engine(engine: Any, statements: list[str]) -> None:
    """Run SQL with the append-only triggers of audit_log out of the way."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            triggers = [
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT sql FROM sqlite_master "
                        "WHERE type='trigger' AND tbl_name='audit_log'"
                    )
                )
            ]
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
            for sql in statements:
                conn.execute(text(sql))
            for sql in triggers:
                conn.execute(text(sql))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            for sql in statements:
                conn.execute(text(sql))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def _verify(api: Api) -> dict[str, Any]:
    r = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor))
    assert r.status_code == 200
    return dict(r.json())


@pytest.mark.parametrize("how", ["edit", "delete", "reorder"])
def test_audit_tampering_detected(
    world_api: Api, samples: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world_api
    _batch(api, [payload(samples, i, f"API-T{i}") for i in range(6)])
    assert _verify(api)["ok"] is True
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, entry_id FROM audit_log ORDER BY seq")).all()
    assert len(rows) >= 6
    target = rows[2]
    if how == "edit":
        sql = [f"UPDATE audit_log SET actor = 'mallory' WHERE seq = {target.seq}"]
        expect = target
    elif how == "delete":
        sql = [f"DELETE FROM audit_log WHERE seq = {target.seq}"]
        expect = rows[3]
    else:  # swap the contents of entries 3 and 4 (their places in the chain)
        a, b = rows[2].seq, rows[3].seq
        sql = [
            f"UPDATE audit_log SET seq = -1 WHERE seq = {a}",
            f"UPDATE audit_log SET seq = {a} WHERE seq = {b}",
            f"UPDATE audit_log SET seq = {b} WHERE seq = -1",
        ]
        expect = rows[3]
        sql = [s.replace("-1", "1000000") for s in sql]  # seq >= 1 is checked
    _tamper(api, sql)
    result = _verify(api)
    assert result["ok"] is False
    assert result["first_broken_entry_id"] == expect.entry_id, result
    assert result["reason"]

    if api.app.state.engine.dialect.name == "sqlite":
        from typer.testing import CliRunner

        from pipelines.cli_serving import audit_app

        monkeypatch.setenv("CARAVAN_DATABASE_URL", str(api.app.state.settings.database_url))
        root = str(api.app.state.layout.root)
        out = CliRunner().invoke(audit_app, ["verify", "--data", root])
        assert out.exit_code == 1
        assert expect.entry_id in out.output


def test_replay_equals_stored_score(
    world_api: Api, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world_api
    _batch(api, [payload(samples, i, f"API-R{i}") for i in range(3)])
    from serving.services import replay

    with api.app.state.session_factory() as session:
        result = replay(session, api.app.state.services.holder, "API-R1")
    assert result["matches"] is True
    assert result["recomputed"] == pytest.approx(result["stored"], rel=1e-12)

    from typer.testing import CliRunner

    from pipelines.cli_serving import audit_app

    monkeypatch.setenv("CARAVAN_DATABASE_URL", str(api.app.state.settings.database_url))
    out = CliRunner().invoke(
        audit_app, ["replay", "API-R1", "--data", str(api.app.state.layout.root)]
    )
    assert out.exit_code == 0, out.output
    assert "MATCH" in out.output


def test_traveller_masking_and_logged_view(world_api: Api, world: Path) -> None:
    api = world_api
    row = pl.read_parquet(world / "validated" / "travellers.parquet").head(1).to_dicts()[0]
    record = {
        k: (v.isoformat() if isinstance(v, dt.date | dt.datetime) else v) for k, v in row.items()
    }
    record["traveller_record_id"] = "API-TR1"
    r = api.client.post(f"{API}/travellers", json=record, headers=api.headers(Role.officer))
    assert r.status_code == 403, r.text  # the feed (or an admin) stores traveller records
    r = api.client.post(f"{API}/travellers", json=record, headers=api.headers(Role.analyst))
    assert r.status_code == 201, r.text
    assert r.json()["record"]["surname"] == "***"
    plain = api.client.get(f"{API}/travellers/API-TR1", headers=api.headers(Role.analyst)).json()
    assert plain["masked"] is True and plain["record"]["document_number"] == "***"
    ds = api.client.get(
        f"{API}/travellers/API-TR1",
        params={"purpose": "model debugging"},
        headers=api.headers(Role.data_scientist),
    )
    assert ds.status_code == 403
    # an officer unmasks only for a linked shipment of their office (test_uat_ingest)
    officer = api.client.get(
        f"{API}/travellers/API-TR1",
        params={"purpose": "case 2025/17 investigation"},
        headers=api.headers(Role.officer),
    )
    assert officer.status_code == 422
    seen = api.client.get(
        f"{API}/travellers/API-TR1",
        params={"purpose": "case 2025/17 investigation"},
        headers=api.headers(Role.analyst),
    ).json()
    assert seen["masked"] is False and seen["record"]["surname"] == row["surname"]
    log = api.client.get(
        f"{API}/audit", params={"kind": "personal_data_view"}, headers=api.headers(Role.auditor)
    ).json()
    assert log[-1]["payload"]["purpose"] == "case 2025/17 investigation"
    assert log[-1]["actor"] == "analyst1"


def test_rules_lifecycle(world_api: Api, samples: Any) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    rule = {
        "id": "arms-9305",
        "name": "Gun parts",
        "severity": "must_inspect",
        "condition": {"any": [{"field": "item.hs_code", "op": "starts_with", "value": "9"}]},
    }
    r = api.client.post(f"{API}/rules", json=rule, headers=analyst)
    assert r.status_code == 201, r.text and r.json()["version"] == 1
    bad = {
        **rule,
        "id": "bad-rule",
        "condition": {"all": [{"field": "nope", "op": "eq", "value": 1}]},
    }
    r = api.client.post(f"{API}/rules", json=bad, headers=analyst)
    assert r.status_code == 422
    assert r.json()["detail"][0]["path"].startswith("condition.all[0]")
    assert api.client.post(f"{API}/rules", json=rule, headers=analyst).status_code == 409
    update = {k: v for k, v in rule.items() if k != "id"} | {"severity": "high"}
    r = api.client.put(f"{API}/rules/arms-9305", json=update, headers=analyst)
    assert r.status_code == 200 and r.json()["version"] == 2
    versions = api.client.get(f"{API}/rules/arms-9305/versions", headers=analyst).json()
    assert [v["version"] for v in versions] == [1, 2]
    exported = api.client.get(f"{API}/rules/export", headers=analyst)
    assert "arms-9305" in exported.text
    same = api.client.post(
        f"{API}/rules/import",
        content=exported.text.encode(),
        headers={**analyst, "Content-Type": "application/yaml"},
    ).json()
    assert same["unchanged"] == ["arms-9305"] and same["created"] == []
    body = _batch(api, [payload(samples, i, f"API-RU{i}") for i in range(5)])
    hit = [s for s in body["stored"] if s["rule_hits"]]
    for s in hit:
        assert s["rule_hits"][0] == {"rule_id": "arms-9305", "rule_version": 2, "severity": "high"}
    perf = api.client.get(f"{API}/rules/performance", headers=analyst).json()
    assert perf[0]["rule_id"] == "arms-9305" and perf[0]["hits"] == len(hit)


def test_hot_swap_under_concurrent_requests(
    db_url: str, tmp_path: Path, world: Path, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "postgresql" in db_url:
        pytest.skip("the swap does not depend on the database; run once")
    monkeypatch.setenv("CARAVAN_MODEL_REFRESH_SECONDS", "0.2")
    data = tmp_path / "data"
    shutil.copytree(world, data)
    app = build_app(db_url, data, max_body_bytes=2 * 1024 * 1024)
    layout = DataLayout(data)
    with uvicorn_server(app) as base:
        add_users(app)
        with httpx.Client(base_url=base, timeout=60) as client:
            token = client.post(
                f"{API}/auth/login",
                data={"username": "analyst1", "password": password_for(Role.analyst)},
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            results: list[tuple[int, str]] = []
            lock = threading.Lock()

            def one(i: int) -> None:
                r = client.post(
                    f"{API}/shipments", json=payload(samples, i, f"API-H{i}"), headers=headers
                )
                with lock:
                    results.append((r.status_code, r.json().get("model_version", r.text)))

            def promote() -> None:
                from models.registry import Registry

                reg = Registry(layout.mlflow_db, layout.mlflow_artifacts)
                booster, _ = reg.load("1")
                with reg.run("hot-swap"):
                    version = reg.log_model(booster, {"note": "test"})
                reg.set_alias("champion", version)

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(one, i) for i in range(8)]
                futures.append(pool.submit(promote))
                futures += [pool.submit(one, i) for i in range(8, 14)]
                for f in futures:
                    f.result()
            assert [s for s, _ in results] == [201] * 14, results
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
            version = "1"
            i = 100
            while version != "2" and dt.datetime.now(dt.UTC) < deadline:
                i += 1
                r = client.post(
                    f"{API}/shipments", json=payload(samples, i, f"API-H{i}"), headers=headers
                )
                assert r.status_code == 201
                version = r.json()["model_version"]
            assert version == "2"


def test_queue_takes_shipments_that_arrive_after_it_was_built(world_api: Api, samples: Any) -> None:
    """A queue is built on first view, then later arrivals of the same day are placed
    within the capacity left (audited as an extension); earlier entries keep their
    ids and ranks; a view with nothing new places nothing and writes no audit entry."""
    api = world_api
    officer = api.headers(Role.officer)
    url = f"{API}/queues/{OFFICE}/{DAY.isoformat()}"
    _batch(api, [payload(samples, i, f"EARLY-{i}") for i in range(3)])
    first = api.client.get(url, headers=officer).json()
    assert first["built_now"] is True and len(first["entries"]) == 3
    assert first["capacity"] > 5

    _batch(api, [payload(samples, 10 + i, f"LATE-{i}") for i in range(2)])
    second = api.client.get(url, headers=officer).json()
    assert second["built_now"] is True
    assert [e["id"] for e in second["entries"][:3]] == [e["id"] for e in first["entries"]]
    assert {e["shipment_id"] for e in second["entries"][3:]} == {"LATE-0", "LATE-1"}
    assert [e["rank"] for e in second["entries"]] == [1, 2, 3, 4, 5]

    auditor = api.headers(Role.auditor)
    before = api.client.get(f"{API}/audit/verify", headers=auditor).json()["entries"]
    third = api.client.get(url, headers=officer).json()
    assert third["built_now"] is False and len(third["entries"]) == 5
    assert api.client.get(f"{API}/audit/verify", headers=auditor).json()["entries"] == before
    extended = api.client.get(
        f"{API}/audit", params={"kind": "queue_extended"}, headers=auditor
    ).json()
    assert len(extended) == 1
    assert {e["shipment_id"] for e in extended[0]["payload"]["entries"]} == {"LATE-0", "LATE-1"}

    # An empty day builds nothing and records nothing, however often it is viewed.
    empty = f"{API}/queues/{OFFICE}/{(DAY + dt.timedelta(days=40)).isoformat()}"
    for _ in range(2):
        view = api.client.get(empty, headers=officer).json()
        assert view["entries"] == [] and view["built_now"] is False
    assert api.client.get(f"{API}/audit/verify", headers=auditor).json()["entries"] == before
