"""Failed-login throttling (security review round 2, F14), over HTTP on a real uvicorn
(SQLite and PostgreSQL): guessing is slowed down and locked per user name and client
address, but nobody else's failures keep a user's right password out.

The server honours X-Forwarded-For from 127.0.0.1 (uvicorn's default
FORWARDED_ALLOW_IPS, as behind a reverse proxy on the same host), so the tests speak
from several client addresses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from serving import orm as m
from serving.auth import (
    AuthError,
    LockedOutError,
    LockoutPolicy,
    Role,
    authenticate_password,
    create_user,
)
from serving.db import alembic_config, current_revision, make_engine, upgrade
from tests.serving.conftest import add_users, build_app, password_for, username_for, uvicorn_server

LOGIN = "/api/v1/auth/login"
ANALYST = username_for(Role.analyst)
WRONG = "Wrong-Password-123"


@dataclass
class Server:
    app: FastAPI
    client: httpx.Client

    def login(self, username: str, password: str, address: str) -> httpx.Response:
        return self.client.post(
            LOGIN,
            data={"username": username, "password": password},
            headers={"X-Forwarded-For": address},
        )

    def right(self, role: Role, address: str) -> httpx.Response:
        return self.login(username_for(role), password_for(role), address)

    def entries(self, kind: str) -> list[m.AuditLog]:
        with self.app.state.session_factory() as session:
            query = select(m.AuditLog).where(m.AuditLog.kind == kind).order_by(m.AuditLog.seq)
            return list(session.scalars(query))


@pytest.fixture
def server(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Per name and address: locked from the 3rd failure, 30 s doubling; per address:
    from the 4th failure; per name over all addresses: from the 5th."""
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)  # uvicorn's default: 127.0.0.1
    app = build_app(
        db_url,
        tmp_path / "data",
        login_lockout_threshold=3,
        login_lockout_base_seconds=30,
        login_lockout_max_seconds=900,
        ip_lockout_threshold=4,
        user_lockout_threshold=5,
    )
    with uvicorn_server(app) as base:
        add_users(app)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield Server(app, client)


def test_an_attacker_elsewhere_does_not_lock_the_user_out(server: Server) -> None:
    """The finding's scenario: wrong passwords for the user's name from changing
    addresses; the user signs in with the right password all the same."""
    assert server.right(Role.analyst, "10.1.2.3").status_code == 200  # his usual address
    # The attacker: wrong passwords from each of four addresses until it is locked
    # out there (the 3rd failure from an address, or sooner once the name has failed
    # 5 times over all addresses).
    for n in range(4):
        address = f"7.7.0.{n}"
        answers = [server.login(ANALYST, WRONG, address) for _ in range(4)]
        codes = [r.status_code for r in answers]
        assert codes[0] == 401 and 429 in codes and codes.index(429) <= 3, codes
        assert set(codes[codes.index(429) :]) == {429}, codes
        assert all(int(r.headers["Retry-After"]) >= 29 for r in answers if r.status_code == 429)
    # The user: from his address, and from one he never used (no failure there).
    assert server.right(Role.analyst, "10.1.2.3").status_code == 200
    assert server.right(Role.analyst, "10.1.2.99").status_code == 200
    # A success does not free the attacker's addresses: they stay locked for the name.
    assert server.right(Role.analyst, "7.7.0.0").status_code == 429
    # The lockouts are audited, naming the address.
    lockouts = server.entries("login_lockout")
    assert {e.actor for e in lockouts} == {ANALYST}
    assert {e.payload["client_ip"] for e in lockouts} == {f"7.7.0.{n}" for n in range(4)}


