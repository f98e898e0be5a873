"""The pages: one FastAPI sub-application mounted at /web on the API's app.

Mounted (not included as API routes) so that the API's OpenAPI schema, its role
matrix (`serving.deps.endpoint_roles`) and schemathesis stay about the API;
these routes are also marked include_in_schema=False. Access is declared per
route with `page_user(<page>)` against `access.PAGE_ROLES`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.routing import Match

from serving import orm as m
from serving.auth import (
    AuthError,
    LockedOutError,
    Role,
    authenticate_password,
    create_access_token,
    decode_access_token,
    sign_out,
)
from serving.policy import (
    InspectionOutcome,
    has_visible_text,
    queue_day_bounds,
    queue_day_problem,
    weak_watchlist_match,
)
from serving.rules_engine import RuleValidationError, parse_rule
from serving.services import (
    ServiceError,
    Services,
    audit_report,
    claim,
    close,
    correct_outcome,
    corrections_of,
    get_queue,
    latest_versions,
    left_out,
    link_refusal,
    load_shipment,
    overdue_referrals,
    record_outcome,
    referrals_out,
    release,
    replay,
    rule_performance_rows,
    save_rule,
    set_rule_active,
    unknown_office,
    view_traveller,
    waive,
)
from serving.services.rules import RESERVED_RULE_IDS
from serving.services.seizures import seizures_of
from serving.web import views
from serving.web.access import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    NAV_PAGES,
    PAGE_ROLES,
    PREFIX,
    SESSION_COOKIE,
    SESSION_COOKIE_GRACE_SECONDS,
    CsrfError,
    LoginRequiredError,
    PageForbiddenError,
    WebUser,
    check_csrf,
    check_office,
    check_origin,
    ended_param,
    form_return_path,
    lang_of,
    new_login_csrf,
    parse_ended,
    require_page,
    safe_next,
    session_user,
)
from serving.web.i18n import CATALOGUE, LANG_COOKIE, LANGS, Translator

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
SHIPMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # no "/" (sec F9)
OFFICE = re.compile(r"^[A-Z]{2}[A-Z0-9-]{2,30}$")
USERNAME = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9._:@-]{0,63}$")
# an audit actor: a user name, or an API key's "apikey:<name>" (names may have spaces)
ACTOR = re.compile(r"^(?:[A-Za-z0-9:][A-Za-z0-9._:@-]{0,63}|apikey:[^\x00-\x1f\x7f]{1,128})$")
MIN_PURPOSE = 5  # as the API's `purpose` (min_length 5)
AUDIT_PAGE = 500
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")
AUDIT_HEAD = re.compile(r"^[1-9][0-9]{0,17}:[0-9a-f]{64}$")  # as the API's `expect`
MAX_RULE_REASON = 1000  # as `services.set_rule_active`
REPORT_FILE = re.compile(r"^[a-z0-9_]{1,64}\.png$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# --------------------------------------------------------------------------- plumbing


def _main(request: Request) -> Any:
    return request.app.state.main


def get_session(request: Request) -> Iterator[Session]:
    with _main(request).state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _services(request: Request) -> Services:
    services: Services | None = getattr(_main(request).state, "services", None)
    if services is None:
        raise PageForbiddenError("error.not_found")
    return services


class PageUser:
    """Access dependency of a page: a signed-in user whose role may use `page`."""

    def __init__(self, page: str) -> None:
        if page not in PAGE_ROLES:
            raise ValueError(f"unknown page {page!r}")
        self.page = page

    def __call__(self, request: Request, session: SessionDep) -> WebUser:
        main = _main(request)
        user = session_user(request, session, main.state.secret_key)
        require_page(user, self.page)
        return renew_if_old(request, user)


def renew_if_old(request: Request, user: WebUser) -> WebUser:
    """A sliding session: past half its lifetime the token is replaced (the cookie is
    set by the middleware). The CSRF value is the user's, not the token's
    (`access.csrf_for`), so the forms of pages already open, in this tab or another,
    stay valid after the renewal."""
    main = _main(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    claims = decode_access_token(main.state.secret_key, token)
    ttl = int(main.state.serving.token_ttl_seconds)
    left = (claims.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    if left >= ttl / 2:
        return user
    fresh = create_access_token(main.state.secret_key, user.username, user.role, ttl)
    request.state.renewed_token = fresh
    return user


def page_user(page: str) -> Any:
    return Depends(PageUser(page))


def render(
    request: Request,
    name: str,
    user: WebUser | None,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    lang = user.lang if user else lang_of(request)
    t = Translator(lang)
    nav = [p for p in NAV_PAGES if user is not None and user.may(p)]
    base = {
        "t": t,
        "lang": lang,
        "langs": LANGS,
        "user": user,
        "nav": nav,
        "prefix": PREFIX,
        "csrf_field": CSRF_FIELD,
        "csrf": user.csrf if user else "",
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "fmt_dt": views.fmt_dt,
        "fmt_age": lambda seconds: views.fmt_age(seconds, lang),
        "traveller_value": views.traveller_value,
        "fmt_quantity": lambda q, **how: views.fmt_quantity(q, lang, **how),
        "fmt_small": lambda q, **how: views.fmt_small(q, lang, **how),
        "fmt_percent": lambda q: views.fmt_percent(q, lang),
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


async def _form(request: Request, user: WebUser) -> dict[str, str]:
    data = await request.form()
    values = {k: v for k, v in data.items() if isinstance(v, str)}
    check_csrf(request, user, values.get(CSRF_FIELD))
    return values


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


router = APIRouter(include_in_schema=False)


# --------------------------------------------------------------------------- login


def _login_page(
    request: Request, message: str | None, status_code: int = 200, username: str = ""
) -> HTMLResponse:
    """The sign-in page; a refused sign-in (`status_code` 400 and up) shows `message`
    as the form's error (an alert that takes keyboard focus), any other as a note."""
    token = new_login_csrf()
    refused = status_code >= 400
    response = render(
        request,
        "login.html",
        None,
        {
            "message": None if refused else message,
            "login_error": message if refused else None,
            "login_csrf": token,
            "next": safe_next(request.query_params.get("next")),
            "username": username,
        },
        status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    return response


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    t = Translator(lang_of(request))
    reason = request.query_params.get("reason")
    known = ("login.required", "login.expired", "login.signed_out", "login.form_expired")
    if reason == "login.session_ended":  # a page opened after this browser's session ended
        ended = parse_ended(request.query_params.get("ended"))
        if ended is None:
            return _login_page(request, t("login.expired"))
        today = ended.date() == dt.datetime.now(dt.UTC).date()
        at = ended.strftime("%H:%M UTC" if today else "%Y-%m-%d %H:%M UTC")
        return _login_page(request, t("login.session_ended", at=at))
    return _login_page(request, t(reason) if reason in known else None)


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    t = Translator(lang_of(request))
    check_origin(request)
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or values.get(CSRF_FIELD) != expected:
        raise CsrfError("login form without its token")
    username = values.get("username", "").strip()
    password = values.get("password", "")
    if not username or not password:
        return _login_page(request, t("login.missing"), 422, username)
    main = _main(request)
    client_ip = request.client.host if request.client else None
    try:  # argon2 takes a while: not on the event loop
        user = await run_in_threadpool(
            authenticate_password,
            session,
            username,
            password,
            client_ip=client_ip,
            policy=main.state.serving.lockout_policy(),
        )
    except LockedOutError as exc:
        session.rollback()
        return _login_page(
            request, t("login.locked", seconds=max(1, round(exc.retry_after))), 429, username
        )
    except AuthError:
        session.commit()  # keep the failure counters
        return _login_page(request, t("login.failed"), 401, username)
    session.commit()
    ttl = int(main.state.serving.token_ttl_seconds)
    token = create_access_token(main.state.secret_key, user.username, user.role, ttl)
    target = safe_next(values.get("next"))
    if target == f"{PREFIX}/" and Role(user.role) is Role.officer:
        target = f"{PREFIX}/queue"
    response = redirect(target)
    _session_cookie(request, response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


def _session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        # longer than the token: a page opened after it ran out says the session ended
        max_age=int(_main(request).state.serving.token_ttl_seconds) + SESSION_COOKIE_GRACE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )


@router.post("/logout")
async def logout(
    request: Request, user: Annotated[WebUser, page_user("home")], session: SessionDep
) -> Response:
    await _form(request, user)
    await run_in_threadpool(_sign_out, session, user.username)
    response = redirect(f"{PREFIX}/login?reason=login.signed_out")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def _sign_out(session: Session, username: str) -> None:
    """Server-side: the user's session tokens issued until now are refused from now on."""
    sign_out(session, username)
    session.commit()


@router.get("/lang/{code}")
def set_lang(code: str, request: Request) -> Response:
    response = redirect(safe_next(request.query_params.get("next")))
    if code in LANGS:
        response.set_cookie(
            LANG_COOKIE, code, max_age=365 * 86400, samesite="strict", path=PREFIX, httponly=True
        )
    return response


@router.get("/")
def home(request: Request, user: Annotated[WebUser, page_user("home")]) -> Response:
    return render(request, "home.html", user, {})


# --------------------------------------------------------------------------- queue


def _queue_context(
    request: Request, session: Session, user: WebUser, message: str | None = None
) -> dict[str, Any]:
    services = _services(request)
    q = request.query_params
    t = Translator(user.lang)
    errors = views.FormErrors()
    office = (
        user.principal.office_code if user.role is Role.officer else (q.get("office") or "").strip()
    )
    if office and not OFFICE.match(office):
        errors.add("office", t("error.field"))
        office = ""
    today = services.queue.today(office or "")  # the office's local day (default zone's)
    try:
        day = dt.date.fromisoformat(q["day"]) if q.get("day") else today
    except ValueError:
        errors.add("day", t("queue.day_format"))
        day = today
    if queue_day_problem(day, today) is not None:  # (no queue outside the plausible days)
        first, last = queue_day_bounds(today)
        errors.add("day", t("queue.day_range", day=day.isoformat(), first=first, last=last))
        day = today
    lane = str(q.get("lane")) if q.get("lane") in ("red", "yellow", "green") else "all"
    status = str(q.get("status")) if q.get("status") in m.REFERRAL_STATUSES else "all"
    sort = str(q.get("sort")) if q.get("sort") in ("rank", "priority", "age") else "rank"
    exploration = q.get("exploration") == "1"
    zone, offset = services.queue.zone_label(office or "", day)
    office_zone = services.queue.zone(office or "")
    context: dict[str, Any] = {
        # times in the office's zone, named, as its queue days (UTC for a UTC office)
        "fmt_dt": lambda value: views.fmt_dt(value, office_zone),
        "overdue_hours": views.fmt_quantity(services.queue.overdue_hours, user.lang),
        "office": office,
        "day": day.isoformat(),
        "day_zone": t("queue.utc_day")
        if zone == "UTC"
        else t("queue.zone_day", zone=zone, offset=offset),
        "lane": lane,
        "status": status,
        "sort": sort,
        "exploration": exploration,
        "errors": errors,
        "message": message,
        "rows": [],
        "overdue": [],
        "left_out": [],
        "capacity": None,
        "offices": [],
        "statuses": m.REFERRAL_STATUSES,
    }
    if user.role is not Role.officer:
        context["offices"] = sorted(
            set(session.scalars(select(m.Shipment.office_code).distinct().limit(500)))
        )
    if not office:
        return context
    refs, _built = get_queue(session, services, office, day, user.username)
    outs = referrals_out(session, refs, services)
    overdue = overdue_referrals(session, services, office)
    overdue_ids = {r.id for r in overdue}
    rows = views.queue_rows(session, services, refs, outs, overdue_ids, user.lang)
    context["rows"] = views.filter_sort(rows, lane, status, exploration, sort)
    context["all_count"] = len(rows)
    context["overdue"] = referrals_out(session, overdue, services)
    context["left_out"] = left_out(session, office, day, services)
    # (a mistyped office: no empty queue; an officer's own office is the account's)
    if (
        not refs
        and not context["left_out"]
        and user.role is not Role.officer
        and unknown_office(session, services, office)
    ):
        errors.add("office", t("queue.office_unknown", office=office))
        context["office"] = ""
        return context
    context["capacity"] = views.capacity_used(outs, services.capacity(office))
    context["share"] = f"{services.queue.exploration_share:.0%}"
    return context


@router.get("/queue")
def queue_page(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("queue")]
) -> Response:
    t = Translator(user.lang)
    done = request.query_params.get("claimed")
    message = t("queue.claimed_ok", id=done) if done and done.isdigit() else None
    return render(request, "queue.html", user, _queue_context(request, session, user, message))


