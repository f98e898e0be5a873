"""`caravan serve`, `caravan users create|list|disable|enable|update|unlock|reset-password`,
`caravan audit verify|replay`, `caravan travellers purge`.

Registered on the main CLI with `register(app)`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from data_contracts.settings import DataLayout, Settings
    from serving.scoring import ModelHolder

out = Console()
err = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory of the deployment.", show_default=False),
]


def open_database(data: Path | None) -> tuple[Engine, sessionmaker[Session], DataLayout]:
    """The operational database of the deployment at the newest schema. A new
    database is created; an existing one at an older migration is migrated only when
    CARAVAN_AUTO_MIGRATE allows it (the default), saying so; otherwise the command
    stops and names `caravan db upgrade` (migrating is then the operator's act)."""
    from data_contracts.settings import DataLayout, Settings
    from serving.auth import ServingSettings
    from serving.db import (
        current_revision,
        database_url,
        head_revision,
        make_engine,
        session_factory,
        upgrade,
    )

    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    engine = make_engine(database_url(settings, layout))
    at, head = current_revision(engine), head_revision()
    if at != head:
        if at is not None and not ServingSettings().auto_migrate:
            engine.dispose()
            err.print(
                f"the database is at migration {at}, this code expects {head}: run "
                "`caravan db upgrade` (CARAVAN_AUTO_MIGRATE is off)"
            )
            raise typer.Exit(2)
        upgrade(engine)
        if at is not None:
            err.print(f"migrated the database from {at} to {head}")
    return engine, session_factory(engine), layout


_session = open_database  # the former name


def existing_database(data: Path | None) -> tuple[Engine, sessionmaker[Session], DataLayout]:
    """The deployment's database as it is, for reading: nothing is created or migrated.
    Exits 2 naming what is missing when there is no Caravan database there."""
    from data_contracts.settings import DataLayout, Settings
    from serving.db import current_revision, database_url, make_engine, session_factory, sqlite_path

    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    url = database_url(settings, layout)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        err.print(f"no database at {path}: is --data the deployment's data directory?")
        raise typer.Exit(2)
    engine = make_engine(url)
    if current_revision(engine) is None:
        engine.dispose()
        where = path or engine.url.render_as_string(hide_password=True)
        err.print(f"no Caravan database at {where}: it was never set up")
        raise typer.Exit(2)
    return engine, session_factory(engine), layout


def _known_offices(session: Session, layout: DataLayout) -> set[str]:
    from serving.auth import known_offices
    from serving.services import QueueSettings

    return known_offices(session, QueueSettings().office_capacities, layout.validated)


LOG_LEVEL_ENV = "CARAVAN_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level() -> str:
    """The server's log level: `CARAVAN_LOG_LEVEL` (default INFO). Exits 2 naming
    the variable when it is not a level."""
    import os

    value = os.environ.get(LOG_LEVEL_ENV, "").strip().upper() or "INFO"
    if value not in LOG_LEVELS:
        err.print(
            f"{LOG_LEVEL_ENV}={os.environ.get(LOG_LEVEL_ENV)!r} is not a log level: "
            f"use one of {', '.join(LOG_LEVELS)}"
        )
        raise typer.Exit(2)
    return value


class AccessLogWithoutQuery(logging.Filter):
    """uvicorn's access-log lines without their query strings: a query may hold what
    a person typed (the stated purpose of a view of a traveller's personal data may
    name someone), and the log is read by more people than the audit log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, query = args[2].partition("?")[::2]
            if query:
                record.args = (*args[:2], f"{path}?…", *args[3:])
        return True


def configure_logging(level: str) -> None:
    """Log to stderr with time, level and logger name: records of Caravan's loggers
    (`serving.*`, `features.*`, ...) and uvicorn's from `level` up, other
    libraries' from WARNING; access-log lines without query strings
    (`AccessLogWithoutQuery`)."""
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"caravan": {"format": LOG_FORMAT}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "caravan",
                }
            },
            "root": {"level": "WARNING", "handlers": ["stderr"]},
            "loggers": {
                name: {"level": level}
                for name in ("serving", "features", "models", "pipelines", "data_contracts")
            },
        }
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogWithoutQuery) for f in access.filters):
        access.addFilter(AccessLogWithoutQuery())


def run_server(app: FastAPI, host: str, port: int, level: str) -> None:
    """uvicorn on `app`, its own log records going through `configure_logging`'s
    handler (time, level and logger name on every line)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=level.lower(), log_config=None)


