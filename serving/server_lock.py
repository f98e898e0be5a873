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

PostgreSQL drops the advisory lock whenever the lock's connection goes (a restart,
a failover, a connection reset): a watchdog thread checks every `CHECK_SECONDS`
that the connection still holds it, and when it does not, connects again and takes
it back. Meanwhile `deployment_lock_lost()` is true and `/readyz` answers 503
(`deployment_lock_lost`); a WARNING says the lock is lost (again each minute while
it stays lost), an ERROR that another server holds it now, an INFO that it is held
again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from data_contracts.settings import DataLayout, Settings
from serving.db import database_url, normalize_url, sqlite_path

LOCK_FILE = "caravan-server.lock"
# The advisory lock's key (64 bits, of this name): per database, as PostgreSQL
# scopes advisory locks.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"caravan serve").digest()[:8], "big", signed=True)
# How often the watchdog checks that the lock's connection still holds the lock.
CHECK_SECONDS = 5.0
# While the lock stays lost, the WARNING is repeated this often (not at every check).
REMIND_SECONDS = 60.0
# The lock's connection: a connection attempt gives up after 10 s, and TCP
# keepalives notice a peer that went away without closing (a failover, a cable).
LOCK_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
_HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() AND granted)"
)

log = logging.getLogger(__name__)


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


def _reason(exc: BaseException) -> str:
    """The first line of a database error's own message (no SQL, no URL)."""
    orig = getattr(exc, "orig", None)
    lines = str(orig or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class AdvisoryLock:
    """PostgreSQL's session advisory lock `ADVISORY_KEY`, held on a connection of its
    own, and the watchdog that takes it back when that connection is lost."""

    def __init__(self, url: URL, check_seconds: float = CHECK_SECONDS) -> None:
        self.url = url
        self.where = url.render_as_string(hide_password=True)
        self.check_seconds = check_seconds
        self.engine = create_engine(url, poolclass=NullPool, connect_args=LOCK_CONNECT_ARGS)
        self.connection: Connection | None = None
        # True from the moment the watchdog finds the lock gone until it holds it again.
        self.lost = False
        # ... and another server holds it meanwhile (the ERROR was logged).
        self.taken_by_another = False
        self._unreachable = False
        self._warned_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> bool:
        """Connect and try the lock: True when held (on `self.connection`)."""
        conn = self.engine.connect()
        try:
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}
                ).scalar_one()
            )
            conn.commit()
        except BaseException:
            with suppress(SQLAlchemyError):
                conn.close()
            raise
        if not got:
            with suppress(SQLAlchemyError):
                conn.close()
            return False
        self.connection = conn
        return True

    def acquire(self) -> None:
        """Take the lock (`DeploymentInUseError` when another server holds it) and
        start the watchdog."""
        if not self._take():
            raise DeploymentInUseError(
                f"another Caravan server is running on the database {self.where}: it holds "
                f"the server's advisory lock; run one server process per deployment"
            )
        self._thread = threading.Thread(
            target=self._watch, name="caravan-deployment-lock", daemon=True
        )
        self._thread.start()

    def _still_held(self) -> tuple[bool, str]:
        """Whether the lock's connection answers and still holds the lock (and if
        not, why)."""
        conn = self.connection
        if conn is None:
            return False, "no connection"
        try:
            held = bool(conn.execute(_HOLDS_LOCK).scalar_one())
            conn.commit()
        except SQLAlchemyError as exc:
            return False, f"its connection failed: {_reason(exc)}"
        return held, "" if held else "its connection no longer holds it"

    def _drop_connection(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            with suppress(SQLAlchemyError):
                conn.invalidate()
            with suppress(SQLAlchemyError):
                conn.close()

    def check(self) -> None:
        """One pass of the watchdog: nothing while the lock is held; else connect
        again and take it back, saying what happened."""
        held, why = self._still_held()
        if held:
            return
        now = time.monotonic()
        if not self.lost:
            self.lost = True
            self._warned_at = now
            log.warning(
                "the deployment lock on the database %s is lost (%s): taking it again; "
                "this server is not ready (/readyz 503) until it holds it",
                self.where,
                why,
            )
        elif now - self._warned_at >= REMIND_SECONDS:
            self._warned_at = now
            log.warning(
                "the deployment lock on the database %s is still lost: this server is "
                "not ready (/readyz 503)",
                self.where,
            )
        self._drop_connection()
        try:
            got = self._take()
        except SQLAlchemyError as exc:
            if not self._unreachable:
                self._unreachable = True
                log.warning(
                    "cannot connect to the database %s to take the deployment lock again "
                    "(%s): trying every %g s",
                    self.where,
                    _reason(exc),
                    self.check_seconds,
                )
            return
        self._unreachable = False
        if got:
            self.lost = False
            self.taken_by_another = False
            log.info("the deployment lock on the database %s is held again", self.where)
        elif not self.taken_by_another:
            self.taken_by_another = True
            log.error(
                "another Caravan server holds the deployment lock on the database %s now: "
                "two servers may be serving this deployment; this one reports not ready "
                "(/readyz 503) and takes the lock back when it is free: stop one of them",
                self.where,
            )

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self.check()
            except Exception:  # never let the watchdog die
                log.exception("checking the deployment lock failed")

    def release(self) -> None:
        """Stop the watchdog, unlock and close the connection (a connection lost
        already is fine: closing it drops the lock too)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.check_seconds + 30)
        conn = self.connection
        if conn is not None:
            with suppress(SQLAlchemyError):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                conn.commit()
        self._drop_connection()
        self.engine.dispose()


# The advisory locks this process holds (one per server; tests may hold several).
_HELD: list[AdvisoryLock] = []
_HELD_LOCK = threading.Lock()


def deployment_lock_lost() -> bool:
    """Whether a deployment lock this process holds on PostgreSQL was lost and is
    not held again yet (read by /readyz)."""
    with _HELD_LOCK:
        return any(lock.lost for lock in _HELD)


@contextmanager
def _advisory_lock(url: URL, check_seconds: float | None = None) -> Iterator[AdvisoryLock]:
    """Hold PostgreSQL's session advisory lock `ADVISORY_KEY` on a connection of
    its own for as long as this runs, taken back by a watchdog when that connection
    is lost."""
    lock = AdvisoryLock(url, CHECK_SECONDS if check_seconds is None else check_seconds)
    try:
        lock.acquire()
    except BaseException:
        lock.engine.dispose()
        raise
    with _HELD_LOCK:
        _HELD.append(lock)
    try:
        yield lock
    finally:
        with _HELD_LOCK:
            _HELD.remove(lock)
        lock.release()


@contextmanager
def deployment_lock(
    settings: Settings, layout: DataLayout, *, check_seconds: float | None = None
) -> Iterator[None]:
    """Hold the deployment for one server (see the module doc); raises
    `DeploymentInUseError` when another server holds it. `check_seconds`: how often
    the watchdog checks a PostgreSQL advisory lock (default `CHECK_SECONDS`)."""
    root = layout.root.resolve()
    url = normalize_url(database_url(settings, layout))
    with ExitStack() as held:
        held.enter_context(_file_lock(root / LOCK_FILE, f"the data directory {root}"))
        database = sqlite_path(url)
        if database is not None and database.resolve().parent != root:
            beside = database.resolve().with_name(database.name + ".server-lock")
            held.enter_context(_file_lock(beside, f"the database {database.resolve()}"))
        if url.get_backend_name() == "postgresql":
            held.enter_context(_advisory_lock(url, check_seconds))
        yield