def _referral_for(session: Session, user: WebUser, referral_id: int) -> m.Referral:
    ref = session.get(m.Referral, referral_id)
    if ref is None:
        raise PageForbiddenError("error.not_found")
    check_office(user, ref.office_code)
    return ref


@router.get("/referrals/{referral_id}")
def referral_page(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("shipment")],
) -> Response:
    """A referral's decision section on its shipment's page: where signing in again
    leads after a referral's form was sent without a valid session."""
    ref = _referral_for(session, user, referral_id)
    return redirect(f"{PREFIX}/shipments/{ref.shipment_id}#decision")


@router.post("/referrals/{referral_id}/claim")
async def claim_referral(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_claim_referral, referral_id, request, session, user, form)


def _claim_referral(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    _referral_for(session, user, referral_id)
    back = safe_next(form.get("next"), f"{PREFIX}/queue")
    try:
        ref = claim(session, referral_id, user.username, user.principal.office_code)
    except ServiceError as exc:
        session.rollback()
        if exc.status == 409:
            return _conflict_page(request, session, user, referral_id, exc)
        return _error_page(request, user, exc.message, exc.status)
    path, _, fragment = back.partition("#")
    sep = "&" if "?" in path else "?"
    if path.startswith(f"{PREFIX}/queue"):
        return redirect(f"{path}{sep}claimed={ref.id}")
    if path.startswith(f"{PREFIX}/shipments/"):
        return redirect(f"{path}{sep}done=claimed" + (f"#{fragment}" if fragment else ""))
    return redirect(back)


def _conflict_text(
    session: Session, t: Translator, referral_id: int, exc: ServiceError
) -> tuple[str, m.Referral | None]:
    """A refused transition (409) told in the officer's language from the referral's
    state as it is now: who holds it, or who decided it."""
    session.expire_all()
    ref = session.get(m.Referral, referral_id)
    if ref is None:
        return exc.message, None
    values = {"id": ref.id, "shipment": ref.shipment_id, "status": t.status(ref.status)}
    if ref.status == "claimed" and ref.claimed_by:
        return t("conflict.claimed_by", who=ref.claimed_by, **values), ref
    if ref.decided_by:
        return t("conflict.decided", who=ref.decided_by, **values), ref
    return t("conflict.status", **values), ref


def _conflict_page(
    request: Request, session: Session, user: WebUser, referral_id: int, exc: ServiceError
) -> HTMLResponse:
    t = Translator(user.lang)
    message, ref = _conflict_text(session, t, referral_id, exc)
    links = [(f"{PREFIX}/queue", t("conflict.back_queue"))]
    if ref is not None:
        links.insert(
            0,
            (
                f"{PREFIX}/shipments/{ref.shipment_id}#decision",
                t("conflict.back_shipment", shipment=ref.shipment_id),
            ),
        )
        links[-1] = (
            f"{PREFIX}/queue?day={ref.queue_date.isoformat()}" + _office_q(user, ref),
            t("conflict.back_queue"),
        )
    return _error_page(request, user, message, 409, title=t("conflict.title"), links=links)


# --------------------------------------------------------------------------- shipment


def _shipment_context(
    request: Request,
    session: Session,
    user: WebUser,
    shipment_id: str,
    *,
    unmasked: dict[str, dict[str, Any]] | None = None,
    outcome_errors: views.FormErrors | None = None,
    waiver_errors: views.FormErrors | None = None,
    unmask_errors: dict[str, str] | None = None,
    action_errors: views.FormErrors | None = None,
    form: dict[str, str] | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    services = _services(request)
    if not SHIPMENT_ID.match(shipment_id):
        raise PageForbiddenError("error.not_found")
    stored = load_shipment(session, shipment_id)
    if stored is None:
        raise PageForbiddenError("error.not_found")
    check_office(user, stored.shipment.office_code)
    t = Translator(user.lang)
    zone = services.queue.zone(stored.shipment.office_code)
    record, items = views.typed_shipment(session, stored)
    reasons = views.reasons_of(services, stored)
    try:
        chart = views.waterfall_svg(views.waterfall_of(services, stored, user.lang), t)
        chart_error = None
    except Exception:  # the model version cannot be loaded
        chart, chart_error = None, t("ship.waterfall_missing", version=stored.score.model_version)
    rule_names = {
        r.rule_id: r.name
        for r in session.scalars(
            select(m.Rule).where(m.Rule.rule_id.in_([h[0] for h in stored.hits]))
        )
    }
    travellers = views.linked_travellers(session, record, services.history)
    for link in travellers:
        if unmasked and link.record_id in unmasked:
            link.record = unmasked[link.record_id]
            link.masked = False
    referral = session.scalars(
        select(m.Referral)
        .where(m.Referral.shipment_id == shipment_id)
        .order_by(m.Referral.queue_date.desc(), m.Referral.id.desc())
        .limit(1)
    ).first()
    extra = stored.score.explanation or {}
    outcome = (
        session.scalars(
            select(m.Outcome)
            .where(m.Outcome.referral_id == referral.id)
            .order_by(m.Outcome.recorded_at.desc())
            .limit(1)
        ).first()
        if referral is not None
        else None
    )
    drivers = views.driver_texts(
        [(rule_names.get(r, r), sev) for r, _v, sev in stored.hits],
        float(extra.get("watchlist_score") or 0.0),
        bool(extra.get("watchlist_exact", False)),
        t,
        watchlist_weak=weak_watchlist_match(extra.get("watchlist_match")),
    )
    return {
        # times in the office's zone, named, as its queue days (UTC for a UTC office)
        "fmt_dt": lambda value: views.fmt_dt(value, zone),
        "traveller_value": lambda name, value: views.traveller_value(name, value, zone),
        "sid": shipment_id,
        "outcome": outcome,
        "drivers": drivers,
        "stored": stored,
        "record": record,
        "items": items,
        "route": views.route_of(record),
        "reasons": reasons,
        "chart": chart,
        "chart_error": chart_error,
        "hits": [(r, v, sev, rule_names.get(r, r)) for r, v, sev in stored.hits],
        "watch": views.watchlist_hit(services, record, stored),
        "travellers": travellers,
        "shown_fields": views.TRAVELLER_SHOWN,
        "referral": referral,
        "must_inspect": bool(extra.get("must_inspect", False)),
        "categories": views.FINDING_CATEGORIES,
        "units": views.QUANTITY_UNITS,
        "unit_text": lambda u: _unit_text(t, u),
        "seizures": []
        if outcome is None
        else seizures_of(session, [outcome.outcome_id])[outcome.outcome_id],
        "seizure_rows": views.SEIZURE_ROWS,
        "seizure_field": views.seizure_field,
        "outcome_errors": outcome_errors or views.FormErrors(),
        "waiver_errors": waiver_errors or views.FormErrors(),
        "unmask_errors": unmask_errors or {},
        "action_errors": action_errors or views.FormErrors(),
        "form": form or {},
        "message": message,
        "may_decide": user.may("decide"),
        "may_unmask": user.may("unmask"),
        **_referral_state(session, user, referral),
        **_correction_state(session, user, referral, outcome),
    }


def _referral_state(session: Session, user: WebUser, referral: m.Referral | None) -> dict[str, Any]:
    """What the referral section shows beyond the row: who closed it and when, the
    entry that displaced it (if it was closed for a later arrival), and whether this
    user may close it or release its claim (as the API: an officer of the office or
    an admin closes an inspected or waived referral; the claimer, or an admin for
    anyone's claim, releases a claimed one)."""
    state: dict[str, Any] = {
        "closing": None,
        "displaced_by": None,
        "may_close": False,
        "may_release": False,
        "waiting_seconds": None,
    }
    if referral is None:
        return state
    out = referrals_out(session, [referral])[0]
    state["waiting_seconds"] = out["age_seconds"]  # (since the shipment's declaration)
    if referral.status == "closed" and out["closed_by"]:
        state["closing"] = {"who": out["closed_by"], "at": out["closed_at"]}
    if referral.status == "closed" and referral.decided_at is None:  # displaced
        by_id = out["displaced_by"]
        by = session.get(m.Referral, by_id) if by_id is not None else None
        state["displaced_by"] = {"id": by_id, "shipment": by.shipment_id if by else None}
    may_decide = user.may("decide")
    state["may_close"] = may_decide and referral.status in ("inspected", "waived")
    state["may_release"] = (
        may_decide
        and referral.status == "claimed"
        and (referral.claimed_by == user.username or user.role is Role.admin)
    )
    return state


@router.get("/shipments/{shipment_id:path}")
def shipment_page(
    shipment_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("shipment")],
) -> Response:
    t = Translator(user.lang)
    done = request.query_params.get("done")
    message = {
        "outcome": t("ship.outcome_saved"),
        "waived": t("ship.waived"),
        "claimed": t("ship.claimed_ok"),
        "closed": t("ship.closed_ok"),
        "released": t("ship.released_ok"),
        "corrected": t("ship.corrected_ok"),
    }.get(done or "")
    context = _shipment_context(request, session, user, shipment_id, message=message)
    return render(request, "shipment.html", user, context)


@router.post("/referrals/{referral_id}/outcome")
async def post_outcome(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_post_outcome, referral_id, request, session, user, form)


def _post_outcome(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    ref = _referral_for(session, user, referral_id)
    t = Translator(user.lang)
    checked, errors = views.check_outcome(form, t)
    if checked is not None:
        outcome = InspectionOutcome.of(checked)
        try:
            record_outcome(
                session,
                _services(request),
                referral_id,
                user.username,
                user.principal.office_code,
                outcome,
            )
        except ServiceError as exc:
            session.rollback()
            errors.general.append(
                _service_message(session, t, referral_id, exc, _services(request))
            )
        else:
            return redirect(f"{PREFIX}/shipments/{ref.shipment_id}?done=outcome#decision")
    context = _shipment_context(
        request, session, user, ref.shipment_id, outcome_errors=errors, form=form
    )
    return render(request, "shipment.html", user, context, 422)


def _correction_state(
    session: Session, user: WebUser, referral: m.Referral | None, outcome: m.Outcome | None
) -> dict[str, Any]:
    """The outcome section's correction: the corrections made to the referral's
    outcome (from the audit trail), whether this user may correct the decision
    recorded (as the API: the officer who recorded the outcome or waiver, or an
    administrator), and the form's values (the outcome as recorded)."""
    state: dict[str, Any] = {
        "corrections": [],
        "may_correct": False,
        "correction_errors": views.FormErrors(),
        "correction_form": {},
    }
    if referral is None:
        return state
    t = Translator(user.lang)
    state["corrections"] = [
        {
            **c,
            "before_text": _decision_text(c["before"], t, user.lang),
            "after_text": _decision_text(c["after"], t, user.lang),
        }
        for c in corrections_of(session, referral.shipment_id)
        if c["referral_id"] == referral.id
    ]
    decided = referral.decided_by is not None and referral.status != "claimed"
    state["may_correct"] = (
        user.may("decide")
        and decided
        and (referral.decided_by == user.username or user.role is Role.admin)
    )
    if outcome is not None:
        state["correction_form"] = {
            "finding": "yes" if outcome.finding else "no",
            "notes": outcome.notes or "",
        }
        lines = seizures_of(session, [outcome.outcome_id])[outcome.outcome_id]
        for row, line in enumerate(lines):
            state["correction_form"] |= {
                views.seizure_field("category", row): line["category"],
                views.seizure_field("quantity", row): ""
                if line["quantity"] is None
                else views.fmt_quantity(line["quantity"], user.lang),
                views.seizure_field("unit", row): line["unit"] or "",
            }
    return state


def _unit_text(t: Translator, unit: str | None) -> str:
    """A unit with its meaning in the page's language: "pieces (PCE)", "шт. (PCE)"."""
    if not unit:
        return ""
    key = f"unit.{unit}"
    return f"{t(key)} ({unit})" if key in CATALOGUE else unit


def _seizure_text(line: dict[str, Any], t: Translator, lang: str) -> str:
    """A seizure line in words: "firearms, 2 pieces (PCE)"."""
    text = t.category(line.get("category"))
    if line.get("quantity") is not None:
        amount = views.fmt_quantity(line["quantity"], lang)
        text += f", {amount} {_unit_text(t, line.get('unit'))}".rstrip()
    return text


def _decision_text(values: dict[str, Any], t: Translator, lang: str) -> str:
    """A decision as a correction's audit entry holds it (before or after), in words."""
    if values.get("decision") == "waiver":
        return t("ship.corrected_waiver", reason=values.get("waiver_reason") or "")
    parts = [t("ship.finding_yes") if values.get("finding") else t("ship.finding_no")]
    # (entries from before the seizure lines hold the one category / quantity / unit)
    lines = values.get("seizures") or ([values] if values.get("category") else [])
    if lines:
        parts.append(" + ".join(_seizure_text(s, t, lang) for s in lines))
    text = ", ".join(parts)
    return f"{text} («{values['notes']}»)" if values.get("notes") else text


@router.post("/referrals/{referral_id}/outcome/correct")
async def post_correct_outcome(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_post_correct_outcome, referral_id, request, session, user, form)


def _post_correct_outcome(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    """Correct the recorded outcome (or waiver) with the form's outcome and reason."""
    ref = _referral_for(session, user, referral_id)
    t = Translator(user.lang)
    checked, errors = views.check_outcome(form, t)
    reason, reason_errors = views.check_waiver(form, t)  # (a waiver's rules for a reason)
    if reason_errors.fields:
        problem = reason_errors.fields["reason"]
        if problem == t("err.reason_required"):
            problem = t("err.correction_reason_required")
        errors.add("reason", problem)
    if checked is not None and reason is not None:
        outcome = InspectionOutcome.of(checked)
        try:
            correct_outcome(
                session,
                _services(request),
                referral_id,
                user.username,
                user.principal.office_code,
                outcome,
                reason,
                override=user.role is Role.admin,
            )
        except ServiceError as exc:
            session.rollback()
            if exc.status == 403 and exc.message.startswith("only the officer"):
                errors.general.append(t("ship.correct_forbidden", who=ref.decided_by or "?"))
            elif exc.status == 409 and "already holds" in exc.message:
                errors.general.append(t("err.correction_unchanged"))
            elif exc.status == 422 and exc.field:
                errors.add(exc.field, exc.message)
            else:
                errors.general.append(
                    _service_message(session, t, referral_id, exc, _services(request))
                )
        else:
            return redirect(f"{PREFIX}/shipments/{ref.shipment_id}?done=corrected#decision")
    context = _shipment_context(request, session, user, ref.shipment_id)
    context.update(correction_errors=errors, correction_form=form)
    return render(request, "shipment.html", user, context, 422)


def _service_message(
    session: Session,
    t: Translator,
    referral_id: int,
    exc: ServiceError,
    services: Services | None = None,
) -> str:
    """A service's refusal as the page shows it: a conflict in the officer's language
    (a time in the office's zone, as the rest of the shipment page, with `services`)."""
    if exc.status == 409 and exc.field == "declared_at":
        ref = session.get(m.Referral, referral_id)
        ship = session.get(m.Shipment, ref.shipment_id) if ref is not None else None
        if ship is not None:
            zone = services.queue.zone(ship.office_code) if services is not None else None
            return t(
                "conflict.before_declaration",
                shipment=ship.shipment_id,
                declared=views.fmt_dt(ship.declared_at, zone),
            )
    if exc.status == 409:
        return _conflict_text(session, t, referral_id, exc)[0]
    return exc.message


def _office_q(user: WebUser, ref: m.Referral) -> str:
    return "" if user.role is Role.officer else f"&office={ref.office_code}"


@router.post("/referrals/{referral_id}/waive")
async def post_waive(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_post_waive, referral_id, request, session, user, form)


def _post_waive(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    ref = _referral_for(session, user, referral_id)
    t = Translator(user.lang)
    reason, errors = views.check_waiver(form, t)
    if reason is not None:
        try:
            waive(session, referral_id, user.username, user.principal.office_code, reason)
        except ServiceError as exc:
            session.rollback()
            errors.general.append(
                _service_message(session, t, referral_id, exc, _services(request))
            )
        else:
            return redirect(f"{PREFIX}/shipments/{ref.shipment_id}?done=waived#decision")
    context = _shipment_context(
        request, session, user, ref.shipment_id, waiver_errors=errors, form=form
    )
    return render(request, "shipment.html", user, context, 422)


@router.post("/referrals/{referral_id}/close")
async def post_close(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_post_close, referral_id, request, session, user, form)


def _post_close(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    del form  # the CSRF token only
    ref = _referral_for(session, user, referral_id)
    try:
        close(session, referral_id, user.username, user.principal.office_code)
    except ServiceError as exc:
        session.rollback()
        return _refused_action(request, session, user, ref, exc)
    return redirect(f"{PREFIX}/shipments/{ref.shipment_id}?done=closed#decision")


@router.post("/referrals/{referral_id}/release")
async def post_release(
    referral_id: int,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("decide")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_post_release, referral_id, request, session, user, form)


def _post_release(
    referral_id: int, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    del form  # the CSRF token only
    ref = _referral_for(session, user, referral_id)
    try:
        release(
            session,
            referral_id,
            user.username,
            user.principal.office_code,
            override=user.role is Role.admin,
        )
    except ServiceError as exc:
        session.rollback()
        return _refused_action(request, session, user, ref, exc)
    return redirect(f"{PREFIX}/shipments/{ref.shipment_id}?done=released#decision")


def _refused_action(
    request: Request, session: Session, user: WebUser, ref: m.Referral, exc: ServiceError
) -> HTMLResponse:
    """A refused close or release: the shipment page again, saying why."""
    t = Translator(user.lang)
    errors = views.FormErrors()
    errors.general.append(_service_message(session, t, ref.id, exc, _services(request)))
    shipment_id = ref.shipment_id
    session.expire_all()
    context = _shipment_context(request, session, user, shipment_id, action_errors=errors)
    return render(request, "shipment.html", user, context, exc.status)


@router.post("/travellers/{record_id}/unmask")
async def unmask_traveller(
    record_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("unmask")],
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_unmask_traveller, record_id, request, session, user, form)


def _unmask_traveller(
    record_id: str, request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    shipment_id = form.get("shipment_id", "")
    t = Translator(user.lang)
    purpose = (form.get("purpose") or "").strip()
    # the shipment page checks the office; the record must be linked to that shipment
    context = _shipment_context(request, session, user, shipment_id)
    if record_id not in {link.record_id for link in context["travellers"]}:
        raise PageForbiddenError("error.not_found")
    # an officer unmasks through the link: not through a shipment he ingested himself
    refused = (
        link_refusal(session, user.username, shipment_id) if user.role is Role.officer else None
    )
    if refused is not None:
        # (ship.unmask_self_ingested, ship.unmask_officer_key)
        context["unmask_errors"] = {record_id: t(f"ship.unmask_{refused[0]}")}
        return render(request, "shipment.html", user, context, 403)
    if not purpose or len(purpose) > 500 or views.CONTROL.search(purpose):
        context["unmask_errors"] = {record_id: t("ship.purpose_required")}
        return render(request, "shipment.html", user, context, 422)
    if len(purpose) < MIN_PURPOSE or not has_visible_text(purpose):  # as the API
        context["unmask_errors"] = {record_id: t("err.purpose_short", n=MIN_PURPOSE)}
        return render(request, "shipment.html", user, context, 422)
    try:
        row, _ = view_traveller(
            session,
            record_id,
            user.username,
            purpose,
            shipment_id=shipment_id,
            history=_services(request).history,
        )
    except ServiceError as exc:
        return _error_page(request, user, exc.message, exc.status)
    context = _shipment_context(
        request, session, user, shipment_id, unmasked={record_id: dict(row.payload)}
    )
    return render(request, "shipment.html", user, context)


# --------------------------------------------------------------------------- rules


def _rules_list(session: Session) -> list[dict[str, Any]]:
    perf = {r["rule_id"]: r for r in rule_performance_rows(session)}
    out = []
    for v, r in latest_versions(session):
        out.append({"version": v, "rule": r, "perf": perf.get(v.rule_id, {})})
    return out


@router.get("/rules")
def rules_page(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("rules")]
) -> Response:
    t = Translator(user.lang)
    q = request.query_params
    saved = q.get("saved")
    message = None
    if saved and re.match(r"^[a-z0-9_-]+@\d+$", saved):
        rid, v = saved.split("@")
        message = t("rules.saved", id=rid, version=v)
    for key, text in (("deactivated", "rules.deactivated_ok"), ("activated", "rules.activated_ok")):
        done = q.get(key)
        if done and RULE_ID.match(done):
            message = t(text, id=done)
    return _render_rules(request, session, user, message=message)


def _render_rules(
    request: Request,
    session: Session,
    user: WebUser,
    *,
    message: str | None = None,
    errors: views.FormErrors | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "rules.html",
        user,
        {
            "rules": _rules_list(session),
            "message": message,
            "may_edit": user.may("rules_edit"),
            "errors": errors or views.FormErrors(),
            "form": form or {},
        },
        status_code,
    )


@router.get("/rules/apply")
def rules_apply_form(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("rules_edit")]
) -> Response:
    """Confirm applying the current rules to today's shipments awaiting a decision
    (registered before /rules/{rule_id})."""
    from serving.services import active_rules, pending_count

    services = _services(request)
    queue = services.queue
    local = bool(queue.office_timezones) or queue.queue_timezone != "UTC"
    today = dt.datetime.now(dt.UTC).date()
    apply = {
        "rules": len(active_rules(session, services)),
        # with office time zones each office's own today, as the button applies it
        "day": None if local else today.isoformat(),
        "pending": pending_count(session, None, services),
    }
    return render(
        request,
        "rules.html",
        user,
        {
            "rules": _rules_list(session),
            "may_edit": True,
            "errors": views.FormErrors(),
            "form": {},
            "apply": apply,
        },
    )


@router.post("/rules/apply")
async def rules_apply(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("rules_edit")]
) -> Response:
    """Apply the current rules to today's shipments awaiting a decision, as
    POST /api/v1/rules/apply does; back to the rules page with the counts."""
    from serving.scoring import ModelNotReadyError
    from serving.services import apply_rules_to_pending

    await _form(request, user)
    services = _services(request)

    def work() -> Response:
        t = Translator(user.lang)
        try:
            done = apply_rules_to_pending(session, services, user.username)
        except (ServiceError, ModelNotReadyError) as exc:
            session.rollback()
            errors = views.FormErrors()
            if isinstance(exc, ServiceError):
                errors.general.append(exc.message)
                return _render_rules(request, session, user, errors=errors, status_code=exc.status)
            errors.general.append(str(exc))
            return _render_rules(request, session, user, errors=errors, status_code=503)
        message = t(
            "rules.applied_ok", n=done.examined, changed=done.changed, forced=done.newly_forced
        )
        return _render_rules(request, session, user, message=message)

    return await run_in_threadpool(work)


@router.post("/rules/{rule_id}/deactivate")
async def deactivate_rule(
    rule_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("rules_edit")],
) -> Response:
    if not RULE_ID.match(rule_id):
        raise PageForbiddenError("error.not_found")
    form = await _form(request, user)
    return await run_in_threadpool(_set_rule_active, request, session, user, rule_id, False, form)


@router.post("/rules/{rule_id}/activate")
async def activate_rule(
    rule_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("rules_edit")],
) -> Response:
    if not RULE_ID.match(rule_id):
        raise PageForbiddenError("error.not_found")
    form = await _form(request, user)
    return await run_in_threadpool(_set_rule_active, request, session, user, rule_id, True, form)


def _set_rule_active(
    request: Request,
    session: Session,
    user: WebUser,
    rule_id: str,
    active: bool,
    form: dict[str, str],
) -> Response:
    """Deactivate (a reason is required) or reactivate a rule, as the API does."""
    t = Translator(user.lang)
    errors = views.FormErrors()
    reason = (form.get("reason") or "").strip()
    if not active:
        if not has_visible_text(reason):
            errors.add(f"reason:{rule_id}", t("rules.reason_required"))
        elif len(reason) > MAX_RULE_REASON:
            errors.add(f"reason:{rule_id}", t("rules.reason_long", n=MAX_RULE_REASON))
        elif views.CONTROL.search(reason):
            errors.add(f"reason:{rule_id}", t("err.control_chars"))
    if not errors:
        try:
            set_rule_active(session, rule_id, active, user.username, reason or None)
            session.commit()
        except ServiceError as exc:
            session.rollback()
            if exc.status == 404:
                raise PageForbiddenError("error.not_found") from None
            if exc.status == 409:  # e.g. a form from a page older than the change
                key = "rules.already_active" if active else "rules.already_inactive"
                errors.general.append(t(key, id=rule_id))
            elif exc.field == "reason":
                errors.add(f"reason:{rule_id}", exc.message)
            else:
                errors.general.append(exc.message)
        else:
            done = "activated" if active else "deactivated"
            return redirect(f"{PREFIX}/rules?{done}={rule_id}")
    status = 409 if errors.general else 422
    values = {"rule": rule_id, "reason": form.get("reason") or ""}
    return _render_rules(request, session, user, errors=errors, form=values, status_code=status)


def _rule_form(session: Session, rule_id: str | None) -> tuple[dict[str, str], list[m.RuleVersion]]:
    if rule_id is None:
        return {"severity": "medium", "condition": ""}, []
    versions = list(
        session.scalars(
            select(m.RuleVersion)
            .where(m.RuleVersion.rule_id == rule_id)
            .order_by(m.RuleVersion.version)
        )
    )
    if not versions:
        raise PageForbiddenError("error.not_found")
    d = json.loads(versions[-1].definition)
    form = {
        "id": rule_id,
        "name": d.get("name", ""),
        "description": d.get("description", ""),
        "severity": d.get("severity", ""),
        "effective_from": d.get("effective_from") or "",
        "effective_to": d.get("effective_to") or "",
        "condition": views.condition_text(d.get("condition")),
    }
    return form, versions


def _render_rule(
    request: Request,
    user: WebUser,
    rule_id: str | None,
    form: dict[str, str],
    versions: list[m.RuleVersion],
    errors: views.FormErrors | None = None,
    status_code: int = 200,
    backtest: dict[str, Any] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "rule_edit.html",
        user,
        {
            "rule_id": rule_id,
            "form": form,
            "versions": [
                (v, views.condition_text(json.loads(v.definition).get("condition")))
                for v in versions
            ],
            "figures": views.rule_figures(versions),
            "errors": errors or views.FormErrors(),
            "severities": ("info", "low", "medium", "high", "must_inspect"),
            "may_edit": user.may("rules_edit"),
            "backtest": backtest,
        },
        status_code,
    )


@router.get("/rules/new")
def new_rule_form(request: Request, user: Annotated[WebUser, page_user("rules_edit")]) -> Response:
    return _render_rule(request, user, None, {"severity": "medium", "condition": ""}, [])


@router.get("/rules/{rule_id}")
def rule_page(
    rule_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("rules")],
) -> Response:
    if not RULE_ID.match(rule_id):
        raise PageForbiddenError("error.not_found")
    form, versions = _rule_form(session, rule_id)
    return _render_rule(request, user, rule_id, form, versions)


