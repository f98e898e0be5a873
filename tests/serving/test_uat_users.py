"""Account administration after the acceptance tests (auditor F7, F8, F9, F11, F14, F17;
officer F11), on real SQLite and PostgreSQL databases through HTTP and the CLI:

- an admin disables/enables a user, changes role, office and name, resets a password
  and unlocks an account (PATCH /api/v1/users/{username}, `caravan users ...`); a
  disabled user's tokens stop working at once, and stay refused after re-enabling;
- user and API-key administration, logins and lockouts are audited with the actor;
- only a signed-in admin (not an API key) creates or changes users;
- API-key names are unique among active keys (409) and a key acts as apikey:<id>:<name>;
- officers and officer keys of an office the deployment does not know are refused (422);
- signing out ends the session server-side: the copied cookie or token is refused and
  the sliding renewal cannot revive it;
- the SQLite database is created readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from serving import orm as m
from serving.auth import Role, create_access_token, sign_out
from serving.db import alembic_config, current_revision, make_engine, upgrade
from serving.services import verify_audit
from tests.conftest import caravan, caravan_in_process
from tests.serving.conftest import OFFICE, SECRET_KEY, Api, password_for, username_for

API = "/api/v1"
USERS = f"{API}/users"
KEYS = f"{USERS}/api-keys"
LOGIN = f"{API}/auth/login"
ME = f"{API}/auth/me"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _login(api: Api, username: str, password: str) -> Any:
    return api.client.post(LOGIN, data={"username": username, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _entries(api: Api, kind: str | None = None) -> list[m.AuditLog]:
    with api.app.state.session_factory() as session:
        query = select(m.AuditLog).order_by(m.AuditLog.seq)
        if kind is not None:
            query = query.where(m.AuditLog.kind == kind)
        return list(session.scalars(query))


def _key(api: Api, admin: dict[str, str], **body: Any) -> Any:
    return api.client.post(KEYS, json=body, headers=admin)


# --------------------------------------------------------------------------- F7


def test_admin_disables_and_enables_a_user(api: Api) -> None:
    admin = api.headers(Role.admin)
    officer = username_for(Role.officer)
    token = api.login(Role.officer)
    assert api.client.get(ME, headers=_bearer(token)).status_code == 200

    r = api.client.patch(f"{USERS}/{officer}", json={"active": False}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    refused = api.client.get(ME, headers=_bearer(token))
    assert refused.status_code == 401
    assert _login(api, officer, password_for(Role.officer)).status_code == 401

    r = api.client.patch(f"{USERS}/{officer}", json={"active": True}, headers=admin)
    assert r.status_code == 200 and r.json()["active"] is True
    # the token issued before the disabling stays refused; a new sign-in works
    assert api.client.get(ME, headers=_bearer(token)).status_code == 401
    again = _login(api, officer, password_for(Role.officer))
    assert again.status_code == 200
    assert api.client.get(ME, headers=_bearer(again.json()["access_token"])).status_code == 200

    changes = [e for e in _entries(api, "user_change") if e.entity_id == officer]
    assert [e.payload["changes"]["active"] for e in changes] == [[True, False], [False, True]]
    assert {e.actor for e in changes} == {username_for(Role.admin)}


def test_admin_changes_role_office_name_password_and_unlocks(api: Api) -> None:
    admin = api.headers(Role.admin)
    analyst = username_for(Role.analyst)
    url = f"{USERS}/{analyst}"

    # three failures lock the account (threshold 3 in the tests), then unlock
    for _ in range(3):
        assert _login(api, analyst, "Wrong-Password-123").status_code == 401
    assert _login(api, analyst, password_for(Role.analyst)).status_code == 429
    r = api.client.patch(url, json={"unlock": True}, headers=admin)
    assert r.status_code == 200 and r.json()["locked_until"] is None
    assert _login(api, analyst, password_for(Role.analyst)).status_code == 200
    assert [e.actor for e in _entries(api, "login_lockout")] == [analyst]

    # password reset: the old password and the old token stop working
    old_token = api.login(Role.analyst)
    new_password = "Brand-New-Pass-2026"
    r = api.client.patch(url, json={"password": new_password}, headers=admin)
    assert r.status_code == 200 and new_password not in r.text
    assert _login(api, analyst, password_for(Role.analyst)).status_code == 401
    assert api.client.get(ME, headers=_bearer(old_token)).status_code == 401
    token = _login(api, analyst, new_password).json()["access_token"]
    reset = _entries(api, "user_password_reset")
    assert [(e.actor, e.entity_id) for e in reset] == [(username_for(Role.admin), analyst)]
    assert new_password not in str(reset[0].payload)

    # role and office: an officer needs an office (422 naming office_code)
    r = api.client.patch(url, json={"role": "officer"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "office_code"]
    r = api.client.patch(
        url,
        json={"role": "officer", "office_code": OFFICE, "display_name": "A. Moved"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    me = api.client.get(ME, headers=_bearer(token)).json()
    assert (me["role"], me["office_code"], me["display_name"]) == ("officer", OFFICE, "A. Moved")
    change = _entries(api, "user_change")[-1]
    assert change.payload["changes"]["role"] == ["analyst", "officer"]
    assert change.payload["changes"]["office_code"] == [None, OFFICE]

    # refusals
    assert (
        api.client.patch(f"{USERS}/nobody", json={"active": False}, headers=admin).status_code
        == 404
    )
    assert api.client.patch(url, json={}, headers=admin).status_code == 422
    assert api.client.patch(url, json={"active": None}, headers=admin).status_code == 422
    last_admin = api.client.patch(
        f"{USERS}/{username_for(Role.admin)}", json={"role": "auditor"}, headers=admin
    )
    assert last_admin.status_code == 409 and "no active admin" in last_admin.text
    officer = api.headers(Role.officer)
    assert api.client.patch(url, json={"active": False}, headers=officer).status_code == 403


# --------------------------------------------------------------------------- F8, F9, F11


def test_user_and_key_administration_is_audited(api: Api) -> None:
    admin = api.headers(Role.admin)
    admin_name = username_for(Role.admin)
    r = api.client.post(
        USERS,
        json={
            "username": "officer2",
            "display_name": "Officer Two",
            "role": "officer",
            "office_code": OFFICE,
            "password": "Secret-pass-2026-x",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    key = _key(api, admin, name="adm key", role="admin")
    assert key.status_code == 201
    key_id = key.json()["id"]
    assert api.client.delete(f"{KEYS}/{key_id}", headers=admin).status_code == 200

    created = [e for e in _entries(api, "user_create") if e.entity_id == "officer2"]
    assert len(created) == 1 and created[0].actor == admin_name
    assert created[0].payload["role"] == "officer" and created[0].payload["office_code"] == OFFICE
    assert "Secret-pass-2026-x" not in str(created[0].payload)
    (minted,) = _entries(api, "api_key_create")
    assert minted.actor == admin_name and minted.entity == "api_key"
    assert minted.payload["role"] == "admin" and minted.payload["api_key_id"] == key_id
    assert key.json()["key"] not in str(minted.payload)
    (revoked,) = _entries(api, "api_key_revoke")
    assert revoked.actor == admin_name and revoked.entity_id == str(key_id)
    assert {e.actor for e in _entries(api, "login")} >= {admin_name}
    with api.app.state.session_factory() as session:
        assert verify_audit(session)[1].ok


def test_an_api_key_cannot_create_or_change_users(api: Api) -> None:
    admin = api.headers(Role.admin)
    key = _key(api, admin, name="adm key", role="admin").json()["key"]
    headers = {"X-API-Key": key}
    body = {
        "username": "by-key",
        "display_name": "k",
        "role": "admin",
        "password": "Another-pass-2026",
    }
    r = api.client.post(USERS, json=body, headers=headers)
    assert r.status_code == 403 and "signed-in" in r.text
    r = api.client.patch(
        f"{USERS}/{username_for(Role.admin)}",
        json={"password": "Another-pass-2026"},
        headers=headers,
    )
    assert r.status_code == 403
    assert _login(api, "by-key", "Another-pass-2026").status_code == 401
    assert api.client.get(USERS, headers=headers).status_code == 200  # reading is fine


def test_a_json_login_is_told_the_login_takes_a_form(api: Api) -> None:
    """(Found in review: it answered "Field required" for both fields, no hint.)"""
    body = {"username": username_for(Role.admin), "password": password_for(Role.admin)}
    r = api.client.post(LOGIN, json=body)
    assert r.status_code == 422
    assert {tuple(d["loc"]) for d in r.json()["detail"]} == {
        ("body", "username"),
        ("body", "password"),
    }
    assert all("takes a form" in d["msg"] for d in r.json()["detail"]), r.text
    assert password_for(Role.admin) not in r.text
    assert _login(api, *body.values()).status_code == 200  # (the form)


def test_keys_are_revoked_by_a_signed_in_admin_and_never_created_expired(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: an admin API key could revoke any key (a leaked one could
    switch off the feeds' keys), a key could be created already expired (201, a
    dead key), and a revocation was audited but not logged."""
    admin = api.headers(Role.admin)
    feed = _key(api, admin, name="pnr feed", role="analyst").json()
    admin_key = {"X-API-Key": _key(api, admin, name="adm key 2", role="admin").json()["key"]}
    r = api.client.delete(f"{KEYS}/{feed['id']}", headers=admin_key)
    assert r.status_code == 403 and "signed-in" in r.text
    assert api.client.get(ME, headers={"X-API-Key": feed["key"]}).status_code == 200
    with caplog.at_level("INFO", logger="serving.auth"):
        assert api.client.delete(f"{KEYS}/{feed['id']}", headers=admin).status_code == 200
    assert f"API key {feed['id']} ({feed['prefix']}) revoked by" in caplog.text
    assert feed["key"] not in caplog.text
    assert api.client.get(ME, headers={"X-API-Key": feed["key"]}).status_code == 401

    past = {"name": "dead", "role": "analyst", "expires_at": "2020-01-01T00:00:00Z"}
    r = api.client.post(KEYS, json=past, headers=admin)
    assert r.status_code == 422 and "expires_at" in r.text and "has passed" in r.text, r.text
    assert "dead" not in {k["name"] for k in api.client.get(KEYS, headers=admin).json()}


