"""`caravan demo-serve` on a small trained world: the real command in a subprocess,
then every printed account logs in over HTTP and the officer's queue for the printed
day is not empty; the setup is idempotent and the audit chain intact."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue

import httpx
import polars as pl
import pytest

from data_contracts.settings import DataLayout, Settings
from tests.conftest import ROOT

CARAVAN = (sys.executable, "-m", "pipelines")
ROLES = ("officer", "analyst", "data_scientist", "auditor", "admin")
ACCOUNT = re.compile(r"^\s+(" + "|".join(ROLES) + r")\s+(\S+)\s+(\S+)(?:\s+office\s+(\S+))?\s*$")


@pytest.fixture(scope="module")
def demo_world(small_world: DataLayout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small validated world with the example watchlist, features and a champion."""
    from data_contracts.loaders.national import load_national_csv
    from pipelines.features import WATCHLIST_FILE, run_features
    from pipelines.modelling import run_promote, run_train
    from pipelines.validate import write_parquet

    root = tmp_path_factory.mktemp("demo") / "data"
    shutil.copytree(small_world.root, root)
    layout = DataLayout(root)
    national = ROOT / "data_contracts" / "reference" / "national_watchlist_example.csv"
    write_parquet(load_national_csv(national, "KZ-demo"), layout.validated / WATCHLIST_FILE)
    run_features(layout)
    run_train(layout)
    run_promote(layout, "1", who="test", reason=None)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(stream: object, sink: Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.put(line)


def test_redated_slice_moves_the_last_day_to_today(demo_world: Path) -> None:
    from pipelines.cli_demo import redated_slice

    ships = pl.read_parquet(demo_world / "validated" / "shipments.parquet")
    items = pl.read_parquet(demo_world / "validated" / "items.parquet")
    today = dt.date(2030, 6, 15)
    moved, lines, shift = redated_slice(ships, items, today, days=1)
    last = ships["declared_at"].max()
    assert isinstance(last, dt.datetime)
    originals = ships.filter(pl.col("declared_at").dt.date() == last.date())
    assert moved.height == originals.height > 0
    assert shift == (today - last.date()).days
    assert set(moved["declared_at"].dt.date().to_list()) == {today}
    # the same shipments, whole days later, under ids marked with the day
    assert sorted(moved["shipment_id"].to_list()) == sorted(
        f"{s}-D300615" for s in originals["shipment_id"].to_list()
    )
    back = moved.with_columns(
        pl.col("shipment_id").str.replace("-D300615", "", literal=True),
        pl.col("declared_at") - dt.timedelta(days=shift),
        pl.col("expected_arrival_at") - dt.timedelta(days=shift),
    )
    assert back.sort("shipment_id").equals(originals.sort("shipment_id"))
    # every goods line of those shipments follows them, and only those
    expected = items.join(originals.select("shipment_id"), on="shipment_id", how="semi")
    assert lines.height == expected.height
    assert set(lines["shipment_id"].to_list()) <= set(moved["shipment_id"].to_list())
    assert lines["item_id"].str.ends_with("-D300615").all()


def test_demo_serve_accounts_log_in_and_queue_is_filled(demo_world: Path) -> None:
    port = _free_port()
    env = {**os.environ, "COLUMNS": "200", "CARAVAN_MODEL_REFRESH_SECONDS": "60"}
    env.pop("CARAVAN_DATABASE_URL", None)
    proc = subprocess.Popen(
        [*CARAVAN, "demo-serve", "--data", str(demo_world), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: Queue[str] = Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while not any("Ctrl-C stops the server" in x for x in seen):
            try:
                seen.append(lines.get(timeout=1))
            except Empty:
                assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
        text = "".join(seen)
        day = dt.date.fromisoformat(re.search(r"Queue day: (\S+)", text).group(1))  # type: ignore[union-attr]
        assert day == dt.datetime.now(dt.UTC).date() or (
            dt.datetime.now(dt.UTC).date() - day
        ) == dt.timedelta(days=1)
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/docs" in text and f"Caravan: {url}/" in text
        assert f"Sign in (web pages): {url}/web/login" in text
        accounts = {m.group(1): m.groups()[1:] for x in seen if (m := ACCOUNT.match(x))}
        assert set(accounts) == set(ROLES), text

        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "".join(seen)
                assert time.monotonic() < deadline
                time.sleep(0.2)
            login_page = client.get("/web/login")
            assert login_page.status_code == 200 and "<form" in login_page.text
            tokens = {}
            for role, (user, password, office) in accounts.items():
                r = client.post("/api/v1/auth/login", data={"username": user, "password": password})
                assert r.status_code == 200, (role, r.text)
                tokens[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}
                me = client.get("/api/v1/auth/me", headers=tokens[role]).json()
                assert me["role"] == role and me["username"] == user
                assert me["office_code"] == office
            office = accounts["officer"][2]
            queue = client.get(f"/api/v1/queues/{office}/{day}", headers=tokens["officer"])
            assert queue.status_code == 200, queue.text
            entries = queue.json()["entries"]
            assert entries, "the officer's queue for the printed day is empty"
            assert queue.json()["built_now"] is False  # filled by the demo, not on demand
            assert all(e["status"] == "open" for e in entries)
            # the entries are shipments declared on that day, at the officer's office
            first = client.get(
                f"/api/v1/shipments/{entries[0]['shipment_id']}", headers=tokens["officer"]
            ).json()
            assert first["office_code"] == office
            assert dt.datetime.fromisoformat(first["declared_at"]).date() == day
            printed = re.search(rf"[:,] {re.escape(office)} (\d+)\b", text)
            assert printed is not None and int(printed.group(1)) == len(entries)
            # the auditor finds an intact audit log holding the demo's work
            verify = client.get("/api/v1/audit/verify", headers=tokens["auditor"]).json()
            assert verify["ok"] is True and verify["entries"] > len(entries)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_setup_again_changes_nothing(demo_world: Path) -> None:
    from pipelines.cli_demo import setup_demo
    from serving.db import database_url, make_engine, session_factory
    from serving.services import verify_audit

    settings = Settings(data=demo_world)
    layout = DataLayout(demo_world)
    first = setup_demo(settings, layout)
    again = setup_demo(settings, layout)
    assert first.ingested + first.unchanged > 0
    assert again.ingested == 0 and again.refused == 0
    assert again.unchanged == first.ingested + first.unchanged
    assert again.rules_created == 0 and again.rules_unchanged > 0
    assert again.queues == first.queues and max(again.queues.values()) > 0
    assert "already loaded" in again.watchlist
    officer = next(a for a in again.accounts if a.role == "officer")
    assert again.queues[str(officer.office_code)] == max(again.queues.values())
    engine = make_engine(database_url(settings, layout))
    try:
        with session_factory(engine)() as session:
            n, result, _seq = verify_audit(session)
    finally:
        engine.dispose()
    assert result.ok and n > 0

    # A demo account changed since (here: disabled) is put back, and the audit log
    # says the demo set-up did it.
    from sqlalchemy import select

    from serving import orm as m
    from serving.auth import update_user

    engine = make_engine(database_url(settings, layout))
    try:
        with session_factory(engine)() as session:
            user = session.scalar(select(m.User).where(m.User.username == officer.username))
            assert user is not None
            update_user(session, user, actor="test-admin", active=False)
            session.commit()
        setup_demo(settings, layout)
        with session_factory(engine)() as session:
            user = session.scalar(select(m.User).where(m.User.username == officer.username))
            assert user is not None and user.active
            last = session.scalars(
                select(m.AuditLog)
                .where(m.AuditLog.kind == "user_change")
                .order_by(m.AuditLog.seq.desc())
            ).first()
            assert last is not None and last.actor == "demo-setup"
            n, result, _seq = verify_audit(session)
            assert result.ok
    finally:
        engine.dispose()


def test_offices_on_another_day_get_that_days_queue_too(
    demo_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review of stop 24: with office time zones set, an office already on its next
    day opened on an empty, unbuilt queue; the demo now builds it and says so. (Here
    the demo's day is yesterday: every office's own day differs from it.)"""
    from pipelines.cli_demo import print_setup, setup_demo

    root = tmp_path / "data"
    shutil.copytree(demo_world, root)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    setup = setup_demo(Settings(data=root), DataLayout(root), today=yesterday)
    assert setup.day == yesterday and set(setup.local_days) == set(setup.queues)
    assert all(day > yesterday for day in setup.local_days.values())
    print_setup(setup, "http://127.0.0.1:1")
    said = " ".join(capsys.readouterr().out.split())
    assert "offices already on another day in their time zone" in said
    office = next(iter(setup.local_days))
    assert f"{setup.local_days[office].isoformat()}: " in said and office in said


def test_the_demos_stored_features_are_the_batch_features(demo_world: Path, tmp_path: Path) -> None:
    """Review of stop 24: the demo scored today's copies against a history without
    their originals, which stay in validated/: once validated, every copy's batch
    features differed from the ones stored with its score (party counts, price
    references). Now the stored vectors are the batch's."""
    import json

    from sqlalchemy import select

    from pipelines.cli_demo import setup_demo
    from pipelines.features import run_features
    from pipelines.validate import run_validate
    from serving import orm as m
    from serving.db import database_url, make_engine, session_factory

    root = tmp_path / "data"
    shutil.copytree(demo_world, root)
    settings, layout = Settings(data=root), DataLayout(root)
    setup = setup_demo(settings, layout)
    assert setup.ingested + setup.unchanged > 0  # (the module's world may hold them already)
    engine = make_engine(database_url(settings, layout))
    try:
        with session_factory(engine)() as session:
            stored = {
                s.shipment_id: s.feature_vector
                for s in session.scalars(select(m.Score).order_by(m.Score.id))
            }
    finally:
        engine.dispose()
    run_validate(layout, gx=False)
    run_features(layout)
    batch = pl.read_parquet(layout.features / "features.parquet").filter(
        pl.col("shipment_id").is_in(list(stored))
    )
    assert batch.height == len(stored)
    differing = []
    for row in batch.iter_rows(named=True):
        vector = stored[row["shipment_id"]]
        vector = json.loads(vector) if isinstance(vector, str) else vector
        for name, value in vector.items():
            mine = row.get(name)
            same = (value is None and mine is None) or (
                value is not None and mine is not None and abs(float(value) - float(mine)) < 1e-9
            )
            if name in row and not same:
                differing.append((row["shipment_id"], name, value, mine))
    assert not differing, differing[:10]