async def _save_rule_form(
    request: Request, session: Session, user: WebUser, rule_id: str | None
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_save_rule, request, session, user, rule_id, form)


def _save_rule(
    request: Request, session: Session, user: WebUser, rule_id: str | None, form: dict[str, str]
) -> Response:
    t = Translator(user.lang)
    versions: list[m.RuleVersion] = []
    if rule_id is not None:
        _old, versions = _rule_form(session, rule_id)
        form["id"] = rule_id
    data, errors = views.rule_data(form, t)
    new_id = (form.get("id") or "").strip()
    if rule_id is None and not RULE_ID.match(new_id):
        errors.add("id", t("rules.id_help"))
    elif rule_id is None and new_id in RESERVED_RULE_IDS:  # /web/rules/new would not open it
        reserved = ", ".join(sorted(RESERVED_RULE_IDS))
        errors.add("id", t("rules.id_reserved", id=new_id, reserved=reserved))
    if data is not None and not errors:
        data["id"] = new_id
        try:
            rule = save_rule(session, data, user.username, create=rule_id is None)
            session.commit()
        except RuleValidationError as exc:
            session.rollback()
            errors = views.rule_errors([(e.path, e.message) for e in exc.errors], t)
        except ServiceError as exc:
            session.rollback()
            if exc.field:
                errors.add(exc.field, exc.message)
            else:
                errors.general.append(exc.message)
        else:
            return redirect(f"{PREFIX}/rules?saved={rule.id}@{rule.version}")
    if not errors.general:
        errors.general.append(t("rules.invalid"))
    elif t("rules.invalid") not in errors.general:
        errors.general.insert(0, t("rules.invalid"))
    return _render_rule(request, user, rule_id, form, versions, errors, 422)