def test_api_key_names_are_unique_and_the_actor_names_the_key(api: Api) -> None:
    admin = api.headers(Role.admin)
    first = _key(api, admin, name="uat off key", role="officer", office_code=OFFICE)
    assert first.status_code == 201
    duplicate = _key(api, admin, name="uat off key", role="officer", office_code=OFFICE)
    assert duplicate.status_code == 409 and "uat off key" in duplicate.text
    me = api.client.get(ME, headers={"X-API-Key": first.json()["key"]}).json()
    assert me["username"] == f"apikey:{first.json()['id']}:uat off key"
    # once the first is revoked the name is free again, and the two stay distinguishable
    assert api.client.delete(f"{KEYS}/{first.json()['id']}", headers=admin).status_code == 200
    second = _key(api, admin, name="uat off key", role="officer", office_code=OFFICE)
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    me = api.client.get(ME, headers={"X-API-Key": second.json()["key"]}).json()
    assert me["username"] == f"apikey:{second.json()['id']}:uat off key"
    long_name = _key(api, admin, name="x" * 128, role="analyst")
    me = api.client.get(ME, headers={"X-API-Key": long_name.json()["key"]}).json()
    assert len(me["username"]) == 64 and me["username"].startswith("apikey:")


# --------------------------------------------------------------------------- F17


