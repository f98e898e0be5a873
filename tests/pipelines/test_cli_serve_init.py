"""`caravan serve` refuses a data directory that holds no deployment (operations round
2, F6): a mistyped --data or a volume that did not mount is named with the reason
instead of becoming a new, empty deployment with a new signing key; `--init` creates
one on purpose. The real command as a subprocess where it starts or refuses a server;
the other refusals in-process (Typer's runner), which start nothing either way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import ROOT
from tests.serving.postgres import PostgresServer, postgres_server  # noqa: F401

SERVE = (sys.executable, "-m", "pipelines", "serve")
INIT = "`caravan serve --init` creates a new deployment there"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CARAVAN_DATABASE_URL"}
    return {**env, "COLUMNS": "300", "CARAVAN_MODEL_REFRESH_SECONDS": "60"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data: Path, *options: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`caravan serve` in-process; (exit code, stderr on one line). On an address
    nothing can listen on: a server that is let in fails instead of serving."""
    result = CliRunner().invoke(
        app,
        ["serve", "--data", str(data), "--host", "256.0.0.1", *options],
        env={"CARAVAN_DATABASE_URL": None, "COLUMNS": "300", **(env or {})},
    )
    return result.exit_code, " ".join(result.stderr.split())


def test_a_missing_or_empty_data_directory_is_refused_naming_it(tmp_path: Path) -> None:
    typo = tmp_path / "caravan-dta"
    refused = subprocess.run(
        [*SERVE, "--data", str(typo), "--host", "256.0.0.1"],  # (nothing can listen there)
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=120,
        check=False,
    )
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2, refused.stderr
    assert f"no deployment at {typo}: the directory does not exist" in message
    assert INIT in message
    assert not typo.exists()  # nothing created

    empty = tmp_path / "empty"
    empty.mkdir()
    code, message = _serve(empty)
    assert (
        code == 2 and f"no deployment at {empty}: no database at {empty / 'caravan.db'}" in message
    )
    assert "is --data the deployment's data directory?" in message and INIT in message
    assert list(empty.iterdir()) == []  # no database, no signing key, no lock file

    elsewhere = tmp_path / "db" / "caravan.db"
    code, message = _serve(empty, env={"CARAVAN_DATABASE_URL": f"sqlite:///{elsewhere}"})
    assert code == 2 and f"no database at {elsewhere}" in message
    assert "is CARAVAN_DATABASE_URL the deployment's database?" in message

    (empty / "caravan.db").write_bytes(b"")  # a file, but no Caravan database
    code, message = _serve(empty)
    assert code == 2 and "is no Caravan database (it was never set up;" in message


def test_an_empty_postgresql_database_is_refused(
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.create_database()
    try:
        (tmp_path / "data").mkdir()
        code, message = _serve(tmp_path / "data", env={"CARAVAN_DATABASE_URL": url})
        assert code == 2 and "is no Caravan database (it was never set up;" in message
        assert "postgresql" in message and INIT in message
    finally:
        postgres_server.drop_database(url)


def test_an_existing_deployment_is_served_and_init_creates_one(tmp_path: Path) -> None:
    """A deployment set up earlier (here by `caravan db upgrade`) is served without
    --init; --init on a directory that does not exist creates one."""
    deployment = tmp_path / "deployment"
    made = CliRunner().invoke(
        app, ["db", "upgrade", "--data", str(deployment)], env={"CARAVAN_DATABASE_URL": None}
    )
    assert made.exit_code == 0, made.output
    fresh = tmp_path / "new-deployment"
    for data, options in ((deployment, ()), (fresh, ("--init",))):
        log = tmp_path / f"{data.name}.log"
        with log.open("w") as sink:
            server = subprocess.Popen(
                [*SERVE, "--data", str(data), *options, "--port", str(_free_port())],
                cwd=ROOT,
                env=_env(),
                stderr=sink,
            )
        try:
            deadline = time.monotonic() + 180
            while "Caravan API started" not in log.read_text():  # (no model: not ready)
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
        assert (data / "caravan.db").is_file() and (data / "secret_key").is_file()


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARAVAN_DATABASE_URL", raising=False)