@router.post("/rules/test")
async def test_rule(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("rules")]
) -> Response:
    """Test a rule on the loaded history (`serving.services.backtest`): the rule form as
    typed, a draft that is not saved (analysts), or a saved rule's newest version
    (readers who cannot edit); the rule page again with the figures. Registered
    before /rules/{rule_id}."""
    form = await _form(request, user)
    return await run_in_threadpool(_test_rule, request, session, user, form)


def _test_day(form: dict[str, str], key: str, errors: views.FormErrors) -> dt.date | None:
    text = (form.get(key) or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        errors.add(key, f"{text!r}: YYYY-MM-DD")
        return None


def _test_rule(request: Request, session: Session, user: WebUser, form: dict[str, str]) -> Response:
    from serving.services.backtest import backtest

    t = Translator(user.lang)
    rule_id = (form.get("rule_id") or "").strip() or None
    if rule_id is not None and not RULE_ID.match(rule_id):
        raise PageForbiddenError("error.not_found")
    versions: list[m.RuleVersion] = []
    saved: dict[str, str] = {}
    if rule_id is not None:
        saved, versions = _rule_form(session, rule_id)
    data: dict[str, Any] | None
    if user.may("rules_edit"):
        data, errors = views.rule_data(form, t)
        shown = {**form, **({"id": rule_id} if rule_id else {})}
    elif rule_id is not None:
        data, errors = json.loads(versions[-1].definition), views.FormErrors()
        shown = {**saved, **{k: form.get(k) or "" for k in ("test_since", "test_until")}}
        shown["test_every_day"] = form.get("test_every_day") or ""
    else:
        raise PageForbiddenError("error.not_found")
    since, until = _test_day(form, "test_since", errors), _test_day(form, "test_until", errors)
    result = None
    if data is not None and not errors:
        try:
            rule = parse_rule(
                {**data, "id": rule_id or "draft", "version": 1, "author": user.username}
            )
            result = backtest(
                _services(request),
                rule,
                since=since,
                until=until,
                effective_dates=form.get("test_every_day") != "on",
            )
        except RuleValidationError as exc:
            errors = views.rule_errors([(e.path, e.message) for e in exc.errors], t)
        except ServiceError as exc:
            if exc.field:
                errors.add(exc.field, exc.message)
            else:
                errors.general.append(exc.message)
    status = 200 if result is not None else (409 if errors.general else 422)
    return _render_rule(request, user, rule_id, shown, versions, errors, status, backtest=result)


@router.post("/rules/new")
async def create_rule(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("rules_edit")]
) -> Response:
    return await _save_rule_form(request, session, user, None)