def test_unknown_office_refused(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARAVAN_OFFICE_CAPACITIES", f'{{"{OFFICE}": 5, "KZ-KHORGOS": 10}}')
    api = make_api()
    admin = api.headers(Role.admin)
    user = {
        "username": "officer3",
        "display_name": "Officer Three",
        "role": "officer",
        "office_code": "KZ-KORGOS",
        "password": "Secret-pass-2026-x",
    }
    r = api.client.post(USERS, json=user, headers=admin)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "office_code"] and "unknown office" in error["msg"]
    assert "KZ-KHORGOS" in error["msg"]  # the near names are suggested
    assert (
        api.client.post(
            USERS, json={**user, "office_code": "KZ-KHORGOS"}, headers=admin
        ).status_code
        == 201
    )
    r = _key(api, admin, name="scanner", role="officer", office_code="NO-SUCH-OFFICE")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "office_code"]
    assert _key(api, admin, name="scanner", role="officer", office_code=OFFICE).status_code == 201
    r = api.client.patch(f"{USERS}/officer3", json={"office_code": "NO-SUCH"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "office_code"]
    with api.app.state.session_factory() as session:
        assert session.scalar(select(m.User.office_code).where(m.User.username == "officer3")) == (
            "KZ-KHORGOS"
        )


# --------------------------------------------------------------------------- officer F11


def _web_login(client: TestClient, username: str, password: str) -> str:
    form = client.get("/web/login")
    token = CSRF.search(form.text)
    assert token is not None
    r = client.post(
        "/web/login",
        data={"csrf_token": token.group(1), "username": username, "password": password},
    )
    assert r.status_code == 303, r.text
    return str(client.cookies.get("caravan_session"))


def test_sign_out_ends_the_session_server_side(api: Api) -> None:
    officer = username_for(Role.officer)
    client = TestClient(api.app, follow_redirects=False)
    cookie = _web_login(client, officer, password_for(Role.officer))
    page = client.get("/web/")
    assert page.status_code == 200
    csrf = CSRF.search(page.text)
    assert csrf is not None
    r = client.post("/web/logout", data={"csrf_token": csrf.group(1)})
    assert r.status_code == 303

    # the copied cookie, in another browser, is refused: no page, no renewal
    thief = TestClient(api.app, follow_redirects=False)
    thief.cookies.set("caravan_session", cookie, path="/web")
    r = thief.get("/web/")
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
    assert "caravan_session=ey" not in r.headers.get("set-cookie", "")
    # the same token over the API too
    assert api.client.get(ME, headers=_bearer(cookie)).status_code == 401
    # a token past half its lifetime (due for renewal) issued before the sign-out
    old = create_access_token(
        SECRET_KEY.encode(),
        officer,
        Role.officer,
        300,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=200),
    )
    thief.cookies.set("caravan_session", old, path="/web")
    r = thief.get("/web/")
    assert r.status_code == 303 and "caravan_session=ey" not in r.headers.get("set-cookie", "")
    # signing in again works at once
    _web_login(client, officer, password_for(Role.officer))
    assert client.get("/web/").status_code == 200
    assert [e.actor for e in _entries(api, "logout")] == [officer]


