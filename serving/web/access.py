"""Who may open which page, and the browser session.

The pages use the API's login (`serving.auth.authenticate_password`: the same
password check and lockout) and its signed token, kept in an HttpOnly,
SameSite=Strict cookie. Every form that changes something carries a CSRF token
derived from the session (HMAC of the token's id with the app's signing key),
checked on POST together with the Origin header.

`PAGE_ROLES` is the one table of which roles may use each page or action; the
routes name their entry (`page_user("queue")`) and a test walks the matrix.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from serving.auth import AuthError, Principal, Role, decode_access_token, principal_from_token
from serving.web.i18n import LANG_COOKIE, Translator, pick_lang

SESSION_COOKIE = "caravan_session"
LOGIN_CSRF_COOKIE = "caravan_login_csrf"
CSRF_FIELD = "csrf_token"
PREFIX = "/web"

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

    def __init__(self, next_path: str, reason: str = "login.required") -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason


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


def csrf_for(secret: bytes, jti: str) -> str:
    return hmac.new(secret, f"csrf|{jti}".encode(), hashlib.sha256).hexdigest()


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


def session_user(request: Request, session: Session, secret: bytes) -> WebUser:
    """The signed-in user from the session cookie, or LoginRequiredError."""
    token = request.cookies.get(SESSION_COOKIE)
    nxt = current_path(request) if request.method == "GET" else f"{PREFIX}/"
    if not token:
        raise LoginRequiredError(nxt)
    try:
        claims = decode_access_token(secret, token)
        principal = principal_from_token(session, secret, token)
    except AuthError as exc:
        raise LoginRequiredError(
            nxt, "login.expired" if "expired" in str(exc) else "login.required"
        ) from None
    return WebUser(principal, csrf_for(secret, claims.jti), lang_of(request))


def require_page(user: WebUser, page: str) -> None:
    if user.role not in PAGE_ROLES[page]:
        raise PageForbiddenError("error.forbidden_role", role=str(user.role))


def check_office(user: WebUser, office_code: str) -> None:
    """Officers see their own office only (as `serving.deps.ensure_office`)."""
    if user.role is Role.officer and user.principal.office_code != office_code:
        raise PageForbiddenError("error.other_office", office=office_code)


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