@router.post("/rules/{rule_id}")
async def update_rule(
    rule_id: str,
    request: Request,
    session: SessionDep,
    user: Annotated[WebUser, page_user("rules_edit")],
) -> Response:
    if not RULE_ID.match(rule_id):
        raise PageForbiddenError("error.not_found")
    return await _save_rule_form(request, session, user, rule_id)


# --------------------------------------------------------------------------- models


def _report_dir(request: Request, version: str) -> Path:
    return Path(_main(request).state.layout.reports) / "evaluation" / f"v{version}"


def _model_card(request: Request, mv: Any) -> dict[str, Any]:
    folder = _report_dir(request, mv.version)
    evaluation: dict[str, Any] | None = None
    path = folder / "evaluation.json"
    if path.exists():
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    images = (
        sorted(p.name for p in folder.glob("*.png") if REPORT_FILE.match(p.name))
        if folder.exists()
        else []
    )
    return {"mv": mv, "evaluation": evaluation, "images": images}


def promotion_available() -> bool:
    """The promotion form appears when `serving.promotions.promote_model` exists."""
    try:
        module = importlib.import_module("serving.promotions")
    except ImportError:
        return False
    return callable(getattr(module, "promote_model", None))


def _promotion_history(request: Request) -> list[m.ModelPromotion]:
    with _main(request).state.session_factory() as session:
        rows = list(
            session.scalars(select(m.ModelPromotion).order_by(m.ModelPromotion.id.desc()).limit(20))
        )
        session.expunge_all()
    return rows


