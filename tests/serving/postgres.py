"""A throw-away PostgreSQL server for tests.

`postgres_server` (session scope) finds `initdb`/`pg_ctl` (PATH, then
/usr/lib/postgresql/*/bin; installs Debian's `postgresql` package when missing
and running as root), initdb's a cluster in a fresh temp dir, starts it on
127.0.0.1 at a free port (plus a unix socket in the temp dir) with trust auth
for loopback only, and stops and deletes it at teardown (and at exit, should
the session die). PostgreSQL refuses to run as root, so as root the server runs
as the system user `caravan-pg` (created when absent).

With CI=true a missing PostgreSQL fails the tests instead of skipping them.
Each test database is created fresh by `PostgresServer.create_database`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_USER = "caravan-pg"
SUPERUSER = "postgres"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "caravan-pg-install.lock"
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl, or None."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "pg_ctl").exists() and (bindir / "initdb").exists():
            return bindir
    return None


def install_postgres() -> None:
    """Install PostgreSQL with .ci/postgres.sh (root only), once even with several workers."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find_bindir() is not None:
            return
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, env=env, capture_output=True)


def ensure_bindir() -> Path:
    """initdb/pg_ctl's directory; installs PostgreSQL as root; fails in CI, else skips."""
    bindir = find_bindir()
    if bindir is None and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            install_postgres()
        except (subprocess.CalledProcessError, OSError) as exc:
            message = f"could not install PostgreSQL: {exc}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL (initdb, pg_ctl) not found; run `bash .ci/postgres.sh` as root"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return bindir


def _ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ],
            check=True,
            capture_output=True,
        )


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", PG_USER, "--", *cmd]
    entry = pwd.getpwnam(PG_USER)
    return [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--init-groups",
        *cmd,
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    port: int = 0
    running: bool = False
    databases: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            _as_server_user(cmd),
            capture_output=True,
            text=True,
            cwd=self.base,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{log[-4000:]}"
            )
        return result

    def init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            _ensure_pg_user()
            entry = pwd.getpwnam(PG_USER)
            for path in (self.base, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        # Trust, but only on the unix socket (a 0700 dir) and loopback.
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        )

    def start(self, attempts: int = 5) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.socket_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=100",
                ]
            )
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "start",
                        "-w",
                        "-t",
                        "60",
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-o",
                        options,
                    ]
                )
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)  # port taken between free_port() and bind: try another
                continue
            self.running = True
            return

    def stop(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast"],
                    timeout=60,
                )
            self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"caravan_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PostgresServer:
    bindir = ensure_bindir()
    base = Path(tempfile.mkdtemp(prefix="caravan-pg-"))
    server = PostgresServer(bindir=bindir, base=base)
    atexit.register(server.stop)
    try:
        server.init()
        server.start()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running throw-away PostgreSQL server, stopped and deleted after the session."""
    try:
        server = start_server()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if in_ci():
            pytest.fail(f"could not start PostgreSQL: {exc}")
        pytest.skip(f"could not start PostgreSQL: {exc}")
    try:
        yield server
    finally:
        server.stop()
