"""A page opened after the session ended says so, and when, and leads back to it after
signing in (UAT stop 13), in Debian's Chromium against the app on uvicorn, English
and Russian: the session ran out (a real expiry), or was ended elsewhere (a sign-out on
another device, disabling the account). A browser that holds no session of this
server (no cookie, a garbage or forged one) gets the plain sign-in page: nothing is
said about anyone's session. The officers are this file's own."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from serving import orm as m
from serving.auth import Role, create_access_token, create_user, decode_access_token
from serving.web.i18n import Translator
from tests.serving.conftest import OFFICE, password_for
from tests.web.conftest import DAY, Site, login, web_login

OFFICER = "officer-ended"
COLLEAGUE = "officer-ended2"
PASSWORD = password_for(Role.officer)
EN, RU = Translator("en"), Translator("ru")


@pytest.fixture(scope="module")
def officers(site: Site) -> None:
    with site.app.state.session_factory() as session:
        for name in (OFFICER, COLLEAGUE):
            create_user(
                session, username=name, password=PASSWORD, role=Role.officer, office_code=OFFICE
            )
        session.commit()


@pytest.fixture
def short_sessions(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the session lifetime (seconds) of the running server for this test."""

    def set_ttl(seconds: int) -> None:
        monkeypatch.setattr(site.app.state.serving, "token_ttl_seconds", seconds)

    yield set_ttl


def _cookie(page: Any) -> str:
    values = [c["value"] for c in page.context.cookies() if c["name"] == "caravan_session"]
    return values[0] if values else ""


def _at(ended: dt.datetime) -> str:
    """The time as the sign-in page writes it (UTC; the day too when not today)."""
    ended = ended.replace(tzinfo=dt.UTC) if ended.tzinfo is None else ended.astimezone(dt.UTC)
    today = ended.date() == dt.datetime.now(dt.UTC).date()
    return ended.strftime("%H:%M UTC" if today else "%Y-%m-%d %H:%M UTC")


def _target(url: str) -> tuple[str, str, str | None]:
    query = parse_qs(urlsplit(url).query)
    return query["next"][0], query["reason"][0], query.get("ended", [None])[0]


def _sessions_ended_at(site: Site, username: str) -> dt.datetime:
    with site.app.state.session_factory() as session:
        user = session.query(m.User).filter_by(username=username).one()
        assert user.sessions_valid_after is not None
        return user.sessions_valid_after


def _sign_in_again(page: Any, username: str) -> None:
    page.locator("#username").fill(username)
    page.locator("#password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#password").press("Enter")


def test_a_page_opened_after_the_session_ran_out_says_when_and_leads_back(
    new_page: Any, site: Site, officers: None, short_sessions: Any
) -> None:
    asked = f"/web/queue?day={DAY.isoformat()}&sort=rank"
    short_sessions(3)  # the token lasts 3 s (the cookie longer)
    page = new_page()
    login(page, OFFICER, PASSWORD)
    assert urlsplit(page.url).path == "/web/queue"
    expires = decode_access_token(site.app.state.secret_key, _cookie(page)).expires_at
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds() + 1.0))
    short_sessions(900)
    page.goto(asked)
    assert urlsplit(page.url).path == "/web/login"
    nxt, reason, ended = _target(page.url)
    assert (nxt, reason) == (asked, "login.session_ended") and ended is not None
    assert page.locator("p.flash").first.inner_text() == EN("login.session_ended", at=_at(expires))
    assert page.locator("#username").input_value() == ""  # no name is given away

    _sign_in_again(page, OFFICER)
    here = urlsplit(page.url)
    assert f"{here.path}?{here.query}" == asked
    assert page.locator("#who").inner_text() == OFFICER


def test_a_page_opened_after_a_sign_out_elsewhere_says_when_in_russian(
    new_page: Any, site: Site, officers: None
) -> None:
    sid = site.shipments[0]["shipment_id"]
    asked = f"/web/shipments/{sid}"
    page = new_page("ru-RU")
    login(page, COLLEAGUE, PASSWORD)
    assert page.goto(asked).status == 200
    token = site.api_token(COLLEAGUE, PASSWORD)  # another device
    with httpx.Client(base_url=site.base, headers={"Authorization": f"Bearer {token}"}) as other:
        assert other.post("/api/v1/auth/logout").status_code == 204
    signed_out = _sessions_ended_at(site, COLLEAGUE)
    page.goto(asked)
    assert urlsplit(page.url).path == "/web/login"
    assert _target(page.url)[:2] == (asked, "login.session_ended")
    assert page.locator("p.flash").first.inner_text() == RU(
        "login.session_ended", at=_at(signed_out)
    )

    _sign_in_again(page, COLLEAGUE)
    assert urlsplit(page.url).path == asked
    assert page.locator("#who").inner_text() == COLLEAGUE


def _login_redirect(client: httpx.Client, path: str) -> tuple[str, str, str | None]:
    r = client.get(path)
    assert r.status_code == 303, r.text
    assert urlsplit(r.headers["location"]).path == "/web/login"
    return _target(r.headers["location"])


def test_disabling_the_account_ends_the_session_with_its_time(site: Site, officers: None) -> None:
    name = "officer-ended3"
    with site.app.state.session_factory() as session:
        create_user(
            session, username=name, password=PASSWORD, role=Role.officer, office_code=OFFICE
        )
        session.commit()
    client, r = web_login(site, name, PASSWORD)
    try:
        assert r.status_code == 303
        with site.api(Role.admin) as admin:
            assert admin.patch(f"/api/v1/users/{name}", json={"active": False}).status_code == 200
        disabled = _sessions_ended_at(site, name)
        nxt, reason, ended = _login_redirect(client, "/web/queue")
        assert (nxt, reason) == ("/web/queue", "login.session_ended")
        login_page = client.get(
            "/web/login", params={"next": nxt, "reason": reason, "ended": ended}
        )
        assert EN("login.session_ended", at=_at(disabled)) in login_page.text
    finally:
        client.close()


def test_a_browser_without_a_session_of_ours_gets_the_plain_sign_in_page(
    site: Site, officers: None
) -> None:
    secret = site.app.state.secret_key
    expired_elsewhere = create_access_token(  # a real user's token, signed by another server
        b"another-key-of-32-bytes-or-more!!", OFFICER, Role.officer, 60
    )
    unknown_user = create_access_token(
        secret, "nobody-here", Role.officer, 1, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    for cookie in (None, "garbage", "a.b.c", expired_elsewhere, unknown_user):
        with httpx.Client(base_url=site.base, follow_redirects=False, timeout=60) as client:
            if cookie is not None:
                client.cookies.set("caravan_session", cookie, path="/web")
            nxt, reason, ended = _login_redirect(client, "/web/queue?day=2025-03-03")
            assert (nxt, reason, ended) == ("/web/queue?day=2025-03-03", "login.required", None)
            text = client.get("/web/login", params={"next": nxt, "reason": reason}).text
            assert EN("login.required") in text and EN("login.expired") not in text
            assert "Your session ended" not in text
    with httpx.Client(base_url=site.base, timeout=60) as client:
        # an address that names no time, or a bad one: the session ended, no time
        for ended in (None, "yesterday", "2025-13-01T00:00Z"):
            params = {"reason": "login.session_ended", **({"ended": ended} if ended else {})}
            text = client.get("/web/login", params=params).text
            assert EN("login.expired") in text
        # only paths of these pages are followed after signing in
        text = client.get("/web/login", params={"next": "//evil.example/web/queue"}).text
        assert 'name="next" value="/web/"' in text
