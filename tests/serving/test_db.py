"""Database layer on real SQLite and PostgreSQL: migrations, triggers, constraints."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from data_contracts.settings import DataLayout, Settings
from serving.db import (
    alembic_config,
    current_revision,
    database_url,
    head_revision,
    is_at_head,
    make_engine,
    normalize_url,
    session_factory,
    upgrade,
    write_lock,
)
from serving.orm import AuditLog, Base, Item, Referral, Score, Shipment

NOW = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)


def _shipment(shipment_id: str = "S1") -> Shipment:
    return Shipment(
        shipment_id=shipment_id,
        office_code="KZ-ALA",
        declared_at=NOW,
        payload={"shipment_id": shipment_id, "mode": "road", "nested": {"a": [1, 2.5, None]}},
        content_hash="0" * 64,
    )


def _audit(seq: int = 1, prev_hash: str = "0" * 64) -> AuditLog:
    entry_id = f"e{seq}-{prev_hash[:6]}"
    return AuditLog(
        seq=seq,
        entry_id=entry_id,
        at=NOW,
        kind="user.create",
        actor="admin1",
        entity="user",
        entity_id="officer1",
        payload={"role": "officer"},
        prev_hash=prev_hash,
        hash=hashlib.sha256(f"{prev_hash}\n{seq}:{entry_id}".encode()).hexdigest(),
    )


def test_migrations_create_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert not is_at_head(engine)
        upgrade(db_url)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert {"audit_log", "referrals", "users", "api_keys", "scores"} <= tables
        assert "alembic_version" in tables
        assert current_revision(engine) == head_revision()
        assert is_at_head(engine)
        upgrade(db_url)  # idempotent
        assert is_at_head(engine)
    finally:
        engine.dispose()


def test_models_match_migrations(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_indexes_for_api_lookups(db_engine: Engine) -> None:
    inspector = inspect(db_engine)
    referral_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("referrals")}
    assert ("office_code", "queue_date") in referral_indexes
    assert ("status",) in referral_indexes
    assert ("shipment_id",) in referral_indexes
    score_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("scores")}
    assert ("shipment_id", "scored_at") in score_indexes


def test_audit_log_is_append_only(db_engine: Engine, db_session: Session) -> None:
    db_session.add(_audit())
    db_session.commit()
    with db_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text("UPDATE audit_log SET actor = 'mallory'"))
        connection.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text("DELETE FROM audit_log"))
        connection.rollback()
        if db_engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="append-only"):
                connection.execute(text("TRUNCATE audit_log"))
            connection.rollback()
    db_session.expire_all()
    rows = db_session.scalars(select(AuditLog)).all()
    assert [(r.actor, r.hash) for r in rows] == [("admin1", _audit().hash)]
    # Appending still works.
    db_session.add(_audit(2, rows[0].hash))
    db_session.commit()
    assert db_session.scalars(select(AuditLog.seq).order_by(AuditLog.seq)).all() == [1, 2]


def test_audit_log_orm_update_refused(db_session: Session) -> None:
    entry = _audit()
    db_session.add(entry)
    db_session.commit()
    entry.payload = {"role": "admin"}
    with pytest.raises(DBAPIError, match="append-only"):
        db_session.commit()
    db_session.rollback()


def test_json_and_timestamps_round_trip(db_engine: Engine, db_session: Session) -> None:
    db_session.add(_shipment())
    db_session.flush()
    db_session.add(Item(shipment_id="S1", line_no=1, payload={"hs_code": "930190"}))
    db_session.add(
        Score(
            shipment_id="S1",
            probability=0.25,
            priority=3.5,
            lane="red",
            model_version="caravan-risk/7",
            feature_set_version="fs-1",
            feature_vector={"f": 1.0, "g": None},
            explanation=None,
            scored_at=NOW,
        )
    )
    db_session.commit()
    db_session.expunge_all()
    shipment = db_session.get(Shipment, "S1")
    assert shipment is not None
    assert shipment.payload["nested"] == {"a": [1, 2.5, None]}
    assert shipment.declared_at == NOW
    assert shipment.declared_at.tzinfo is not None
    score = db_session.scalars(select(Score)).one()
    assert score.explanation is None
    assert score.feature_vector == {"f": 1.0, "g": None}


def test_naive_datetime_refused(db_session: Session) -> None:
    shipment = _shipment()
    shipment.declared_at = dt.datetime(2026, 1, 1)
    db_session.add(shipment)
    with pytest.raises(Exception, match="naive datetime"):
        db_session.flush()
    db_session.rollback()


def test_foreign_keys_enforced(db_session: Session) -> None:
    db_session.add(Item(shipment_id="missing", line_no=1, payload={}))
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()


def test_waiver_needs_reason(db_session: Session) -> None:
    db_session.add(_shipment())
    db_session.flush()
    referral = Referral(
        office_code="KZ-ALA",
        queue_date=NOW.date(),
        shipment_id="S1",
        rank=1,
        priority=1.0,
        selection_method="random",
        selection_probability=0.05,
        status="waived",
    )
    db_session.add(referral)
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()
    referral.waiver_reason = "container already sealed under escort"
    db_session.add(_shipment())
    db_session.flush()
    db_session.add(referral)
    db_session.commit()
    assert referral.id is not None


def test_downgrade_to_base_and_back(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert "audit_log" not in inspect(engine).get_table_names()
        upgrade(engine)
        assert is_at_head(engine)
    finally:
        engine.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_database_url(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    assert database_url(Settings(data=tmp_path), layout) == f"sqlite:///{layout.database}"
    pg = Settings(data=tmp_path, database_url="postgresql://u:p%40ss@db:5432/caravan")
    assert database_url(pg, layout) == "postgresql+psycopg://u:p%40ss@db:5432/caravan"
    assert normalize_url("postgres://h/x").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://h/x")


def test_nothing_at_import_time() -> None:
    import importlib
    import sys

    for name in ("serving.db", "serving.orm", "serving.auth", "serving.deps", "serving.app"):
        module = sys.modules.get(name) or importlib.import_module(name)
        assert not [v for v in vars(module).values() if isinstance(v, Engine)]


def test_missing_postgres_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.serving import postgres

    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)  # not root: no install
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not found"):
        postgres.ensure_bindir()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        postgres.ensure_bindir()


def test_forked_chain_refused(db_session: Session) -> None:
    """Two writers chaining onto the same head collide on seq instead of forking."""
    db_session.add(_audit(1))
    db_session.commit()
    db_session.add(_audit(2, "1" * 64))
    db_session.commit()
    db_session.add(_audit(2, "2" * 64))
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()


def test_write_lock_serialises_concurrent_appends(db_engine: Engine) -> None:
    """Threads appending under write_lock build one unbroken chain, on both backends."""
    factory = session_factory(db_engine)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for _ in range(n):
                with factory() as session:
                    write_lock(session, "audit_log")
                    head = session.scalars(
                        select(AuditLog).order_by(AuditLog.seq.desc()).limit(1)
                    ).first()
                    seq = 1 if head is None else head.seq + 1
                    session.add(_audit(seq, "0" * 64 if head is None else head.hash))
                    session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(8,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with factory() as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.seq)).all()
    assert [r.seq for r in rows] == list(range(1, 33))
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash


def test_write_lock_unknown_name(db_session: Session) -> None:
    with pytest.raises(KeyError):
        write_lock(db_session, "nope")
    db_session.rollback()


def _referral_sql(rid: int, method: str) -> str:
    return (
        "INSERT INTO referrals (id, office_code, queue_date, shipment_id, rank, priority, "
        "selection_method, selection_probability, status, over_capacity, created_at) VALUES "
        f"({rid}, 'KZ-ALA', '2026-03-{rid:02d}', 'S1', {rid}, 0.5, '{method}', 1.0, 'open', "
        "false, '2026-03-01 08:00:00')"
    )


def insert_old_shipment(conn: Any) -> None:
    """Shipment S1 (office KZ-ALA) as an older revision's rows: for migration tests."""
    conn.execute(
        text(
            "INSERT INTO shipments (shipment_id, office_code, declared_at, payload, "
            "content_hash, received_at) VALUES ('S1', 'KZ-ALA', '2026-03-01 08:00:00', "
            "'{}', :h, '2026-03-01 08:00:00')"
        ),
        {"h": "0" * 64},
    )


