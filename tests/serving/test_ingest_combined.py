"""Concurrent single-shipment ingests are scored and stored together
(`Services.shipment_combiner`, `serving.services.shipments._store_group`): over
real HTTP (uvicorn) on a SQLite file with a trained world, every request gets its
own shipment's answer, every shipment is stored once with an audit entry naming
who sent it, the chain verifies, and the stored scores are those of the same
shipments sent one at a time to a fresh copy of the world. A group whose storing
fails, and requests that repeat an id, still end as they would one by one."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from serving.auth import Role
from serving.orm import AuditLog, Item, Score, Shipment
from serving.services import shipments as shipments_module
from serving.services import verify_audit
from tests.serving.conftest import (
    Samples,
    api_on,
    bearer,
    payload,
    scraped,
    served_on,
    username_for,
)

API = "/api/v1"
# One declared instant for every shipment of a test, after the whole history: the
# feature state takes them in any order, and none counts another (features read
# what came strictly before), so one at a time or together they score alike.
AT = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
SENDERS = (Role.analyst, Role.officer)  # two users (the officer of the records' office)
N = 16
THREADS = 8
# A single shipment's own path (`_store_fresh`) made this much slower, so that the
# requests sent meanwhile queue and form a group whatever the machine's speed.
SLOW_ALONE_S = 0.15


def _records(samples: Samples, tag: str, n: int = N) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        record = payload(samples, i, f"CMB-{tag}-{i:02d}")
        record["declared_at"] = AT.isoformat()
        record["expected_arrival_at"] = (AT + dt.timedelta(hours=6)).isoformat()
        out.append(record)
    return out


def _post_concurrently(
    base: str, posts: list[tuple[Role, dict[str, Any]]], threads: int = THREADS
) -> list[httpx.Response]:
    """Each (sender, record) as `POST /shipments`, from `threads` threads at once
    (one keep-alive connection each); the answers in the order of `posts`."""
    with httpx.Client(base_url=base) as client:
        headers_of = {role: bearer(client, role) for role in {role for role, _r in posts}}
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()
    start = threading.Barrier(min(threads, len(posts)))

    def send(post: tuple[Role, dict[str, Any]]) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60)
            with lock:
                clients.append(local.client)
            start.wait(timeout=30)
        role, record = post
        return local.client.post(f"{API}/shipments", json=record, headers=headers_of[role])

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(send, posts))
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def slow_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shipments_module._store_fresh

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_ALONE_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(shipments_module, "_store_fresh", slow)


def _stored_rows(app: FastAPI, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per shipment: its score rows, goods lines and the actors of its score entries."""
    out: dict[str, dict[str, Any]] = {}
    with app.state.session_factory() as session:
        for sid in ids:
            scores = session.scalars(select(Score).where(Score.shipment_id == sid)).all()
            out[sid] = {
                "shipments": session.scalar(
                    select(func.count()).select_from(Shipment).where(Shipment.shipment_id == sid)
                ),
                "items": session.scalar(
                    select(func.count()).select_from(Item).where(Item.shipment_id == sid)
                ),
                "scores": [
                    {
                        "id": s.id,
                        "probability": s.probability,
                        "priority": s.priority,
                        "lane": s.lane,
                        "feature_vector": s.feature_vector,
                        "model_version": s.model_version,
                        "explanation": s.explanation,
                    }
                    for s in scores
                ],
                "actors": list(
                    session.scalars(
                        select(AuditLog.actor).where(
                            AuditLog.kind == "score", AuditLog.entity_id == sid
                        )
                    )
                ),
            }
        _n, result, broken = verify_audit(session)
        assert result.ok, (result, broken)
    return out