def _models_context(request: Request) -> dict[str, Any]:
    services = _services(request)
    registry = services.holder.registry
    versions: list[Any] = []
    aliases: dict[str, Any] = {}
    if Path(_main(request).state.layout.mlflow_db).exists():
        try:
            versions = registry.versions()
            for alias in ("champion", "challenger"):
                if registry.has_alias(alias):
                    aliases[alias] = registry.version(alias)
        except Exception:  # the registry cannot be read: show no models rather than fail
            versions = []
    by_version: dict[str, list[str]] = {}
    for alias, mv in aliases.items():
        by_version.setdefault(mv.version, []).append(alias)
    champion, challenger = aliases.get("champion"), aliases.get("challenger")
    return {
        "versions": [(v, by_version.get(v.version, [])) for v in versions],
        "champion": _model_card(request, champion) if champion else None,
        "challenger": _model_card(request, challenger) if challenger else None,
        "promotion": promotion_available(),
        "history": _promotion_history(request),
        "errors": views.FormErrors(),
        "form": {},
        "message": None,
        "caps": ("1%", "2%", "5%", "10%"),
    }


@router.get("/models")
def models_page(request: Request, user: Annotated[WebUser, page_user("models")]) -> Response:
    context = _models_context(request)
    done = request.query_params.get("promoted")
    if done and done.isdigit():
        context["message"] = Translator(user.lang)("models.promoted", v=done)
    return render(request, "models.html", user, context)


