"""Per-request costs taken off without changing an answer:

- a bearer token's signature is verified once per token (`serving.auth.verified_token`):
  a token seen before is still refused the moment it expires, and the user row is
  still read on every request (a user deactivated, moved to another role or signed
  out by another process is refused at once);
- an audit entry reads only the head's seq and hash: a chain of many ingests, with
  entries appended by another connection (another worker) between them, verifies;
  an edited, deleted or reordered row is still found.

Over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import time

from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from serving import orm as m
from serving.auth import Role, create_access_token
from serving.services.audit_log import audit, audit_report
from tests.serving.conftest import DAY, SECRET_KEY, Api, Samples, payload, username_for
from tests.serving.test_api_e2e import tamper_engine

ME = "/api/v1/auth/me"


def _other_process(api: Api) -> Session:
    """A session on its own engine: the database as another worker sees it."""
    url = api.app.state.engine.url.render_as_string(hide_password=False)
    return Session(create_engine(url))


def test_a_known_token_is_refused_once_expired(api: Api) -> None:
    # (PyJWT's rule: expired when the whole seconds of `exp` are not after now: a
    # 3-second token lives 2 to 3 s; the app answers once first, so that the token's
    # first request is not also the app's, slower on a busy machine)
    assert api.client.get(ME, headers=api.headers(Role.analyst)).status_code == 200
    token = create_access_token(SECRET_KEY.encode(), username_for(Role.analyst), "analyst", 3)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get(ME, headers=headers).status_code == 200
    assert api.client.get(ME, headers=headers).status_code == 200  # (verified before)
    time.sleep(4.1)
    refused = api.client.get(ME, headers=headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "token expired"
    assert api.client.get(ME, headers=headers).json()["detail"] == "token expired"


def test_a_known_token_of_a_changed_user_is_refused_at_once(api: Api) -> None:
    officer = api.headers(Role.officer)
    analyst = api.headers(Role.analyst)
    admin = api.headers(Role.admin)
    for headers in (officer, analyst, admin):
        assert api.client.get(ME, headers=headers).status_code == 200
    assert api.client.get("/api/v1/users", headers=admin).status_code == 200
    with _other_process(api) as session:
        session.execute(
            update(m.User).where(m.User.username == username_for(Role.officer)).values(active=False)
        )
        session.execute(
            update(m.User).where(m.User.username == username_for(Role.admin)).values(role="auditor")
        )
        session.commit()
    gone = api.client.get(ME, headers=officer)
    assert gone.status_code == 401 and gone.json()["detail"] == "unknown or inactive user"
    demoted = api.client.get("/api/v1/users", headers=admin)
    assert demoted.status_code == 403
    assert api.client.get(ME, headers=admin).json()["role"] == "auditor"
    # signed out (by the user's own request elsewhere): the token is refused
    assert api.client.post("/api/v1/auth/logout", headers=analyst).status_code in (200, 204)
    out = api.client.get(ME, headers=analyst)
    assert out.status_code == 401 and "sign in again" in out.json()["detail"]


def test_a_chain_of_many_ingests_verifies_and_tampering_is_found(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    headers = api.headers(Role.admin)
    other = _other_process(api)
    try:
        for i in range(12):
            body = payload(samples, i, f"AUD-{i}", day=DAY)
            r = api.client.post("/api/v1/shipments", json=body, headers=headers)
            assert r.status_code == 201, r.text
            if i % 3 == 1:  # another worker appends between two ingests
                audit(other, "test_note", "worker2", {"n": i}, entity="note", entity_id=str(i))
                other.commit()
        with api.app.state.session_factory() as session:
            report = audit_report(session)
            assert report.result.ok, report.result
            rows = list(session.scalars(select(m.AuditLog).order_by(m.AuditLog.seq)))
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
        kinds = [r.kind for r in rows]
        assert kinds.count("score") == 12 and kinds.count("test_note") == 4
        scores = [r for r in rows if r.kind == "score"]

        # edited: the actor of the 5th score entry; then put back
        victim = scores[4]
        engine = api.app.state.engine
        tamper_engine(engine, [f"UPDATE audit_log SET actor = 'mallory' WHERE seq = {victim.seq}"])
        with api.app.state.session_factory() as session:
            report = audit_report(session)
        assert not report.result.ok and report.broken_seq == victim.seq
        tamper_engine(
            engine, [f"UPDATE audit_log SET actor = '{victim.actor}' WHERE seq = {victim.seq}"]
        )
        with api.app.state.session_factory() as session:
            assert audit_report(session).result.ok
        # deleted: the 8th score entry (the next one is the first broken)
        gone = scores[7]
        tamper_engine(engine, [f"DELETE FROM audit_log WHERE seq = {gone.seq}"])
        with api.app.state.session_factory() as session:
            report = audit_report(session)
        assert not report.result.ok and report.broken_seq == gone.seq + 1
    finally:
        other.close()
        other.get_bind().dispose()  # type: ignore[union-attr]
