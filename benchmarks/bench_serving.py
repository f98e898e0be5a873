"""Load benchmark of the serving API on loopback, beside bare LightGBM endpoints.

Builds a small trained world in a temporary directory (generate -> validate ->
watchlist -> features -> train -> promote; or copies one given with --world; with
--champion-size, e.g. 500x63, it then trains and promotes a champion of that many
trees of up to that many leaves, the size the issue gives for the bare
`pred_contrib` reference, larger than a synthetic world's early-stopped one; with
--un-list XML, the UN list joins the world's watchlist, as in a deployment),
starts the Caravan API in a uvicorn subprocess (one worker) and, with the same
uvicorn settings, a bare FastAPI app that only runs the same LightGBM model on one
row (`/predict`: `predict`; `/contrib`: `predict(pred_contrib=True)`). Then, at 1
and at 8 concurrent connections (one keep-alive HTTP connection per client
thread), bounded by --seconds and --requests per measurement, it prints:

  (a) single-shipment ingest+score of green-lane shipments (no explanation) in
      requests/s and p50/p99, beside the bare `predict` endpoint;
  (b) single-shipment ingest+score of red/yellow shipments (explained at once,
      LightGBM `pred_contrib`) p50/p99, beside the bare `pred_contrib` endpoint;
  (c) batch ingestion, 1,000 shipments per request, in shipments/s: the shipments
      of a batch declared at one instant, and (c') declared --spread seconds
      apart (a day of declarations sent at once: each shipment's features count
      the earlier ones of its batch);
  (a') at the most connections, last, (a) again with each request's shipment
      declared --single-spread-ms after the previous one's: requests sent
      together arrive slightly out of order, as from several offices, so some are
      late arrivals (declared before the newest shipment the feature state holds),
      which are scored one by one and reach the state through a background
      rebuild, as in production;

and the ratios against the goals (ingest+score >= 30 % of the bare predict
endpoint's requests/s; with explanation, p99 at 1 connection <= 1.5 x the bare
pred_contrib endpoint's).

Every ingested shipment is a copy of a validated shipment of the world under a
new id; all shipments of one measurement share one declaration time (but those
of (c') and (a')), later than anything before, so the feature state takes them
incrementally whatever order concurrent requests arrive in. The lane of every
answer is counted: (a) should be green and (b) red or yellow; the shares are
printed.

The load generator is the standard library's `http.client`, one thread per
connection, in this process: it shares the machine with the servers, so compare
the ratios of one run rather than absolute figures across runs.
--omp-threads sets OMP_NUM_THREADS (LightGBM's OpenMP threads) of both servers.

    .venv/bin/python benchmarks/bench_serving.py --shipments 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving.services import jsonable  # noqa: E402 - after the path is set

API = "/api/v1"
USER = "bench-analyst"
PASSWORD = "bench-Pass-0123456789"  # a throw-away user of a temporary world
NATIONAL_LIST = ROOT / "data_contracts" / "reference" / "national_watchlist_example.csv"
EXAMPLE_RULES = ROOT / "serving" / "reference" / "example_rules.yaml"
# Same settings for both servers: one worker, no access log.
UVICORN = {"host": "127.0.0.1", "workers": 1, "log_level": "warning", "access_log": False}
MAX_BODY_BYTES = 32 * 1024 * 1024


# --------------------------------------------------------------------------- servers


class Row(BaseModel):
    """One feature vector for the bare endpoints (null where missing)."""

    x: list[float | None]


def _bare_app(model_file: str) -> Any:
    """A FastAPI app that only runs the booster on one row (no database, no auth)."""
    import lightgbm as lgb
    import numpy as np
    from fastapi import FastAPI

    booster = lgb.Booster(model_file=model_file)
    app = FastAPI()

    def _matrix(row: Row) -> Any:
        return np.array([[np.nan if v is None else v for v in row.x]], dtype=float)

    @app.post("/predict")
    def predict(row: Row) -> dict[str, float]:
        return {"p": float(booster.predict(_matrix(row))[0])}

    @app.post("/contrib")
    def contrib(row: Row) -> dict[str, list[float]]:
        return {"c": [float(v) for v in booster.predict(_matrix(row), pred_contrib=True)[0]]}

    return app


def _serve(kind: str, target: str, port: int) -> None:
    """Run one server in this process (the benchmark starts it as a subprocess)."""
    import uvicorn

    if kind == "bare":
        app = _bare_app(target)
    else:
        from data_contracts.settings import DataLayout, Settings
        from serving.app import create_app

        settings = Settings(data=Path(target))
        app = create_app(settings, DataLayout(settings.data))
    uvicorn.run(app, port=port, **UVICORN)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(kind: str, target: str, env: dict[str, str], ready_path: str) -> Iterator[int]:
    """A uvicorn subprocess on a free loopback port, stopped on exit."""
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--target", target, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited with {proc.returncode}")
            try:
                status, _ = request(port, "GET", ready_path)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not become ready")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the world


def build_world(data: Path, shipments: int, say: Callable[[str], None]) -> None:
    import polars as pl

    from data_contracts.loaders.national import load_national_csv
    from data_contracts.settings import DataLayout
    from pipelines.features import WATCHLIST_FILE, run_features
    from pipelines.generate import run_generate
    from pipelines.modelling import run_promote, run_train
    from pipelines.synthetic import WorldConfig
    from pipelines.validate import run_validate, write_parquet

    layout = DataLayout(data)
    say(f"generating a world of {shipments:,} shipments")
    run_generate(layout, WorldConfig(n_shipments=shipments, seed=7))
    say("validating")
    run_validate(layout, gx=False)
    entries: pl.DataFrame = load_national_csv(NATIONAL_LIST, "KZ-demo")
    write_parquet(entries, layout.validated / WATCHLIST_FILE)
    say("building features")
    run_features(layout)
    say("training")
    run_train(layout)
    run_promote(layout, "1", who="bench", reason=None)


def prepare_database(data: Path) -> None:
    """Migrate, add the benchmark's user, load the example rules."""
    from data_contracts.settings import DataLayout, Settings
    from serving.auth import Role, create_user
    from serving.db import database_url, make_engine, session_factory, upgrade
    from serving.rules_engine import load_rules_yaml
    from serving.services import import_rules

    settings = Settings(data=data)
    engine = make_engine(database_url(settings, DataLayout(data)))
    upgrade(engine)
    try:
        with session_factory(engine)() as session:
            create_user(session, username=USER, password=PASSWORD, role=Role.analyst)
            import_rules(session, load_rules_yaml(EXAMPLE_RULES.read_text()), USER)
            session.commit()
    finally:
        engine.dispose()


