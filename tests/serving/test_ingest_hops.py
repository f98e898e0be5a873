"""The single-record ingest routes (`POST /api/v1/shipments`, `POST /api/v1/travellers`)
do their database and CPU work in two worker-thread calls, not five
(`serving.deps.InSession`): the caller read with the session opened, then the ingest
with the session closed. What must not change with it, over real HTTP, on SQLite and
PostgreSQL:

- the refusals: the same status, body and order (401 before 403 before 415 before 422)
  as the batch routes, which keep the plain dependencies; no connection is kept after
  a refusal;
- concurrent ingests from 8 threads: each shipment stored and scored once, a repeat
  answered 200 with the same score, other content under a taken id 409, and the audit
  log verifies;
- the event loop is never the one that waits on the database: a request held on the
  write lock leaves /healthz and other callers answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import polars as pl
import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text

from serving import orm as m
from serving.auth import Role, create_api_key
from serving.services.audit_log import audit_report
from tests.serving.conftest import (
    Api,
    Samples,
    bearer,
    payload,
    served_on,
    username_for,
)

API = "/api/v1"


class Hops:
    """Counts the worker-thread calls (anyio.to_thread.run_sync: FastAPI's and ours) and
    notes every SQL statement run on a thread with a running event loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
        self.calls = 0
        self.on_loop: list[str] = []
        self.statements = 0
        real = anyio.to_thread.run_sync

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

        def before(*_args: Any) -> None:
            self.statements += 1
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self.on_loop.append(str(_args[2])[:80])

        event.listen(engine, "before_cursor_execute", before)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def _traveller(world: Path, record_id: str) -> dict[str, Any]:
    row = pl.read_parquet(world / "validated" / "travellers.parquet").head(1).to_dicts()[0]
    record = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    record["traveller_record_id"] = record_id
    return record


def test_a_single_ingest_is_two_thread_calls_and_no_sql_on_the_event_loop(
    world_api: Api, samples: Samples, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world_api
    engine: Engine = api.app.state.engine
    analyst = api.headers(Role.analyst)
    hops = Hops(monkeypatch, engine)
    body = payload(samples, 0, "HOP-1")
    first = api.client.post(f"{API}/shipments", json=body, headers=analyst)
    assert first.status_code == 201, first.text
    assert hops.take() == 2  # (was 5: session enter, principal, endpoint, answer, exit)
    again = api.client.post(f"{API}/shipments", json=body, headers=analyst)
    assert again.status_code == 200 and again.json() == first.json()
    assert hops.take() == 2
    record = _traveller(world, "HOP-TR1")
    stored = api.client.post(f"{API}/travellers", json=record, headers=analyst)
    assert stored.status_code == 201 and stored.json()["masked"] is True, stored.text
    assert hops.take() == 2
    repeat = api.client.post(f"{API}/travellers", json=record, headers=analyst)
    assert repeat.status_code == 200 and repeat.json() == stored.json()
    assert hops.take() == 2
    assert hops.statements > 0 and hops.on_loop == []
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # stored once, scored once, in the audit log once; the log verifies
    with api.app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(m.Score)) == 1
        kinds = Counter(session.scalars(select(m.AuditLog.kind)))
        assert kinds["score"] == 1
        assert audit_report(session).result.ok


def _refusals(
    api: Api, world: Path, samples: Samples, single: str, batch: str
) -> list[tuple[str, int, Any, str | None]]:
    """(case, status, body, WWW-Authenticate) of each refusal on `single`; the same
    refusal on the `batch` route (plain dependencies) answers the same."""
    good = (
        payload(samples, 1, "REF-1") if single.endswith("shipments") else _traveller(world, "R-1")
    )
    junk = {"Content-Type": "text/plain"}
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("no credential", junk, b"{broken"),
        ("unknown token", {**junk, "Authorization": "Bearer not-a-token"}, b"{broken"),
        ("auditor", {**junk, **api.headers(Role.auditor)}, b"{broken"),
        ("officer", {**junk, **api.headers(Role.officer)}, b"{broken"),
        ("text/plain", {**junk, **api.headers(Role.analyst)}, b"{broken"),
    ]
    out = []
    engine: Engine = api.app.state.engine
    for case, headers, content in cases:
        r = api.client.post(single, content=content, headers=headers)
        assert engine.pool.checkedout() == 0, case  # type: ignore[attr-defined]
        out.append((case, r.status_code, r.json(), r.headers.get("www-authenticate")))
        same = api.client.post(batch, content=content, headers=headers)
        assert (same.status_code, same.json()) == (r.status_code, r.json()), case
    analyst = api.headers(Role.analyst)
    missing = {k: v for k, v in good.items() if k not in ("office_code", "surname")}
    r = api.client.post(single, json=missing, headers=analyst)
    out.append(("missing field", r.status_code, r.json(), None))
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    r = api.client.post(single, content=b"[" + b" " * 3_000_000 + b"]", headers=analyst)
    out.append(("too large", r.status_code, r.json(), None))
    return out


