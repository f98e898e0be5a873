"""What `caravan serve` checks before it starts, and what the server says when it
does (operator review of stop 24, defects 3, 3b, 6, 7 and 8):

* on PostgreSQL a data directory without the deployment's signing key (a volume
  that did not mount) is refused when the database already holds a deployment, and
  `--init` is refused on a database another deployment has served;
* with CARAVAN_AUTO_MIGRATE=false an older schema stops `serve` with the one-line
  message of the other commands (exit 2), not a traceback;
* a migration at start-up is logged with its revisions;
* a server without a champion says so and how to get one, and is "started", not
  "ready";
* /readyz names the model version, /metrics has `caravan_model_info` and
  `caravan_database_up`.

The refusals run in-process (Typer's runner); a server that is let in is not run
(`run_server` is replaced), so that nothing listens."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from typer.testing import CliRunner

import pipelines.cli_serving as cli_serving
from pipelines.cli import app as cli
from serving import orm as m
from serving.auth import Role, create_user
from serving.db import current_revision, head_revision, make_engine, session_factory, upgrade
from tests.conftest import caravan
from tests.serving.conftest import app_on, build_app
from tests.serving.postgres import PostgresServer

INIT = "`caravan serve --init` creates a new deployment there"
PASSWORD = "Admin-Secret-Pass-2026"


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The servers `caravan serve` would run (none is run: nothing listens)."""
    runs: list[Any] = []
    monkeypatch.setattr(cli_serving, "run_server", lambda *args: runs.append(args))
    monkeypatch.setattr(cli_serving, "configure_logging", lambda level: None)
    return runs


