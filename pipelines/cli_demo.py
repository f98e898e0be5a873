"""`caravan demo-serve`: serve the demo world with today's queues filled.

The last step of `make demo`. On a data directory with a promoted champion it

1. creates one demo account per role (idempotent: an existing account gets its
   demo password, role and office back);
2. loads the example targeting rules (`serving/reference/example_rules.yaml`) and
   the watchlist of `validated/watchlist.parquet` into the database (unchanged
   ones are left alone);
3. takes the shipments of the world's last day(s), moves them whole days forward
   so that the last day is today (UTC), under ids marked with today's date, and
   ingests them through the service code the API uses (validated, scored against
   the whole history, as the server and `caravan features` see it: the originals,
   declared those days earlier, are part of it; stored, audited);
4. builds today's queue of every office that received shipments;
5. prints the address and the accounts, and runs the API (uvicorn) in the
   foreground until Ctrl-C.

Steps 1-4 are `setup_demo`, which the tests call without the server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy.orm import Session, sessionmaker

    from data_contracts.settings import DataLayout, Settings
    from serving.services import Services

err = Console(stderr=True, highlight=False)
Say = Callable[[str], None]

RULES_FILE = Path(__file__).resolve().parents[1] / "serving" / "reference" / "example_rules.yaml"
DEMO_ACTOR = "demo-setup"
INGEST_CHUNK = 500


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: str
    password: str
    display_name: str
    office_code: str | None = None


def demo_accounts(officer_office: str) -> list[DemoAccount]:
    """One account per role; the officer works at `officer_office`."""
    return [
        DemoAccount(
            "demo-officer",
            "officer",
            "Officer-pass-2026",
            "Demo targeting officer",
            officer_office,
        ),
        DemoAccount("demo-analyst", "analyst", "Analyst-pass-2026", "Demo risk analyst"),
        DemoAccount(
            "demo-data-scientist", "data_scientist", "Scientist-pass-2026", "Demo data scientist"
        ),
        DemoAccount("demo-auditor", "auditor", "Auditor-pass-2026", "Demo auditor"),
        DemoAccount("demo-admin", "admin", "Admin-pass-2026", "Demo administrator"),
    ]


@dataclass(frozen=True)
class DemoSetup:
    day: dt.date
    shift_days: int
    accounts: list[DemoAccount]
    ingested: int
    unchanged: int
    refused: int
    rules_created: int
    rules_unchanged: int
    watchlist: str
    queues: dict[str, int]  # office -> entries of today's queue
    # offices whose own day (their time zone) is not `day`: that day's queue is built too
    local_days: dict[str, dt.date] = field(default_factory=dict)


class DemoError(Exception):
    """The data directory is not ready for the demo; the message says what to run."""


# --------------------------------------------------------------------------- steps


def _ensure_accounts(session: Session, accounts: Sequence[DemoAccount]) -> None:
    from sqlalchemy import select

    from serving.auth import Role, create_user, set_password, update_user, verify_password
    from serving.orm import User

    for a in accounts:
        user = session.scalar(select(User).where(User.username == a.username))
        if user is None:
            create_user(
                session,
                username=a.username,
                password=a.password,
                role=Role(a.role),
                display_name=a.display_name,
                office_code=a.office_code,
                actor=DEMO_ACTOR,
            )
            continue
        if (user.role, user.office_code, user.active) != (a.role, a.office_code, True) or (
            user.locked_until
        ):  # put the demo account back as documented, audited
            update_user(
                session,
                user,
                actor=DEMO_ACTOR,
                role=Role(a.role),
                office_code=a.office_code,
                active=True,
                unlock=True,
                via="demo-serve",
            )
        if not verify_password(user.password_hash, a.password):
            set_password(session, user, a.password, actor=DEMO_ACTOR)
    session.commit()


def _load_rules(session: Session) -> tuple[int, int]:
    from serving.rules_engine import read_rules_yaml
    from serving.services import import_rules

    rules = read_rules_yaml(RULES_FILE.read_text())
    created, unchanged = import_rules(session, rules, DEMO_ACTOR, keep_newer=True)
    session.commit()
    return len(created), len(unchanged)


def _load_watchlist(session: Session, services: Services, entries: pl.DataFrame | None) -> str:
    """Load the validated watchlist into the database unless it is there already."""
    from sqlalchemy import select

    from serving import orm as m
    from serving.services import content_hash, jsonable, load_watchlist

    if entries is None or entries.is_empty():
        return "no watchlist (caravan watchlist import)"
    names = sorted(set(entries["list_name"].to_list()))
    stored = {
        (e.entry_id, e.content_hash)
        for e in session.scalars(
            select(m.WatchlistEntry).where(
                m.WatchlistEntry.list_name.in_(names), m.WatchlistEntry.active.is_(True)
            )
        )
    }
    wanted = {(r["entry_id"], content_hash(jsonable(r))) for r in entries.to_dicts()}
    if stored == wanted:
        return f"{', '.join(names)}: {len(wanted)} entries (already loaded)"
    result = load_watchlist(session, services, entries, DEMO_ACTOR)
    return f"{', '.join(names)}: {result['entries']} entries loaded"


def redated_slice(
    ships: pl.DataFrame, items: pl.DataFrame, today: dt.date, days: int
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The shipments of the last `days` days of the world (with their goods lines),
    moved forward by whole days so that the last day is `today`, under ids marked
    with today's date. Returns (shipments, items, days moved)."""
    import polars as pl

    last = ships["declared_at"].max()
    assert isinstance(last, dt.datetime)
    shift = (today - last.date()).days
    first = dt.datetime.combine(last.date(), dt.time(), last.tzinfo) - dt.timedelta(days=days - 1)
    mark = f"-D{today:%y%m%d}"
    part = ships.filter(pl.col("declared_at") >= first)
    delta = dt.timedelta(days=shift)
    moved = part.with_columns(
        pl.col("shipment_id") + mark,
        pl.col("declared_at") + delta,
        pl.col("expected_arrival_at") + delta,
    ).sort("declared_at", "shipment_id")
    lines = items.join(part.select("shipment_id"), on="shipment_id", how="semi").with_columns(
        pl.col("shipment_id") + mark, pl.col("item_id") + mark
    )
    return moved, lines, shift