def test_refusals_keep_their_status_body_and_order(
    world_api: Api, samples: Samples, world: Path
) -> None:
    api = world_api
    for single, batch in (
        (f"{API}/shipments", f"{API}/shipments/batch"),
        (f"{API}/travellers", f"{API}/travellers/batch"),
    ):
        got = {
            case: (status, body, www)
            for case, status, body, www in _refusals(api, world, samples, single, batch)
        }
        assert got["no credential"] == (401, {"detail": "not authenticated"}, "Bearer")
        assert got["unknown token"][0] == 401 and got["unknown token"][2] == "Bearer"
        me = api.client.get(f"{API}/auth/me", headers={"Authorization": "Bearer not-a-token"})
        assert got["unknown token"][1] == me.json()  # (as any other route)
        assert got["auditor"][:2] == (403, {"detail": "role auditor may not call this endpoint"})
        if single.endswith("travellers"):
            assert got["officer"][:2] == (
                403,
                {"detail": "role officer may not call this endpoint"},
            )
        assert got["text/plain"][:2] == (
            415,
            {"detail": "Content-Type must be application/json (got 'text/plain')"},
        )
        status, body, _ = got["missing field"]
        missing = "office_code" if single.endswith("shipments") else "surname"
        assert status == 422 and ["body", missing] in [e["loc"] for e in body["detail"]], body
        assert got["too large"][0] == 413
    # an officer of another office; other content under a stored id; a disabled user
    officer = api.headers(Role.officer)
    r = api.client.post(
        f"{API}/shipments", json=payload(samples, 2, "REF-2", office="KZ-AST"), headers=officer
    )
    assert (r.status_code, r.json()) == (403, {"detail": "officers see their own office only"})
    analyst = api.headers(Role.analyst)
    assert (
        api.client.post(
            f"{API}/shipments", json=payload(samples, 3, "REF-3"), headers=analyst
        ).status_code
        == 201
    )
    other = payload(samples, 4, "REF-3")
    r = api.client.post(f"{API}/shipments", json=other, headers=analyst)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "shipment 'REF-3' is stored with other content"},
    )
    with api.app.state.session_factory() as session:
        user = session.scalar(select(m.User).where(m.User.username == username_for(Role.analyst)))
        assert user is not None
        user.active = False
        session.commit()
    r = api.client.post(f"{API}/shipments", json=payload(samples, 5, "REF-5"), headers=analyst)
    assert (r.status_code, r.json()) == (401, {"detail": "unknown or inactive user"})
    assert api.app.state.engine.pool.checkedout() == 0
    with api.app.state.session_factory() as session:
        stored = set(session.scalars(select(m.Shipment.shipment_id)))
        assert stored == {"REF-3"}
        assert audit_report(session).result.ok


def test_an_api_key_ingests_in_its_own_name(world_api: Api, samples: Samples) -> None:
    api = world_api
    with api.app.state.session_factory() as session:
        row, key = create_api_key(
            session, name="feed", role=Role.analyst, created_by=username_for(Role.admin)
        )
        session.commit()
    r = api.client.post(
        f"{API}/shipments", json=payload(samples, 6, "KEY-1"), headers={"X-API-Key": key}
    )
    assert r.status_code == 201, r.text
    with api.app.state.session_factory() as session:
        used = session.get(m.ApiKey, row.id)
        assert used is not None and used.last_used_at is not None
        entry = session.scalars(
            select(m.AuditLog).where(m.AuditLog.kind == "score").order_by(m.AuditLog.seq.desc())
        ).first()
        assert entry is not None and entry.actor == f"apikey:{row.id}:feed"
        assert audit_report(session).result.ok


@pytest.fixture
def served(db_url: str, tmp_path: Path, world: Path) -> Iterator[tuple[Any, str]]:
    with served_on(db_url, world, tmp_path) as app_and_base:
        yield app_and_base


