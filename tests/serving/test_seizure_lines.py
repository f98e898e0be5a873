"""UAT round 2, sup S9: an outcome's seizure lines (the weapons and their rounds, one
line each with its own quantity and unit). Over HTTP on SQLite and PostgreSQL: the
lines are stored, read back in order, audited; the outcome's category / quantity /
unit are the most serious line's; counted units take whole numbers; the single
category / quantity / unit body still works as one line; a correction replaces the
lines; migration 0005 gives each existing outcome its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from alembic import command
from sqlalchemy import select, text

from data_contracts.schemas import ARMS_CATEGORIES, FINDING_CATEGORIES, QUANTITY_UNITS
from serving import orm as m
from serving import policy
from serving.auth import Role
from serving.db import alembic_config, current_revision, make_engine, upgrade
from tests.serving.conftest import DAY, OFFICE, Api, payload
from tests.serving.test_db import insert_old_shipment

API = "/api/v1"
ROUNDS = {"category": "ammunition", "quantity": 150, "unit": "PCE"}
PISTOLS = {"category": "firearms", "quantity": 2, "unit": "PCE"}


def _claimed(api: Api, samples: Any, n: int) -> list[int]:
    """n referrals of the day's queue, claimed by the officer."""
    body = {"records": [payload(samples, i, f"SEIZE-{i:02d}") for i in range(n + 4)]}
    r = api.client.post(f"{API}/shipments/batch", json=body, headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    officer = api.headers(Role.officer)
    queue = api.client.get(f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=officer)
    assert queue.status_code == 200, queue.text
    ids = [int(e["id"]) for e in queue.json()["entries"]][:n]
    assert len(ids) == n
    for rid in ids:
        claimed = api.client.post(f"{API}/referrals/{rid}/claim", headers=officer)
        assert claimed.status_code == 200, claimed.text
    return ids


def _outcome(api: Api, rid: int, body: dict[str, Any], action: str = "outcome") -> Any:
    return api.client.post(
        f"{API}/referrals/{rid}/{action}", json=body, headers=api.headers(Role.officer)
    )


def _stored_lines(api: Api, outcome_id: str) -> list[tuple[int, str, float | None, str | None]]:
    with api.app.state.session_factory() as session:
        rows = session.scalars(
            select(m.OutcomeSeizure)
            .where(m.OutcomeSeizure.outcome_id == outcome_id)
            .order_by(m.OutcomeSeizure.line_no)
        )
        return [(r.line_no, r.category, r.quantity, r.unit) for r in rows]


def _outcome_audit(api: Api, sid: str) -> list[dict[str, Any]]:
    r = api.client.get(
        f"{API}/audit", params={"shipment_id": sid}, headers=api.headers(Role.auditor)
    )
    assert r.status_code == 200, r.text
    return [e["payload"] for e in r.json() if e["kind"] == "outcome"]


def _refused(r: Any) -> list[tuple[list[Any], str]]:
    assert r.status_code == 422, r.text
    return [(e["loc"], e["msg"]) for e in r.json()["detail"]]


def test_weapons_and_rounds_are_two_lines_read_back_in_order(world_api: Api, samples: Any) -> None:
    api = world_api
    rounds_first, old_client, refused = _claimed(api, samples, 3)

    # the rounds given first, the pistols second: stored and read back in that order;
    # the outcome's own category / quantity / unit are the pistols' (more serious)
    r = _outcome(
        api,
        rounds_first,
        {"finding": True, "seizures": [ROUNDS, PISTOLS], "notes": "2 PM pistols, 150 rounds"},
    )
    assert r.status_code == 200, r.text
    out = r.json()["referral"]["outcome"]
    assert out["seizures"] == [
        {"category": "ammunition", "quantity": 150.0, "unit": "PCE"},
        {"category": "firearms", "quantity": 2.0, "unit": "PCE"},
    ]
    assert (out["category"], out["quantity"], out["unit"]) == ("firearms", 2.0, "PCE")
    outcome_id = r.json()["outcome_id"]
    assert _stored_lines(api, outcome_id) == [
        (1, "ammunition", 150.0, "PCE"),
        (2, "firearms", 2.0, "PCE"),
    ]
    queue = api.client.get(
        f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.officer)
    ).json()
    listed = next(e for e in queue["entries"] if e["id"] == rounds_first)
    assert listed["outcome"]["seizures"] == out["seizures"]
    sid = listed["shipment_id"]
    (entry,) = _outcome_audit(api, sid)
    assert entry["category"] == "firearms"
    assert entry["seizures"] == out["seizures"]
    # the label file (what training reads) holds the principal line, as before
    label = pl.read_parquet(
        Path(api.app.state.layout.root) / "raw" / "outcomes" / f"api-{outcome_id}.parquet"
    ).row(0, named=True)
    assert (label["finding_category"], label["quantity_seized"], label["seized_unit"]) == (
        "firearms",
        2.0,
        "PCE",
    )

    # a client written against the single fields: one line
    r = _outcome(
        api, old_client, {"finding": True, "category": "parts", "quantity": 3.5, "unit": "KGM"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["referral"]["outcome"]["seizures"] == [
        {"category": "parts", "quantity": 3.5, "unit": "KGM"}
    ]
    assert _stored_lines(api, r.json()["outcome_id"]) == [(1, "parts", 3.5, "KGM")]

    # refused, each naming its field, and nothing recorded
    assert _refused(
        _outcome(
            api,
            refused,
            {
                "finding": True,
                "seizures": [{"category": "firearms", "quantity": 2.5, "unit": "PCE"}],
            },
        )
    ) == [
        (
            ["body", "seizures", 0, "quantity"],
            "seizures[0].quantity: PCE counts things: the quantity must be a whole number, not 2.5",
        )
    ]
    (problem,) = _refused(
        _outcome(
            api, refused, {"finding": True, "category": "firearms", "quantity": 2.5, "unit": "PCE"}
        )
    )
    assert problem[0] == ["body", "quantity"] and problem[1].startswith("quantity: PCE counts")
    (problem,) = _refused(
        _outcome(api, refused, {"finding": True, "seizures": [PISTOLS], "category": "firearms"})
    )
    assert problem[0] == ["body", "seizures"]
    assert "not both" in problem[1] and "also given: category" in problem[1]
    problems = _refused(
        _outcome(
            api,
            refused,
            {
                "finding": True,
                "seizures": [
                    PISTOLS,
                    {"category": "firearms", "quantity": 1, "unit": "PCE"},
                    {"quantity": 3, "unit": "KGM"},
                    {"category": "ammunition", "unit": "PCE"},
                    {"category": "explosives", "quantity": 1.5},
                ],
            },
        )
    )
    assert [loc for loc, _ in problems] == [
        ["body", "seizures", 1, "category"],
        ["body", "seizures", 2, "category"],
        ["body", "seizures", 3, "quantity"],
        ["body", "seizures", 4, "unit"],
    ]
    assert problems[0][1].startswith(
        "seizures[1].category: the same category and unit as seizures[0]"
    )
    problems = _refused(_outcome(api, refused, {"finding": False, "seizures": [ROUNDS]}))
    assert problems == [
        (
            ["body", "seizures", 0, "category"],
            "seizures[0].category: a finding category was given but finding is false",
        ),
        (
            ["body", "seizures", 0, "quantity"],
            "seizures[0].quantity: a quantity seized needs a finding",
        ),
    ]
    (problem,) = _refused(_outcome(api, refused, {"finding": True, "seizures": []}))
    assert problem[0] == ["body", "seizures"] and "needs a finding category" in problem[1]
    (problem,) = _refused(_outcome(api, refused, {"finding": True, "seizures": [PISTOLS] * 11}))
    assert problem[0] == ["body", "seizures"]
    status = api.client.get(
        f"{API}/queues/{OFFICE}/{DAY.isoformat()}", headers=api.headers(Role.officer)
    ).json()
    assert next(e for e in status["entries"] if e["id"] == refused)["status"] == "claimed"

    # no finding, no lines (nothing to store)
    r = _outcome(api, refused, {"finding": False, "seizures": []})
    assert r.status_code == 200, r.text
    assert r.json()["referral"]["outcome"]["seizures"] == []
    assert r.json()["referral"]["outcome"]["category"] is None


def test_a_correction_replaces_the_lines_and_the_audit_keeps_both(
    world_api: Api, samples: Any
) -> None:
    api = world_api
    (rid,) = _claimed(api, samples, 1)
    r = _outcome(api, rid, {"finding": True, "seizures": [ROUNDS]})
    assert r.status_code == 200, r.text
    outcome_id = r.json()["outcome_id"]
    sid = r.json()["referral"]["shipment_id"]
    body = {
        "finding": True,
        "seizures": [ROUNDS, PISTOLS],
        "reason": "the two pistols were under the seat, found after the report",
    }
    fixed = _outcome(api, rid, body, "outcome/correct")
    assert fixed.status_code == 200, fixed.text
    out = fixed.json()["referral"]["outcome"]
    assert fixed.json()["outcome_id"] == outcome_id
    assert (out["category"], out["quantity"]) == ("firearms", 2.0)
    assert [s["category"] for s in out["seizures"]] == ["ammunition", "firearms"]
    assert _stored_lines(api, outcome_id) == [
        (1, "ammunition", 150.0, "PCE"),
        (2, "firearms", 2.0, "PCE"),
    ]
    # the same lines again: nothing to correct
    again = _outcome(api, rid, body, "outcome/correct")
    assert again.status_code == 409, again.text
    # a fractional count refused in a correction too, naming the line
    (problem,) = _refused(
        _outcome(
            api,
            rid,
            {
                "finding": True,
                "seizures": [ROUNDS, {**PISTOLS, "quantity": 1.5}],
                "reason": "x",
            },
            "outcome/correct",
        )
    )
    assert problem[0] == ["body", "seizures", 1, "quantity"]
    # the old single-field correction: one line again
    single = _outcome(
        api,
        rid,
        {"finding": True, **PISTOLS, "reason": "the rounds were blanks, not seized"},
        "outcome/correct",
    )
    assert single.status_code == 200, single.text
    assert _stored_lines(api, outcome_id) == [(1, "firearms", 2.0, "PCE")]

    first, correction, second = _outcome_audit(api, sid)
    assert first["seizures"] == [{"category": "ammunition", "quantity": 150.0, "unit": "PCE"}]
    assert correction["action"] == "correct"
    assert correction["before"]["seizures"] == first["seizures"]
    assert correction["after"]["seizures"] == out["seizures"]
    assert correction["seizures"] == out["seizures"]
    assert correction["category"] == "firearms"
    assert second["before"]["seizures"] == out["seizures"]
    assert second["after"]["seizures"] == [{"category": "firearms", "quantity": 2.0, "unit": "PCE"}]


def test_the_order_of_seriousness_keeps_the_labels_meaning() -> None:
    """Every category has its place; the arms categories (the `arms` label) come
    before the others, so an outcome is an arms finding exactly when one of its
    lines is; the principal line is the first of the most serious category."""
    assert sorted(policy.SEIZURE_ORDER) == sorted(FINDING_CATEGORIES)
    arms = [policy.SEIZURE_ORDER.index(c) for c in ARMS_CATEGORIES]
    others = [policy.SEIZURE_ORDER.index(c) for c in FINDING_CATEGORIES if c not in ARMS_CATEGORIES]
    assert max(arms) < min(others)
    lines = [
        policy.SeizureLine("dual_use", 3, "KGM"),
        policy.SeizureLine("ammunition", 100, "PCE"),
        policy.SeizureLine("parts", 1.5, "KGM"),
        policy.SeizureLine("parts", 4, "PCE"),
    ]
    assert policy.principal_line(lines) == lines[2]
    outcome = policy.InspectionOutcome(True, seizures=tuple(lines))
    assert (outcome.finding_category, outcome.quantity_seized, outcome.seized_unit) == (
        "parts",
        1.5,
        "KGM",
    )
    assert policy.seizure_problems(True, lines) == []
    assert set(QUANTITY_UNITS) >= policy.COUNTED_UNITS


def _old_outcome_sql(oid: str, rid: int, values: str) -> str:
    return (
        "INSERT INTO outcomes (outcome_id, shipment_id, referral_id, selection_method, "
        "selection_probability, finding, category, quantity, unit, inspected_at, recorded_by, "
        f"recorded_at) VALUES ('{oid}', 'S1', {rid}, 'model', 1.0, {values}, "
        "'2026-03-01 09:00:00', 'x', '2026-03-01 09:00:00')"
    )


def test_migration_0005_gives_each_old_outcome_its_line(db_url: str) -> None:
    """Outcomes recorded before 0005 (one category, quantity and unit each) get one
    seizure line each; no finding, no line; the downgrade drops the lines only."""
    upgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            insert_old_shipment(conn)
            for rid in (1, 2, 3, 4):
                conn.execute(
                    text(
                        "INSERT INTO referrals (id, office_code, queue_date, shipment_id, rank, "
                        "priority, selection_method, selection_probability, status, "
                        "over_capacity, created_at) VALUES "
                        f"({rid}, 'KZ-ALA', '2026-03-0{rid}', 'S1', {rid}, 0.5, 'model', 1.0, "
                        "'open', false, '2026-03-01 08:00:00')"
                    )
                )
            conn.execute(text(_old_outcome_sql("O1", 1, "true, 'firearms', 2.5, 'PCE'")))
            conn.execute(text(_old_outcome_sql("O2", 2, "false, NULL, NULL, NULL")))
            conn.execute(text(_old_outcome_sql("O3", 3, "true, 'documentary', NULL, 'PCE'")))
            conn.execute(text(_old_outcome_sql("O4", 4, "true, 'explosives', 12.5, 'KGM'")))

        upgrade(engine)
        assert current_revision(engine) == "0005"
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT outcome_id, line_no, category, quantity, unit FROM outcome_seizures "
                    "ORDER BY outcome_id"
                )
            )
            assert [tuple(r) for r in rows] == [
                ("O1", 1, "firearms", 2.5, "PCE"),  # (as recorded: not checked again)
                ("O3", 1, "documentary", None, None),  # a unit without a quantity: dropped
                ("O4", 1, "explosives", 12.5, "KGM"),
            ]
            outcomes = conn.execute(text("SELECT outcome_id, unit FROM outcomes ORDER BY 1"))
            assert [tuple(r) for r in outcomes] == [
                ("O1", "PCE"),
                ("O2", None),
                ("O3", "PCE"),
                ("O4", "KGM"),
            ]

        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert current_revision(engine) == "0004"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM outcomes")).scalar() == 4
            with pytest.raises(Exception, match="outcome_seizures"):
                conn.execute(text("SELECT * FROM outcome_seizures"))
    finally:
        engine.dispose()