@contextmanager
def held_deployment(settings: Settings, layout: DataLayout) -> Iterator[None]:
    """`serving.server_lock.deployment_lock` for as long as this runs; exits 1 with
    its message when another server holds the deployment."""
    from sqlalchemy.exc import OperationalError

    from serving.server_lock import DeploymentInUseError, deployment_lock

    with ExitStack() as held:
        try:
            held.enter_context(deployment_lock(settings, layout))
        except DeploymentInUseError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from None
        except OperationalError as exc:  # (PostgreSQL, for its advisory lock)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            err.print(f"[bold red]error:[/] cannot connect to the database: {reason}")
            raise typer.Exit(1) from None
        yield


@dataclass(frozen=True)
class DatabaseFacts:
    """What a database holds of a deployment (read by `serve` before it starts)."""

    revision: str | None  # None: never set up
    users: int = 0
    signed_in: int = 0  # users who have signed in (sessions signed with some key)
    shipments: bool = False  # a server has stored shipments

    @property
    def served(self) -> bool:
        """Whether a server has served this database (sign-ins, stored shipments):
        it belongs to a deployment with a signing key and a data directory."""
        return self.signed_in > 0 or self.shipments


def database_facts(url: str) -> DatabaseFacts:
    """The migration `url`'s database is at and what it holds; creates nothing.
    Exits 1 naming the reason when the database cannot be reached."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    from serving import orm as m
    from serving.db import current_revision, make_engine

    engine = make_engine(url)
    try:
        revision = current_revision(engine)
        if revision is None:
            return DatabaseFacts(None)
        with engine.connect() as conn:
            users = conn.scalar(select(func.count()).select_from(m.User)) or 0
            signed_in = (
                conn.scalar(
                    select(func.count())
                    .select_from(m.User)
                    .where(m.User.last_login_at.is_not(None))
                )
                or 0
            )
            shipments = conn.scalar(select(m.Shipment.shipment_id).limit(1)) is not None
        return DatabaseFacts(revision, users, signed_in, shipments)
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        err.print(f"[bold red]error:[/] cannot connect to the database: {reason}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _database_in(root: Path, url: str) -> bool:
    """Whether the database is a SQLite file inside the data directory `root` (the
    directory then holds the deployment's database itself)."""
    from serving.db import sqlite_path

    path = sqlite_path(url)
    return path is not None and path.resolve().is_relative_to(root.resolve())


def _signing_key_given() -> bool:
    """Whether CARAVAN_SECRET_KEY gives the signing key (no `secret_key` file then)."""
    from serving.auth import ServingSettings

    return ServingSettings().secret_key is not None


def _holds_deployment_files(layout: DataLayout) -> tuple[bool, str]:
    """Whether the data directory holds what a served deployment leaves there: its
    signing key `secret_key` (or, with CARAVAN_SECRET_KEY, the server's lock file);
    and what it lacks, in words."""
    from serving.auth import SECRET_KEY_FILE
    from serving.server_lock import LOCK_FILE

    if (layout.root / SECRET_KEY_FILE).is_file():
        return True, ""
    if _signing_key_given():
        if (layout.root / LOCK_FILE).is_file():
            return True, ""
        return False, f"neither {SECRET_KEY_FILE} nor {LOCK_FILE} (no server ever ran on it)"
    return False, f"no signing key ({SECRET_KEY_FILE})"


def _described(facts: DatabaseFacts) -> str:
    parts = [f"migration {facts.revision}", f"{facts.users} user(s)"]
    if facts.signed_in:
        parts.append(f"{facts.signed_in} of whom signed in")
    if facts.shipments:
        parts.append("shipments stored by a server")
    return ", ".join(parts)


def refuse_no_deployment(settings: Settings, layout: DataLayout) -> None:
    """Exit 2 naming the data directory and the reason unless it holds a deployment:
    the directory exists, the database (SQLite file, or CARAVAN_DATABASE_URL) is a
    Caravan database, and, when the database is not a file inside the directory
    (PostgreSQL), the directory holds the deployment's signing key `secret_key`.
    Creates nothing. (A mistyped --data or a volume that did not mount must not
    become a new, empty deployment with a new signing key.)"""
    from serving.db import database_url, sqlite_path

    root = layout.root
    init = "`caravan serve --init` creates a new deployment there"
    if not root.is_dir():
        err.print(
            f"[bold red]error:[/] no deployment at {root}: the directory does not exist "
            f"(is --data the deployment's data directory? {init})",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    url = database_url(settings, layout)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        inside = path.resolve().is_relative_to(root.resolve())
        check = (
            "is --data the deployment's data directory?"
            if inside
            else "is CARAVAN_DATABASE_URL the deployment's database?"
        )
        err.print(
            f"[bold red]error:[/] no deployment at {root}: no database at {path} ({check} {init})",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    facts = database_facts(url)
    where = path or make_url_shown(url)
    if facts.revision is None:
        err.print(
            f"[bold red]error:[/] no deployment at {root}: {where} is no Caravan database "
            f"(it was never set up; {init})",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if _database_in(root, url):
        return
    holds, lacking = _holds_deployment_files(layout)
    if holds:
        return
    if facts.served and not _signing_key_given():
        then = (
            "serve it with the data directory that holds its signing key (copy its "
            "secret_key there if the directory moved); `caravan serve --init` is refused "
            "on that database too, as it would start it with a new signing key"
        )
    elif facts.served:
        then = f"serve it with the data directory its server ran on ({init})"
    else:
        then = init
    err.print(
        f"[bold red]error:[/] no deployment at {root}: the directory holds {lacking}, but "
        f"the database {where} already holds a deployment ({_described(facts)}): is "
        f"--data the deployment's data directory, or a volume that did not mount? {then}",
        soft_wrap=True,
    )
    raise typer.Exit(2)


def make_url_shown(url: str) -> str:
    """`url` as it may be printed (password masked)."""
    from serving.db import normalize_url

    return normalize_url(url).render_as_string(hide_password=True)


def refuse_joining_deployment(settings: Settings, layout: DataLayout) -> None:
    """For `serve --init`: exit 2 when the database already belongs to a deployment
    that has served (users who signed in, stored shipments) and the data directory
    does not hold a signing key: --init would make a second deployment with a new
    signing key on that database (every session ended, the other deployment's
    models, history and label files elsewhere). Creates nothing."""
    from serving.auth import SECRET_KEY_FILE
    from serving.db import database_url, sqlite_path

    root = layout.root
    url = database_url(settings, layout)
    path = sqlite_path(url)
    if (root / SECRET_KEY_FILE).is_file() or _signing_key_given() or _database_in(root, url):
        return
    if path is not None and not path.is_file():
        return  # a new database
    facts = database_facts(url)
    if facts.revision is None or not facts.served:
        return
    err.print(
        f"[bold red]error:[/] `caravan serve --init` refused: the database "
        f"{path or make_url_shown(url)} already holds another deployment "
        f"({_described(facts)}), and {root} holds no signing key ({SECRET_KEY_FILE}): "
        f"--init would start a second deployment on that database with a new signing key "
        f"(every session ended; its models, history and label files left in its own data "
        f"directory); serve that deployment with its own data directory (or copy its "
        f"{SECRET_KEY_FILE} into {root}), or give this one a new database "
        f"(CARAVAN_DATABASE_URL)",
        soft_wrap=True,
    )
    raise typer.Exit(2)


def refuse_old_schema(settings: Settings, layout: DataLayout) -> None:
    """With CARAVAN_AUTO_MIGRATE off, exit 2 when the database is at an older
    migration, with the message the other commands give (the server would refuse
    it at start-up). Creates nothing."""
    from serving.auth import ServingSettings
    from serving.db import database_url, head_revision, sqlite_path

    if ServingSettings().auto_migrate:
        return
    url = database_url(settings, layout)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return  # a new database: created at the newest migration
    at, head = database_facts(url).revision, head_revision()
    if at is not None and at != head:
        err.print(
            f"the database is at migration {at}, this code expects {head}: run "
            "`caravan db upgrade` (CARAVAN_AUTO_MIGRATE is off)"
        )
        raise typer.Exit(2)


def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    init: Annotated[
        bool,
        typer.Option(
            "--init",
            help="Create a new deployment (database, signing key) when --data holds none; "
            "without it such a directory is refused. Refused on a database another "
            "deployment has served, unless --data holds its signing key.",
        ),
    ] = False,
) -> None:
    """Run the API (uvicorn) with the champion model: one server per deployment
    (a second one on the same data directory or database exits 1). A data directory
    that does not exist or holds no deployment is refused (exit 2) unless --init; so
    is, with CARAVAN_AUTO_MIGRATE=false, a database at an older migration."""
    from data_contracts.settings import DataLayout, Settings

    level = log_level()
    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    if init:
        refuse_joining_deployment(settings, layout)
    else:
        refuse_no_deployment(settings, layout)
    refuse_old_schema(settings, layout)
    from serving.app import create_app

    with held_deployment(settings, layout):
        configure_logging(level)
        run_server(create_app(settings, layout), host, port, level)


users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify the audit log and replay scores.", no_args_is_help=True)


ACTOR_REQUIRED = (
    "--by is required: account administration names the person who does it (USER is not set)"
)


def _person(value: str | None) -> str:
    """The --by option of account administration: a person, given or from USER;
    exits 2 (before any password prompt) when there is none to name."""
    from serving.policy import has_visible_text

    if value is None or not has_visible_text(value):
        err.print(f"[bold red]error:[/] {ACTOR_REQUIRED}", soft_wrap=True)
        raise typer.Exit(2)
    return value.strip()


ByOption = Annotated[
    str,
    typer.Option(
        "--by",
        envvar="USER",
        callback=_person,
        help="Who acts (audited); required when USER is not set.",
        show_default=False,
    ),
]


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="officer, analyst, data_scientist, auditor, admin")],
    data: DataOption = None,
    display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    office: Annotated[str | None, typer.Option(help="Office code (officers).")] = None,
    by: ByOption = "",  # (before the password: refused before it is asked for)
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user (the password is asked for, never echoed); audited."""
    from serving.auth import Role, check_office, create_user

    try:
        role_value = Role(role)
    except ValueError:
        err.print(f"unknown role {role!r}")
        raise typer.Exit(2) from None
    if role_value is Role.officer and not office:
        err.print("an officer needs --office")
        raise typer.Exit(2)
    engine, factory, layout = open_database(data)
    try:
        with factory() as session:
            check_office(office, _known_offices(session, layout))
            create_user(
                session,
                username=username,
                password=password,
                role=role_value,
                display_name=display_name or username,
                office_code=office,
                actor=by,
            )
            session.commit()
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    out.print(f"user {username} ({role_value.value}) created")


def _change_user(data: Path | None, username: str, by: str, **changes: object) -> None:
    """Apply `update_user` (or a password reset) to one user, audited; exit 1 if refused."""
    from sqlalchemy import select

    from serving.auth import check_office, set_password, update_user
    from serving.orm import User

    password = changes.pop("password", None)
    engine, factory, layout = open_database(data)
    try:
        with factory() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                err.print(f"no user {username!r}")
                raise typer.Exit(1)
            if isinstance(changes.get("office_code"), str):
                check_office(str(changes["office_code"]), _known_offices(session, layout))
            done = update_user(session, user, actor=by, via="cli", **changes)  # type: ignore[arg-type]
            if isinstance(password, str):
                set_password(session, user, password, actor=by)
                done["password"] = ["***", "***"]
            session.commit()
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if not done:
        out.print(f"user {username}: nothing to change")
        return
    what = ", ".join(
        f"{k} {v[0]} -> {v[1]}" if k != "password" else "password reset" for k, v in done.items()
    )
    out.print(f"user {username}: {what}")


@users_app.command("list")
def users_list(data: DataOption = None) -> None:
    """List users: role, office, active, locked."""
    from sqlalchemy import select

    from serving.orm import User

    engine, factory, _layout = open_database(data)
    try:
        with factory() as session:
            users = list(session.scalars(select(User).order_by(User.username)))
    finally:
        engine.dispose()
    for u in users:
        state = "active" if u.active else "DISABLED"
        locked = f" locked until {u.locked_until:%Y-%m-%d %H:%M} UTC" if u.locked_until else ""
        out.print(f"{u.username}\t{u.role}\t{u.office_code or '-'}\t{state}{locked}")


@users_app.command("disable")
def users_disable(username: str, data: DataOption = None, by: ByOption = "") -> None:
    """Disable a user: sign-in refused, and every token of the user refused at once."""
    _change_user(data, username, by, active=False)


@users_app.command("enable")
def users_enable(username: str, data: DataOption = None, by: ByOption = "") -> None:
    """Enable a disabled user again (old tokens stay refused: sign in again)."""
    _change_user(data, username, by, active=True)


@users_app.command("unlock")
def users_unlock(username: str, data: DataOption = None, by: ByOption = "") -> None:
    """Clear the lock that failed logins put on a user."""
    _change_user(data, username, by, unlock=True)


@users_app.command("update")
def users_update(
    username: str,
    data: DataOption = None,
    role: Annotated[
        str | None, typer.Option(help="officer, analyst, data_scientist, auditor, admin")
    ] = None,
    office: Annotated[str | None, typer.Option(help="Office code (officers).")] = None,
    display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    by: ByOption = "",
) -> None:
    """Change a user's role, office or name; audited."""
    from serving.auth import Role

    changes: dict[str, object] = {"display_name": display_name}
    if role is not None:
        try:
            changes["role"] = Role(role)
        except ValueError:
            err.print(f"--role: unknown role {role!r}")
            raise typer.Exit(2) from None
    if office is not None:
        changes["office_code"] = office
    _change_user(data, username, by, **changes)


@users_app.command("reset-password")
def users_reset_password(
    username: str,
    data: DataOption = None,
    by: ByOption = "",  # (before the password: refused before it is asked for)
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Set a new password (asked for, never echoed); ends the user's sessions; audited."""
    _change_user(data, username, by, password=password)


def _parse_head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    hexdigest = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    if not seq.isdigit() or int(seq) < 1 or not hexdigest:
        err.print(
            f"--expect: {value!r} is not SEQ:HASH with SEQ from 1 "
            "(a head printed by an earlier verify)"
        )
        raise typer.Exit(2)
    return int(seq), digest


@audit_app.command("verify")
def audit_verify(
    data: DataOption = None,
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="A head printed by an earlier verify, SEQ:HASH: that entry must still be "
            "there with that hash (detects entries deleted at the end or a rewritten log).",
        ),
    ] = None,
) -> None:
    """Check the audit log: hash chain, lookup columns, a recorded head; that stored
    scores, outcomes, referrals, views, rules and promotions have their entries, and
    that every entry recording such a row finds it with the values it recorded; that
    each stored declaration matches its content hash. Names the first problem (exit 1);
    prints the head to keep. Creates nothing."""
    from serving.services import audit_report

    checkpoint = _parse_head(expect)
    engine, factory, _layout = existing_database(data)
    try:
        with factory() as session:
            report = audit_report(session, checkpoint)
    finally:
        engine.dispose()
    result = report.result
    if not result.ok:
        if report.broken_seq is None:
            out.print(f"audit log BROKEN: {result.reason}")
        else:
            out.print(
                f"audit log BROKEN at entry seq={report.broken_seq} "
                f"id={result.first_broken_id}: {result.reason}"
            )
        raise typer.Exit(1)
    checked = f", recorded head {checkpoint[0]} found unchanged" if checkpoint else ""
    out.print(f"audit log intact: {report.entries} entries{checked}")
    if report.head is not None:
        head = f"{report.head[0]}:{report.head[1]}"
        out.print(f"head: {head}", soft_wrap=True)
        out.print(f"(keep it; later: caravan audit verify --expect {head})", soft_wrap=True)