def test_concurrent_single_ingests_over_http_are_stored_once(
    served: tuple[Any, str], samples: Samples
) -> None:
    app, base = served
    with httpx.Client(base_url=base, timeout=120) as client:
        headers = bearer(client, Role.analyst)
        # 16 shipments, each sent twice (same content), and 4 ids sent with two contents
        jobs: list[tuple[str, dict[str, Any]]] = []
        for i in range(16):
            body = payload(samples, i, f"CON-{i}")
            jobs += [(f"CON-{i}", body), (f"CON-{i}", body)]
        for i in range(4):
            jobs += [
                (f"TWO-{i}", payload(samples, 20 + i, f"TWO-{i}")),
                (f"TWO-{i}", payload(samples, 30 + i, f"TWO-{i}")),
            ]
        jobs = jobs[::2] + jobs[1::2][::-1]  # (the pairs apart, in varied order)

        def send(job: tuple[str, dict[str, Any]]) -> tuple[str, int, Any]:
            r = client.post(f"{API}/shipments", json=job[1], headers=headers)
            return job[0], r.status_code, r.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, jobs))
    by_id: dict[str, list[tuple[int, Any]]] = {}
    for sid, status, body in results:
        by_id.setdefault(sid, []).append((status, body))
    for sid, answers in by_id.items():
        statuses = sorted(s for s, _ in answers)
        if sid.startswith("CON-"):
            assert statuses == [200, 201], (sid, answers)
            assert answers[0][1] == answers[1][1]  # (the same stored score)
        else:
            assert statuses == [201, 409], (sid, answers)
    with app.state.session_factory() as session:
        ids = list(session.scalars(select(m.Shipment.shipment_id)))
        assert sorted(ids) == sorted(by_id)
        scored = Counter(session.scalars(select(m.Score.shipment_id)))
        assert scored == Counter({sid: 1 for sid in by_id})
        entries = Counter(
            session.scalars(select(m.AuditLog.entity_id).where(m.AuditLog.kind == "score"))
        )
        assert sorted(entries.values()) == [1] * len(by_id)
        assert audit_report(session).result.ok
    assert app.state.engine.pool.checkedout() == 0


def _hold_write_lock(url: str) -> tuple[Callable[[], None], Engine]:
    """Another process's transaction holding the write lock the ingest waits for."""
    engine = create_engine(url)
    conn = engine.connect()
    if engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        conn.execute(text("UPDATE locks SET name = name"))

    def release() -> None:
        conn.rollback() if engine.dialect.name != "sqlite" else conn.exec_driver_sql("ROLLBACK")
        conn.close()

    return release, engine


def test_a_request_waiting_on_the_database_leaves_the_event_loop_free(
    served: tuple[Any, str], samples: Samples
) -> None:
    app, base = served
    url = app.state.engine.url.render_as_string(hide_password=False)
    # (start-up done first: the feature state built in the background and the heap
    # frozen, whose one full garbage collection, over this whole test process, stops
    # every thread for a moment; what is measured is the wait on the database)
    freezer = app.state.heap_freezer
    deadline = time.monotonic() + 120
    while not (app.state.services.history.state_ready and (freezer.freezes or not freezer.enabled)):
        assert time.monotonic() < deadline, "the server did not finish starting"
        time.sleep(0.05)
    with httpx.Client(base_url=base, timeout=120) as client:
        headers = bearer(client, Role.analyst)
        auditor = bearer(client, Role.auditor)
        release, other = _hold_write_lock(url)
        with ThreadPoolExecutor(1) as pool:
            try:
                held = pool.submit(
                    client.post,
                    f"{API}/shipments",
                    json=payload(samples, 40, "SLOW-1"),
                    headers=headers,
                )
                time.sleep(0.5)
                for _ in range(3):  # (the ingest waits on the lock meanwhile)
                    start = time.monotonic()
                    assert client.get("/healthz").status_code == 200
                    assert client.get(f"{API}/auth/me", headers=auditor).status_code == 200
                    assert time.monotonic() - start < 2.0
                    assert not held.done()
            finally:
                release()
                other.dispose()
            r = held.result(timeout=60)
    assert r.status_code == 201, r.text
    with app.state.session_factory() as session:
        assert list(session.scalars(select(m.Shipment.shipment_id))) == ["SLOW-1"]
        assert audit_report(session).result.ok
