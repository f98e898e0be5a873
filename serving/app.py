"""The FastAPI application factory.

`create_app(settings, layout)` wires the concrete pieces: engine and migrations
(in the lifespan), middleware (body size limit, Prometheus metrics), routers.
Nothing happens at import time.
"""

import base64
import gc
import hashlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from data_contracts.settings import DataLayout, Settings
from serving.auth import ServingSettings, load_secret_key
from serving.db import (
    current_revision,
    database_url,
    is_at_head,
    make_engine,
    session_factory,
    upgrade,
)
from serving.routers import (
    audit,
    auth,
    backtest,
    decisions,
    health,
    ingest,
    models,
    queue,
    rules,
    shipments,
    users,
    watchlists,
)
from serving.web import mount_web

log = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"
# The request methods counted under their own name; any other is counted as "other"
# (a client may send any token as a method: each would add series to /metrics).
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "other"


def _app_version() -> str:
    try:
        return version("caravan")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0.0.0"


# --- request body size limit -----------------------------------------------------------


class PayloadTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """413 when Content-Length, or the body actually streamed, exceeds the limit:
    `by_path[path]` for a request path listed there (routes taking whole files),
    else `max_bytes`."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, by_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.by_path = {p.rstrip("/") or "/": n for p, n in (by_path or {}).items()}

    def limit(self, scope: Scope) -> int:
        path = str(scope.get("path", "")).rstrip("/") or "/"
        return self.by_path.get(path, self.max_bytes)

    async def _reject(self, send: Send, status: int, detail: str) -> None:
        response = JSONResponse(
            {"detail": detail}, status_code=status, headers={"Connection": "close"}
        )
        await response({"type": "http"}, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "invalid Content-Length")
                    return
                if declared > max_bytes:
                    await self._reject(send, 413, f"request body larger than {max_bytes} bytes")
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLargeError(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLargeError:
            if started:
                raise
            await self._reject(send, 413, f"request body larger than {max_bytes} bytes")


async def _no_receive() -> Message:  # pragma: no cover - responses do not read
    return {"type": "http.disconnect"}


# --- Prometheus metrics ----------------------------------------------------------------


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge
    model_loaded: Gauge
    model_info: Gauge
    database_up: Gauge
    deployment_lock_lost: Gauge


def make_metrics() -> Metrics:
    """Metrics in their own registry (one per app, so tests can build many apps)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return Metrics(
        registry=registry,
        requests=Counter(
            "caravan_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "caravan_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            registry=registry,
        ),
        in_progress=Gauge(
            "caravan_http_requests_in_progress", "HTTP requests being served", registry=registry
        ),
        model_loaded=Gauge(
            "caravan_model_loaded", "1 when a scoring model is loaded", registry=registry
        ),
        # (one series at most: the champion served now, its labels replaced on a swap)
        model_info=Gauge(
            "caravan_model_info",
            "1 for the champion served: its version and feature-set version",
            ["version", "feature_set"],
            registry=registry,
        ),
        database_up=Gauge(
            "caravan_database_up",
            "1 when the database answered at the last scrape (within 2 s) or readiness "
            "probe, else 0",
            registry=registry,
        ),
        deployment_lock_lost=Gauge(
            "caravan_deployment_lock_lost",
            "1 while the server's PostgreSQL advisory lock (one server per deployment) "
            "is lost and not held again",
            registry=registry,
        ),
    )


class ServicesCollector(Collector):
    """Figures of the running services, read at each scrape (nothing is counted
    twice: the services keep their own counts): the feature state's background
    rebuilds (a stream of late arrivals keeps one going: see
    `serving.history.HistoryStore`) and the single-shipment ingests stored together
    (`Services.shipment_combiner`). Nothing before the services are built."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        services = getattr(self.app.state, "services", None)
        if services is None:
            return
        history = services.history
        yield GaugeMetricFamily(
            "caravan_feature_state_current",
            "1 when the feature state holds every row recorded (0: rows that arrived "
            "out of order wait for a background rebuild, or the state is not built)",
            value=float(history.state_current),
        )
        yield GaugeMetricFamily(
            "caravan_feature_state_rebuilding",
            "1 while a background rebuild of the feature state runs or waits to run",
            value=float(history.rebuilding),
        )
        yield CounterMetricFamily(
            "caravan_feature_state_rebuilds",
            "Background rebuilds of the feature state completed",
            value=history.rebuilds,
        )
        yield GaugeMetricFamily(
            "caravan_feature_state_last_rebuild_seconds",
            "How long the last background rebuild of the feature state took",
            value=history.last_rebuild_seconds,
        )
        combiner = services.shipment_combiner
        yield CounterMetricFamily(
            "caravan_ingest_groups",
            "Groups of concurrent single-shipment ingests scored and stored together",
            value=combiner.groups,
        )
        yield CounterMetricFamily(
            "caravan_ingest_combined_requests",
            "Single-shipment ingests answered from a group stored together",
            value=combiner.combined,
        )
        yield GaugeMetricFamily(
            "caravan_ingest_largest_group",
            "The largest group of concurrent single-shipment ingests so far",
            value=combiner.largest,
        )


class MetricsMiddleware:
    """Counts requests and times them, labelled by route template (never raw paths)
    and method (the standard ones; any other as "other"), so that the number of
    series stays bounded whatever clients send."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes_of: FastAPI) -> None:
        self.app = app
        self.metrics = metrics
        self.routes_of = routes_of

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return str(route.path)
        for candidate in self.routes_of.router.routes:
            match, child = candidate.matches(scope)
            if match is Match.FULL:
                matched = child.get("route", candidate)
                if hasattr(matched, "path"):
                    return str(matched.path)
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.in_progress.dec()
            route = self._route(scope)
            method = str(scope.get("method", ""))
            if method not in HTTP_METHODS:
                method = OTHER_METHOD
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, route, str(status)).inc()


