"""`caravan serve`, `caravan users create`, `caravan audit verify|replay`,
`caravan travellers purge`.

Registered on the main CLI with `register(app)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from data_contracts.settings import DataLayout

out = Console()
err = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory of the deployment.", show_default=False),
]


def open_database(data: Path | None) -> tuple[Engine, sessionmaker[Session], DataLayout]:
    """The operational database of the deployment, migrated to the newest schema."""
    from data_contracts.settings import DataLayout, Settings
    from serving.db import database_url, make_engine, session_factory, upgrade

    settings = Settings(data=data) if data is not None else Settings()
    layout = DataLayout(settings.data)
    engine = make_engine(database_url(settings, layout))
    upgrade(engine)
    return engine, session_factory(engine), layout


_session = open_database  # the former name


def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the API (uvicorn) with the champion model."""
    import uvicorn

    from data_contracts.settings import DataLayout, Settings
    from serving.app import create_app

    settings = Settings(data=data) if data is not None else Settings()
    app = create_app(settings, DataLayout(settings.data))
    uvicorn.run(app, host=host, port=port, log_level="info")


users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify the audit log and replay scores.", no_args_is_help=True)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="officer, analyst, data_scientist, auditor, admin")],
    data: DataOption = None,
    display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    office: Annotated[str | None, typer.Option(help="Office code (officers).")] = None,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user (the password is asked for, never echoed)."""
    from serving.auth import Role, create_user

    try:
        role_value = Role(role)
    except ValueError:
        err.print(f"unknown role {role!r}")
        raise typer.Exit(2) from None
    if role_value is Role.officer and not office:
        err.print("an officer needs --office")
        raise typer.Exit(2)
    engine, factory, _layout = open_database(data)
    try:
        with factory() as session:
            create_user(
                session,
                username=username,
                password=password,
                role=role_value,
                display_name=display_name or username,
                office_code=office,
            )
            session.commit()
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    out.print(f"user {username} ({role_value.value}) created")


@audit_app.command("verify")
def audit_verify(data: DataOption = None) -> None:
    """Check the audit log's hash chain; name the first broken entry (exit 1)."""
    from serving.services import verify_audit

    engine, factory, _layout = open_database(data)
    try:
        with factory() as session:
            n, result, seq = verify_audit(session)
    finally:
        engine.dispose()
    if result.ok:
        out.print(f"audit log intact: {n} entries")
        return
    out.print(f"audit log BROKEN at entry seq={seq} id={result.first_broken_id}: {result.reason}")
    raise typer.Exit(1)


@audit_app.command("replay")
def audit_replay(
    shipment_id: Annotated[str, typer.Argument(help="Shipment to replay.")],
    data: DataOption = None,
) -> None:
    """Recompute a stored score from its stored feature vector and model version."""
    from models.registry import Registry
    from serving.scoring import ModelHolder
    from serving.services import ServiceError, replay

    engine, factory, layout = open_database(data)
    holder = ModelHolder(Registry(layout.mlflow_db, layout.mlflow_artifacts))
    try:
        with factory() as session:
            result = replay(session, holder, shipment_id)
    except ServiceError as exc:
        err.print(exc.message)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    out.print(
        f"shipment {shipment_id} score {result['score_id']} model {result['model_version']}: "
        f"stored {result['stored']!r} recomputed {result['recomputed']!r} "
        f"{'MATCH' if result['matches'] else 'MISMATCH'}"
    )
    if not result["matches"]:
        raise typer.Exit(1)


travellers_app = typer.Typer(help="Traveller (API/PNR) records: retention.")


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
    by: Annotated[str, typer.Option("--by", envvar="USER", help="Who purges (audited).")] = (
        "retention"
    ),
) -> None:
    """Delete traveller records older than the retention period, in the database and
    in validated/travellers.parquet; the purge is audited (cutoff and count only)."""
    import datetime as dt

    import polars as pl

    from pipelines.validate import write_parquet
    from serving.retention import RetentionError, cutoff_for, purge_travellers

    try:
        cutoff = cutoff_for(days, dt.datetime.now(dt.UTC))
    except RetentionError as exc:
        err.print(f"--days: {exc}")
        raise typer.Exit(2) from None
    engine, factory, layout = open_database(data)
    try:
        with factory() as session:
            stored = purge_travellers(session, cutoff, by)
    finally:
        engine.dispose()
    path = layout.validated / "travellers.parquet"
    on_disk = 0
    if path.exists():
        frame = pl.read_parquet(path)
        kept = frame.filter(pl.col("departure_at") >= cutoff)
        on_disk = frame.height - kept.height
        if on_disk:
            write_parquet(kept, path)
    out.print(
        f"purged traveller records that departed before {cutoff:%Y-%m-%d}: "
        f"{stored} in the database, {on_disk} in {path}"
    )


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `caravan` CLI."""
    app.command("serve")(serve)
    app.add_typer(users_app, name="users")
    app.add_typer(audit_app, name="audit")
    app.add_typer(travellers_app, name="travellers")