def _payloads(ships: pl.DataFrame, items: pl.DataFrame) -> list[dict[str, Any]]:
    from serving.services import jsonable

    lines: dict[str, list[dict[str, Any]]] = {}
    for row in items.sort("shipment_id", "line_no").to_dicts():
        lines.setdefault(row["shipment_id"], []).append(row)
    return [jsonable({**s, "items": lines.get(s["shipment_id"], [])}) for s in ships.to_dicts()]


def _ingest(
    factory: sessionmaker[Session], services: Services, payloads: Sequence[dict[str, Any]]
) -> tuple[int, int, int]:
    from pydantic import ValidationError

    from serving.services import ingest_shipments, prepare_shipment

    stored = unchanged = refused = 0
    for start in range(0, len(payloads), INGEST_CHUNK):
        prepared = []
        for raw in payloads[start : start + INGEST_CHUNK]:
            try:
                prepared.append(prepare_shipment(raw))
            except ValidationError:
                refused += 1
        with factory() as session:
            new, same, conflicts = ingest_shipments(session, services, prepared, DEMO_ACTOR)
        stored, unchanged, refused = (
            stored + len(new),
            unchanged + len(same),
            refused + len(conflicts),
        )
    return stored, unchanged, refused


def setup_demo(
    settings: Settings,
    layout: DataLayout,
    *,
    today: dt.date | None = None,
    days: int = 1,
    say: Say | None = None,
) -> DemoSetup:
    """Steps 1-4 of the module doc, on the deployment's database."""

    from models.registry import Registry
    from pipelines.features import MissingInputError, load_history
    from serving.db import database_url, make_engine, session_factory, upgrade
    from serving.history import HistoryStore
    from serving.scoring import ModelHolder
    from serving.services import QueueSettings, Services, get_queue

    say = say or (lambda _m: None)
    today = today or dt.datetime.now(dt.UTC).date()
    try:
        history = load_history(layout)
    except MissingInputError as exc:
        raise DemoError(str(exc)) from None
    holder = ModelHolder(Registry(layout.mlflow_db, layout.mlflow_artifacts))
    if not layout.mlflow_db.exists() or not holder.refresh():
        raise DemoError("no champion model: run `caravan train` and `caravan promote` first")

    ships, items, shift = redated_slice(history.shipments, history.items, today, days)
    if ships.is_empty():
        raise DemoError("the world has no shipments to serve")
    # Scored against the whole history, originals included: the history the running
    # server loads and `caravan features` reads once validate has the copies, so that
    # their stored features are the batch's (review of stop 24: scored without the
    # originals, every copy's trader counts and price references differed).
    services = Services(layout, holder, HistoryStore(history), QueueSettings())

    engine = make_engine(database_url(settings, layout))
    try:
        upgrade(engine)
        factory = session_factory(engine)
        say("example rules and watchlist")
        with factory() as session:
            created, same_rules = _load_rules(session)
        with factory() as session:
            watch = _load_watchlist(session, services, history.watchlist)
        say(f"ingesting {ships.height:,} shipments of {today.isoformat()}")
        stored, unchanged, refused = _ingest(factory, services, _payloads(ships, items))
        say("building today's queues")
        queues: dict[str, int] = {}
        local_days: dict[str, dt.date] = {}
        for office in sorted(set(ships["office_code"].to_list())):
            with factory() as session:
                refs, _built = get_queue(session, services, str(office), today, DEMO_ACTOR)
                queues[str(office)] = len(refs)
            # An office in another zone may be on its next day already: its queue page
            # opens there by default; build that day's queue too (what belongs to it).
            local = services.queue.today(str(office))
            if local != today:
                local_days[str(office)] = local
                with factory() as session:
                    get_queue(session, services, str(office), local, DEMO_ACTOR)
        # The officer works where today's queue is longest.
        accounts = demo_accounts(max(sorted(queues), key=lambda o: queues[o]))
        say("demo accounts")
        with factory() as session:
            _ensure_accounts(session, accounts)
    finally:
        engine.dispose()
    return DemoSetup(
        day=today,
        shift_days=shift,
        accounts=accounts,
        ingested=stored,
        unchanged=unchanged,
        refused=refused,
        rules_created=created,
        rules_unchanged=same_rules,
        watchlist=watch,
        queues=queues,
        local_days=local_days,
    )


