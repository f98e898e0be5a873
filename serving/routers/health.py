"""Liveness, readiness and Prometheus metrics (public, for probes and scrapers)."""

import threading
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from serving.db import current_revision, head_revision
from serving.deps import Public
from serving.server_lock import deployment_lock_lost

router = APIRouter(tags=["health"], dependencies=[Public])


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    migration: str | None
    migration_head: str
    migrations_at_head: bool
    model_loaded: bool
    # The champion's version this server scores with (None when no model is loaded).
    model_version: str | None = None
    # The feature state new shipments are scored against is built (in the
    # background from start-up; until then a scoring waits for it).
    feature_state_ready: bool
    # On PostgreSQL: the server's advisory lock (one server per deployment) was lost
    # (the database restarted, the connection dropped) and is not held again yet;
    # another server may hold it. Not ready meanwhile.
    deployment_lock_lost: bool = False


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


def _state_ready(request: Request) -> bool:
    services = getattr(request.app.state, "services", None)
    return services is not None and bool(services.history.state_ready)


def database_up(request: Request) -> tuple[bool, str | None]:
    """Whether the database answers, and the migration it is at."""
    try:
        engine = request.app.state.engine
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True, current_revision(engine)
    except Exception:  # any failure means down
        return False, None


SCRAPE_CHECK_SECONDS = 2.0


def database_answers(request: Request, timeout: float = SCRAPE_CHECK_SECONDS) -> bool:
    """`database_up`, given up on after `timeout` seconds (a scrape must not wait for
    a database that does not answer, or for a connection of a busy pool)."""
    answer: list[bool] = []
    check = threading.Thread(
        target=lambda: answer.append(database_up(request)[0]),
        name="caravan-database-check",
        daemon=True,
    )
    check.start()
    check.join(timeout)
    return bool(answer and answer[0])


def served_model(request: Request) -> tuple[str, str] | None:
    """(version, feature-set version) of the champion served, None when none is loaded."""
    from serving.scoring import _feature_set_version

    holder = getattr(request.app.state, "model", None)
    if holder is None:
        return None
    try:
        handle = holder.handle
        return str(handle.version), _feature_set_version(handle)
    except Exception:  # (no model loaded, or none that says what it is)
        return None


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Database reachable, migrations at head, a model loaded and the deployment "
    "lock held (the model version and the feature state's build reported)",
    responses={503: {"model": ReadyOut, "description": "Not ready"}},
)
def readyz(request: Request) -> ReadyOut | JSONResponse:
    head = head_revision()
    database, revision = database_up(request)
    request.app.state.metrics.database_up.set(1 if database else 0)
    at_head = revision == head
    # Ready means able to do the service's work: scoring needs a model (a server on
    # a new or mistyped data directory has none, and every ingest would get 503).
    # The feature state may still be building: a scoring then waits for it.
    model_loaded = getattr(request.app.state, "model", None) is not None
    served = served_model(request)
    lock_lost = deployment_lock_lost()
    out = ReadyOut(
        status="ready" if database and at_head and model_loaded and not lock_lost else "not_ready",
        database=database,
        migration=revision,
        migration_head=head,
        migrations_at_head=at_head,
        model_loaded=model_loaded,
        model_version=served[0] if served else None,
        feature_state_ready=_state_ready(request),
        deployment_lock_lost=lock_lost,
    )
    if out.status != "ready":
        return JSONResponse(out.model_dump(), status_code=503)
    return out


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    figures = request.app.state.metrics
    figures.model_loaded.set(1 if getattr(request.app.state, "model", None) is not None else 0)
    # one series at most: the champion served now (a swap replaces it)
    served = served_model(request)
    figures.model_info.clear()
    if served is not None:
        figures.model_info.labels(*served).set(1)
    figures.database_up.set(1 if database_answers(request) else 0)
    figures.deployment_lock_lost.set(1 if deployment_lock_lost() else 0)
    return Response(generate_latest(figures.registry), media_type=CONTENT_TYPE_LATEST)
