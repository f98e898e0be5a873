"""Who may open which page, and the browser session.

The pages use the API's login (`serving.auth.authenticate_password`: the same
password check and lockout) and its signed token, kept in an HttpOnly,
SameSite=Strict cookie. Every form that changes something carries a CSRF token
bound to the user's sessions (HMAC, with the app's signing key, of the user's id and
the moment his sessions were last ended), checked on POST together with the Origin
header: the sliding renewal of the session (`pages.renew_if_old`) in another tab
leaves the forms already open valid, while a sign-out, a password reset or disabling
the account (which end the user's sessions) and another user's session refuse them.

`PAGE_ROLES` is the one table of which roles may use each page or action; the
routes name their entry (`page_user("queue")`) and a test walks the matrix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.auth import (
    AuthError,
    Principal,
    Role,
    decode_access_token,
    principal_from_token,
)
from serving.orm import User
from serving.web.i18n import LANG_COOKIE, Translator, pick_lang

SESSION_COOKIE = "caravan_session"
LOGIN_CSRF_COOKIE = "caravan_login_csrf"
CSRF_FIELD = "csrf_token"
PREFIX = "/web"
# a referral's form action, and the page a refused one is shown again at
REFERRAL_PATH = re.compile(rf"^{PREFIX}/referrals/([0-9]{{1,18}})(?:/.*)?$")
# The session cookie outlives its token by this much, so that a page opened after the
# session ended (run out, or ended by a sign-out elsewhere, a password reset or
# disabling) can say so and when: the token it still holds is refused all the same.
SESSION_COOKIE_GRACE_SECONDS = 12 * 3600
# when a session ended, in the sign-in page's address (`ended=`): UTC, to the minute
ENDED_FORMAT = "%Y-%m-%dT%H:%MZ"

R = Role
PAGE_ROLES: dict[str, frozenset[Role]] = {
    # page or action        roles allowed (admin everywhere)
    "home": frozenset(Role),
    "queue": frozenset({R.officer, R.analyst, R.auditor, R.admin}),
    "decide": frozenset({R.officer, R.admin}),  # claim, outcome, waiver
    "shipment": frozenset(Role),
    "unmask": frozenset({R.officer, R.analyst, R.admin}),
    "rules": frozenset({R.analyst, R.data_scientist, R.auditor, R.admin}),
    "rules_edit": frozenset({R.analyst, R.admin}),
    "models": frozenset({R.data_scientist, R.auditor, R.admin}),
    "models_promote": frozenset({R.data_scientist, R.admin}),
    "audit": frozenset({R.auditor, R.admin}),
}
# The pages listed in the navigation, in order.
NAV_PAGES = ("queue", "rules", "models", "audit")


class LoginRequiredError(Exception):
    """No valid session: the browser is sent to the login page."""

    def __init__(
        self,
        next_path: str,
        reason: str = "login.required",
        *,
        from_form: bool = False,
        ended_at: dt.datetime | None = None,
    ) -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason
        self.from_form = from_form  # a POST: back to the form's page (`form_return_path`)
        self.ended_at = ended_at  # when this browser's session ended (`session_ended_at`)


class PageForbiddenError(Exception):
    """The user may not open this page (role or office); rendered as a 403 page."""

    def __init__(self, message_key: str, **values: Any) -> None:
        super().__init__(message_key)
        self.message_key = message_key
        self.values = values


class CsrfError(Exception):
    """A POST without the session's CSRF token or from another origin."""


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    csrf: str
    lang: str

    @property
    def username(self) -> str:
        return self.principal.username

    @property
    def role(self) -> Role:
        return self.principal.role

    def may(self, page: str) -> bool:
        return self.principal.role in PAGE_ROLES[page]


