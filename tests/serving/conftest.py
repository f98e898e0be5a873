"""Serving fixtures: real databases (a SQLite file and a throw-away PostgreSQL server),
the app with users of every role, and a real uvicorn server on loopback."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from data_contracts.settings import DataLayout, Settings
from serving.app import create_app
from serving.auth import Role, ServingSettings, create_user
from serving.db import make_engine, session_factory, upgrade
from serving.services import jsonable
from tests.conftest import built_once, trained_world
from tests.serving.postgres import PostgresServer, postgres_server  # noqa: F401

BACKENDS = ("sqlite", "postgresql")
DAY = dt.date(2025, 3, 3)
SECRET_KEY = "test-signing-key-" + "k" * 40
OFFICE = "KZ-ALA"


# Production argon2 parameters cost ~1 s per hash on a small CI machine; tests use
# cheap ones (test_auth checks the real defaults once).
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.auth

    monkeypatch.setattr(serving.auth, "password_hasher", lambda: CHEAP_HASHER)


def password_for(role: Role | str) -> str:
    return f"{role}-Secret-Pass-{len(str(role))}x"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'caravan.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    with session_factory(db_engine)() as session:
        yield session


def serving_settings(**overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "secret_key": SECRET_KEY,
        "token_ttl_seconds": 300,
        "max_body_bytes": 64 * 1024,
        "login_lockout_threshold": 3,
        "login_lockout_base_seconds": 0.5,
        "login_lockout_max_seconds": 60,
        "ip_lockout_threshold": 50,
    }
    values.update(overrides)
    return ServingSettings(**values)


def build_app(db_url: str, data: Path, **overrides: Any) -> FastAPI:
    """The app on `db_url`, data under `data`, serving settings for tests (+ overrides)."""
    settings = Settings(data=data, database_url=db_url)
    return create_app(settings, DataLayout(data), serving_settings(**overrides))


def add_users(app: FastAPI) -> None:
    """One active user per role (officers in OFFICE), after the app started."""
    with app.state.session_factory() as session:
        for role in Role:
            create_user(
                session,
                username=f"{role.value.replace('_', '-')}1",
                password=password_for(role),
                role=role,
                display_name=f"Test {role.value}",
                office_code=OFFICE if role is Role.officer else None,
            )
        session.commit()


def username_for(role: Role) -> str:
    return f"{role.value.replace('_', '-')}1"


@dataclass
class Api:
    app: FastAPI
    client: TestClient

    def login(self, role: Role) -> str:
        response = self.client.post(
            "/api/v1/auth/login",
            data={"username": username_for(role), "password": password_for(role)},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def headers(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login(role)}"}


@pytest.fixture
def make_api(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Build an app on the backend under test (serving settings overridable), with users."""
    stack: list[TestClient] = []

    def factory(**overrides: Any) -> Api:
        app = build_app(db_url, tmp_path / f"data{len(stack)}", **overrides)
        client = TestClient(app)
        client.__enter__()
        stack.append(client)
        add_users(app)
        return Api(app, client)

    yield factory
    for client in reversed(stack):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@contextmanager
def uvicorn_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with a real uvicorn on 127.0.0.1 (random port) in a thread."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="info")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


# --------------------------------------------------------------------------- a trained world

Samples = tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated world with a trained and promoted model (built once)."""
    from pipelines.synthetic import WorldConfig

    config = WorldConfig(n_shipments=20000, seed=5)
    return built_once(tmp_path_factory, "world", lambda root: trained_world(root, config))


@pytest.fixture(scope="session")
def samples(world: Path) -> Samples:
    return samples_of(world)


def samples_of(world: Path) -> Samples:
    """The world's last 60 validated shipments and their goods lines (by shipment)."""
    ships = pl.read_parquet(world / "validated" / "shipments.parquet").tail(60)
    items = pl.read_parquet(world / "validated" / "items.parquet")
    items = items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    by_ship: dict[str, list[dict[str, Any]]] = {}
    for row in items.to_dicts():
        by_ship.setdefault(row["shipment_id"], []).append(row)
    return ships.to_dicts(), by_ship


def payload(
    samples: tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]],
    i: int,
    sid: str,
    office: str = OFFICE,
    day: dt.date = DAY,
) -> dict[str, Any]:
    ships, items = samples
    ship = dict(ships[i % len(ships)])
    lines = items[ship["shipment_id"]]
    at = dt.datetime(day.year, day.month, day.day, 8, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
    ship.update(
        shipment_id=sid,
        office_code=office,
        declared_at=at,
        expected_arrival_at=at + dt.timedelta(hours=6),
    )
    ship["items"] = [
        {**line, "shipment_id": sid, "item_id": f"{sid}-{line['line_no']}"} for line in lines
    ]
    return dict(jsonable(ship))


def app_on(db_url: str | None, world: Path, tmp_path: Path) -> FastAPI:
    """The app on a copy of `world` (`tmp_path`/data) and the database `db_url` (None:
    the copy's own SQLite file)."""
    data = tmp_path / "data"
    shutil.copytree(world, data)
    url = db_url or f"sqlite:///{data / 'caravan.db'}"
    return build_app(url, data, max_body_bytes=2 * 1024 * 1024)


@contextmanager
def api_on(db_url: str | None, world: Path, tmp_path: Path) -> Iterator[Api]:
    """The app of `app_on`, with users of every role."""
    app = app_on(db_url, world, tmp_path)
    with TestClient(app) as client:
        add_users(app)
        yield Api(app, client)


@contextmanager
def served_on(db_url: str | None, world: Path, tmp_path: Path) -> Iterator[tuple[FastAPI, str]]:
    """The app of `app_on` served by uvicorn on loopback, with users of every role:
    the app and its base URL."""
    app = app_on(db_url, world, tmp_path)
    with uvicorn_server(app) as base:
        add_users(app)
        yield app, base


def bearer(client: httpx.Client, role: Role) -> dict[str, str]:
    """The Authorization header of `role`'s user, signed in over HTTP (`client`: an
    httpx client with the server's base URL)."""
    r = client.post(
        "/api/v1/auth/login",
        data={"username": username_for(role), "password": password_for(role)},
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def world_api(db_url: str, tmp_path: Path, world: Path) -> Iterator[Api]:
    with api_on(db_url, world, tmp_path) as api:
        yield api


def scraped(text: str) -> dict[str, float]:
    """The unlabelled samples of a /metrics page, by name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