@audit_app.command("replay")
def audit_replay(
    shipment_id: Annotated[str, typer.Argument(help="Shipment to replay.")],
    data: DataOption = None,
    score_id: Annotated[
        int | None, typer.Option("--score-id", help="This stored score (default: the latest).")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every stored score of the shipment.")
    ] = False,
) -> None:
    """Recompute a stored score from its stored feature vector and model version, and
    compare the stored score with its audit entry (probability, lane, model, feature
    vector). MISMATCH (exit 1) when either differs. A shipment with no score in the
    database is replayed from its batch scores (`caravan score`, scores/runs/): its
    latest run's, or every run's with --all."""
    from models.registry import Registry
    from serving.scoring import ModelHolder
    from serving.services import ServiceError, replay, replay_all

    if every and score_id is not None:
        err.print("--all and --score-id: give one of them")
        raise typer.Exit(2)
    engine, factory, layout = existing_database(data)
    holder = ModelHolder(Registry(layout.mlflow_db, layout.mlflow_artifacts))
    try:
        with factory() as session:
            if every:
                results = replay_all(session, holder, shipment_id)
            else:
                results = [replay(session, holder, shipment_id, score_id)]
    except ServiceError as exc:
        if exc.status != 404 or score_id is not None:
            err.print(exc.message)
            raise typer.Exit(1) from None
        _replay_batch(layout, holder, shipment_id, every, exc.message)
        return
    finally:
        engine.dispose()
    for result in results:
        if result["stored"] is None:  # (an audited score whose row is gone)
            out.print(
                f"shipment {shipment_id} score {result['score_id']} (database): MISMATCH ("
                + "; ".join(result["differences"])
                + ")",
                soft_wrap=True,
            )
            continue
        verdict = "MATCH" if result["matches"] else "MISMATCH"
        if not result["recomputed_matches"]:
            verdict += " (recomputed differs from stored)"
        if result["differences"]:
            verdict += (
                " (stored differs from the audit log: " + "; ".join(result["differences"]) + ")"
            )
        out.print(
            f"shipment {shipment_id} score {result['score_id']} (database) "
            f"model {result['model_version']}: "
            f"stored {result['stored']!r} recomputed {result['recomputed']!r} {verdict}"
        )
    if not all(r["matches"] for r in results):
        raise typer.Exit(1)