def train_champion(data: Path, trees: int, leaves: int, say: Callable[[str], None]) -> None:
    """Train and promote a champion of a set size (`trees` trees of at most `leaves`
    leaves, no early stopping) on the world's features and outcomes, with the
    project's training: the issue sizes the bare `pred_contrib` reference on a
    500-tree, 63-leaf model, larger than the early-stopped champion of a synthetic
    world."""
    from data_contracts.settings import DataLayout
    from models.train import TrainConfig
    from pipelines.modelling import run_promote, run_train

    layout = DataLayout(data)
    say(f"training a champion of {trees} trees of up to {leaves} leaves (no early stopping)")
    # (a world's few thousand inspected shipments, few of them with a finding, grow
    # trees of `leaves` leaves only when a leaf may hold two of them, whatever their
    # weight, unregularised: the model is sized, not tuned)
    config = TrainConfig(
        max_rounds=trees,
        num_leaves=leaves,
        max_depth=-1,
        min_data_in_leaf=2,
        min_sum_hessian_in_leaf=1e-9,
        lambda_l2=0.0,
        early_stopping_rounds=None,
    )
    run = run_train(layout, config=config)
    reason = f"benchmark: a model of {trees} trees of up to {leaves} leaves"
    run_promote(layout, run.version, who="bench", reason=reason, force=True)


def export_model(data: Path, path: Path) -> tuple[list[str], str]:
    """The champion's booster as a LightGBM text file; its feature names and size
    (trees, their largest and mean number of leaves)."""
    from data_contracts.settings import DataLayout
    from models.registry import Registry

    layout = DataLayout(data)
    booster, _mv = Registry(layout.mlflow_db, layout.mlflow_artifacts).load("champion")
    booster.save_model(str(path))
    leaves = [int(t["num_leaves"]) for t in booster.dump_model()["tree_info"]]
    size = (
        f"{booster.num_trees()} trees of up to {max(leaves, default=0)} leaves "
        f"(mean {sum(leaves) / max(len(leaves), 1):.1f})"
    )
    return list(booster.feature_name()), size


