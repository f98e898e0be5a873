"""The `caravan` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from data_contracts.readers import InputFileError
from data_contracts.settings import DataLayout, Settings

app = typer.Typer(
    name="caravan",
    help="Caravan: risk targeting of shipments for arms, their parts and ammunition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for the summary tables when the output is a file or a pipe.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out = Console(width=None if sys.stdout.isatty() else 140)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Data directory of the deployment (default ./caravan-data, or the "
        "CARAVAN_DATA environment variable).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _layout(data: Path | None) -> DataLayout:
    settings = Settings() if data is None else Settings(data=data)
    return DataLayout(settings.data)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    )


@app.command()
def generate(
    data: DataOption = None,
    shipments: Annotated[
        int, typer.Option("--shipments", min=100, help="Number of shipments.")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 7,
    days: Annotated[int, typer.Option("--days", min=30, help="Days of trade.")] = 730,
    broken_share: Annotated[
        float,
        typer.Option("--broken-share", min=0.0, max=0.2, help="Share of rows broken on purpose."),
    ] = 0.005,
    as_json: JsonOption = False,
) -> None:
    """Generate a synthetic Central Asian trade world: raw/ inputs and truth/."""
    from pipelines.generate import run_generate
    from pipelines.synthetic import WorldConfig

    layout = _layout(data)
    config = WorldConfig(n_shipments=shipments, seed=seed, days=days, broken_share=broken_share)
    with _progress() as bar:
        task = bar.add_task("generating", total=1.0)

        def report(stage: str, fraction: float) -> None:
            bar.update(task, description=stage, completed=fraction)

        world, counts = run_generate(layout, config, progress=report)
        bar.update(task, completed=1.0)
    summary: dict[str, Any] = {
        "data": str(layout.root),
        "seed": seed,
        "rows": counts,
        "trafficking_shipments": int(world.truth["is_trafficking"].sum()),
        "typologies": {
            str(k): int(v)
            for k, v in world.truth.filter(world.truth["is_trafficking"])
            .group_by("typology")
            .len()
            .sort("typology")
            .iter_rows()
        },
        "broken_rows": world.broken.height,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"Synthetic world in {layout.root}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    out.print(
        f"{summary['trafficking_shipments']:,} trafficking shipments "
        f"({', '.join(f'{k} {v}' for k, v in summary['typologies'].items())}); "
        f"{summary['broken_rows']:,} rows broken on purpose."
    )


@app.command()
def validate(
    data: DataOption = None,
    gx: Annotated[
        bool,
        typer.Option(
            "--gx/--no-gx", help="Also run the Great Expectations suites and write their report."
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Check raw/ against the contracts: good rows to validated/, bad rows to quarantine/."""
    from pipelines.validate import run_validate

    layout = _layout(data)
    try:
        with _progress() as bar:
            task = bar.add_task("validating", total=None)
            run = run_validate(
                layout, gx=gx, progress=lambda msg: bar.update(task, description=msg)
            )
    except InputFileError as exc:
        _fail(str(exc))
        return
    summary = run.summary()
    if as_json:
        out.print_json(json.dumps(summary))
        return
    if run.pulled:
        out.print(
            "Written to raw/ first, from the database (stored over the API): "
            + ", ".join(f"{n:,} {t}" for t, n in run.pulled.items())
        )
    if run.expired:
        out.print(
            "Left out, erased by traveller retention (caravan travellers purge): "
            + ", ".join(f"{n:,} {t}" for t, n in run.expired.items())
        )
    table = Table(title=f"Validation of {layout.raw}")
    for col in ("input", "rows", "accepted", "quarantined", "rejected by rule"):
        table.add_column(col, justify="left" if col in ("input", "rejected by rule") else "right")
    for name, t in summary["tables"].items():
        rules = "\n".join(f"{r}: {n:,}" for r, n in t["rules"].items()) or "-"
        table.add_row(name, f"{t['rows']:,}", f"{t['accepted']:,}", f"{t['quarantined']:,}", rules)
    out.print(table)
    if run.report:
        out.print(f"Great Expectations report: {run.report}")
    out.print(
        f"Accepted rows in {layout.validated}, rejected rows with reasons in {layout.quarantine}."
    )


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