def test_sign_out_refuses_api_tokens_issued_before(api: Api) -> None:
    token = api.login(Role.auditor)
    with api.app.state.session_factory() as session:
        sign_out(session, username_for(Role.auditor))
        session.commit()
    r = api.client.get(ME, headers=_bearer(token))
    assert r.status_code == 401 and "session ended" in r.text
    fresh = api.login(Role.auditor)
    assert api.client.get(ME, headers=_bearer(fresh)).status_code == 200


# --------------------------------------------------------------------------- migration 0003


def test_migration_0003_adds_the_sign_out_column(db_url: str) -> None:
    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (username, display_name, role, password_hash, active, "
                    "failed_logins, created_at) VALUES ('u1', 'U', 'auditor', 'h', true, 0, "
                    "'2026-03-01 08:00:00')"
                )
            )
        upgrade(engine, "0003")
        assert current_revision(engine) == "0003"
        with engine.connect() as conn:
            row = conn.execute(text("SELECT username, sessions_valid_after FROM users")).one()
            assert tuple(row) == ("u1", None)
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT username FROM users")).scalar() == "u1"
        upgrade(engine, "0003")
        assert current_revision(engine) == "0003"
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- CLI, F14


def test_cli_administers_users_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = caravan_in_process  # the same command in process; two stay real subprocesses
    caravan(
        "users", "create", "alice", "--role", "officer", "--office", "KZ-ALA",
        "--password", "Officer-Secret-2026", "--by", "root-admin", data=data,
    )  # fmt: skip
    run(
        "users", "create", "boss", "--role", "admin", "--password", "Top-Secret-2026x",
        "--by", "root-admin", data=data,
    )  # fmt: skip
    done = run("users", "disable", "alice", "--by", "root-admin", data=data)
    assert "active True -> False" in done.stdout
    listing = run("users", "list", data=data).stdout
    assert re.search(r"alice\s+officer\s+KZ-ALA\s+DISABLED", listing), listing
    run("users", "enable", "alice", "--by", "root-admin", data=data)
    moved = run("users", "update", "alice", "--office", "KZ-OTHER", "--by", "ra", data=data)
    assert "office_code KZ-ALA -> KZ-OTHER" in moved.stdout
    run(
        "users", "reset-password", "alice", "--password", "Another-Secret-2026",
        "--by", "root-admin", data=data,
    )  # fmt: skip
    run("users", "unlock", "alice", "--by", "root-admin", data=data)
    refused = caravan("users", "disable", "boss", "--by", "root-admin", data=data, check=False)
    assert refused.returncode == 1 and "no active admin" in refused.stderr
    unknown = run("users", "disable", "nobody", "--by", "root-admin", data=data, check=False)
    assert unknown.returncode == 1 and "no user" in unknown.stderr

    engine = make_engine(f"sqlite:///{data / 'caravan.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT kind, actor, entity_id FROM audit_log ORDER BY seq")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows[:3]] == [
        ("user_create", "root-admin", "alice"),
        ("user_create", "root-admin", "boss"),
        ("user_change", "root-admin", "alice"),
    ]
    assert [r[0] for r in rows[3:]] == ["user_change", "user_change", "user_password_reset"]
    assert "intact" in run("audit", "verify", data=data).stdout