@router.get("/models/{version}/report/{name}")
def model_report_file(
    version: str, name: str, request: Request, user: Annotated[WebUser, page_user("models")]
) -> Response:
    if not version.isdigit() or not REPORT_FILE.match(name):
        raise PageForbiddenError("error.not_found")
    path = _report_dir(request, version) / name
    if not path.is_file():
        raise PageForbiddenError("error.not_found")
    return FileResponse(
        path, media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
    )


MODEL_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


@router.get("/models/{version}/card")
def model_card_page(
    version: str, request: Request, user: Annotated[WebUser, page_user("models")]
) -> Response:
    """A version's model card, rendered (UAT2 DS F18); its JSON: /api/v1/models/N/card.
    Every value is escaped: feature names and descriptions may come from an export."""
    from models.card import NoCardError, UnknownVersionError, version_card

    if not MODEL_VERSION.match(version):
        raise PageForbiddenError("error.not_found")
    try:
        card = version_card(_main(request).state.layout, version)
    except UnknownVersionError:
        raise PageForbiddenError("error.not_found") from None
    except NoCardError:
        context = {"card": None, "version": version}
        return render(request, "model_card.html", user, context, status_code=404)
    t = Translator(user.lang)
    readers = [t.role(r) for r in sorted(r.value for r in PAGE_ROLES["models"])]
    return render(
        request, "model_card.html", user, {"card": card, "version": version, "readers": readers}
    )


@router.post("/models/promote")
async def promote_model(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("models_promote")]
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_promote_model, request, session, user, form)


def _promote_model(
    request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    t = Translator(user.lang)
    context = _models_context(request)
    context["form"] = form
    errors: views.FormErrors = context["errors"]
    version = (form.get("version") or "").strip()
    reason = (form.get("reason") or "").strip()
    force = form.get("force") == "1"
    if version not in {v.version for v, _aliases in context["versions"]}:
        errors.add("version", t("models.version_unknown"))
    if not reason:
        errors.add("reason", t("models.reason_required"))
    elif len(reason) > 2000 or views.CONTROL.search(reason):
        errors.add("reason", t("err.control_chars"))
    if not context["promotion"]:
        errors.general.append(t("models.promote_unavailable"))
    if not errors:
        promotions = importlib.import_module("serving.promotions")
        main = _main(request)
        holder = _services(request).holder

        try:
            promotions.promote_model(
                session,
                main.state.layout,
                version,
                who=user.username,
                reason=reason,
                force=force,
                via="web",
                holder=holder,
            )
        except Exception as exc:  # refused (worse than the champion, no reason) or failed
            errors.general.append(str(exc))
        else:
            if holder.ready:
                main.state.model = holder
            return redirect(f"{PREFIX}/models?promoted={version}")
    return render(
        request,
        "models.html",
        user,
        _models_context(request) | {"form": form, "errors": errors},
        422,
    )


# --------------------------------------------------------------------------- audit


def _audit_context(
    request: Request, session: Session, values: dict[str, str], user: WebUser
) -> dict[str, Any]:
    t = Translator(user.lang)
    errors = views.FormErrors()
    sid = (values.get("shipment_id") or "").strip()
    who = (values.get("user") or "").strip()
    if sid and not SHIPMENT_ID.match(sid):
        errors.add("shipment_id", t("audit.bad_value"))
    if who and not ACTOR.match(who):
        errors.add("user", t("audit.bad_value"))
    if sid and who:
        errors.add("user", t("audit.one_of"))
    before_raw = (values.get("before") or "").strip()
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    entries: list[m.AuditLog] = []
    total = older = 0
    if (sid or who) and not errors:
        where = (
            [m.AuditLog.entity == "shipment", m.AuditLog.entity_id == sid]
            if sid
            else [m.AuditLog.actor == who]
        )
        total = int(session.scalar(select(func.count()).select_from(m.AuditLog).where(*where)) or 0)
        query = select(m.AuditLog).where(*where)
        if before is not None:
            query = query.where(m.AuditLog.seq < before)
        page = list(session.scalars(query.order_by(m.AuditLog.seq.desc()).limit(AUDIT_PAGE)))
        entries = page[::-1]
        if page:
            older = int(
                session.scalar(
                    select(func.count())
                    .select_from(m.AuditLog)
                    .where(*where, m.AuditLog.seq < page[-1].seq)
                )
                or 0
            )
    paging = None
    if entries and (older or before is not None):
        query_of = {"shipment_id": sid} if sid else {"user": who}
        paging = {
            "first": older + 1,
            "last": older + len(entries),
            "total": total,
            "older": (
                f"{PREFIX}/audit?{urlencode({**query_of, 'before': entries[0].seq})}"
                if older
                else None
            ),
            "newest": f"{PREFIX}/audit?{urlencode(query_of)}" if before is not None else None,
        }
    return {
        "shipment_id": sid,
        "who": who,
        "paging": paging,
        "entries": [
            (e, json.dumps(e.payload, ensure_ascii=False, sort_keys=True)[:600]) for e in entries
        ],
        "errors": errors,
        "verify": None,
        "expect": "",
        "replay": None,
        "replay_error": None,
    }


@router.get("/audit")
def audit_page(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("audit")]
) -> Response:
    context = _audit_context(request, session, dict(request.query_params), user)
    return render(request, "audit.html", user, context)


