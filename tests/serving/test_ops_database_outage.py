"""With the database down the server answers 503, not a bare 500 (operator review of
stop 24, defect 5): the API a JSON `detail` with Retry-After, the web pages a page
of their own; /readyz and /metrics say the database is down; the model-refresh loop
logs one WARNING when the database is lost and one INFO when it is back, no
traceback every few seconds. Recovery needs no restart.

The outage: on PostgreSQL the database stops accepting connections and its
backends are terminated (what a stopped server does to the app's connections); on
SQLite the engine's pooled connections are dropped and opening the file fails."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.app import DATABASE_UNAVAILABLE
from serving.auth import Role
from tests.serving.conftest import DAY, add_users, app_on, password_for, payload, samples_of
from tests.serving.conftest import username_for as user_of
from tests.serving.postgres import PostgresServer

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def database_down(
    app: FastAPI, db_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The app's database unavailable for the block, then back."""
    if db_url.startswith("postgresql"):
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = db_url.rsplit("/", 1)[1]
        server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        server.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        try:
            yield
        finally:
            server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        return
    engine = app.state.engine

    def cannot_open(*_args: object, **_kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    with monkeypatch.context() as patch:
        engine.dispose()
        patch.setattr(engine.dialect, "connect", cannot_open)
        yield


def _wait(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _records(caplog: pytest.LogCaptureFixture, name: str, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and text in r.getMessage()]


def test_requests_get_503_while_the_database_is_down_and_work_again_after(
    db_url: str,
    web_world: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CARAVAN_MODEL_REFRESH_SECONDS", "0.2")
    caplog.set_level(logging.INFO, logger="serving.app")
    samples = samples_of(web_world)
    app = app_on(db_url, web_world, tmp_path)
    with TestClient(app) as client:
        add_users(app)
        login = {"username": user_of(Role.admin), "password": password_for(Role.admin)}
        token = client.post("/api/v1/auth/login", data=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        form = client.get("/web/login")
        csrf = CSRF.search(form.text)
        assert csrf is not None
        signed_in = client.post(
            "/web/login",
            data={"csrf_token": csrf.group(1), **login},
            follow_redirects=False,
        )
        assert signed_in.status_code in (302, 303), signed_in.text
        office = str(samples[0][0]["office_code"])  # (an office the world knows)
        queue = f"/api/v1/queues/{office}/{DAY}"
        shipment = payload(samples, 1, "OUTAGE-1", office=office)
        assert client.get(queue, headers=headers).status_code == 200
        assert client.get("/web/").status_code == 200
        caplog.clear()

        with database_down(app, db_url, request, monkeypatch):
            for method, path, kwargs in (
                ("POST", "/api/v1/auth/login", {"data": login}),
                ("GET", queue, {"headers": headers}),
                ("POST", "/api/v1/shipments", {"headers": headers, "json": shipment}),
            ):
                answer = client.request(method, path, **kwargs)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json() == {"detail": DATABASE_UNAVAILABLE}
                assert answer.headers["Retry-After"].isdigit()
            page = client.get("/web/")
            assert page.status_code == 503 and "text/html" in page.headers["content-type"]
            assert "database is unavailable" in page.text and page.headers["Retry-After"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False
            assert "caravan_database_up 0.0" in client.get("/metrics").text
            # the refresh loop notices, once
            _wait(
                lambda: bool(_records(caplog, "serving.app", "model refresh waits for it")),
                "the refresh loop said nothing of the outage",
            )
            time.sleep(1.5)  # several more passes of the loop
            assert len(_records(caplog, "serving.app", "model refresh waits for it")) == 1

        # back, without a restart
        _wait(lambda: client.get("/readyz").status_code == 200, "not ready after the outage")
        assert "caravan_database_up 1.0" in client.get("/metrics").text
        stored = client.post("/api/v1/shipments", headers=headers, json=shipment)
        assert stored.status_code == 201, stored.text
        assert client.get(queue, headers=headers).status_code == 200
        assert client.get("/web/").status_code == 200
        _wait(
            lambda: bool(_records(caplog, "serving.app", "reachable again")),
            "the refresh loop did not say the database is back",
        )
    app_records = [r for r in caplog.records if r.name == "serving.app"]
    assert not _records(caplog, "serving.app", "model refresh failed")
    assert not any(r.exc_info for r in app_records)  # no traceback
    warned = _records(caplog, "serving.app", "answering 503")
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # (one a minute at most)
    back = _records(caplog, "serving.app", "reachable again")
    assert len(back) == 1 and back[0].levelno == logging.INFO


def test_other_database_errors_are_still_500(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an unreachable database is a 503: a fault in a statement stays a 500."""
    from sqlalchemy.exc import IntegrityError

    from serving.routers import health
    from tests.serving.conftest import build_app

    def broken(_request: object) -> tuple[bool, str | None]:
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    monkeypatch.setattr(health, "database_up", broken)
    with TestClient(build_app(db_url, tmp_path / "data"), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 500