def test_cli_refuses_an_unknown_office(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CARAVAN_OFFICE_CAPACITIES": '{"KZ-KHORGOS": 10}'}
    r = caravan(
        "users", "create", "bob", "--role", "officer", "--office", "KZ-KORGOS",
        "--password", "Bob-Secret-2026x", "--by", "root-admin", data=data, check=False, env=env,
    )  # fmt: skip
    assert r.returncode == 1 and "unknown office 'KZ-KORGOS'" in r.stderr


def test_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "caravan.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wal = path.with_name("caravan.db-wal")
    for p in (path, wal):
        if p.exists():
            os.chmod(p, 0o644)
    engine = make_engine(f"sqlite:///{path}")  # an existing, world-readable file
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_an_expired_key_is_listed_as_expired(api: Api) -> None:
    """Review of stop 24: an expired key was listed as `"revoked": false` only."""
    from serving.auth import ApiKey

    admin = api.headers(Role.admin)
    lapsed = _key(api, admin, name="lapsed feed", role="analyst").json()
    live = _key(api, admin, name="live feed", role="analyst").json()
    assert lapsed["expired"] is False and live["expired"] is False
    with api.app.state.session_factory() as session:
        row = session.get(ApiKey, lapsed["id"])
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        session.commit()
    listed = {k["name"]: k for k in api.client.get(KEYS, headers=admin).json()}
    assert (listed["lapsed feed"]["expired"], listed["lapsed feed"]["revoked"]) == (True, False)
    assert listed["live feed"]["expired"] is False
    assert api.client.get(ME, headers={"X-API-Key": lapsed["key"]}).status_code == 401