@router.post("/audit/verify")
async def audit_verify(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("audit")]
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_audit_verify, request, session, user, form)


def _audit_verify(
    request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    t = Translator(user.lang)
    context = _audit_context(request, session, form, user)
    expect = (form.get("expect") or "").strip()
    context["expect"] = expect
    checkpoint = None
    if expect:
        if not AUDIT_HEAD.match(expect):
            context["errors"].add("expect", t("audit.expect_bad"))
            return render(request, "audit.html", user, context, 422)
        seq_text, digest = expect.split(":")
        checkpoint = (int(seq_text), digest)
    report = audit_report(session, checkpoint)
    result = report.result
    context["verify"] = {
        "ok": result.ok,
        "entries": report.entries,
        "seq": report.broken_seq,
        "entry": result.first_broken_id,
        "reason": result.reason,
        "head_seq": report.head[0] if report.head else None,
        "head_hash": report.head[1] if report.head else None,
        "head": f"{report.head[0]}:{report.head[1]}" if report.head else None,
        "expected": expect or None,
    }
    return render(request, "audit.html", user, context)


@router.post("/audit/replay")
async def audit_replay(
    request: Request, session: SessionDep, user: Annotated[WebUser, page_user("audit")]
) -> Response:
    form = await _form(request, user)
    return await run_in_threadpool(_audit_replay, request, session, user, form)


def _audit_replay(
    request: Request, session: Session, user: WebUser, form: dict[str, str]
) -> Response:
    t = Translator(user.lang)
    context = _audit_context(request, session, form, user)
    sid = context["shipment_id"]
    if not sid or "shipment_id" in context["errors"].fields:
        context["errors"].add("shipment_id", t("audit.pick"))
        return render(request, "audit.html", user, context, 422)
    try:
        context["replay"] = replay(session, _services(request).holder, sid)
    except ServiceError as exc:
        context["replay_error"] = exc.message
        return render(request, "audit.html", user, context, exc.status)
    except Exception as exc:  # the model version cannot be loaded
        stored = load_shipment(session, sid)
        version = stored.score.model_version if stored else "?"
        context["replay_error"] = t("audit.model_missing", version=version, msg=type(exc).__name__)
        return render(request, "audit.html", user, context, 503)
    return render(request, "audit.html", user, context)


# --------------------------------------------------------------------------- the sub-application


def _error_page(
    request: Request,
    user: WebUser | None,
    message: str,
    status_code: int,
    *,
    title: str | None = None,
    links: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    t = Translator(user.lang if user else lang_of(request))
    if title is None:
        title = t("error.not_found") if status_code == 404 else t("error.title")
    context = {
        "error_message": message,
        "error_title": title,
        "links": links or [],
        # a refused form (a claim taken meanwhile, a stale form): focus on the message
        "focus_error": request.method == "POST",
    }
    return render(request, "error.html", user, context, status_code)


@dataclass(frozen=True)
class RouteLabel:
    """What the API's metrics middleware reads as the route template of a page."""

    path: str


def create_web_app(main: FastAPI) -> FastAPI:
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, include_in_schema=False)
    web.state.main = main

    @web.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str) and not path.startswith(PREFIX):
            request.scope["route"] = RouteLabel(PREFIX + path)  # metrics: the full template
        renewed = getattr(request.state, "renewed_token", None)
        if renewed and "set-cookie" not in response.headers:
            _session_cookie(request, response, renewed)
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.url.path.startswith(f"{PREFIX}/static"):
                continue
            response.headers.setdefault(name, value)
        return response

    @web.exception_handler(LoginRequiredError)
    async def _login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequiredError)
        # a form sent after the session ended: back to its page after signing in (where
        # caravan-forms.js fills in again what was typed, kept in the browser tab)
        nxt = form_return_path(request, _page_exists) if exc.from_form else exc.next_path
        params = {"next": safe_next(nxt), "reason": exc.reason}
        if exc.ended_at is not None:
            params["ended"] = ended_param(exc.ended_at)
        query = urlencode(params)
        response = redirect(f"{PREFIX}/login?{query}")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @web.exception_handler(PageForbiddenError)
    async def _forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageForbiddenError)
        t = Translator(lang_of(request))
        status = 404 if exc.message_key == "error.not_found" else 403
        user = _user_or_none(request)
        return _error_page(request, user, t(exc.message_key, **exc.values), status)

    @web.exception_handler(CsrfError)
    async def _csrf(request: Request, exc: Exception) -> Response:
        t = Translator(lang_of(request))
        back = form_return_path(request, _page_exists)  # what was typed is kept there
        links = [] if back == f"{PREFIX}/" else [(back, t("error.csrf_back"))]
        return _error_page(request, _user_or_none(request), t("error.csrf"), 403, links=links)

    web.include_router(router)
    web.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return web


def _page_exists(path: str) -> bool:
    """Whether a GET of `path` (under /web) is one of the pages (not a POST-only action)."""
    if not path.startswith(f"{PREFIX}/"):
        return False
    scope = {"type": "http", "method": "GET", "path": path.removeprefix(PREFIX)}
    return any(route.matches(scope)[0] is Match.FULL for route in router.routes)


def _user_or_none(request: Request) -> WebUser | None:
    try:
        with _main(request).state.session_factory() as session:
            return session_user(request, session, _main(request).state.secret_key)
    except Exception:
        return None


def mount_web(app: FastAPI) -> None:
    """Mount the pages at /web on the API's app (and send / there)."""
    from starlette.routing import Route

    async def root(_request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    app.router.routes.append(Route("/", root, include_in_schema=False))
    app.mount(PREFIX, create_web_app(app), name="web")