@app.command()
def features(data: DataOption = None, as_json: JsonOption = False) -> None:
    """Build point-in-time features of every validated shipment into features/."""
    from pipelines.features import MissingInputError, run_features

    layout = _layout(data)
    try:
        with _progress() as bar:
            task = bar.add_task("features", total=None)
            frame, path = run_features(
                layout, progress=lambda msg: bar.update(task, description=msg)
            )
    except MissingInputError as exc:
        _fail(str(exc))
        return
    summary = {
        "rows": frame.height,
        "features": frame.width - 7,
        "path": str(path),
        # (with the export's own columns, `extras`, when an import brought some)
        "feature_set_version": json.loads((layout.features / "feature_set.json").read_text())[
            "feature_set_version"
        ],
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"{summary['rows']:,} shipments x {summary['features']} features "
        f"(feature set {summary['feature_set_version']}) written to {path}"
    )


from pipelines.cli_serving import register  # noqa: E402

register(app)
app.command("demo-serve")(__import__("pipelines.cli_demo").cli_demo.demo_serve)

watchlist_app = typer.Typer(
    help="Load watchlists (UN Security Council list, national lists).", no_args_is_help=True
)
app.add_typer(watchlist_app, name="watchlist")


@watchlist_app.command("import")
def watchlist_import(
    data: DataOption = None,
    un: Annotated[Path | None, typer.Option("--un", help="UN SC Consolidated List XML.")] = None,
    national: Annotated[
        Path | None,
        typer.Option(
            "--national", help="National watchlist CSV (see data_contracts/loaders/national.py)."
        ),
    ] = None,
    list_name: Annotated[
        str | None,
        typer.Option(
            "--list-name",
            help="Name of the national list (required with --national; UN-SC is reserved).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Load watchlist entries into validated/watchlist.parquet (replacing the same list)."""
    import polars as pl

    from data_contracts.loaders import ReferenceFileError
    from pipelines.features import WATCHLIST_FILE
    from pipelines.validate import write_parquet

    if un is None and national is None:
        _fail("give --un FILE and/or --national FILE")
    layout = _layout(data)
    frames = []
    try:
        if un is not None:
            from data_contracts.loaders.un_sc import load_un_consolidated

            frames.append(load_un_consolidated(un))
        if national is not None:
            from data_contracts.loaders.national import list_name_problem, load_national_csv

            if list_name is None:
                _fail("--national needs --list-name NAME (the list it replaces)")
                return
            problem = list_name_problem(list_name)
            if problem:
                _fail(f"--list-name: {problem}")
                return
            frames.append(load_national_csv(national, list_name))
    except ReferenceFileError as exc:
        _fail(str(exc))
        return
    new = pl.concat(frames)
    path = layout.validated / WATCHLIST_FILE
    if path.exists():
        lists = new["list_name"].unique().to_list()
        old = pl.read_parquet(path).filter(~pl.col("list_name").is_in(lists))
        new = pl.concat([old, new.select(old.columns)])
    write_parquet(new, path)
    _warn_served_lists(data, layout, sorted({str(n) for f in frames for n in f["list_name"]}))
    counts = {
        str(k): int(v) for k, v in new.group_by("list_name").len().sort("list_name").iter_rows()
    }
    if as_json:
        out.print_json(json.dumps({"path": str(path), "entries": counts}))
        return
    out.print(f"Watchlist entries in {path}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


def _warn_served_lists(data: Path | None, layout: DataLayout, names: list[str]) -> None:
    """Warn when the deployment's database holds watchlists: the service screens with
    the database's lists (its source of truth; `serving.services.restore_watchlists`),
    so an import into validated/ reaches `caravan features` and training, but not a
    running service, and rescreens nothing. Found in review: it said nothing."""
    from sqlalchemy import func, inspect, select

    from data_contracts.settings import Settings
    from serving import orm as m
    from serving.db import database_url, engine_if_present

    settings = Settings() if data is None else Settings(data=data)
    engine = engine_if_present(database_url(settings, layout))
    if engine is None:
        return
    try:
        if not inspect(engine).has_table("watchlist_entries"):
            return
        with engine.connect() as conn:
            held = dict(
                conn.execute(
                    select(m.WatchlistEntry.list_name, func.count()).group_by(
                        m.WatchlistEntry.list_name
                    )
                ).all()
            )
    except Exception:  # (an unreachable database: nothing to compare)
        return
    finally:
        engine.dispose()
    if not held:
        return  # (the service loads the file's lists at its next start)
    served = [n for n in names if n in held]
    new = [n for n in names if n not in held]
    api = "load it over the API (POST /api/v1/watchlists/un or /national) to screen with it"
    if served:
        console.print(
            f"[yellow]warning:[/] this deployment's service screens with its database's copy "
            f"of {', '.join(served)}, which this import does not change (it wrote "
            f"validated/watchlist.parquet, read by `caravan features` and training): {api} "
            "and rescreen the stored shipments",
            soft_wrap=True,
        )
    if new:
        console.print(
            f"[yellow]warning:[/] a running service takes {', '.join(new)} only at its next "
            f"start, without rescreening the stored shipments: {api} at once",
            soft_wrap=True,
        )


def _date(value: str | None, option: str) -> Any:
    import datetime as dt

    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} '{value}' is not a date (YYYY-MM-DD)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@app.command()
def train(
    data: DataOption = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Use only shipments declared before this date (YYYY-MM-DD)."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="What counts as a positive: arms | any-finding.")
    ] = "arms",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 7,
    max_depth: Annotated[
        int, typer.Option("--max-depth", help="Trees' maximum depth (TrainConfig's default).")
    ] = 6,
    as_json: JsonOption = False,
) -> None:
    """Train a LightGBM model on inspected shipments; register it as `challenger`."""
    from models.assess import MissingInputError as MissingModelInputError
    from models.dataset import Target
    from models.train import TrainConfig
    from pipelines.features import MissingInputError
    from pipelines.modelling import run_train

    if target not in ("arms", "any-finding"):
        _fail(f"--target '{target}' must be arms or any-finding")
    layout = _layout(data)
    waiting = _outcomes_not_validated(layout)
    if waiting:
        console.print(
            f"[yellow]warning:[/] {waiting:,} outcome(s) in raw/ (recorded by officers since "
            "the last `caravan validate`, or added by hand) are not in validated/ and are not "
            "trained on: run `caravan validate` and `caravan features` first to use them",
            soft_wrap=True,
        )
    try:
        with _progress() as bar:
            task = bar.add_task("training", total=None)
            run = run_train(
                layout,
                target=Target(target),
                until=_date(until, "--until"),
                config=TrainConfig(seed=seed, max_depth=max_depth),
                say=lambda m: bar.update(task, description=m),
            )
    except (MissingInputError, MissingModelInputError, ValueError) as exc:
        _fail(str(exc))
        return
    summary = {
        "version": run.version,
        "alias": "challenger",
        "rows": run.rows,
        "trees": run.best_iteration,
        "report": str(run.report),
        "evaluation": run.evaluation.to_json(),
        "outcomes_without_shipment": run.outcomes_without_shipment,
        "early_stopping": run.early_stopping,
    }
    stopping_note = (run.early_stopping or {}).get("note")
    if stopping_note:  # the number of trees was not chosen on average precision
        from rich.markup import escape

        console.print(
            f"[yellow]warning:[/] {escape(stopping_note)}", soft_wrap=True, highlight=False
        )
    if run.outcomes_without_shipment:
        console.print(
            f"[yellow]warning:[/] {run.outcomes_without_shipment:,} validated outcome(s) "
            f"({run.positives_without_shipment:,} positive) were not trained on: their "
            "shipments are not in validated/ (quarantined or never declared); counted in "
            "the model card and the MLflow run",
            soft_wrap=True,
        )
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    _print_evaluation(run.evaluation)
    out.print(
        f"Model version {run.version} ({run.best_iteration} "
        f"tree{'s' if run.best_iteration != 1 else ''}, trained on "
        f"{run.rows['train']:,} inspected shipments) registered as challenger. "
        f"Report: {run.report}"
    )


def _outcomes_not_validated(layout: DataLayout) -> int:
    """The outcomes raw/ holds (the service writes each recorded outcome there as a
    label file) that `caravan validate` has not judged yet: in neither validated/ nor
    quarantine/. Training reads validated/ only; found in review: it left them out
    without a word."""
    from pipelines.validate import _ids_in, input_files

    raw = _ids_in(input_files(layout.raw, "outcomes"), "outcome_id")
    if not raw:
        return 0
    judged = _ids_in(
        [
            p
            for p in (layout.validated / "outcomes.parquet", layout.quarantine / "outcomes.parquet")
            if p.exists()
        ],
        "outcome_id",
    )
    return len(raw - judged)


def _print_evaluation(ev: Any) -> None:
    """One table per family of capacity figures, each titled with what its
    capacity is a share of (UAT2 DS F7: they are three different operating points)."""
    from models.evaluate import FAMILIES, capacity_columns

    out.print(
        f"Model {ev.model_version}: test window {ev.test_window[0][:10]} "
        f"to {ev.test_window[1][:10]}"
    )
    cols = capacity_columns(ev.at_capacity)
    basis = getattr(ev, "basis", {})
    for family, title in FAMILIES.items():
        mine = [c for c in cols if c[0] == family]
        if not mine:
            continue
        out.print(title, soft_wrap=True, highlight=False, markup=False)
        table = Table()
        table.add_column("capacity")
        for _, _, label in mine:
            table.add_column(label, justify="right")
        for cap, m in ev.at_capacity.items():
            table.add_row(cap, *[_capacity_cell(m.get(key)) for _, key, _ in mine])
        out.print(table)
        if basis.get(family):
            out.print(basis[family], soft_wrap=True, highlight=False)
    # why figures are empty or how they were computed (UAT2 DS F17): the notes the
    # evaluation made, as in evaluation.json and the report
    for note in getattr(ev, "notes", None) or []:
        out.print(f"Note: {note}", soft_wrap=True, highlight=False, markup=False)


def _capacity_cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else f"{value:,}"


@app.command()
def evaluate(
    data: DataOption = None,
    version: Annotated[
        str, typer.Option("--version", help="Version number or alias.")
    ] = "challenger",
    as_json: JsonOption = False,
) -> None:
    """Evaluate a model version on its test window; write the HTML report."""
    from pipelines.modelling import run_evaluate

    layout = _layout(data)
    try:
        ev, report = run_evaluate(layout, version)
    except Exception as exc:
        _fail(f"cannot evaluate version {version}: {exc}")
        return
    if as_json:
        out.print_json(json.dumps({**ev.to_json(), "report": str(report)}, default=str))
        return
    _print_evaluation(ev)
    out.print(f"Report: {report}")


@app.command()
def promote(
    data: DataOption = None,
    version: Annotated[str, typer.Option("--version", help="Version to promote.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Promote even if worse.")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (needed with --force).")
    ] = None,
    who: Annotated[
        str | None,
        typer.Option(
            "--by", envvar="USER", help="Who promotes (recorded); required when USER is not set."
        ),
    ] = None,
) -> None:
    """Make a version the champion after comparing it with the current champion;
    recorded with who and why in the operational database and its audit log."""
    from models.assess import MissingInputError
    from models.promotion import PromotionError
    from pipelines.cli_serving import open_database
    from pipelines.modelling import rules_baseline
    from serving.promotions import promote_model

    if not version:
        _fail("--version is required")
    if who is None:
        _fail("--by is required: a promotion names the person who decides it (USER is not set)")
        return
    layout = _layout(data)
    engine, factory, _ = open_database(data)
    try:
        with factory() as session:
            done = promote_model(
                session,
                layout,
                version,
                who=who,
                reason=reason,
                force=force,
                via="cli",
                baseline=rules_baseline(layout),
            )
    except (PromotionError, MissingInputError, ValueError) as exc:
        _fail(str(exc))
        return
    finally:
        engine.dispose()
    promo = done.promotion
    _print_evaluation(promo.challenger)
    if promo.champion is not None:
        out.print(f"Champion until now: version {promo.previous}, on the same shipments:")
        _print_evaluation(promo.champion)
    if promo.comparison_window is not None:
        start, end = (w[:16] for w in promo.comparison_window)
        out.print(
            f"Compared on {start} to {end}: the part of version {promo.version}'s test "
            "window after what both models trained and early-stopped on.",
            soft_wrap=True,
        )
    elif promo.previous is not None:
        out.print(
            f"Not compared with version {promo.previous}: no shipment after what both "
            "models saw (forced).",
            soft_wrap=True,
        )
    if promo.previous_target is not None and promo.previous_target != promo.target:
        out.print(
            f"Target changed: {promo.previous_target} -> {promo.target} (forced): the served "
            "score now predicts another event; check the lanes, priorities and rules.",
            soft_wrap=True,
        )
    out.print(
        f"Version {promo.version} is now the champion (by {promo.who}"
        + (f"; forced: {promo.reason}" if promo.forced else "")
        + f"); audit entry {done.audit_seq}."
    )


@app.command()
def score(
    data: DataOption = None,
    version: Annotated[
        str, typer.Option("--version", "--alias", help="Version number or alias.")
    ] = "champion",
    since: Annotated[
        str | None, typer.Option("--since", help="Only shipments declared on or after this date.")
    ] = None,
    who: Annotated[
        str,
        typer.Option(
            "--by", envvar="USER", help="Who runs the scoring (in the audit entry of the run)."
        ),
    ] = "batch",
    as_json: JsonOption = False,
) -> None:
    """Score validated shipments in batch into a new run under scores/runs/ (explaining
    the riskiest); earlier runs are kept, scores/scores.parquet is the latest run's."""
    from models.assess import ExtrasCodingError
    from pipelines.features import MissingInputError
    from pipelines.modelling import (
        NothingToScoreError,
        UnknownModelError,
        run_score,
    )

    layout = _layout(data)
    cutoff = _date(since, "--since")
    try:
        with _progress() as bar:
            task = bar.add_task("scoring", total=None)
            run = run_score(
                layout,
                version,
                since=cutoff,
                say=lambda m: bar.update(task, description=m),
            )
    except NothingToScoreError as exc:  # nothing to do is not an error for a nightly job
        if as_json:
            out.print_json(json.dumps({"rows": 0, "message": str(exc)}))
        else:
            out.print(f"{exc} (scores/ left as it is)")
        return
    except (MissingInputError, UnknownModelError, ExtrasCodingError) as exc:
        _fail(str(exc))
        return
    audited = _audit_score_run(data, layout, run.manifest, who)
    scores = run.scores
    summary = {
        "rows": scores.height,
        "explained": int(scores["explanation"].is_not_null().sum()),
        "model_version": run.manifest["model_version"],
        "run": run.run,
        "path": str(run.folder),
        "latest": str(layout.scores / "scores.parquet"),
        "audit_seq": audited,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"{summary['rows']:,} shipments scored with model version "
        f"{summary['model_version']} ({summary['explained']:,} explained) in {run.folder} "
        f"(also the latest view {summary['latest']}); "
        + (
            f"audit entry {audited}."
            if audited is not None
            else "no database here: recorded in the run's manifest.json only."
        ),
        soft_wrap=True,
    )


def _audit_score_run(
    data: Path | None, layout: DataLayout, manifest: dict[str, Any], who: str
) -> int | None:
    """Append a `batch_score` entry (the run's manifest: counts, model version, files
    and their hashes) to the deployment's audit log when it has a Caravan database;
    the entry's seq, or None when there is none (the manifest is then the record)."""
    from serving.db import (
        current_revision,
        database_url,
        engine_if_present,
        head_revision,
        session_factory,
    )
    from serving.services import audit

    settings = Settings() if data is None else Settings(data=data)
    engine = engine_if_present(database_url(settings, layout))
    if engine is None:
        return None
    try:
        try:
            at = current_revision(engine)
        except Exception as exc:  # an unreachable database: the scores are written
            console.print(
                f"[yellow]warning:[/] the database cannot be read ({type(exc).__name__}): "
                "the run is recorded in its manifest.json only",
                soft_wrap=True,
            )
            return None
        if at is None:
            return None
        if at != head_revision():
            console.print(
                f"[yellow]warning:[/] the database is at migration {at}: the run is recorded "
                "in its manifest.json only (run `caravan db upgrade`)",
                soft_wrap=True,
            )
            return None
        with session_factory(engine)() as session:
            entry = audit(
                session, "batch_score", who, manifest, entity="score_run", entity_id=manifest["run"]
            )
            session.commit()
            return int(entry.seq)
    finally:
        engine.dispose()


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Export files (CSV or Parquet).")],
    mapping: Annotated[
        Path,
        typer.Option(
            "--mapping", help="YAML mapping onto the contracts (see examples/byo/mapping.yaml)."
        ),
    ],
    data: DataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Map an administration's own declaration export onto the contracts, into raw/."""
    from data_contracts.mapping import MappingError
    from pipelines.importer import run_import

    layout = _layout(data)
    try:
        run = run_import(layout, mapping, files)
    except (MappingError, InputFileError) as exc:
        _fail(str(exc))
        return
    summary = {
        "rows": run.rows,
        "absent": run.absent,
        "extras": run.extras,
        "files": run.files,
        "replaced": run.replaced,
        "read_as_no_finding": run.read_as_negative,
        "blank_rows_left_out": run.blank_rows,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"Imported into {layout.raw}: " + ", ".join(f"{t} {n:,}" for t, n in run.rows.items())
    )
    for source, name in run.files.items():
        again = " (imported before: replaces that import)" if source in run.replaced else ""
        out.print(f"  {source} -> {name}{again}")
        if run.blank_rows.get(source):
            out.print(f"    {run.blank_rows[source]:,} row(s) without any value left out")
    if run.read_as_negative:
        values = ", ".join(f"'{v}' ({n:,})" for v, n in run.read_as_negative.items())
        out.print(
            f"  read as no finding (not positive; the mapping declares no negative values, "
            f"add finding.negative to reject unknown ones): {values}"
        )
    for table, cols in run.absent.items():
        out.print(f"  {table}: not in the export, left empty: {', '.join(cols)}")
    if run.extras:
        out.print(f"  extra columns kept as features: {', '.join(run.extras)}")
    out.print("Next: caravan validate, caravan features, caravan train.")
