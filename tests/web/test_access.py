"""Who may open which page (the role x page matrix of `PAGE_ROLES`), over real HTTP
against uvicorn; CSRF and Origin checks; the session cookie; login lockout; the
pages stay out of the API's schema and role matrix."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from serving.auth import Role, create_user
from serving.deps import endpoint_roles
from serving.web.access import PAGE_ROLES
from tests.serving.conftest import OFFICE, password_for
from tests.web.conftest import CSRF, DAY, Site, web_login


@pytest.fixture(scope="module")
def clients(site: Site) -> Iterator[dict[Role, tuple[httpx.Client, str]]]:
    """A signed-in browser-like client per role, with its CSRF token."""
    out = {}
    for role in Role:
        client, r = web_login(site, f"{role.value.replace('_', '-')}1", password_for(role))
        assert r.status_code == 303, r.text
        home = client.get("/web/")
        token = CSRF.search(home.text)
        assert token is not None
        out[role] = (client, token.group(1))
    yield out
    for client, _ in out.values():
        client.close()


SID = "WEB-000"
# page -> (method, path, form); allowed roles get neither 401/403 nor a login redirect
REQUESTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "home": ("GET", "/web/", {}),
    "queue": ("GET", f"/web/queue?office={OFFICE}&day={DAY.isoformat()}", {}),
    "decide": ("POST", "/web/referrals/999999/claim", {}),
    "shipment": ("GET", f"/web/shipments/{SID}", {}),
    "unmask": ("POST", "/web/travellers/NO-SUCH/unmask", {"shipment_id": SID}),
    "rules": ("GET", "/web/rules", {}),
    "rules_edit": ("POST", "/web/rules/new", {"id": "", "name": "", "condition": ""}),
    "models": ("GET", "/web/models", {}),
    "models_promote": ("POST", "/web/models/promote", {"version": "", "reason": ""}),
    "audit": ("GET", "/web/audit", {}),
}
EXPECTED_OK = {"GET": 200, "decide": 404, "unmask": 404, "rules_edit": 422, "models_promote": 422}


def test_role_page_matrix(site: Site, clients: dict[Role, tuple[httpx.Client, str]]) -> None:
    assert set(REQUESTS) == set(PAGE_ROLES), "every page of PAGE_ROLES is walked"
    checked = 0
    for page, (method, path, form) in REQUESTS.items():
        for role in Role:
            client, csrf = clients[role]
            if method == "GET":
                r = client.get(path)
            else:
                r = client.post(path, data={**form, "csrf_token": csrf})
            if role in PAGE_ROLES[page]:
                want = EXPECTED_OK.get(page, EXPECTED_OK["GET"])
                assert r.status_code == want, (page, role, r.status_code, r.text[:300])
            else:
                assert r.status_code == 403, (page, role, r.status_code)
                assert "may not open this page" in r.text
            checked += 1
    assert checked == len(PAGE_ROLES) * len(Role)


def test_signed_out_users_are_sent_to_login(site: Site) -> None:
    with httpx.Client(base_url=site.base, follow_redirects=False) as client:
        for _method, path, _form in REQUESTS.values():
            if _method == "GET":
                r = client.get(path)
                assert r.status_code == 303
                assert r.headers["location"].startswith("/web/login?next=")
        r = client.post("/web/referrals/1/claim", data={"csrf_token": "x"})
        assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/web/"


def test_session_cookie_and_security_headers(site: Site) -> None:
    # its own user: signing out ends every session of the user, and the module's
    # `clients` keep theirs
    with site.app.state.session_factory() as session:
        create_user(
            session,
            username="auditor-signout",
            password=password_for(Role.auditor),
            role=Role.auditor,
        )
        session.commit()
    client, r = web_login(site, "auditor-signout", password_for(Role.auditor))
    try:
        cookie = r.headers["set-cookie"]
        assert "caravan_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/web" in cookie
        page = client.get("/web/audit")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        token = CSRF.search(page.text)
        assert token is not None
        r = client.post("/web/logout", data={"csrf_token": token.group(1)})
        assert r.status_code == 303 and "caravan_session=" in r.headers["set-cookie"]
        assert client.get("/web/audit").status_code == 303
    finally:
        client.close()


def test_forms_need_the_csrf_token_and_this_origin(
    site: Site, clients: dict[Role, tuple[httpx.Client, str]]
) -> None:
    client, csrf = clients[Role.auditor]
    assert client.post("/web/audit/verify", data={}).status_code == 403
    assert client.post("/web/audit/verify", data={"csrf_token": "forged"}).status_code == 403
    evil = client.post(
        "/web/audit/verify",
        data={"csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert evil.status_code == 403 and "did not come from this site" in evil.text
    ok = client.post("/web/audit/verify", data={"csrf_token": csrf}, headers={"Origin": site.base})
    assert ok.status_code == 200 and 'data-ok="yes"' in ok.text
    # another user's token is not this session's
    other = clients[Role.admin][1]
    assert client.post("/web/audit/verify", data={"csrf_token": other}).status_code == 403
    # a login form without its own token is refused
    with httpx.Client(base_url=site.base) as fresh:
        r = fresh.post("/web/login", data={"username": "auditor1", "password": "x"})
        assert r.status_code == 403


def test_login_errors_and_lockout(site: Site) -> None:
    with site.app.state.session_factory() as session:
        create_user(
            session,
            username="locky",
            password=password_for(Role.analyst),
            role=Role.analyst,
            display_name="Lockout test",
        )
        session.commit()
    c, r = web_login(site, "locky", "wrong-password-1")
    c.close()
    assert r.status_code == 401 and "Wrong user name or password." in r.text
    assert 'value="locky"' in r.text  # the name is kept, the password is not
    for _ in range(3):
        c, r = web_login(site, "locky", "wrong-password-1")
        c.close()
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    _c, r = web_login(site, "locky", password_for(Role.analyst))  # right password, still locked
    assert r.status_code == 429
    _c, r = web_login(site, "", "")
    assert r.status_code == 422 and "Enter your user name and password." in r.text


def test_next_is_only_followed_to_these_pages(site: Site) -> None:
    client = httpx.Client(base_url=site.base, follow_redirects=False)
    with client:
        form = client.get("/web/login", params={"next": "https://evil.example/"})
        token = CSRF.search(form.text)
        assert token is not None
        r = client.post(
            "/web/login",
            data={
                "csrf_token": token.group(1),
                "username": "auditor1",
                "password": password_for(Role.auditor),
                "next": "//evil.example/web/",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/web/"


def test_pages_are_outside_the_api_schema_and_role_matrix(site: Site) -> None:
    matrix = endpoint_roles(site.app)  # raises if a route declares no access
    assert matrix and not any(path.startswith("/web") for _m, path in matrix)
    schema = httpx.get(f"{site.base}/openapi.json").json()
    assert not any(p.startswith("/web") or p == "/" for p in schema["paths"])


def test_session_slides_past_half_its_lifetime(site: Site) -> None:
    import datetime as dt

    from serving.auth import create_access_token, decode_access_token

    secret = site.app.state.secret_key
    ttl = int(site.app.state.serving.token_ttl_seconds)
    old = create_access_token(
        secret,
        "auditor1",
        Role.auditor,
        ttl,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ttl * 0.6),
    )
    with httpx.Client(base_url=site.base, follow_redirects=False) as client:
        client.cookies.set("caravan_session", old, path="/web")
        page = client.get("/web/audit")
        assert page.status_code == 200
        fresh = page.cookies.get("caravan_session")
        assert fresh and fresh != old
        assert (
            decode_access_token(secret, fresh).expires_at
            > decode_access_token(secret, old).expires_at
        )
        token = CSRF.search(page.text)
        assert token is not None
        client.cookies.clear()
        client.cookies.set("caravan_session", fresh, path="/web")
        r = client.post("/web/audit/verify", data={"csrf_token": token.group(1)})
        assert r.status_code == 200 and 'data-ok="yes"' in r.text
        # a fresh session is left alone
        again = client.get("/web/audit")
        assert "caravan_session" not in again.cookies


def test_page_requests_are_counted_under_their_full_route(site: Site) -> None:
    with httpx.Client(base_url=site.base, follow_redirects=False) as client:
        assert client.get("/web/login").status_code == 200
        metrics = client.get("/metrics").text
    assert 'route="/web/login"' in metrics
    assert 'route="/login"' not in metrics