def test_migration_0002_keeps_rows_and_constraints(db_url: str) -> None:
    """0002 on a database with data: rows and references survive the table rebuilds,
    'watchlist' becomes a valid selection method, the other checks stay, and the
    downgrade restores the old rule."""
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            insert_old_shipment(conn)
            conn.execute(text(_referral_sql(1, "model")))
            conn.execute(
                text(
                    "INSERT INTO outcomes (outcome_id, shipment_id, referral_id, selection_method,"
                    " selection_probability, finding, inspected_at, recorded_by, recorded_at) "
                    "VALUES ('O1', 'S1', 1, 'model', 1.0, false, '2026-03-01 09:00:00', 'x', "
                    "'2026-03-01 09:00:00')"
                )
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(_referral_sql(2, "watchlist")))

        upgrade(engine, "0002")
        assert current_revision(engine) == "0002"
        with engine.begin() as conn:
            conn.execute(text(_referral_sql(2, "watchlist")))
            rows = conn.execute(text("SELECT id, selection_method FROM referrals ORDER BY id"))
            assert [tuple(r) for r in rows] == [(1, "model"), (2, "watchlist")]
            assert conn.execute(text("SELECT referral_id FROM outcomes")).scalar() == 1
        for bad in ("'bogus'", None):
            sql = _referral_sql(3, "random").replace("'open'", "'waived'")  # no reason
            if bad:
                sql = _referral_sql(3, "bogus")
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(sql))
        with pytest.raises(IntegrityError), engine.begin() as conn:  # references kept
            conn.execute(text(_referral_sql(4, "model").replace("'S1'", "'NO-SUCH'")))
        with engine.begin() as conn:  # a promotion from the command line: no user needed
            conn.execute(
                text(
                    "INSERT INTO model_promotions (model_name, model_version, alias, "
                    "promoted_by, reason, promoted_at, forced, via) VALUES ('m', '2', "
                    "'champion', 'someone-without-account', 'r', '2026-03-01 10:00:00', "
                    "false, 'cli')"
                )
            )

        with engine.begin() as conn:
            conn.execute(text("DELETE FROM referrals WHERE id = 2"))
            conn.execute(text("DELETE FROM model_promotions"))
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(_referral_sql(2, "watchlist")))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT referral_id FROM outcomes")).scalar() == 1
    finally:
        engine.dispose()
