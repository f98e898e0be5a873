"""One server process per deployment.

A server keeps the history it scores against in its own memory (see
`serving.history`): a second server on the same data directory or database would
score with a history missing what the first one records. `deployment_lock` is held
by `caravan serve` and `caravan demo-serve` for the server's life:

* an exclusive `flock` on `<data dir>/caravan-server.lock` (and, for a SQLite
  database outside the data directory, on `<database>.server-lock` beside it);
  the operating system drops it when the process ends, also on kill -9;
* on PostgreSQL, a session advisory lock (`pg_try_advisory_lock`) on a dedicated
  connection, so that servers given the same `CARAVAN_DATABASE_URL` with other
  data directories refuse too; PostgreSQL drops it when the connection closes.

A second start fails at once with `DeploymentInUseError`, naming the data
directory or the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from data_contracts.settings import DataLayout, Settings
from serving.db import database_url, normalize_url, sqlite_path

LOCK_FILE = "caravan-server.lock"
# The advisory lock's key (64 bits, of this name): per database, as PostgreSQL
# scopes advisory locks.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"caravan serve").digest()[:8], "big", signed=True)


class DeploymentInUseError(RuntimeError):
    """Another server holds the deployment (its message names what is held)."""


@contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created 0600); its content: the pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (process {holder})" if holder.isdigit() else ""
            raise DeploymentInUseError(
                f"another Caravan server{pid} is running on {what}: it holds the lock "
                f"{path}; run one server process per deployment"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # (closing drops the lock)


@contextmanager
def _advisory_lock(url: URL) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock `ADVISORY_KEY` on a connection of
    its own for as long as this runs."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})
            if not got.scalar_one():
                where = url.render_as_string(hide_password=True)
                raise DeploymentInUseError(
                    f"another Caravan server is running on the database {where}: it holds "
                    f"the server's advisory lock; run one server process per deployment"
                )
            conn.commit()
            try:
                yield
            finally:
                # (closing the connection drops it too: a connection lost already is fine)
                with suppress(SQLAlchemyError):
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                    conn.commit()
    finally:
        engine.dispose()


@contextmanager
def deployment_lock(settings: Settings, layout: DataLayout) -> Iterator[None]:
    """Hold the deployment for one server (see the module doc); raises
    `DeploymentInUseError` when another server holds it."""
    root = layout.root.resolve()
    url = normalize_url(database_url(settings, layout))
    with ExitStack() as held:
        held.enter_context(_file_lock(root / LOCK_FILE, f"the data directory {root}"))
        database = sqlite_path(url)
        if database is not None and database.resolve().parent != root:
            beside = database.resolve().with_name(database.name + ".server-lock")
            held.enter_context(_file_lock(beside, f"the database {database.resolve()}"))
        if url.get_backend_name() == "postgresql":
            held.enter_context(_advisory_lock(url))
        yield