def _serve(data: Path, url: str | None, *options: str, **env: str) -> tuple[int, str]:
    """`caravan serve` in-process: (exit code, stderr on one line)."""
    result = CliRunner().invoke(
        cli,
        ["serve", "--data", str(data), *options],
        env={"CARAVAN_DATABASE_URL": url, "CARAVAN_SECRET_KEY": None, "COLUMNS": "300", **env},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, " ".join(result.stderr.split())


def _deployment(url: str, *, signed_in: bool) -> None:
    """A deployment's database: migrated, an admin (who has signed in, or was only
    created by `caravan users create` before the first start)."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            create_user(
                session, username="admin1", password=PASSWORD, role=Role.admin, display_name="A"
            )
            session.commit()
            if signed_in:
                session.execute(update(m.User).values(last_login_at=dt.datetime.now(dt.UTC)))
                session.commit()
    finally:
        engine.dispose()


def _signing_key(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / "secret_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("k" * 64)


def test_an_empty_directory_on_a_served_postgresql_database_is_refused(
    pg_url: str, tmp_path: Path, started: list[Any]
) -> None:
    """The review's unmounted volume: the directory exists but is empty, the database
    is a deployment's whose users signed in. Neither `serve` nor `serve --init` makes
    it a deployment with a new signing key."""
    _deployment(pg_url, signed_in=True)
    empty = tmp_path / "mnt"
    empty.mkdir()
    code, message = _serve(empty, pg_url)
    assert code == 2, message
    assert f"no deployment at {empty}: the directory holds no signing key (secret_key)" in message
    assert "already holds a deployment (migration" in message and "1 user(s)" in message
    assert "a volume that did not mount?" in message
    assert "`caravan serve --init` is refused on that database too" in message
    assert "postgresql" in message and "@127.0.0.1" in message  # (the database named)

    code, message = _serve(empty, pg_url, "--init")
    assert code == 2, message
    assert "`caravan serve --init` refused: the database" in message
    assert "already holds another deployment" in message
    assert f"and {empty} holds no signing key (secret_key)" in message
    assert "--init would start a second deployment on that database with a new" in message
    assert list(empty.iterdir()) == []  # no signing key, no lock file
    assert started == []

    # The deployment's own directory (its signing key there) is served, with or
    # without --init.
    _signing_key(home := tmp_path / "deployment")
    for options in ((), ("--init",)):
        code, message = _serve(home, pg_url, *options)
        assert code == 0, message
    assert len(started) == 2


def test_a_database_set_up_before_the_first_start_needs_init(
    pg_url: str, tmp_path: Path, started: list[Any]
) -> None:
    """`caravan db upgrade` / `caravan users create` before the first start: the
    database has a revision and users nobody signed in with. Without --init the empty
    directory is refused, naming --init; with --init it becomes the deployment."""
    _deployment(pg_url, signed_in=False)
    data = tmp_path / "data"
    data.mkdir()
    code, message = _serve(data, pg_url)
    assert code == 2 and f"no deployment at {data}: the directory holds no signing key" in message
    assert INIT in message
    assert started == []
    code, message = _serve(data, pg_url, "--init")
    assert code == 0, message
    assert len(started) == 1


def test_with_caravan_secret_key_a_directory_no_server_ran_on_is_refused(
    pg_url: str, tmp_path: Path, started: list[Any]
) -> None:
    """CARAVAN_SECRET_KEY gives the key (no secret_key file): a directory without
    the server's lock file is one no server ran on."""
    _deployment(pg_url, signed_in=True)
    data = tmp_path / "data"
    data.mkdir()
    key = {"CARAVAN_SECRET_KEY": "s" * 64}
    code, message = _serve(data, pg_url, **key)
    assert code == 2 and "neither secret_key nor caravan-server.lock" in message
    assert INIT in message  # (the key is not new: --init is not refused)
    code, message = _serve(data, pg_url, "--init", **key)
    assert code == 0, message
    assert (data / "caravan-server.lock").is_file()  # (left by the server's lock)
    code, message = _serve(data, pg_url, **key)
    assert code == 0, message
    assert len(started) == 2


def test_a_sqlite_deployment_in_its_directory_needs_no_signing_key_yet(
    tmp_path: Path, started: list[Any]
) -> None:
    """The database file in the directory is the deployment (as `caravan db upgrade`
    or `caravan users create` leave it): served without --init, as before."""
    data = tmp_path / "data"
    caravan("db", "upgrade", data=data, env={"CARAVAN_DATABASE_URL": ""})
    code, message = _serve(data, None)
    assert code == 0, message
    assert len(started) == 1


def test_an_older_schema_with_auto_migrate_off_stops_serve_with_one_line(tmp_path: Path) -> None:
    """The real command: exit 2 and the message `caravan users list` gives, no
    traceback; the database is left at its migration."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'caravan.db'}"
    upgrade(url, "0004")
    env = {"CARAVAN_DATABASE_URL": "", "CARAVAN_AUTO_MIGRATE": "false"}
    served = caravan("serve", "--host", "256.0.0.1", data=data, check=False, env=env)
    listed = caravan("users", "list", data=data, check=False, env=env)
    assert served.returncode == 2 and listed.returncode == 2, served.stderr
    assert "Traceback" not in served.stderr
    line = f"the database is at migration 0004, this code expects {head_revision()}: run"
    assert line in served.stderr
    assert served.stderr.strip() == listed.stderr.strip()
    engine = make_engine(url)
    try:
        assert current_revision(engine) == "0004"
    finally:
        engine.dispose()


def test_the_server_logs_the_migration_it_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="serving.app")
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'caravan.db'}"
    upgrade(url, "0004")
    with TestClient(build_app(url, data)):
        pass
    said = [r.getMessage() for r in caplog.records if r.name == "serving.app"]
    assert f"migrated the database from 0004 to {head_revision()}" in said
    caplog.clear()
    with TestClient(build_app(url, data)):  # at the newest: nothing to say
        pass
    assert not any("migrated" in r.getMessage() for r in caplog.records)


def test_a_server_without_a_champion_says_so_and_is_started_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="serving.app")
    data = tmp_path / "data"
    with TestClient(build_app(f"sqlite:///{data / 'caravan.db'}", data)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["model_loaded"] is False and ready.json()["model_version"] is None
        text = client.get("/metrics").text
    records = [r for r in caplog.records if r.name == "serving.app"]
    warning = next(r.getMessage() for r in records if r.levelno == logging.WARNING)
    assert f"no champion model is registered in {data / 'mlflow.db'}" in warning
    assert "every ingest answers 503" in warning
    for step in ("caravan validate", "caravan features", "caravan train", "caravan promote"):
        assert step in warning
    said = [r.getMessage() for r in records]
    assert any(s.startswith("Caravan API started, not ready: no champion model") for s in said)
    assert not any(s.startswith("Caravan API ready") for s in said)
    assert "caravan_model_info{" not in text
    assert "caravan_database_up 1.0" in text


def test_readyz_and_metrics_name_the_model_served(
    web_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="serving.app")
    with TestClient(app_on(None, web_world, tmp_path)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["model_version"] == "1"
        assert ready.json()["deployment_lock_lost"] is False
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    info = families["caravan_model_info"].samples
    assert len(info) == 1 and info[0].value == 1.0
    assert info[0].labels["version"] == "1"
    assert info[0].labels["feature_set"].startswith("fs")
    assert families["caravan_database_up"].samples[0].value == 1.0
    assert any(r.getMessage().startswith("Caravan API ready") for r in caplog.records)