def csrf_for(
    secret: bytes, user_id: int, username: str, sessions_valid_after: dt.datetime | None
) -> str:
    """The CSRF value of a user's sessions: the same for every token of the user (a
    renewal keeps it) until his sessions are ended (`User.sessions_valid_after`)."""
    ended = "-"
    if sessions_valid_after is not None:
        at = sessions_valid_after
        if at.tzinfo is not None:  # the database may give it back naive (UTC) or aware
            at = at.astimezone(dt.UTC).replace(tzinfo=None)
        ended = at.isoformat(timespec="microseconds")
    message = f"csrf|{user_id}|{username}|{ended}"
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def user_csrf(session: Session, secret: bytes, username: str) -> str:
    """The CSRF value of the signed-in user `username` (as stored now)."""
    row = session.execute(
        select(User.id, User.sessions_valid_after).where(User.username == username)
    ).one()
    return csrf_for(secret, row.id, username, row.sessions_valid_after)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def lang_of(request: Request) -> str:
    return pick_lang(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def translator(request: Request) -> Translator:
    return Translator(lang_of(request))


def safe_next(value: str | None, default: str = f"{PREFIX}/") -> str:
    """Only paths of these pages (no scheme, no host, no //) are followed after login."""
    if not value or not value.startswith(f"{PREFIX}/") or value.startswith("//"):
        return default
    if any(c in value for c in ("\\", "\r", "\n")):
        return default
    return value


def current_path(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return path


def form_return_path(request: Request, page_exists: Callable[[str], bool]) -> str:
    """Where a form sent without a valid session (or refused by the CSRF check) comes
    back to after signing in: the page the form was on (the Referer, when it is a page
    of this site; a shipment page at its decision section for a referral's form), else
    the referral's page for a referral's form, else the start page. A page that only
    answers POSTs (a refused form shown again at its action) is not returned to:
    `page_exists` says which paths a GET opens."""
    posted = REFERRAL_PATH.match(request.url.path)
    fallback = f"{PREFIX}/referrals/{posted.group(1)}" if posted else f"{PREFIX}/"
    referer = request.headers.get("referer")
    if not referer:
        return fallback
    parts = urlsplit(referer)
    if f"{parts.scheme}://{parts.netloc}" != f"{request.url.scheme}://{request.url.netloc}":
        return fallback
    path = parts.path
    shown = REFERRAL_PATH.match(path)
    if shown:  # a refused decision form shown again at its action
        return f"{PREFIX}/referrals/{shown.group(1)}"
    if not page_exists(path):
        return fallback
    # not the one-off notes of the last action ("claimed", "done=outcome")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("done", "claimed")]
    target = path + (f"?{urlencode(query)}" if query else "")
    if posted and path.startswith(f"{PREFIX}/shipments/"):
        target += "#decision"
    return safe_next(target, fallback)


def session_user(request: Request, session: Session, secret: bytes) -> WebUser:
    """The signed-in user from the session cookie, or LoginRequiredError. A form (not a
    GET) without a valid session says so ("login.form_expired") and comes back to its
    page after signing in (`form_return_path`, in the pages' handler)."""
    token = request.cookies.get(SESSION_COOKIE)
    if request.method not in ("GET", "HEAD"):
        if not token:
            raise LoginRequiredError(f"{PREFIX}/", "login.form_expired", from_form=True)
        try:
            principal = principal_from_token(session, secret, token)
        except AuthError:
            raise LoginRequiredError(f"{PREFIX}/", "login.form_expired", from_form=True) from None
    else:
        nxt = current_path(request)
        if not token:
            raise LoginRequiredError(nxt)
        try:
            principal = principal_from_token(session, secret, token)
        except AuthError:
            ended = session_ended_at(session, secret, token)
            if ended is None:  # not a session of ours: the plain sign-in page
                raise LoginRequiredError(nxt) from None
            raise LoginRequiredError(nxt, "login.session_ended", ended_at=ended) from None
    csrf = user_csrf(session, secret, principal.username)
    return WebUser(principal, csrf, lang_of(request))


def _utc(at: dt.datetime) -> dt.datetime:
    """A stored time as aware UTC (the database may give it back naive, in UTC)."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def session_ended_at(session: Session, secret: bytes, token: str) -> dt.datetime | None:
    """When the session of `token` ended, if it is a session this server issued (its
    signature checks) to a user who still exists, and it has ended: its expiry, or the
    moment the user's sessions were ended (a sign-out elsewhere, a password reset,
    disabling) when that came first. None for anything else (no token of ours, a
    session still running): only the browser holding the token learns when it ended."""
    try:
        claims = decode_access_token(secret, token, verify_exp=False)
    except AuthError:
        return None
    username, issued, expires = claims.username, claims.issued_at, claims.expires_at
    row = session.execute(
        select(User.active, User.sessions_valid_after).where(User.username == username)
    ).one_or_none()
    if row is None:
        return None
    now = dt.datetime.now(dt.UTC)
    ended = expires
    if row.sessions_valid_after is not None and issued < _utc(row.sessions_valid_after):
        ended = min(ended, _utc(row.sessions_valid_after))
    elif not row.active:  # disabled without its sessions ended (older accounts): now
        ended = min(ended, now)
    return ended if ended <= now else None


def ended_param(at: dt.datetime) -> str:
    return _utc(at).strftime(ENDED_FORMAT)


def parse_ended(value: str | None) -> dt.datetime | None:
    """The `ended=` of the sign-in page's address, or None when it is not one."""
    if not value or len(value) > 20:
        return None
    try:
        return dt.datetime.strptime(value, ENDED_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def require_page(user: WebUser, page: str) -> None:
    if user.role not in PAGE_ROLES[page]:
        # the role's name in the reader's language ("инспектор по целевому отбору")
        raise PageForbiddenError("error.forbidden_role", role=Translator(user.lang).role(user.role))


def check_office(user: WebUser, office_code: str) -> None:
    """Officers see their own office only (as `serving.deps.ensure_office`). Another
    office's shipment or referral is answered as one that does not exist (404 "Not
    found"), pages and forms alike: a 403 naming its office told an officer which
    post handles a shipment, and that an id exists (found in review)."""
    if user.role is Role.officer and user.principal.office_code != office_code:
        raise PageForbiddenError("error.not_found")


def check_origin(request: Request) -> None:
    """A POST's Origin (when the browser sends one) must be this site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        if origin == "null":
            raise CsrfError("opaque origin")
        return
    here = f"{request.url.scheme}://{request.url.netloc}"
    if origin.rstrip("/") != here:
        raise CsrfError("cross-origin form")


def check_csrf(request: Request, user: WebUser, submitted: str | None) -> None:
    check_origin(request)
    if not submitted or not hmac.compare_digest(submitted, user.csrf):
        raise CsrfError("missing or wrong CSRF token")