@dataclass
class Templates:
    """Validated shipments of the world (with their goods lines) to copy."""

    ships: list[dict[str, Any]]
    items: dict[str, list[dict[str, Any]]]
    latest: dt.datetime
    counter: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def load(cls, data: Path, n: int) -> Templates:
        import polars as pl

        ships = pl.read_parquet(data / "validated" / "shipments.parquet").sort("declared_at")
        latest = ships["declared_at"].max()
        ships = ships.tail(n)
        items = pl.read_parquet(data / "validated" / "items.parquet").join(
            ships.select("shipment_id"), on="shipment_id", how="semi"
        )
        by_ship: dict[str, list[dict[str, Any]]] = {}
        for row in items.sort("line_no").to_dicts():
            by_ship.setdefault(row["shipment_id"], []).append(row)
        rows = [s for s in ships.to_dicts() if s["shipment_id"] in by_ship]
        assert isinstance(latest, dt.datetime)
        return cls(rows, by_ship, latest)

    def copy(self, template: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
        """The template under a new id, declared at `at`."""
        sid = f"BENCH-{next(self.counter):08d}"
        ship = dict(template)
        lines = self.items[template["shipment_id"]]
        ship.update(
            shipment_id=sid,
            declaration_ref=f"BD{sid[6:]}",
            declared_at=at,
            expected_arrival_at=at + dt.timedelta(hours=6),
        )
        ship["items"] = [
            {**line, "shipment_id": sid, "item_id": f"{sid}-{line['line_no']}"} for line in lines
        ]
        return dict(jsonable(ship))


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    connections: int
    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    lanes: Counter[str]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        k = min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))
        return xs[k] * 1000