def _replay_batch(
    layout: DataLayout, holder: ModelHolder, shipment_id: str, every: bool, no_score: str
) -> None:
    """Replay the shipment's batch scores (latest run, or all): recompute from the
    stored vector with the stored model version; MISMATCH (exit 1) when the recomputed
    probability differs or the vector no longer has its recorded hash."""
    import math

    from pipelines.modelling import batch_scores

    found = batch_scores(layout, shipment_id)
    if not found:
        err.print(f"{no_score}: not in the database, nor in any batch run under {layout.scores}")
        raise typer.Exit(1)
    ok = True
    for score in found if every else found[-1:]:
        where = f"batch run {score.run}" if score.run else "batch scores"
        head = (
            f"shipment {shipment_id} {where} ({score.source}) model {score.model_version}: "
            f"stored {score.probability!r}"
        )
        if score.vector is None:
            out.print(f"{head} MISMATCH (its feature vector is not stored)", soft_wrap=True)
            ok = False
            continue
        recomputed = float(holder.version(score.model_version).predict_vectors([score.vector])[0])
        same = math.isclose(score.probability, recomputed, rel_tol=1e-9, abs_tol=1e-12)
        verdict = "MATCH" if same and score.vector_matches_ref else "MISMATCH"
        if not same:
            verdict += " (recomputed differs from stored)"
        if not score.vector_matches_ref:
            verdict += " (the stored feature vector differs from its recorded reference)"
        out.print(f"{head} recomputed {recomputed!r} {verdict}", soft_wrap=True)
        ok = ok and same and score.vector_matches_ref
    if not ok:
        raise typer.Exit(1)