# --- errors ----------------------------------------------------------------------------


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and reason, without echoing the input (it may hold secrets)."""
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
        for e in exc.errors()
    ]
    if request.url.path.endswith("/auth/login") and "json" in request.headers.get(
        "content-type", ""
    ):  # (a JSON body reads as fields missing: say what the login takes)
        for error in errors:
            if error["loc"][:1] == ["body"]:
                error["msg"] = f"{error['msg']}: {LOGIN_FORM_HINT}"
    return JSONResponse({"detail": errors}, status_code=422)


DATABASE_UNAVAILABLE = "the database is unavailable: try again shortly"
DATABASE_RETRY_AFTER = "5"  # seconds


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (down, restarting, a
    connection lost), rather than a fault in a statement: an OperationalError
    (connection refused, terminated, the database not accepting connections;
    SQLite: cannot open the file, locked past the busy timeout) or an error on a
    connection SQLAlchemy found invalidated."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


class OutageLog:
    """One WARNING when requests start failing for want of the database (then one a
    minute at most while it lasts, with the count), never a traceback per request."""

    REMIND_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._since = 0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._since += 1
            if now - self._last < self.REMIND_SECONDS:
                return
            count, self._since, self._last = self._since, 0, now
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        more = f" ({count} requests since the last such warning)" if count > 1 else ""
        log.warning(
            "the database is unavailable (%s): answering 503%s",
            reason[0] if reason else type(exc).__name__,
            more,
        )


def _database_error_handler(outages: OutageLog, *, page: bool) -> Any:
    """The handler of SQLAlchemy's DBAPIError: 503 with Retry-After when the database
    is unavailable (JSON for the API, a plain page for the web pages); any other
    database error goes on as before (500, logged with its traceback)."""

    async def handler(request: Request, exc: Exception) -> Response:
        if not database_unavailable(exc):
            raise exc
        outages.failed(exc)
        headers = {"Retry-After": DATABASE_RETRY_AFTER, "Cache-Control": "no-store"}
        if page:
            body = (
                '<!doctype html><html><head><meta charset="utf-8">'
                "<title>Caravan: database unavailable</title></head><body>"
                "<h1>Service unavailable</h1>"
                "<p>The database is unavailable: try again shortly.</p></body></html>"
            )
            return HTMLResponse(body, status_code=503, headers=headers)
        return JSONResponse({"detail": DATABASE_UNAVAILABLE}, status_code=503, headers=headers)

    return handler


LOGIN_FORM_HINT = (
    "the login takes a form (application/x-www-form-urlencoded) with username and "
    "password, as OAuth2's password flow does, not JSON"
)


# --- API documentation pages ----------------------------------------------------------

# Swagger UI and ReDoc, served from this server (the files the `fastapi-offline`
# package ships, pinned with the other dependencies), never from a CDN: the pages
# share the officers' origin, so only the server's own scripts may run there.
DOCS_ASSETS = "/docs-assets"
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'{workers}; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _docs_assets_dir() -> str:
    from importlib.resources import files

    return str(files("fastapi_offline") / "static")


# ReDoc's bundle shows an "API docs by Redocly" logo fetched from Redocly's CDN, which
# the policy refuses (a violation in the console): the bundle is served (under its own
# name, ahead of the static files) with that one address replaced by an empty image.
_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_NO_IMAGE = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
REDOC_JS = "redoc.standalone.js"


def _redoc_bundle() -> bytes:
    from pathlib import Path

    code = (Path(_docs_assets_dir()) / "redoc.standalone.js").read_text(encoding="utf-8")
    return code.replace(_REDOC_LOGO, _NO_IMAGE).encode()


def _with_csp(page: HTMLResponse, *, workers: str = "") -> HTMLResponse:
    """`page` with a Content-Security-Policy letting only the server's own scripts
    and the page's own inline initialiser (by its hash) run."""
    html = bytes(page.body).decode()
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"
        for code in _INLINE_SCRIPT.findall(html)
    )
    page.headers["Content-Security-Policy"] = _DOCS_CSP.format(scripts=hashes, workers=workers)
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