def _one_at_a_time(world: Path, root: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored rows of `records` sent one at a time to a fresh copy of `world`."""
    with api_on(None, world, root) as api:
        headers = api.headers(Role.analyst)
        for record in records:
            one = api.client.post(f"{API}/shipments", json=record, headers=headers)
            assert one.status_code == 201, one.text
        assert api.app.state.services.shipment_combiner.combined == 0
        return _stored_rows(api.app, [r["shipment_id"] for r in records])


def _close(a: Any, b: Any) -> bool:
    """Equal, but floats to 1e-12 relative: a feature such as days since a party's
    first shipment may differ in its last bit between the one-pass path (a batch's,
    `sequence_features`) and the one of one shipment."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_scores(got: dict[str, Any], want: dict[str, Any]) -> None:
    keys = ("probability", "priority", "lane", "feature_vector", "model_version", "explanation")
    for sid, rows in want.items():
        (mine,) = got[sid]["scores"]
        (theirs,) = rows["scores"]
        for key in keys:
            assert _close(mine[key], theirs[key]), (sid, key, mine[key], theirs[key])


def _check_answers(
    app: FastAPI,
    posts: list[tuple[Role, dict[str, Any]]],
    answers: list[httpx.Response],
    reference: dict[str, Any],
) -> None:
    """Every request 201 with its own shipment, stored once, audited under its sender,
    scored as one at a time."""
    ids = [record["shipment_id"] for _role, record in posts]
    rows = _stored_rows(app, ids)
    for (role, record), answer in zip(posts, answers, strict=True):
        sid = record["shipment_id"]
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["shipment_id"] == sid
        assert body["content_hash"] and body["declared_at"]
        row = rows[sid]
        assert row["shipments"] == 1 and row["items"] == len(record["items"]), sid
        (score,) = row["scores"]
        assert body["score_id"] == score["id"]
        assert body["probability"] == score["probability"] and body["lane"] == score["lane"]
        assert row["actors"] == [username_for(role)], sid
    _same_scores(rows, reference)


def _posts(records: list[dict[str, Any]]) -> list[tuple[Role, dict[str, Any]]]:
    return [(SENDERS[i % 2], record) for i, record in enumerate(records)]


@pytest.mark.usefixtures("slow_alone")
def test_concurrent_single_ingests_are_stored_together_as_one_at_a_time(
    world: Path, samples: Samples, tmp_path: Path
) -> None:
    records = _records(samples, "A")
    reference = _one_at_a_time(world, tmp_path / "one", records)
    posts = _posts(records)
    with served_on(None, world, tmp_path / "together") as (app, base):
        answers = _post_concurrently(base, posts)
        combiner = app.state.services.shipment_combiner
        _check_answers(app, posts, answers, reference)
        metrics = scraped(httpx.get(f"{base}/metrics").text)
    # (requests were combined: the test cannot pass on the path of one alone)
    assert combiner.combined >= 2 and combiner.largest >= 2, vars(combiner)
    assert metrics["caravan_ingest_groups_total"] == combiner.groups
    assert metrics["caravan_ingest_combined_requests_total"] == combiner.combined
    assert metrics["caravan_ingest_largest_group"] == combiner.largest
    assert combiner.largest <= THREADS


@pytest.mark.usefixtures("slow_alone")
@pytest.mark.parametrize("failure", ["integrity", "runtime"])
def test_a_failing_group_leaves_each_request_to_its_own_path(
    world: Path,
    samples: Samples,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    records = _records(samples, "F")
    reference = _one_at_a_time(world, tmp_path / "one", records)
    real = shipments_module._write_scored
    failed: list[int] = []

    def fail(*_args: Any) -> None:
        if failure == "integrity":
            raise IntegrityError("COMMIT", {}, Exception("UNIQUE constraint failed"))
        raise RuntimeError("the group's storing failed")

    def failing(session: Any, fresh: Any, scored: Any, actor: Any) -> Any:
        """The group's rows written, then its commit fails (once): the leader's
        session must be rolled back, else its own path sees its shipment as stored
        and answers 200 for a shipment the session's close then drops."""
        if len(fresh) < 2 or failed:
            return real(session, fresh, scored, actor)
        failed.append(len(fresh))
        session.commit = fail
        try:
            return real(session, fresh, scored, actor)
        finally:
            del session.commit

    monkeypatch.setattr(shipments_module, "_write_scored", failing)
    posts = _posts(records)
    with served_on(None, world, tmp_path / "together") as (app, base):
        answers = _post_concurrently(base, posts)
        combiner = app.state.services.shipment_combiner
        _check_answers(app, posts, answers, reference)
    assert failed and failed[0] >= 2
    assert combiner.groups >= 1


@pytest.mark.usefixtures("slow_alone")
@pytest.mark.parametrize("case", ["same", "other", "item"])
def test_concurrent_requests_of_one_id_are_stored_once(
    world: Path, samples: Samples, tmp_path: Path, case: str
) -> None:
    """Two concurrent requests of one id: the same content, one 201 and one 200 (the
    stored answer); other content, one 201 and one 409. Two of other ids with a goods
    line of one item_id: one 201 and one 409 (as one after the other)."""
    records = _records(samples, "D", 3)
    twin = dict(records[1])
    if case == "other":
        twin["gross_mass_kg"] = float(twin["gross_mass_kg"]) + 1
    if case == "item":
        twin = dict(records[1], shipment_id="CMB-D-twin")
        twin["items"] = [
            {**line, "shipment_id": "CMB-D-twin", "item_id": f"CMB-D-twin-{k}"}
            for k, line in enumerate(records[1]["items"])
        ]
        twin["items"][0]["item_id"] = records[1]["items"][0]["item_id"]
    posts = [
        (Role.analyst, records[0]),
        (Role.officer, records[1]),
        (Role.analyst, twin),
        (Role.officer, records[2]),
    ]
    with served_on(None, world, tmp_path / "together") as (app, base):
        answers = _post_concurrently(base, posts, threads=4)
        rows = _stored_rows(app, [r["shipment_id"] for r in [*records, twin]])
    codes = [a.status_code for a in answers]
    assert codes[0] == 201 and codes[3] == 201, [a.text for a in answers]
    assert sorted(codes[1:3]) == ([200, 201] if case == "same" else [201, 409]), codes
    won = 1 if codes[1] == 201 else 2
    sid = posts[won][1]["shipment_id"]
    (score,) = rows[sid]["scores"]
    assert answers[won].json()["score_id"] == score["id"]
    assert rows[sid]["actors"] == [username_for(posts[won][0])]
    if case == "same":  # (the repeat is answered with the stored shipment)
        assert answers[1].json() == answers[2].json()
    else:
        assert "item_id" in answers[3 - won].text or case == "other", answers[3 - won].text
        lost = posts[3 - won][1]["shipment_id"]
        if lost != sid:  # (the item_id's other shipment: not stored)
            assert rows[lost]["shipments"] == 0 and rows[lost]["scores"] == []
    for _role, record in [posts[0], posts[won], posts[3]]:
        row = rows[record["shipment_id"]]
        assert row["shipments"] == 1 and len(row["scores"]) == 1 and len(row["actors"]) == 1


def test_a_group_of_one_takes_the_path_of_one(
    world: Path, samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a request is stored by its own path (`_store_fresh`) in its own session,
    never by `_store_group`."""
    groups: list[int] = []
    real = shipments_module._store_group

    def spy(session: Any, services: Any, group: Any) -> Any:
        groups.append(len(group))
        return real(session, services, group)

    monkeypatch.setattr(shipments_module, "_store_group", spy)
    records = _records(samples, "S", 3)
    with api_on(None, world, tmp_path) as api:
        headers = api.headers(Role.officer)
        for record in records:
            answer = api.client.post(f"{API}/shipments", json=record, headers=headers)
            assert answer.status_code == 201
        combiner = api.app.state.services.shipment_combiner
        assert (combiner.groups, combiner.combined, groups) == (0, 0, [])
        rows = _stored_rows(api.app, [r["shipment_id"] for r in records])
    assert all(row["actors"] == [username_for(Role.officer)] for row in rows.values())


def test_the_combiner_hands_each_its_own_result_and_the_lead_on() -> None:
    """The combiner alone (no database): 40 threads, groups bounded by `limit`, each
    thread gets the result for its own item; a group's failure answers None."""
    from serving.services.combining import Combiner

    combiner: Combiner[int, str] = Combiner(limit=4)
    sizes: list[int] = []
    failed: set[int] = set()
    busy = threading.Lock()

    def group(items: Any) -> list[str | None]:
        assert busy.acquire(blocking=False), "two groups at once"
        try:
            sizes.append(len(items))
            time.sleep(0.01)
            if 13 in items:
                failed.update(items)
                raise RuntimeError("a failing group")
            return [f"g{i}" for i in items]
        finally:
            busy.release()

    def one(i: int) -> str | None:
        def alone() -> str:
            assert busy.acquire(blocking=False), "a group and a request alone at once"
            try:
                time.sleep(0.01)
                return f"a{i}"
            finally:
                busy.release()

        return combiner.submit(i, group, alone)

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    for i, got in enumerate(results):
        # (None: its group failed, and the caller goes alone)
        assert got == (None if i in failed else f"g{i}") or got == f"a{i}", (i, got)
    assert all(2 <= s <= 4 for s in sizes) and sizes, sizes
    assert combiner.combined == sum(r is not None and r.startswith("g") for r in results)
    assert combiner.groups == len(sizes) and combiner.largest <= 4
    assert not combiner._leading and not combiner._queue


@pytest.mark.usefixtures("slow_alone")
def test_late_arrivals_leave_their_group_and_the_others_are_stored_together(
    world: Path, samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipment declared before the newest one the feature state holds (a late
    arrival: normal when offices send out of order) is stored by its own path; the
    others of its group are still stored together, and every request gets 201."""
    answered: list[tuple[list[bool], list[bool]]] = []  # per group: late?, answered?
    real = shipments_module._store_group

    def spy(session: Any, services: Any, group: Any) -> Any:
        out = real(session, services, group)
        late = [one.prepared.record["declared_at"] < AT + dt.timedelta(hours=1) for one in group]
        answered.append((late, [r is not None for r in out]))
        return out

    monkeypatch.setattr(shipments_module, "_store_group", spy)
    records = _records(samples, "L", 9)
    first, rest = records[0], records[1:]
    for k, record in enumerate(rest):  # (every other one declared before `first`)
        hours = 0 if k % 2 else 2
        record["declared_at"] = (AT + dt.timedelta(hours=hours)).isoformat()
    first["declared_at"] = (AT + dt.timedelta(hours=1)).isoformat()
    posts = _posts(rest)
    with served_on(None, world, tmp_path / "late") as (app, base):
        with httpx.Client(base_url=base) as client:
            sent = client.post(f"{API}/shipments", json=first, headers=bearer(client, Role.analyst))
        assert sent.status_code == 201, sent.text
        answers = _post_concurrently(base, posts)
        rows = _stored_rows(app, [r["shipment_id"] for r in records])
        with app.state.session_factory() as session:
            _n, result, broken = verify_audit(session)
    assert result.ok, (result, broken)
    assert [a.status_code for a in answers] == [201] * len(rest), [a.text for a in answers]
    for (role, record), answer in zip(posts, answers, strict=True):
        row = rows[record["shipment_id"]]
        assert row["shipments"] == 1 and len(row["scores"]) == 1, record["shipment_id"]
        assert row["actors"] == [username_for(role)]
        assert answer.json()["score_id"] == row["scores"][0]["id"]
    mixed = [(late, got) for late, got in answered if any(late) and sum(not x for x in late) >= 2]
    assert mixed, answered  # (a group held a late arrival and two others)
    for late, got in answered:
        on_time = sum(not x for x in late)
        assert got == [not x and on_time >= 2 for x in late], (late, got)
