"""Acceptance round 2, operations findings: late arrivals never make a request wait
for a feature-state rebuild (F1); the server's own log records are written, with
time, level and logger name (F2); one server per deployment (F3)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer
from polars.testing import assert_frame_equal
from sqlalchemy import select

from data_contracts.schemas import WATCHLIST
from data_contracts.settings import DataLayout, Settings
from features.build import build_features
from features.context import History
from features.state import FeatureState
from pipelines.features import load_history
from serving import history as history_module
from serving import orm as m
from serving.auth import Role
from serving.history import HistoryStore, frame_of
from serving.server_lock import DeploymentInUseError, deployment_lock
from tests.conftest import ROOT
from tests.serving.conftest import Api, Samples, payload, scraped

CARAVAN = (sys.executable, "-m", "pipelines")

# --------------------------------------------------------------------------- F1


def _builds_by_thread(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that build a feature state from now on (the real
    build runs; only who called it is noted)."""
    calls: list[str] = []
    real = FeatureState.build.__func__  # type: ignore[attr-defined]

    def build(cls: type[FeatureState], *args: Any, **kwargs: Any) -> FeatureState:
        calls.append(threading.current_thread().name)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(FeatureState, "build", classmethod(build))
    return calls


def _wait(condition: Callable[[], bool], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _vector(api: Api, sid: str) -> dict[str, Any]:
    with api.app.state.session_factory() as session:
        score = session.scalars(select(m.Score).where(m.Score.shipment_id == sid)).one()
        return dict(score.feature_vector)


def test_a_late_shipment_is_scored_at_once_and_reaches_the_history_in_the_background(
    world_api: Api, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world_api
    store: HistoryStore = api.app.state.services.history
    _wait(lambda: api.client.get("/readyz").json()["feature_state_ready"], "state not built")
    store.rebuild_gap_seconds = 0.0
    builds = _builds_by_thread(monkeypatch)
    with store.scoring() as state:
        as_of = state.as_of
    assert as_of is not None
    base = as_of + dt.timedelta(hours=1)
    headers = api.headers(Role.admin)

    def post(sid: str, at: dt.datetime, consignee: str) -> None:
        body = payload(samples, 3, sid)
        body.update(
            consignee_id=None,
            consignee_name=consignee,
            # contacts of their own: the two consignees share theirs, nobody else
            consignee_phone="+7 701 555 01 23",
            consignee_email="late-arrival-ops@example.kz",
            consignee_address="Almaty, Late Arrival street 1",
            consignor_phone="+86 20 5555 0123",
            consignor_email="late-arrival-consignor@example.cn",
            consignor_address="Urumqi, Late Arrival road 9",
            declared_at=at.isoformat(),
            expected_arrival_at=(at + dt.timedelta(hours=6)).isoformat(),
        )
        response = api.client.post("/api/v1/shipments", json=body, headers=headers)
        assert response.status_code == 201, response.text
        ready = api.client.get("/readyz").json()
        assert ready["feature_state_ready"] is True, ready

    a, b = "Zhetisu Late Arrival Ops Test LLP", "Kapshagay Other Party Ops Test LLP"
    before = scraped(api.client.get("/metrics").text)
    assert before["caravan_feature_state_current"] == 1.0
    assert before["caravan_feature_state_rebuilds_total"] == 0.0
    post("LATE-ORD-1", base, b)
    post("LATE-ORD-2", base + dt.timedelta(minutes=1), a)
    post("LATE-LATE-1", base - dt.timedelta(minutes=30), a)  # declared before as_of
    post("LATE-ORD-3", base + dt.timedelta(minutes=2), a)  # in order again: scored at once
    late = _vector(api, "LATE-LATE-1")
    # The late one's trader features are point in time: LATE-ORD-2 came after it.
    assert late["consignee_shipments_30d"] == 0.0
    assert late["consignee_is_new"] == 1.0
    # Its network features are read as of its arrival: the other party that used its
    # contacts at LATE-ORD-1, after its declared_at (point in time: none).
    assert late["network_contact_parties"] == 1.0
    with api.app.state.session_factory() as session:
        stored = session.get(m.Shipment, "LATE-LATE-1")
        assert stored is not None
        assert stored.declared_at.replace(tzinfo=dt.UTC) == base - dt.timedelta(minutes=30)

    _wait(lambda: store.state_current and not store.rebuilding, "the late row never arrived")
    post("LATE-ORD-4", base + dt.timedelta(minutes=3), a)
    # After the background rebuild the late shipment is part of the history, and
    # nothing recorded meanwhile was lost: LATE-ORD-2, LATE-LATE-1 and LATE-ORD-3.
    assert _vector(api, "LATE-ORD-4")["consignee_shipments_30d"] == 3.0
    # No request built a state: only the background rebuild did.
    assert builds, "the late shipment never reached the state"
    assert set(builds) == {"caravan-feature-state-rebuild"}, builds
    assert store.inline_builds == 1 and store.rebuilds >= 1
    # Operators see the rebuilds on /metrics (a stream of late arrivals keeps one going).
    after = scraped(api.client.get("/metrics").text)
    assert after["caravan_feature_state_rebuilds_total"] == store.rebuilds
    assert after["caravan_feature_state_current"] == 1.0
    assert after["caravan_feature_state_rebuilding"] == 0.0
    assert after["caravan_feature_state_last_rebuild_seconds"] > 0.0


def _window(full: History, start: float, end: float) -> History:
    times = full.shipments["declared_at"].sort()
    a, b = times[int(times.len() * start)], times[int(times.len() * end)]
    ships = full.shipments.filter(pl.col("declared_at").is_between(a, b, closed="left"))
    return History(
        ships.sort("declared_at"),
        full.items.join(ships.select("shipment_id"), on="shipment_id", how="semi"),
        full.outcomes.filter(pl.col("inspected_at").is_between(a, b, closed="left")),
        full.travellers.filter(pl.col("departure_at").is_between(a, b, closed="left")),
    )


def _add(store: HistoryStore, full: History, ships: pl.DataFrame) -> None:
    items = full.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    store.add_shipments(ships, items)


def _same_as_fresh(state: FeatureState, history: History, full: History) -> None:
    fresh = FeatureState.build(history)
    assert state.history.shipments.height == fresh.history.shipments.height
    for mine, theirs in zip(state.tables(), fresh.tables(), strict=True):
        assert_frame_equal(mine.rows().sort(mine.order), theirs.rows().sort(mine.order))
    new = _window(full, 0.95, 0.97).shipments.head(3)
    items = full.items.join(new.select("shipment_id"), on="shipment_id", how="semi")
    assert_frame_equal(
        build_features(new, items, state),
        build_features(new, items, fresh),
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


def test_rows_recorded_during_a_rebuild_reach_the_new_state(
    small_world: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild held at its start: in-order and late rows recorded meanwhile are
    scored against the old state at once, and all reach the new one (a late one
    among them through one more rebuild)."""
    full = load_history(small_world)
    store = HistoryStore(_window(full, 0.0, 0.8))
    store.rebuild_gap_seconds = 0.0
    store.warm_up()
    later = _window(full, 0.8, 0.9).shipments
    # Late shipments: copies of earlier ones under new ids (declared before as_of).
    early = _window(full, 0.5, 0.6).shipments.head(4)
    late = early.with_columns(pl.col("shipment_id") + "-LATE")
    late_items = full.items.join(early.select("shipment_id"), on="shipment_id", how="semi")
    late_items = late_items.with_columns(pl.col("shipment_id") + "-LATE", pl.col("item_id") + "-L")

    def add_late(ships: pl.DataFrame) -> None:
        ids = ships.select("shipment_id")
        store.add_shipments(ships, late_items.join(ids, on="shipment_id", how="semi"))

    release = threading.Event()
    started = threading.Event()
    real = history_module._built

    def held_build(history: History, *, private_index: bool = False) -> FeatureState:
        if private_index:  # the background rebuild: wait until the test lets it go
            started.set()
            assert release.wait(120)
        return real(history, private_index=private_index)

    monkeypatch.setattr(history_module, "_built", held_build)
    with store.scoring() as state:
        state_before = state
    # A late pair of shipments: the next scoring appends nothing of them and asks for a
    # rebuild, and is served from the current state.
    add_late(late.head(2))
    with store.scoring() as state:
        assert state is state_before
    assert started.wait(60) and store.rebuilding and not store.state_current
    # Meanwhile: in-order rows, then more late ones, each scored against the old state.
    _add(store, full, later.head(5))
    add_late(late.tail(2))
    _add(store, full, later.slice(5, 5))
    with store.scoring() as state:
        assert state is state_before
    release.set()
    _wait(lambda: store.state_current and not store.rebuilding, "rebuilds did not finish")
    assert store.rebuilds == 2  # the second for the late rows recorded during the first
    assert store.inline_builds == 1
    with store.scoring() as state:
        assert state is not state_before
        _same_as_fresh(state, store.snapshot(), full)


# --------------------------------------------------------------------------- F2

APP_LOGGERS = ("serving", "features", "models", "pipelines", "data_contracts")
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<msg>.*)$"
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the logging configuration back as it was (pytest's handlers too)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in (*APP_LOGGERS, "sqlalchemy", "uvicorn")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_the_servers_logging_writes_the_application_records_with_time_level_and_name(
    restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli_serving import configure_logging, log_level

    monkeypatch.delenv("CARAVAN_LOG_LEVEL", raising=False)
    assert log_level() == "INFO"
    configure_logging(log_level())
    logging.getLogger("serving.scoring").info("serving model version %s", "7")
    logging.getLogger("serving.app").warning("something to look at")
    logging.getLogger("serving.app").debug("not at INFO")
    logging.getLogger("sqlalchemy.engine").info("a library's INFO: not written")
    lines = [LINE.match(x) for x in capsys.readouterr().err.splitlines()]
    assert all(lines), lines
    got = [(m["level"], m["name"], m["msg"]) for m in lines if m]
    assert got == [
        ("INFO", "serving.scoring", "serving model version 7"),
        ("WARNING", "serving.app", "something to look at"),
    ]

    monkeypatch.setenv("CARAVAN_LOG_LEVEL", "debug")
    configure_logging(log_level())
    logging.getLogger("features.state").debug("now at DEBUG")
    assert capsys.readouterr().err.endswith("DEBUG features.state: now at DEBUG\n")

    monkeypatch.setenv("CARAVAN_LOG_LEVEL", "LOUD")
    with pytest.raises(typer.Exit) as exit_info:
        log_level()
    assert exit_info.value.exit_code == 2
    assert "CARAVAN_LOG_LEVEL='LOUD' is not a log level" in capsys.readouterr().err


def test_access_log_lines_leave_out_the_query(
    restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of stop 24: the purpose an officer typed to unmask a traveller (a query
    parameter, which may name someone) was written to the access log. A line as
    uvicorn's access logger writes it (its format and arguments)."""
    from pipelines.cli_serving import configure_logging, log_level

    monkeypatch.delenv("CARAVAN_LOG_LEVEL", raising=False)
    configure_logging(log_level())
    configure_logging(log_level())  # (configured twice: one filter)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    message = '%s - "%s %s HTTP/%s" %d'
    path = "/api/v1/travellers/T-1?purpose=case%2012%20Ivanov%20Ivan"
    access.info(message, "127.0.0.1:5000", "GET", path, "1.1", 200)
    access.info(message, "127.0.0.1:5000", "GET", "/api/v1/queues/KZ-X/2026-11-29", "1.1", 200)
    said = capsys.readouterr().err
    assert "Ivanov" not in said and "purpose" not in said, said
    assert '"GET /api/v1/travellers/T-1?… HTTP/1.1" 200' in said
    assert '"GET /api/v1/queues/KZ-X/2026-11-29 HTTP/1.1" 200' in said
    assert len(access.filters) == 1


# --------------------------------------------------------------------------- F3


def _settings(db_url: str, data: Path) -> tuple[Settings, DataLayout]:
    return Settings(data=data, database_url=db_url), DataLayout(data)


def _refusal(held: tuple[Settings, DataLayout]) -> str:
    """The message refusing a server on `held` (fails when it is let in)."""
    try:
        with deployment_lock(*held):
            pass
    except DeploymentInUseError as exc:
        return str(exc)
    raise AssertionError("a second server was let in")


def test_a_second_server_on_the_same_data_directory_or_database_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    first = _settings(db_url, tmp_path / "a")
    same_dir = _settings(db_url, tmp_path / "a")
    other_dir = _settings(db_url, tmp_path / "b")
    with deployment_lock(*first):
        assert f"the data directory {(tmp_path / 'a').resolve()}" in _refusal(same_dir)
        # another data directory, the same database: refused too
        refused = _refusal(other_dir)
        assert "the database" in refused and "one server process per deployment" in refused
        if db_url.startswith("postgresql"):
            assert db_url.rsplit("/", 1)[1] in refused  # (the database's name)
    # released on exit: the next server starts
    with deployment_lock(*other_dir):
        pass


def test_the_lock_is_released_when_the_server_is_killed(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "a"
    code = (
        "import sys, time; from pathlib import Path\n"
        "from data_contracts.settings import DataLayout, Settings\n"
        "from serving.server_lock import deployment_lock\n"
        "data = Path(sys.argv[1])\n"
        "with deployment_lock(Settings(data=data, database_url=sys.argv[2]), DataLayout(data)):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data), db_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        refused = _refusal(_settings(db_url, data))
        assert f"(process {proc.pid})" in refused
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # the operating system (and PostgreSQL, when the connection drops) release it
    deadline = time.monotonic() + 30
    while True:
        try:
            with deployment_lock(*_settings(db_url, data)):
                break
        except DeploymentInUseError:
            assert time.monotonic() < deadline, "the lock outlived the killed server"
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_caravan_serve_logs_its_start_and_a_second_one_exits(tmp_path: Path) -> None:
    """The real command (SQLite, an empty deployment): the server's own INFO records
    are written with time, level and name; a second server on the data directory
    exits 1 naming it, without starting."""
    data = tmp_path / "data"
    env = {**os.environ, "CARAVAN_LOG_LEVEL": "INFO", "CARAVAN_MODEL_REFRESH_SECONDS": "60"}
    env.pop("CARAVAN_DATABASE_URL", None)
    command = [*CARAVAN, "serve", "--init", "--data", str(data)]  # a new deployment
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(
            [*command, "--port", str(_free_port())], cwd=ROOT, env=env, stderr=sink
        )
    try:
        deadline = time.monotonic() + 120
        while "Caravan API started" not in log.read_text():  # (no model: not ready)
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        second = subprocess.run(
            [*command, "--port", str(_free_port())],
            cwd=ROOT,
            env={**env, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        message = " ".join(second.stderr.split())
        assert f"another Caravan server (process {first.pid}) is running on the data" in message
        assert str(data.resolve()) in message
        assert first.poll() is None  # the first one serves on
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
    records = [m for x in log.read_text().splitlines() if (m := LINE.match(x))]
    names = {(m["level"], m["name"]) for m in records}
    assert ("INFO", "serving.app") in names, log.read_text()
    assert ("INFO", "uvicorn.error") in names, log.read_text()  # uvicorn's lines alike
    ready = next(m["msg"] for m in records if m["msg"].startswith("Caravan API started"))
    assert str(data.resolve() / "caravan.db") in ready


# --------------------------------------------------------------------------- sec F7


def test_made_up_request_methods_are_counted_as_other(api: Api) -> None:
    """/metrics is public: a made-up method must not add series of its own."""
    for method in ("AAAA1", "AAAA2", "BREW"):
        assert api.client.request(method, f"/nothing-{method}").status_code in (404, 405)
    api.client.request("PATCH", "/healthz")
    text = api.client.get("/metrics").text
    assert "AAAA" not in text and "BREW" not in text
    assert 'caravan_http_requests_total{method="other",route="<unmatched>",status="404"} 3.0' in (
        text
    )
    assert 'method="PATCH",route="/healthz",status="405"' in text  # (a standard one)


# --------------------------------------------------------------------------- sec F6


def test_the_api_docs_load_only_the_servers_own_assets_under_a_strict_csp(api: Api) -> None:
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
        ("/redoc", ("redoc.standalone.js",)),
    ):
        response = api.client.get(page)
        assert response.status_code == 200
        html = response.text
        assert "https://" not in html and "http://" not in html  # no CDN, no fonts
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        scripts = directives["script-src"].split()
        assert scripts[0] == "'self'" and all(s.startswith("'sha256-") for s in scripts[1:])
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
        assert directives["frame-ancestors"] == "'none'"
        for asset in assets:
            url = f"/docs-assets/{asset}"
            assert url in html
            served = api.client.get(url)
            assert served.status_code == 200 and len(served.content) > 100_000
    # the inline initialiser of Swagger UI is allowed by its hash, and only it
    page = api.client.get("/docs")
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1 and "SwaggerUIBundle(" in inline[0]
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in page.headers["Content-Security-Policy"]
    # the API schema the page reads stays where it was
    assert api.client.get("/openapi.json").status_code == 200


def test_a_watchlist_change_applies_to_the_state_in_place(small_world: DataLayout) -> None:
    """No rebuild for a watchlist change either: the state screens with the new
    lists at once, as a state built on them would."""
    full = load_history(small_world)
    start = _window(full, 0.0, 0.9)
    # a list naming consignees of the shipments the comparison scores
    names = _window(full, 0.95, 0.97).shipments.head(3)["consignee_name"].to_list()
    listed = frame_of(
        [
            {
                "entry_id": f"T-{i}",
                "list_name": "test-list",
                "reference_number": f"T-{i}",
                "entity_type": "entity",
                "name": name,
                "listed_on": dt.date(2000, 1, 1),
            }
            for i, name in enumerate(names)
        ],
        WATCHLIST.polars_schema,
    )
    store = HistoryStore(start)  # (no watchlist)
    store.warm_up()
    with store.scoring() as before:
        assert before.watch_index is None
    store.replace_watchlist(["test-list"], listed)
    with store.scoring() as state:
        assert state is before and state.watch_index is not None
        _same_as_fresh(state, store.snapshot(), full)
        assert state.watchlist is not None and state.watchlist.height == 3
    assert store.inline_builds == 1 and store.rebuilds == 0