def load(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    lanes: bool = False,
) -> Result:
    """Send the bodies (each at most once) over `connections` keep-alive connections,
    until they are used up or `seconds` have passed."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(connections)]
    statuses: list[Counter[int]] = [Counter() for _ in range(connections)]
    lane_counts: list[Counter[str]] = [Counter() for _ in range(connections)]
    start_barrier = threading.Barrier(connections + 1)
    stop_at = [0.0]
    hdrs = {"Content-Type": "application/json", **headers}

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.connect()
        start_barrier.wait()
        mine, status, lane = latencies[k], statuses[k], lane_counts[k]
        while True:
            i = next(counter)
            if i >= len(bodies) or time.perf_counter() >= stop_at[0]:
                break
            t0 = time.perf_counter()
            conn.request("POST", path, body=bodies[i], headers=hdrs)
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - t0)
            status[response.status] += 1
            if lanes and response.status in (200, 201):
                lane[json.loads(payload).get("lane", "?")] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    start_barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    all_lat = [x for xs in latencies for x in xs]
    return Result(
        connections,
        len(all_lat),
        elapsed,
        all_lat,
        sum(statuses, Counter()),
        sum(lane_counts, Counter()),
    )


# --------------------------------------------------------------------------- main


def _row(name: str, r: Result, unit: str = "req/s") -> str:
    lanes = " ".join(f"{k} {v / max(r.requests, 1):.0%}" for k, v in sorted(r.lanes.items()))
    bad = {k: v for k, v in r.statuses.items() if k not in (200, 201)}
    return (
        f"{name:<34} {r.connections:>5} {r.requests:>8} {r.rate:>10.1f} {unit:<8}"
        f"{r.pct(50):>9.2f} {r.pct(99):>9.2f}  {lanes}{'  errors ' + str(bad) if bad else ''}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shipments", type=int, default=100_000, help="world size")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--requests", type=int, default=3000, help="per measurement, at most")
    parser.add_argument("--batches", type=int, default=5, help="batches of 1,000 for (c)")
    parser.add_argument(
        "--spread",
        type=int,
        default=60,
        help="seconds between the declarations of a (c') batch's shipments (0: no (c'))",
    )
    parser.add_argument(
        "--single-spread-ms",
        type=float,
        default=10.0,
        help="milliseconds between the declarations of (a')'s requests (0: no (a'))",
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--world", type=Path, help="reuse a trained world (copied)")
    parser.add_argument(
        "--un-list",
        type=Path,
        metavar="XML",
        help="add the UN SC Consolidated List (e.g. ../shared/reference/"
        "un_sc_consolidated_2018-10-29.xml) to the world's watchlist before the server "
        "starts (`caravan watchlist import --un`): every party is then screened against it",
    )
    parser.add_argument(
        "--champion-size",
        metavar="TREESxLEAVES",
        help="train and promote a champion of this size first, e.g. 500x63 (the size "
        "the issue gives for the bare pred_contrib reference); default: the world's",
    )
    parser.add_argument(
        "--omp-threads",
        type=int,
        help="OMP_NUM_THREADS of both servers (LightGBM's threads; default: all cores)",
    )
    parser.add_argument("--serve", choices=("caravan", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.target, args.port)
        return

    def say(msg: str) -> None:
        print(f"# {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="caravan-bench-") as tmp:
        data = Path(tmp) / "data"
        if args.world:
            shutil.copytree(args.world, data, ignore=shutil.ignore_patterns("caravan.db*"))
        else:
            build_world(data, args.shipments, say)
        prepare_database(data)
        if args.un_list:
            say(f"adding the UN list {args.un_list} to the watchlist")
            caravan = Path(sys.executable).with_name("caravan")
            subprocess.run(
                [
                    str(caravan),
                    "watchlist",
                    "import",
                    "--data",
                    str(data),
                    "--un",
                    str(args.un_list),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if args.champion_size:
            size_trees, _, size_leaves = args.champion_size.lower().partition("x")
            train_champion(data, int(size_trees), int(size_leaves), say)
        names, size = export_model(data, Path(tmp) / "model.txt")
        templates = Templates.load(data, 5000)
        threads = {"OMP_NUM_THREADS": str(args.omp_threads)} if args.omp_threads else {}
        args.server_env = threads
        env = {
            "CARAVAN_DATA": str(data),
            "CARAVAN_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            **threads,
        }
        print(
            f"world: {args.world or f'{args.shipments:,} shipments'}"
            f"{f' with the UN list {args.un_list.name}' if args.un_list else ''}; model: {size}, "
            f"{len(names)} features; uvicorn {UVICORN}; {os.cpu_count()} CPUs; "
            f"OMP_NUM_THREADS {args.omp_threads or 'unset'}"
        )
        say("starting the Caravan API")
        with server("caravan", str(data), env, "/readyz") as port:
            run_caravan(port, args, templates, names, Path(tmp), data, say)


def run_caravan(
    port: int,
    args: argparse.Namespace,
    templates: Templates,
    names: list[str],
    tmp: Path,
    data: Path,
    say: Callable[[str], None],
) -> None:
    status, body = request(
        port,
        "POST",
        f"{API}/auth/login",
        f"username={USER}&password={PASSWORD}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, body
    auth = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    at = templates.latest.replace(microsecond=0) + dt.timedelta(days=1)

    # the first scoring builds the feature state: not part of any measurement
    say("warming up (the feature state is built on first use)")
    warm = json.dumps(templates.copy(templates.ships[-1], at)).encode()
    status, out = request(port, "POST", f"{API}/shipments", warm, json_auth)
    assert status == 201, out[:500]

    # (c) batch ingestion, which also tells each template's lane
    say("batch ingestion")
    lane_of: dict[str, str] = {}
    origin: dict[str, str] = {}
    batches: list[bytes] = []
    for b in range(args.batches):
        chunk = templates.ships[(b * 1000) % len(templates.ships) :][:1000]
        records = [templates.copy(t, at) for t in chunk]
        for record, t in zip(records, chunk, strict=True):
            origin[record["shipment_id"]] = t["shipment_id"]
        batches.append(json.dumps({"records": records}).encode())
    t0 = time.perf_counter()
    stored = 0
    batch_lat = []
    for body_bytes in batches:
        s0 = time.perf_counter()
        status, out = request(port, "POST", f"{API}/shipments/batch", body_bytes, json_auth)
        batch_lat.append(time.perf_counter() - s0)
        assert status == 200, out[:500]
        answer = json.loads(out)
        stored += len(answer["stored"])
        for s in answer["stored"]:
            lane_of.setdefault(origin[s["shipment_id"]], s["lane"])
    batch_seconds = time.perf_counter() - t0
    # (c') the same batches, the shipments declared `--spread` seconds apart
    spread_lat: list[float] = []
    spread_stored = 0
    for b in range(args.batches if args.spread > 0 else 0):
        chunk = templates.ships[(b * 1000) % len(templates.ships) :][:1000]
        records = [
            templates.copy(t, at + dt.timedelta(seconds=args.spread * (k + 1)))
            for k, t in enumerate(chunk)
        ]
        at += dt.timedelta(seconds=args.spread * (len(chunk) + 1))
        body_bytes = json.dumps({"records": records}).encode()
        s0 = time.perf_counter()
        status, out = request(port, "POST", f"{API}/shipments/batch", body_bytes, json_auth)
        spread_lat.append(time.perf_counter() - s0)
        assert status == 200, out[:500]
        spread_stored += len(json.loads(out)["stored"])
    green = [t for t in templates.ships if lane_of.get(t["shipment_id"]) == "green"]
    flagged = [t for t in templates.ships if lane_of.get(t["shipment_id"]) in ("red", "yellow")]
    say(f"{len(green)} green and {len(flagged)} red/yellow templates")
    if not green or not flagged:
        raise SystemExit("the world gave no green or no red/yellow shipment: try --batches 5")

    results: list[str] = []
    summary: dict[str, Result] = {}
    header = (
        f"{'':<34} {'conns':>5} {'requests':>8} {'rate':>10} {'':<8}{'p50 ms':>9} {'p99 ms':>9}"
    )

    def bodies(
        pool: list[dict[str, Any]], n: int, step: dt.timedelta = dt.timedelta(0)
    ) -> list[bytes]:
        """`n` copies of `pool`'s shipments, declared an hour after the last ones,
        each `step` after the one before (none: at one instant)."""
        nonlocal at
        at = at + dt.timedelta(hours=1)
        out = [
            json.dumps(templates.copy(pool[i % len(pool)], at + i * step)).encode()
            for i in range(n)
        ]
        at = at + n * step
        return out

    # warm-up of the single-shipment path
    load(port, f"{API}/shipments", bodies(green, 50), auth, 1, args.seconds)
    for c in args.connections:
        say(f"ingest+score (green), {c} connection(s)")
        r = load(
            port, f"{API}/shipments", bodies(green, args.requests), auth, c, args.seconds, True
        )
        summary[f"a{c}"] = r
        say(f"ingest+score+explanation (red/yellow), {c} connection(s)")
        r = load(
            port, f"{API}/shipments", bodies(flagged, args.requests), auth, c, args.seconds, True
        )
        summary[f"b{c}"] = r
    # (a') last: its late arrivals start background rebuilds of the feature state,
    # which would weigh on the measurements after it
    most = max(args.connections)
    if most > 1 and args.single_spread_ms > 0:
        say(f"ingest+score (green), declared in order, {most} connections")
        summary[f"o{most}"] = load(
            port,
            f"{API}/shipments",
            bodies(green, args.requests, dt.timedelta(milliseconds=args.single_spread_ms)),
            auth,
            most,
            args.seconds,
            True,
        )

    # the bare endpoints, on the same vectors the service computed
    import numpy as np
    import polars as pl

    feats = pl.read_parquet(data / "features" / "features.parquet").tail(2000).select(names)
    rows = [
        json.dumps(
            {"x": [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in r]}
        ).encode()
        for r in feats.iter_rows()
    ]
    say("starting the bare LightGBM app")
    with server("bare", str(tmp / "model.txt"), args.server_env, "/docs") as bare:
        load(bare, "/predict", rows[:200], {}, 1, args.seconds)
        for c in args.connections:
            say(f"bare predict / pred_contrib, {c} connection(s)")
            many = (rows * (args.requests // len(rows) + 1))[: args.requests]
            summary[f"p{c}"] = load(bare, "/predict", many, {}, c, args.seconds)
            summary[f"c{c}"] = load(bare, "/contrib", many, {}, c, args.seconds)

    print(header)
    for c in args.connections:
        results += [
            _row("bare predict (1 row)", summary[f"p{c}"]),
            _row("(a) ingest+score, green lane", summary[f"a{c}"]),
            *(
                [_row(f"(a') declared {args.single_spread_ms:g} ms apart", summary[f"o{c}"])]
                if f"o{c}" in summary
                else []
            ),
            _row("bare pred_contrib (1 row)", summary[f"c{c}"]),
            _row("(b) ingest+score+explanation", summary[f"b{c}"]),
        ]
    print("\n".join(results))
    print(
        f"(c) batch ingestion: {stored:,} shipments in {len(batches)} requests of 1,000: "
        f"{stored / batch_seconds:,.0f} shipments/s "
        f"(seconds per request: {', '.join(f'{x:.1f}' for x in batch_lat)}; "
        "declared at one instant)"
    )
    if spread_lat:
        print(
            f"(c') batch ingestion: {spread_stored:,} shipments in {len(spread_lat)} requests "
            f"of 1,000: {spread_stored / sum(spread_lat):,.0f} shipments/s (seconds per "
            f"request: {', '.join(f'{x:.1f}' for x in spread_lat)}; declared {args.spread} s "
            "apart)"
        )
    for c in args.connections:
        a, p = summary[f"a{c}"], summary[f"p{c}"]
        print(
            f"ratio at {c} connection(s): ingest+score / bare predict requests/s = "
            f"{a.rate / p.rate:.1%} (goal >= 30%)"
        )
    b1, c1 = summary[f"b{args.connections[0]}"], summary[f"c{args.connections[0]}"]
    print(
        f"ratio at {args.connections[0]} connection(s): ingest+score+explanation p99 / bare "
        f"pred_contrib p99 = {b1.pct(99) / c1.pct(99):.2f}x (goal <= 1.5x); "
        f"p50 {b1.pct(50) / c1.pct(50):.2f}x"
    )


if __name__ == "__main__":
    main()
