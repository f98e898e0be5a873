"""Liveness, readiness and Prometheus metrics (public, for probes and scrapers)."""

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from serving.db import current_revision, head_revision
from serving.deps import Public

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
    # The feature state new shipments are scored against is built (in the
    # background from start-up; until then a scoring waits for it).
    feature_state_ready: bool


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


def _state_ready(request: Request) -> bool:
    services = getattr(request.app.state, "services", None)
    return services is not None and bool(services.history.state_ready)


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Database reachable, migrations at head and a model loaded (the feature "
    "state's build reported)",
    responses={503: {"model": ReadyOut, "description": "Not ready"}},
)
def readyz(request: Request) -> ReadyOut | JSONResponse:
    head = head_revision()
    database = False
    revision: str | None = None
    try:
        engine = request.app.state.engine
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = True
        revision = current_revision(engine)
    except Exception:  # any failure means not ready
        database = False
    at_head = revision == head
    # Ready means able to do the service's work: scoring needs a model (a server on
    # a new or mistyped data directory has none, and every ingest would get 503).
    # The feature state may still be building: a scoring then waits for it.
    model_loaded = getattr(request.app.state, "model", None) is not None
    out = ReadyOut(
        status="ready" if database and at_head and model_loaded else "not_ready",
        database=database,
        migration=revision,
        migration_head=head,
        migrations_at_head=at_head,
        model_loaded=model_loaded,
        feature_state_ready=_state_ready(request),
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
    registry = request.app.state.metrics.registry
    request.app.state.metrics.model_loaded.set(
        1 if getattr(request.app.state, "model", None) is not None else 0
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