def mount_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from local assets, each with a strict CSP."""
    redoc_js = _redoc_bundle()

    async def redoc_bundle(_request: Request) -> Response:
        return Response(redoc_js, media_type="text/javascript")

    app.add_route(f"{DOCS_ASSETS}/{REDOC_JS}", redoc_bundle, include_in_schema=False)
    app.mount(DOCS_ASSETS, StaticFiles(directory=_docs_assets_dir()), name="docs-assets")

    # (plain routes, as FastAPI's own docs pages: not API operations)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _with_csp(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                oauth2_redirect_url=None,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _with_csp(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS}/{REDOC_JS}",
                redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            ),
            workers="; worker-src blob:",  # (ReDoc's search index runs in a worker)
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


# --- the factory -----------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    layout: DataLayout | None = None,
    serving: ServingSettings | None = None,
) -> FastAPI:
    """The Caravan API. The database is migrated (or checked) when the app starts."""
    settings = settings or Settings()
    layout = layout or DataLayout(settings.data)
    serving = serving or ServingSettings()
    url = database_url(settings, layout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(url)
        try:
            if serving.auto_migrate:
                await run_in_threadpool(_migrate, engine)
            elif not await run_in_threadpool(is_at_head, engine):
                raise RuntimeError(
                    "database is not at the newest migration: run `caravan db upgrade`"
                )
            app.state.engine = engine
            app.state.session_factory = session_factory(engine)
            app.state.secret_key = load_secret_key(serving, layout)
            app.state.model = None  # set by the model loader
            await run_in_threadpool(_start_scoring, app, layout)
            where = engine.url.render_as_string()
            if app.state.model is not None:
                log.info("Caravan API ready (database %s)", where)
            else:
                log.warning(
                    "no champion model is registered in %s: the server is not ready "
                    "(/readyz 503) and every ingest answers 503 until one is; train and "
                    "promote one: caravan validate, caravan features, caravan train, "
                    "caravan promote --version N (this server loads it within seconds)",
                    layout.mlflow_db,
                )
                log.info("Caravan API started, not ready: no champion model (database %s)", where)
            yield
        finally:
            stop_event = getattr(app.state, "refresh_stop", None)
            if stop_event is not None:
                stop_event.set()
            freezer = getattr(app.state, "heap_freezer", None)
            if freezer is not None:
                freezer.release()
            engine.dispose()

    app = FastAPI(
        title="Caravan",
        summary="Risk targeting for customs: ranked inspection queues; officers decide.",
        version=_app_version(),
        lifespan=lifespan,
        docs_url=None,  # (`mount_docs`: served from local assets)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.layout = layout
    app.state.serving = serving
    app.state.model = None
    metrics = make_metrics()
    metrics.registry.register(ServicesCollector(app))
    app.state.metrics = metrics

    app.add_exception_handler(RequestValidationError, _validation_error)
    outages = OutageLog()  # (shared by the API and the pages)
    app.add_exception_handler(DBAPIError, _database_error_handler(outages, page=False))
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=serving.max_body_bytes,
        by_path=serving.max_body_bytes_by_path,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes_of=app)

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    for module in (ingest, shipments, queue, decisions, rules, backtest, watchlists, audit, models):
        app.include_router(module.router)
    mount_web(app)  # the pages at /web (a mounted sub-app: not part of the API schema)
    for route in app.routes:  # (a mounted app handles its own errors)
        if isinstance(route, Mount) and route.name == "web" and isinstance(route.app, FastAPI):
            route.app.add_exception_handler(DBAPIError, _database_error_handler(outages, page=True))
    mount_docs(app)
    return app


def _migrate(engine: Engine) -> None:
    """Migrate the database to the newest schema, saying so when that changed it (a
    migration cannot be undone: the operator wants it in the log)."""
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    if after != before:
        log.info("migrated the database from %s to %s", before or "nothing (new database)", after)


class HeapFreezer:
    """Keeps the long-lived serving state out of the garbage collector's full passes.

    The feature state holds hundreds of thousands of Python lists and dicts (about
    280,000 objects on a bench world of 100,000 shipments, 700,000 with the rest of the
    process), none in a reference cycle: a full (generation 2) collection walked them
    all, 0.3 to 0.7 s with every request stopped, now and then. `check` collects what
    is not frozen yet (the first time, all: once, at start-up), then moves every object
    alive to the permanent generation (`gc.freeze`), which the collector never walks;
    it runs once the state is built at start-up and again after each background
    rebuild or model swap (from the model refresh loop, every few seconds), whose new
    objects would otherwise fill generation 2 again.

    What is never collected then: reference cycles among frozen objects that become
    unreachable later (such as the cyclic garbage of a request in flight at the moment
    of a freeze). Refcounting still frees every frozen object that is not in a cycle
    (a replaced feature state is freed that way: it holds no cycle; replaced models
    stay loaded anyway, `ModelHolder` keeps them for replays). `release` (at shutdown)
    gives the frozen objects back to the collector."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.freezes = 0
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _marks(app: FastAPI) -> tuple[int, int, int] | None:
        services = getattr(app.state, "services", None)
        if services is None or not services.history.state_ready:
            return None
        history = services.history
        holder = services.holder
        model = id(holder.handle) if holder.ready else 0
        return (history.inline_builds, history.rebuilds, model)

    def check(self, app: FastAPI) -> bool:
        """Freeze when the state was built or replaced, or the model swapped, since
        the last freeze; True when it froze."""
        if not self.enabled:
            return False
        with self._lock:
            marks = self._marks(app)
            if marks is None or marks == self._seen:
                return False
            gc.collect()  # (walks only what is not frozen yet)
            gc.freeze()
            self._seen = marks
            self.freezes += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self.freezes:
                gc.unfreeze()
                self.freezes = 0
                self._seen = None


