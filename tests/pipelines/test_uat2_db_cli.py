"""Migrating the operational database is an act the operator can take and see
(operations round 2, F5): `caravan db upgrade` and `caravan db current`; with
CARAVAN_AUTO_MIGRATE off, other commands refuse an old schema instead of migrating
it under a running server; with it on (the default), they say that they migrated."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from serving.db import alembic_config, current_revision, head_revision, make_engine
from tests.conftest import caravan, caravan_in_process

OFF = {"CARAVAN_AUTO_MIGRATE": "false"}


def _step_back(data: Path) -> str:
    """Downgrade the deployment's SQLite database by one migration; its revision."""
    engine = make_engine(f"sqlite:///{data / 'caravan.db'}")
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
        at = current_revision(engine)
    finally:
        engine.dispose()
    assert at is not None and at != head_revision()
    return at


def test_db_upgrade_and_current_and_no_silent_migration(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = caravan_in_process  # the same command in process; three stay real subprocesses
    missing = caravan("db", "current", data=data, check=False)
    assert missing.returncode == 2
    made = caravan("db", "upgrade", data=data).stdout
    assert f"to {head_revision()}" in made and "new database" in made
    assert "up to date" in run("db", "current", data=data).stdout

    older = _step_back(data)
    assert "behind: run caravan db upgrade" in run("db", "current", data=data).stdout
    refused = caravan("users", "list", data=data, env=OFF, check=False)
    assert refused.returncode == 2 and "caravan db upgrade" in refused.stderr
    engine = make_engine(f"sqlite:///{data / 'caravan.db'}")
    assert current_revision(engine) == older  # untouched
    engine.dispose()
    done = run("db", "upgrade", data=data, env=OFF).stdout
    assert f"from {older} to {head_revision()}" in done
    assert "already at" in run("db", "upgrade", data=data).stdout

    _step_back(data)
    listed = run("users", "list", data=data)  # the default migrates, and says so
    assert f"migrated the database from {older} to {head_revision()}" in listed.stderr
