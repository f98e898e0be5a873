"""Database plumbing: engines, sessions, the database URL and Alembic migrations.

SQLite (a file in the data directory) is the default; PostgreSQL is used when
`CARAVAN_DATABASE_URL` is set (driver psycopg 3: `postgresql://user:password@host:
5432/dbname`, a plain `postgresql://` or `postgres://` URL gets it; connections give
up after 10 s unless the URL sets `connect_timeout`). Nothing here runs at import
time: engines are made by `make_engine` and migrations run by `upgrade`.

The SQLite file holds password and API-key hashes, traveller records and the audit
log: it is created readable by its owner only (0600), and an existing file readable
by others is narrowed to 0600 when an engine is made (SQLite gives its -wal and -shm
files the mode of the database file).
"""

from __future__ import annotations

import logging
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, bindparam, create_engine, event, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from data_contracts.settings import DataLayout, Settings
from serving.orm import Lock

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_file(path: Path) -> None:
    """Create `path` (empty) readable and writable by its owner only, or narrow an
    existing file that group or others may read to 0600 (with a warning)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        narrow_to_owner(path)
    else:
        os.close(fd)


def narrow_to_owner(path: Path) -> None:
    """chmod 600 a file that group or others may access (nothing if absent)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_IMODE(mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others: narrowed to its owner (0600)", path)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain `postgresql://` URLs get the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def database_url(settings: Settings, layout: DataLayout) -> str:
    """CARAVAN_DATABASE_URL if set, else the SQLite file of the data directory."""
    if settings.database_url:
        return normalize_url(settings.database_url).render_as_string(hide_password=False)
    return f"sqlite:///{layout.database.resolve()}"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def engine_if_present(url: str | URL) -> Engine | None:
    """`make_engine(url)`, or None when `url` names a SQLite file that does not exist
    (a data directory without a database yet: the commands that only read it or add
    to it, if there is one, do nothing and create none)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    return make_engine(url)


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (psycopg 3)."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            private_file(path)
            for suffix in SQLITE_SIDE_FILES:
                narrow_to_owner(path.with_name(path.name + suffix))
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            },
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    if backend == "postgresql":
        # A database that is down or unreachable answers within seconds (a request
        # gets 503, /readyz says so) instead of holding a worker until TCP gives up.
        # A connect_timeout in the URL wins.
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
        return create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config() -> Config:
    """Alembic configured from Python (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None when never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    """Whether the database schema is at the newest migration."""
    return current_revision(engine) == head_revision()


def upgrade(url: str | URL | Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to `revision` (default: head)."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        # A migration may switch SQLite's per-connection pragmas (foreign keys off while
        # tables are rebuilt): drop pooled connections; new ones get the usual pragmas.
        engine.dispose()


def write_lock(session: Session, name: str = "audit_log") -> None:
    """Serialise writers of `name` until the session's transaction ends.

    Updates the row `name` of the `locks` table: PostgreSQL holds a row lock, SQLite
    the database write lock (waiting up to the busy timeout), so a writer that reads the
    audit log's head after this call appends to the true head.
    """
    # (a Core UPDATE of the table: the same SQL as an ORM one, without its ORM
    # machinery, 0.1 ms of every audit entry; the session's pending rows are flushed
    # first, as the ORM statement's autoflush did)
    if session.autoflush:
        session.flush()
    result = session.execute(_TAKE_LOCK, {"lock_name": name})
    if getattr(result, "rowcount", 1) != 1:
        raise KeyError(f"no lock named {name!r}")


# (the statement of `write_lock`, built once: the lock's name is its parameter)
_LOCKS = cast(Table, Lock.__table__)
_TAKE_LOCK = (
    update(_LOCKS).where(_LOCKS.c.name == bindparam("lock_name")).values(name=_LOCKS.c.name)
)