# --------------------------------------------------------------------------- the command


def _say(line: str) -> None:
    print(line, flush=True)


def print_setup(setup: DemoSetup, url: str) -> None:
    """The address and the accounts (the test reads these lines)."""
    officer = next(a for a in setup.accounts if a.role == "officer")
    _say(
        f"Demo world: {setup.ingested:,} shipments of the world's last day ingested as "
        f"today's ({setup.unchanged:,} already there, {setup.refused:,} refused; dates moved "
        f"{setup.shift_days} days forward). Rules: {setup.rules_created} loaded, "
        f"{setup.rules_unchanged} unchanged. Watchlist: {setup.watchlist}."
    )
    _say(f"Queue day: {setup.day.isoformat()}")
    if setup.local_days:
        by_day: dict[dt.date, list[str]] = {}
        for office, day in sorted(setup.local_days.items()):
            by_day.setdefault(day, []).append(office)
        _say(
            "  (the shipments are declared on that UTC day; offices already on another day "
            "in their time zone, whose pages open there: "
            + "; ".join(f"{day.isoformat()}: {', '.join(o)}" for day, o in by_day.items())
            + f". Their queues of {setup.day.isoformat()} hold today's shipments.)"
        )
    _say(
        f"Today's queues ({sum(setup.queues.values())} referrals): "
        + ", ".join(f"{office} {n}" for office, n in sorted(setup.queues.items()))
    )
    _say(f"Caravan: {url}/")
    _say(f"Sign in (web pages): {url}/web/login")
    _say(f"Officer's queue (web): {url}/web/queue?day={setup.day.isoformat()}")
    _say(f"API docs: {url}/docs")
    _say(f"Officer's queue (API): {url}/api/v1/queues/{officer.office_code}/{setup.day}")
    _say("Demo accounts (role, user, password):")
    for a in setup.accounts:
        where = f"office {a.office_code}" if a.office_code else ""
        _say(f"  {a.role:<15} {a.username:<20} {a.password:<20} {where}".rstrip())
    _say("Ctrl-C stops the server.")


def demo_serve(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory of the deployment.", show_default=False),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    days: Annotated[
        int, typer.Option(min=1, max=30, help="Days at the end of the world to serve as today.")
    ] = 1,
) -> None:
    """Serve the demo world: demo accounts, example rules, watchlist, today's queues."""
    from data_contracts.settings import DataLayout, Settings
    from pipelines.cli_serving import configure_logging, held_deployment, log_level, run_server
    from serving.app import create_app

    level = log_level()
    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    # One server per deployment: held before the demo writes to the database.
    with held_deployment(settings, layout):
        try:
            with err.status("preparing the demo") as status:
                setup = setup_demo(settings, layout, days=days, say=lambda m: status.update(m))
        except DemoError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        print_setup(setup, f"http://{shown}:{port}")
        configure_logging(level)  # (after the progress display of the preparation)
        run_server(create_app(settings, layout), host, port, level)


def register(app: typer.Typer) -> None:
    app.command("demo-serve")(demo_serve)
