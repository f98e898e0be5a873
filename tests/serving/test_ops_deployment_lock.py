"""The deployment lock on PostgreSQL outlives a lost connection (operator review of
stop 24, defect 2): PostgreSQL drops the server's advisory lock whenever the lock's
connection goes (a restart, a failover, a reset), and a second server then started.
The watchdog checks the connection every few seconds, takes the lock back, and while
another server holds it reports not ready (/readyz 503, `deployment_lock_lost`).
The restart is simulated by terminating the lock's backend from another connection,
on the suite's real PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from data_contracts.settings import DataLayout, Settings
from serving.server_lock import (
    ADVISORY_KEY,
    DeploymentInUseError,
    deployment_lock,
    deployment_lock_lost,
)
from tests.conftest import ROOT
from tests.serving.conftest import app_on, scraped
from tests.serving.postgres import PostgresServer

CHECK = 0.2  # the watchdog's period in these tests (5 s in a server)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _connect(server: PostgresServer, url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of the test's own to the database of `url` (another client)."""
    return psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user="postgres",
        dbname=url.rsplit("/", 1)[1],
        autocommit=True,
    )


def _lock_holders(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """The backends holding an advisory lock on this database."""
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    return [int(str(row[0])) for row in rows]


def _terminate_lock_backend(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """What a PostgreSQL restart does to the lock: its backend ends, the lock goes."""
    holders = _lock_holders(conn)
    assert holders, "no advisory lock is held"
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return holders


def _wait(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _said(caplog: pytest.LogCaptureFixture, level: int, text: str) -> bool:
    return any(
        r.levelno == level and r.name == "serving.server_lock" and text in r.getMessage()
        for r in caplog.records
    )


def _held(url: str, data: Path) -> tuple[Settings, DataLayout]:
    return Settings(data=data, database_url=url), DataLayout(data)


def test_the_watchdog_takes_the_lock_back_after_its_connection_is_lost(
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="serving.server_lock")
    with (
        _connect(postgres_server, pg_url) as other,
        deployment_lock(*_held(pg_url, tmp_path / "a"), check_seconds=CHECK),
    ):
        assert not deployment_lock_lost()
        before = _terminate_lock_backend(other)
        # taken back on a new connection of the server's
        _wait(lambda: _said(caplog, logging.INFO, "is held again"), "the lock was not taken back")
        assert _said(caplog, logging.WARNING, "is lost")
        holders = _lock_holders(other)
        assert len(holders) == 1 and holders != before
        assert not deployment_lock_lost()
        assert not any(r.levelno >= logging.ERROR for r in caplog.records)
        # and a second server on the same database is refused again
        with (
            pytest.raises(DeploymentInUseError, match="advisory lock"),
            deployment_lock(*_held(pg_url, tmp_path / "b"), check_seconds=CHECK),
        ):
            pass
    assert _lock_holders_after_exit(postgres_server, pg_url) == []


def _lock_holders_after_exit(server: PostgresServer, url: str) -> list[int]:
    with _connect(server, url) as conn:
        deadline = time.monotonic() + 10
        while (holders := _lock_holders(conn)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return holders


def test_readyz_reports_a_lock_another_server_took_until_it_is_held_again(
    pg_url: str,
    postgres_server: PostgresServer,
    web_world: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="serving.server_lock")
    app = app_on(pg_url, web_world, tmp_path)
    data = tmp_path / "data"
    with (
        deployment_lock(*_held(pg_url, data), check_seconds=CHECK),
        TestClient(app) as client,
        _connect(postgres_server, pg_url) as other,
    ):
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["deployment_lock_lost"] is False
        _terminate_lock_backend(other)
        # another server takes the lock first (waiting for the terminated backend to
        # let it go): the watchdog cannot take it back
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        _wait(lambda: client.get("/readyz").status_code == 503, "/readyz stayed ready", seconds=30)
        body = client.get("/readyz").json()
        assert body["status"] == "not_ready" and body["deployment_lock_lost"] is True, body
        assert body["database"] is True and body["model_loaded"] is True  # (only the lock)
        _wait(lambda: _said(caplog, logging.ERROR, "another Caravan server holds"), "no ERROR")
        assert _said(caplog, logging.WARNING, "is lost")
        assert scraped(client.get("/metrics").text)["caravan_deployment_lock_lost"] == 1.0
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        time.sleep(10 * CHECK)
        # (said once, not at every check)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == errors
        assert not any(r.exc_info for r in caplog.records if r.name == "serving.server_lock")

        other.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))  # it stops
        _wait(lambda: client.get("/readyz").status_code == 200, "the lock was not taken back")
        assert client.get("/readyz").json()["deployment_lock_lost"] is False
        assert _said(caplog, logging.INFO, "is held again")
        assert scraped(client.get("/metrics").text)["caravan_deployment_lock_lost"] == 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_second_caravan_serve_is_refused_after_the_first_one_lost_its_connection(
    pg_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The review's reproduction with the real command: server 1 on PostgreSQL, its
    lock's connection ended (as by a restart), then server 2 on the same database.
    Server 1's watchdog (every 5 s) has taken the lock back: server 2 exits 1."""
    env = {
        **os.environ,
        "CARAVAN_DATABASE_URL": pg_url,
        "CARAVAN_LOG_LEVEL": "INFO",
        "CARAVAN_MODEL_REFRESH_SECONDS": "60",
        "COLUMNS": "300",
    }
    serve = [sys.executable, "-m", "pipelines", "serve", "--init"]
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(
            [*serve, "--data", str(tmp_path / "one"), "--port", str(port := _free_port())],
            cwd=ROOT,
            env=env,
            stderr=sink,
        )
    try:
        _wait(lambda: "Caravan API started" in log.read_text(), log.read_text(), seconds=120)
        assert first.poll() is None, log.read_text()
        with _connect(postgres_server, pg_url) as other:
            _terminate_lock_backend(other)
        _wait(lambda: "is held again" in log.read_text(), log.read_text(), seconds=60)
        assert "WARNING serving.server_lock: the deployment lock on the database" in (
            log.read_text()
        )
        second = subprocess.run(
            [*serve, "--data", str(tmp_path / "two"), "--port", str(_free_port())],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert "advisory lock" in " ".join(second.stderr.split())
        assert first.poll() is None
        readyz = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).json()
        assert readyz["deployment_lock_lost"] is False and readyz["database"] is True
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