def _start_scoring(app: FastAPI, layout: DataLayout) -> threading.Event:
    """Load the champion and the history; refresh the champion every few seconds in a
    background thread, so that a promotion reaches the running server."""
    from models.registry import Registry
    from serving.history import HistoryStore
    from serving.promotions import follow_recorded_champion
    from serving.scoring import ModelHolder
    from serving.services import QueueSettings, Services

    holder = ModelHolder(Registry(layout.mlflow_db, layout.mlflow_artifacts))
    queue_settings = QueueSettings()
    stop = threading.Event()
    app.state.refresh_stop = stop
    freezer = HeapFreezer(app.state.serving.gc_freeze)
    app.state.heap_freezer = freezer
    if layout.mlflow_db.exists():
        follow_recorded_champion(app.state.session_factory, layout)  # a lost alias move
        holder.refresh()
    app.state.model = holder if holder.ready else None
    app.state.services = Services(layout, holder, HistoryStore.load(layout), queue_settings)
    # Screen with the watchlists held in the database (lists loaded over the API
    # survive a restart), before the feature state is built.
    from serving.services import restore_ingested, restore_watchlists

    with app.state.session_factory() as session:
        restore_watchlists(session, app.state.services)
        # what the API recorded before a restart (validated/ holds only what
        # `caravan validate` accepted)
        restored = restore_ingested(session, app.state.services)
        if any(restored.values()):
            log.info("history: restored from the database %s", restored)

    def refresh_loop() -> None:
        database_lost = False  # (said once per outage, not every few seconds)
        while not stop.wait(queue_settings.model_refresh_seconds):
            try:
                # only a recorded champion is served (see serving.promotions)
                follow_recorded_champion(app.state.session_factory, layout)
                if database_lost:
                    database_lost = False
                    log.info("the database is reachable again: model refresh resumed")
                if layout.mlflow_db.exists() and holder.refresh():
                    app.state.model = holder
                freezer.check(app)  # a rebuilt state or a new model: freeze it
            except DBAPIError as exc:
                if not database_unavailable(exc):
                    log.exception("model refresh failed")
                elif not database_lost:
                    database_lost = True
                    reason = str(exc.orig or exc).strip().splitlines()
                    log.warning(
                        "the database is unavailable (%s): model refresh waits for it",
                        reason[0] if reason else type(exc).__name__,
                    )
            except Exception:  # never let the loop die
                log.exception("model refresh failed")

    threading.Thread(target=refresh_loop, name="caravan-model-refresh", daemon=True).start()

    def build_state() -> None:
        try:
            app.state.services.history.warm_up()
            freezer.check(app)
        except Exception:  # the first scoring will try again (and report)
            log.exception("building the feature state failed")

    # The feature state over the whole history (about a minute for a million
    # shipments): built now, so that no request waits for it; /readyz says when.
    threading.Thread(target=build_state, name="caravan-feature-state", daemon=True).start()
    return stop
