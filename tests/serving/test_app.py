"""The API over HTTP: health, metrics, login, tokens, API keys, lockout, limits, roles."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import select

from serving.auth import Role, create_access_token
from serving.db import make_engine
from serving.deps import endpoint_roles
from serving.orm import ApiKey, AuditLog, User
from tests.serving.conftest import (
    OFFICE,
    SECRET_KEY,
    Api,
    add_users,
    build_app,
    password_for,
    username_for,
    uvicorn_server,
)

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
LOGOUT = "/api/v1/auth/logout"
USERS = "/api/v1/users"
KEYS = "/api/v1/users/api-keys"


def _form(role: Role, password: str | None = None) -> dict[str, str]:
    return {"username": username_for(role), "password": password or password_for(role)}


def test_healthz_and_readyz(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    # no model trained in this data directory: up, but not ready to score
    not_ready = api.client.get("/readyz")
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["status"] == "not_ready" and body["model_loaded"] is False
    assert body["database"] is True
    assert body["migrations_at_head"] is True
    assert body["migration"] == body["migration_head"] == "0005"
    api.app.state.model = object()
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["model_loaded"] is True


def test_the_feature_state_is_built_at_start_without_a_request(api: Api) -> None:
    """No scoring request has been made: the state is built in the background and
    /readyz says so."""
    deadline = time.monotonic() + 60
    while not api.client.get("/readyz").json()["feature_state_ready"]:
        assert time.monotonic() < deadline, "the feature state was not built at start-up"
        time.sleep(0.1)
    assert api.app.state.services.history.state_ready


def test_readyz_not_ready_without_database(api: Api) -> None:
    api.app.state.engine.dispose()
    good = api.app.state.engine
    api.app.state.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        response = api.client.get("/readyz")
    finally:
        api.app.state.engine.dispose()
        api.app.state.engine = good
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["database"] is False


def test_startup_refuses_unmigrated_database_without_auto_migrate(
    db_url: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    app = build_app(db_url, tmp_path / "data", auto_migrate=False)
    with pytest.raises(RuntimeError, match="newest migration"), TestClient(app):
        pass


def test_metrics(api: Api) -> None:
    headers = api.headers(Role.admin)
    api.client.get("/healthz")
    api.client.delete(f"{KEYS}/999", headers=headers)
    api.client.get("/no/such/page/12345")
    text = api.client.get("/metrics").text
    assert 'caravan_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert (
        'caravan_http_requests_total{method="DELETE",route="/api/v1/users/api-keys/{key_id}",'
        'status="404"} 1.0' in text
    )
    assert 'route="<unmatched>",status="404"' in text
    assert "12345" not in text  # raw paths never become labels
    assert (
        'caravan_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}'
        in text
    )
    assert "caravan_model_loaded 0.0" in text
    assert "process_cpu_seconds_total" in text


def test_login_and_me(api: Api) -> None:
    response = api.client.post(LOGIN, data=_form(Role.officer))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    me = api.client.get(ME, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json() == {
        "username": "officer1",
        "display_name": "Test officer",
        "role": "officer",
        "office_code": OFFICE,
        "auth_method": "token",
    }


def test_bad_credentials(api: Api) -> None:
    wrong = api.client.post(LOGIN, data=_form(Role.officer, "Wrong-Password-1"))
    unknown = api.client.post(LOGIN, data={"username": "nobody", "password": "Wrong-Password-1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong username or password"}
    assert api.client.get(ME).status_code == 401
    assert api.client.get(ME).headers["WWW-Authenticate"] == "Bearer"
    assert api.client.get(ME, headers={"Authorization": "Bearer nonsense"}).status_code == 401


def test_token_expiry(make_api: Callable[..., Api]) -> None:
    api = make_api(token_ttl_seconds=3)
    token = api.login(Role.analyst)
    # the configured lifetime is the token's (read from it: a busy machine may take a
    # second between the login and the next request)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == pytest.approx(3, abs=1)
    old = create_access_token(
        SECRET_KEY.encode(),
        "analyst1",
        Role.analyst,
        300,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301),
    )
    response = api.client.get(ME, headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "token expired"}
    time.sleep(4.05)  # the real token's 3 s lifetime is over
    response = api.client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_api_keys(api: Api) -> None:
    admin = api.headers(Role.admin)
    created = api.client.post(
        KEYS, json={"name": "scanner", "role": "officer", "office_code": OFFICE}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("cvn_") and key.startswith(body["prefix"])
    listed = api.client.get(KEYS, headers=admin)
    assert listed.status_code == 200
    assert key not in listed.text and "key_hash" not in listed.text
    assert [k["name"] for k in listed.json()] == ["scanner"]

    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = api.client.get(ME, headers=headers)
        assert me.status_code == 200
        assert me.json()["auth_method"] == "api_key"
        assert me.json()["role"] == "officer" and me.json()["office_code"] == OFFICE
    assert api.client.get(USERS, headers={"X-API-Key": key}).status_code == 403
    with api.app.state.session_factory() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.key_hash != key and row.last_used_at is not None

    revoked = api.client.delete(f"{KEYS}/{body['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert api.client.get(ME, headers={"X-API-Key": key}).status_code == 401
    assert api.client.get(ME, headers={"X-API-Key": "cvn_made_up"}).status_code == 401
    assert api.client.delete(f"{KEYS}/4242", headers=admin).status_code == 404


def test_admin_api_key_cannot_mint_keys(api: Api) -> None:
    admin = api.headers(Role.admin)
    key = api.client.post(KEYS, json={"name": "ops", "role": "admin"}, headers=admin).json()["key"]
    response = api.client.post(
        KEYS, json={"name": "x", "role": "admin"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 403


def test_lockout_after_failures(make_api: Callable[..., Api]) -> None:
    """Threshold 3, base 1 s: the 3rd failure locks 1 s, the 4th 2 s (doubling)."""
    api = make_api(login_lockout_base_seconds=1.0)
    start = time.monotonic()

    def fail_and_measure_lock() -> float:
        """A wrong password; returns the lock it caused, timed from before the request."""
        before = dt.datetime.now(dt.UTC)
        response = api.client.post(LOGIN, data=_form(Role.analyst, "Wrong-Password-1"))
        assert response.status_code == 401
        took = (dt.datetime.now(dt.UTC) - before).total_seconds()
        with api.app.state.session_factory() as session:
            user = session.scalars(select(User).where(User.username == "analyst1")).one()
        if user.locked_until is None:
            return 0.0
        lock = (user.locked_until - before).total_seconds()
        assert lock - took <= lock_expected[len(locks)] <= lock + 1e-3
        return lock

    lock_expected = [0.0, 0.0, 1.0, 2.0]
    locks: list[float] = []
    for _ in range(3):
        locks.append(fail_and_measure_lock())
    locked = api.client.post(LOGIN, data=_form(Role.analyst))  # right password, but locked
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) == 1
    time.sleep(1.05)
    locks.append(fail_and_measure_lock())  # the 4th failure doubles the lock
    assert api.client.post(LOGIN, data=_form(Role.analyst)).status_code == 429
    time.sleep(2.05)
    assert api.client.post(LOGIN, data=_form(Role.analyst)).status_code == 200
    assert time.monotonic() - start >= 3.0  # the guesser was measurably slowed down
    # Other users are not affected by analyst1's lock.
    assert api.client.post(LOGIN, data=_form(Role.auditor)).status_code == 200


def test_ip_lockout(make_api: Callable[..., Api]) -> None:
    api = make_api(ip_lockout_threshold=4, login_lockout_base_seconds=30)
    for name in ("a1", "a2", "a3", "a4"):
        response = api.client.post(LOGIN, data={"username": name, "password": "Wrong-Pass-12"})
        assert response.status_code == 401
    response = api.client.post(LOGIN, data=_form(Role.auditor))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 30


def test_body_size_limit(api: Api) -> None:
    big = {"name": "x" * (70 * 1024), "role": "analyst"}
    response = api.client.post(KEYS, json=big)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 65536 bytes"}
    streamed = api.client.post(
        LOGIN,
        content=iter([b"username=a&password=", b"b" * 40_000, b"c" * 40_000]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert api.client.post(LOGIN, data=_form(Role.admin)).status_code == 200


def test_users_endpoint_roles(api: Api) -> None:
    assert api.client.get(USERS).status_code == 401
    for role in (Role.officer, Role.analyst, Role.data_scientist, Role.auditor):
        assert api.client.get(USERS, headers=api.headers(role)).status_code == 403
    admin = api.headers(Role.admin)
    listed = api.client.get(USERS, headers=admin)
    assert listed.status_code == 200
    assert {u["username"] for u in listed.json()} == {username_for(r) for r in Role}
    new_user = {
        "username": "officer2",
        "display_name": "Officer Two",
        "role": "officer",
        "office_code": "KG-BSK",
        "password": "Another-Long-Pass-7",
    }
    officer = api.headers(Role.officer)
    assert api.client.post(USERS, json=new_user, headers=officer).status_code == 403
    created = api.client.post(USERS, json=new_user, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["office_code"] == "KG-BSK" and "password" not in created.text
    assert api.client.post(USERS, json=new_user, headers=admin).status_code == 409
    no_office = {**new_user, "username": "officer3", "office_code": None}
    assert api.client.post(USERS, json=no_office, headers=admin).status_code == 422
    weak = {**new_user, "username": "officer4", "password": "Tiny-Pass1"}
    response = api.client.post(USERS, json=weak, headers=admin)
    assert response.status_code == 422 and "Tiny-Pass1" not in response.text
    login = api.client.post(LOGIN, data={"username": "officer2", "password": "Another-Long-Pass-7"})
    assert login.status_code == 200


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_role_matrix(api: Api) -> None:
    """Every endpoint declares its roles; each role gets 403 exactly where not allowed."""
    matrix = endpoint_roles(api.app)
    assert ("GET", USERS) in matrix and ("GET", "/healthz") in matrix
    # traveller records (API/PNR) come from the feed's key or an admin, not an officer
    for path in ("/api/v1/travellers", "/api/v1/travellers/batch"):
        assert matrix[("POST", path)] == {Role.analyst, Role.admin}, path
    tokens = {role: api.headers(role) for role in Role}
    for (method, path), allowed in matrix.items():
        if allowed is None:
            continue
        anonymous = api.client.request(method, _fill(path))
        assert anonymous.status_code == 401, (method, path)
        for role, headers in tokens.items():
            status = api.client.request(method, _fill(path), headers=headers, json={}).status_code
            if role in allowed:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
        if path == LOGOUT:  # every role has just signed out: sign in again
            tokens = {role: api.headers(role) for role in Role}


def test_validation_errors_do_not_echo_input(api: Api) -> None:
    admin = api.headers(Role.admin)
    secret = "Very-Secret-Password-99"
    response = api.client.post(USERS, json={"username": "x1", "password": secret}, headers=admin)
    assert response.status_code == 422
    assert secret not in response.text
    assert {tuple(e["loc"]) for e in response.json()["detail"]} >= {("body", "role")}


def test_secrets_not_logged_nor_returned(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_for(Role.admin)
    wrong = "Wrong-But-Secret-777"
    responses = [
        api.client.post(LOGIN, data=_form(Role.admin, wrong)),
        api.client.post(LOGIN, data=_form(Role.admin)),
    ]
    admin = {"Authorization": f"Bearer {responses[1].json()['access_token']}"}
    created = api.client.post(KEYS, json={"name": "svc", "role": "analyst"}, headers=admin)
    key = created.json()["key"]
    responses += [
        api.client.get(ME, headers={"X-API-Key": key}),
        api.client.get(KEYS, headers=admin),
        api.client.get(USERS, headers=admin),
        api.client.post(
            USERS,
            json={
                "username": "new-user",
                "display_name": "N",
                "role": "auditor",
                "password": "Fresh-Long-Pass-55",
            },
            headers=admin,
        ),
    ]
    logs = caplog.text
    assert "login failed: user=admin1" in logs  # the logging did happen
    for secret in (password, wrong, key, "Fresh-Long-Pass-55", SECRET_KEY):
        assert secret not in logs
        for response in responses:
            assert secret not in response.text
    for response in responses:
        assert "$argon2" not in response.text and "password_hash" not in response.text
    assert responses[1].json()["access_token"] not in logs


def test_openapi_documents_errors_and_security(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    matrix = endpoint_roles(api.app)
    for (method, path), allowed in matrix.items():
        operation = spec["paths"][path][method.lower()]
        assert {"200", "201", "204"} & set(operation["responses"]), (method, path)
        if allowed is not None:
            assert {"401", "403", "413"} <= set(operation["responses"]), (method, path)
            assert operation.get("security"), (method, path)
    login = spec["paths"][LOGIN]["post"]["responses"]
    assert {"401", "429"} <= set(login)
    schemes = spec["components"]["securitySchemes"]
    assert {"OAuth2PasswordBearer", "APIKeyHeader"} <= set(schemes)
    assert "UserCreate" in spec["components"]["schemas"]
    assert "password" not in spec["components"]["schemas"]["UserOut"]["properties"]


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, object]]:
    app = build_app(db_url, tmp_path / "data", max_body_bytes=4096)
    with uvicorn_server(app) as base_url:
        add_users(app)
        yield base_url, app


def test_real_http_server(
    live_server: tuple[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """Login and limits against uvicorn listening on 127.0.0.1."""
    caplog.set_level(logging.INFO)
    base_url, _ = live_server
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["database"] is True  # (no model: not ready)
        response = client.post(LOGIN, data=_form(Role.auditor))
        assert response.status_code == 200
        token = response.json()["access_token"]
        me = client.get(ME, headers={"Authorization": f"Bearer {token}"})
        assert me.json()["role"] == "auditor"
        assert client.get(USERS, headers={"Authorization": f"Bearer {token}"}).status_code == 403
        too_big = client.post(LOGIN, content=b"x" * 20_000)
        assert too_big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"username=auditor1&password="
        for _ in range(10):
            yield b"y" * 1000

    with httpx.Client(base_url=base_url, timeout=30) as client:
        streamed = client.post(
            LOGIN, content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert streamed.status_code == 413
        assert streamed.request.headers.get("transfer-encoding") == "chunked"
        assert 'route="/api/v1/auth/login",status="413"' in client.get("/metrics").text
    assert password_for(Role.auditor) not in caplog.text
    assert token not in caplog.text


def test_openapi_fuzz(db_url: str, tmp_path: Path) -> None:
    """Schemathesis: generated requests to every operation (as admin) never cause a
    server error and every response matches the documented schema."""
    import schemathesis
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core.result import Ok

    app = build_app(
        db_url, tmp_path / "data", login_lockout_threshold=10_000, ip_lockout_threshold=10_000
    )
    with TestClient(app) as client:
        add_users(app)
        admin = Api(app, client).headers(Role.admin)
        # signing out ends every session of the caller: fuzz it as another user
        analyst = Api(app, client).headers(Role.analyst)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            headers = analyst if operation.path == LOGOUT else admin
            excluded = [schemathesis.checks.positive_data_acceptance]
            if operation.path == "/readyz":  # no model here: its documented 503 is its job
                excluded.append(schemathesis.checks.not_a_server_error)

            @given(case=operation.as_strategy())
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                # Business rules (officer needs an office, ...) reject some schema-valid data.
                # (called at once below: the loop's headers and checks are this operation's)
                case.call_and_validate(headers=headers, excluded_checks=excluded)  # noqa: B023

            check()


def test_api_sign_out_ends_the_callers_sessions_only(api: Api) -> None:
    """POST /auth/logout refuses the caller's tokens from then on (the one used and
    any other issued before), leaves other users signed in, is audited, and an API
    key cannot use it."""
    first, second = api.headers(Role.analyst), api.headers(Role.analyst)
    auditor = api.headers(Role.auditor)
    assert api.client.get(ME, headers=second).status_code == 200
    assert api.client.post(LOGOUT, headers=first).status_code == 204
    for headers in (first, second):
        refused = api.client.get(ME, headers=headers)
        assert refused.status_code == 401 and "sign in again" in refused.json()["detail"]
    assert api.client.get(ME, headers=auditor).status_code == 200
    assert api.client.get(ME, headers=api.headers(Role.analyst)).status_code == 200
    assert api.client.post(LOGOUT).status_code == 401
    with api.app.state.session_factory() as session:
        entries = session.scalars(select(AuditLog).where(AuditLog.kind == "logout")).all()
    assert [e.actor for e in entries] == ["analyst1"]
    admin = api.headers(Role.admin)
    key = api.client.post(KEYS, json={"name": "svc", "role": "analyst"}, headers=admin).json()
    response = api.client.post(LOGOUT, headers={"X-API-Key": key["key"]})
    assert response.status_code == 400 and "revokes" in response.json()["detail"]
    assert api.client.get(ME, headers={"X-API-Key": key["key"]}).status_code == 200