travellers_app = typer.Typer(help="Traveller (API/PNR) records: retention.")
RETENTION_ACTOR = "retention"  # the scheduled purge's actor (no person decides it)


@travellers_app.command("purge")
def travellers_purge(
    data: DataOption = None,
    days: Annotated[
        int,
        typer.Option(
            "--days",
            envvar="CARAVAN_TRAVELLER_RETENTION_DAYS",
            help="Keep records of journeys that departed within this many days.",
        ),
    ] = 365,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            envvar="USER",
            help=f"Who purges (audited). Without it and USER, the scheduled purge of the "
            f"configured retention is audited as {RETENTION_ACTOR!r}; another --days "
            "needs a person.",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Delete traveller records older than the retention period, in the database and
    in validated/travellers.parquet; the purge is audited (cutoff and count only)."""
    import datetime as dt
    import os

    import polars as pl

    from pipelines.validate import apply_retention, write_parquet
    from serving.db import narrow_to_owner
    from serving.policy import has_visible_text
    from serving.retention import RetentionError, cutoff_for, purge_travellers

    try:
        cutoff = cutoff_for(days, dt.datetime.now(dt.UTC))
    except RetentionError as exc:
        err.print(f"--days: {exc}")
        raise typer.Exit(2) from None
    if not has_visible_text(by):
        # The scheduled purge (cron, a systemd timer) applies the configured policy:
        # nobody decides it then, and the system actor says so. A purge with another
        # period is someone's decision and must name them.
        configured = os.environ.get("CARAVAN_TRAVELLER_RETENTION_DAYS", "").strip() or "365"
        if str(days) != configured:
            err.print(
                "[bold red]error:[/] --by is required: a purge with another --days than the "
                f"configured retention ({configured}) names the person who decides it "
                "(USER is not set)",
                soft_wrap=True,
            )
            raise typer.Exit(2)
        by = RETENTION_ACTOR
    engine, factory, layout = open_database(data)
    path = layout.validated / "travellers.parquet"
    try:
        # The file first (written aside, not yet in place), then the database rows and
        # one audit entry with both counts; the file replaces the old one once that entry
        # is committed, so the record never says less than was erased.
        on_disk, kept = 0, None
        if path.exists():
            frame = pl.read_parquet(path)
            kept = frame.filter(pl.col("departure_at") >= cutoff)
            on_disk = frame.height - kept.height
        # Caravan's own copies of stored records in raw/ (written from the database),
        # and the cutoff that `caravan validate` applies to raw/ from now on
        counted = apply_retention(layout, cutoff, write=False)
        files = {str(path.relative_to(layout.root)): on_disk, **counted}
        with factory() as session:
            stored = purge_travellers(session, cutoff, by, files=files)
        if kept is not None and on_disk:
            write_parquet(kept, path)
        apply_retention(layout, cutoff)
        narrow_to_owner(path)
    finally:
        engine.dispose()
    in_raw = sum(n for f, n in files.items() if f.startswith("raw"))
    out.print(
        f"purged traveller records that departed before {cutoff:%Y-%m-%d}: "
        f"{stored} in the database, {on_disk} in {path}, {in_raw} in Caravan's copies in "
        f"raw/travellers/; caravan validate leaves out older ones found in raw/",
        soft_wrap=True,
    )


db_app = typer.Typer(help="The operational database: its migrations.", no_args_is_help=True)


@db_app.command("current")
def db_current(data: DataOption = None) -> None:
    """Print the migration the database is at and the newest this code ships."""
    from serving.db import current_revision, head_revision

    engine, _factory, _layout = existing_database(data)
    try:
        at, head = current_revision(engine), head_revision()
    finally:
        engine.dispose()
    state = "up to date" if at == head else "behind: run caravan db upgrade"
    out.print(f"database at migration {at}; code expects {head} ({state})")


@db_app.command("upgrade")
def db_upgrade(data: DataOption = None) -> None:
    """Migrate the database to the newest schema (creating it when there is none):
    the step to take, after a backup, when CARAVAN_AUTO_MIGRATE is off."""
    from data_contracts.settings import DataLayout, Settings
    from serving.db import current_revision, database_url, head_revision, make_engine, upgrade

    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    layout.root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(settings, layout))
    try:
        before, head = current_revision(engine), head_revision()
        if before == head:
            out.print(f"database already at migration {head}")
            return
        upgrade(engine)
    finally:
        engine.dispose()
    out.print(f"migrated the database from {before or 'nothing (new database)'} to {head}")


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `caravan` CLI."""
    app.command("serve")(serve)
    app.add_typer(users_app, name="users")
    app.add_typer(audit_app, name="audit")
    app.add_typer(travellers_app, name="travellers")
    app.add_typer(db_app, name="db")