def test_guessing_from_one_address_is_slowed_and_locked(server: Server) -> None:
    for _ in range(2):
        assert server.login(ANALYST, WRONG, "7.7.1.1").status_code == 401
    third = server.login(ANALYST, WRONG, "7.7.1.1")
    assert third.status_code == 401  # ... and now that name is locked from that address
    for password in (WRONG, password_for(Role.analyst)):  # even the right password
        refused = server.login(ANALYST, password, "7.7.1.1")
        assert refused.status_code == 429
        assert 28 <= int(refused.headers["Retry-After"]) <= 30
    # An admin's unlock frees the name at every address.
    token = server.right(Role.admin, "10.0.0.1").json()["access_token"]
    unlocked = server.client.patch(
        f"/api/v1/users/{ANALYST}",
        json={"unlock": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert unlocked.status_code == 200, unlocked.text
    assert server.right(Role.analyst, "7.7.1.1").status_code == 200


def test_many_names_from_one_address_slow_that_address_but_not_its_known_users(
    server: Server,
) -> None:
    """Behind a NAT or a proxy without forwarded headers, everyone shares an address:
    a guesser trying made-up names there locks out the names that have not signed in
    from it, not the users who have."""
    nat = "10.9.9.9"
    assert server.right(Role.auditor, nat).status_code == 200  # a colleague behind the NAT
    for n in range(4):
        assert server.login(f"nosuchuser{n}", WRONG, nat).status_code == 401
    assert server.login("nosuchuser9", WRONG, nat).status_code == 429
    assert server.right(Role.officer, nat).status_code == 429  # never signed in from there
    # a wrong password for the colleague's name gets the answer every name gets there
    # (nobody behind the NAT learns who signs in from it) ...
    auditor = username_for(Role.auditor)
    assert server.login(auditor, WRONG, nat).status_code == 429
    assert server.right(Role.auditor, nat).status_code == 200  # ... the right one: in
    assert server.right(Role.officer, "10.9.9.10").status_code == 200  # another address


def test_a_distributed_guesser_gets_one_try_per_new_address(server: Server) -> None:
    """Past 5 failures for a name over all addresses, an address that has failed for it
    waits before its next try (counted from its own failure, so nobody else can make
    the wait last); a new address, or the user's own, is not held back."""
    assert server.right(Role.analyst, "10.1.2.3").status_code == 200
    for n in range(5):
        assert server.login(ANALYST, WRONG, f"8.8.0.{n}").status_code == 401
    assert server.login(ANALYST, WRONG, "8.8.1.1").status_code == 401  # a new address: tries
    again = server.login(ANALYST, WRONG, "8.8.1.1")  # ... but not twice in a row
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 59
    assert server.right(Role.analyst, "8.8.0.4").status_code == 429  # failed at the 5th
    assert server.right(Role.analyst, "10.1.2.3").status_code == 200
    assert server.right(Role.analyst, "10.1.2.4").status_code == 200


# --------------------------------------------------------------------------- over time


def test_nobody_elses_failures_lengthen_a_users_wait(db_session: Session) -> None:
    """The function with explicit addresses and times: a user who mistyped at a new
    address while someone hammers his name waits at most the delay his own failure
    started, however the other addresses go on."""
    policy = LockoutPolicy(threshold=3, ip_threshold=100, user_threshold=4, base_seconds=2)
    create_user(db_session, username="ana", password="Right-Secret-Pass-1", role=Role.analyst)
    db_session.commit()
    t0 = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)

    def attempt(password: str, address: str, at: dt.datetime) -> None:
        try:
            authenticate_password(
                db_session, "ana", password, client_ip=address, policy=policy, now=at
            )
        finally:
            db_session.commit()

    for n in range(6):  # the attacker: one failure from each of six addresses
        with pytest.raises(AuthError):
            attempt(WRONG, f"7.7.2.{n}", t0 + dt.timedelta(seconds=n))
    mistyped = t0 + dt.timedelta(seconds=10)
    with pytest.raises(AuthError):
        attempt("Right-Secret-Pass-2", "10.4.4.4", mistyped)  # the user, a new address
    # 7 failures over all addresses: 2 * 2**(7 - 4) = 16 s from his own failure
    with pytest.raises(LockedOutError) as info:
        attempt("Right-Secret-Pass-1", "10.4.4.4", mistyped + dt.timedelta(seconds=1))
    assert info.value.retry_after == pytest.approx(15)
    for n in range(6, 30):  # the attacker goes on from new addresses, every second
        with pytest.raises(AuthError):
            attempt(WRONG, f"7.7.2.{n}", mistyped + dt.timedelta(seconds=n - 5))
    attempt("Right-Secret-Pass-1", "10.4.4.4", mistyped + dt.timedelta(seconds=16.5))  # in


# --------------------------------------------------------------------------- migration 0004


def test_migration_0004_adds_the_last_success_column(db_url: str) -> None:
    upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO login_throttle (key, failures, last_failure_at) "
                    "VALUES ('ip:10.0.0.1', 2, '2026-03-01 08:00:00')"
                )
            )
        upgrade(engine, "0004")
        assert current_revision(engine) == "0004"
        with engine.connect() as conn:
            row = conn.execute(text("SELECT key, failures, last_success_at FROM login_throttle"))
            assert tuple(row.one()) == ("ip:10.0.0.1", 2, None)
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT key FROM login_throttle")).scalar() == "ip:10.0.0.1"
        upgrade(engine, "0004")
        assert current_revision(engine) == "0004"
    finally:
        engine.dispose()
